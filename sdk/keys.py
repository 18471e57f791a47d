"""Key files: an ed25519 seed as 64 hex digits, created 0600, never overwritten."""

import os
from pathlib import Path

from nacl.signing import SigningKey

from protocol.errors import InvalidInput


def create_key_file(path: Path) -> SigningKey:
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise InvalidInput(f"{path} exists: refusing to overwrite a key", "out") from err
    with os.fdopen(fd, "w") as handle:
        handle.write(bytes(key).hex() + "\n")
    return key


def load_key_file(path: Path) -> SigningKey:
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise InvalidInput(f"cannot read key file {path} ({err.strerror})", "key") from err
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise InvalidInput(f"{path} is not a veritrain key file (64 hex digits)", "key")
    return SigningKey(seed)


def load_or_create_key_file(path: Path) -> SigningKey:
    return load_key_file(path) if path.exists() else create_key_file(path)
