"""Key files: an ed25519 seed as 64 hex digits, created 0600, never overwritten, and refused when
anyone but the owner may read or write them (as ssh refuses an exposed private key)."""

import os
import stat
from pathlib import Path

from nacl.signing import SigningKey

from protocol.errors import InvalidInput

PRIVATE_MODE = 0o600
EXPOSING_BITS = stat.S_IRWXG | stat.S_IRWXO  # any access by group or others


class KeyFileExposed(InvalidInput):
    """A key file that group or others can read or write: its key may already be someone else's."""

    code = "key_file_exposed"


def check_key_file_mode(path: Path) -> None:
    """Refuse a key file that group or others may access (POSIX modes only)."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & EXPOSING_BITS:
        raise KeyFileExposed(
            f"{path} is accessible by others (mode {mode:o}): run chmod 600 {path}", "key"
        )


def create_key_file(path: Path) -> SigningKey:
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError as err:
        raise InvalidInput(f"{path} exists: refusing to overwrite a key", "out") from err
    with os.fdopen(fd, "w") as handle:
        handle.write(bytes(key).hex() + "\n")
    return key


def load_key_file(path: Path) -> SigningKey:
    try:
        check_key_file_mode(path)
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
