"""Key files: created 0600, and refused — by the SDK, the CLI and the coordinator alike — when
group or others may read or write them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.settings import Settings
from sdk.keys import KeyFileExposed, create_key_file, load_key_file

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def test_a_created_key_file_is_private_and_loads(tmp_path):
    path = tmp_path / "a.key"
    key = create_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert bytes(load_key_file(path)) == bytes(key)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_key_file_others_may_access_is_refused(tmp_path, mode):
    path = tmp_path / "a.key"
    create_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileExposed, match=f"chmod 600 {path}"):
        load_key_file(path)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path, mode):
    path = tmp_path / "a.key"
    create_key_file(path)
    path.chmod(mode)
    load_key_file(path)


def test_the_coordinator_refuses_its_own_exposed_key_file(tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'x.db'}", signing_key_file=tmp_path / "c.key"
    )
    first = settings.load_signing_key()  # created 0600
    settings.signing_key_file.chmod(0o644)
    with pytest.raises(KeyFileExposed):
        settings.load_signing_key()
    settings.signing_key_file.chmod(0o600)
    assert bytes(settings.load_signing_key()) == bytes(first)


def test_the_cli_says_what_to_do_in_one_line(tmp_path):
    path = tmp_path / "a.key"
    create_key_file(path)
    path.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "keys", "show", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"veritrain: error: key: {path} is accessible by others (mode 644): run chmod 600 {path}"
    ]
