"""Domain-separated ed25519 signatures: sign H(domain ‖ H(message)), one domain per message type."""

import hashlib

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from protocol.errors import InvalidInput

SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32

DOMAIN_REQUEST = "request"  # HTTP mutating requests
DOMAIN_COMMITMENT = "commitment"  # a solver's trajectory commitment
DOMAIN_DISPUTE_MOVE = "dispute-move"
DOMAIN_VERIFICATION = "verification"
DOMAIN_LOG_ENTRY = "log-entry"  # the coordinator's public log
DOMAIN_LOG_HEAD = "log-head"


def compute_signing_digest(domain: str, message: bytes) -> bytes:
    tag = b"veritrain/v1/" + domain.encode() + b"\x00"
    return hashlib.sha256(tag + hashlib.sha256(message).digest()).digest()


def generate_signing_key(seed: bytes | None = None) -> SigningKey:
    """A new key; `seed` (32 bytes) makes it reproducible for tests and presets."""
    return SigningKey(seed) if seed is not None else SigningKey.generate()


def get_public_key(signing_key: SigningKey) -> bytes:
    return bytes(signing_key.verify_key)


def sign(signing_key: SigningKey, domain: str, message: bytes) -> bytes:
    return signing_key.sign(compute_signing_digest(domain, message)).signature


def is_valid_signature(public_key: bytes, domain: str, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is `public_key`'s over (domain, message). Never raises."""
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        VerifyKey(public_key).verify(compute_signing_digest(domain, message), signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def parse_public_key(text: str, field: str = "public_key") -> bytes:
    """Hex public key from a request or file, validated."""
    try:
        key = bytes.fromhex(text)
    except (ValueError, TypeError) as err:
        raise InvalidInput("not hex", field) from err
    if len(key) != PUBLIC_KEY_SIZE:
        raise InvalidInput(f"must be {PUBLIC_KEY_SIZE} bytes", field)
    return key
