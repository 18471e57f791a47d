import pytest

from coordinator.app import create_app
from coordinator.settings import Settings
from protocol.errors import InvalidInput
from tests.coordinator.server import make_settings


@pytest.mark.parametrize("secret", ["changeme", "0" * 64, "", "aa" * 32])
def test_placeholder_signing_key_refuses_to_start(tmp_path, secret):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", signing_key_hex=secret)
    with pytest.raises(InvalidInput, match="placeholder"):
        create_app(settings)


def test_key_file_is_created_private_and_reused(tmp_path):
    settings = make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    first = settings.load_signing_key()
    assert (settings.signing_key_file.stat().st_mode & 0o777) == 0o600
    assert bytes(settings.load_signing_key()) == bytes(first)


def test_settings_read_the_veritrain_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("VERITRAIN_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("VERITRAIN_DEV", "true")
    settings = Settings()
    assert settings.database_url == "sqlite:///elsewhere.db" and settings.dev


def test_faucet_exists_only_with_the_dev_flag(tmp_path):
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, dev=False))
    paths = set(app.openapi()["paths"])
    assert "/v1/dev/faucet" not in paths and "/v1/accounts/transfer" in paths
