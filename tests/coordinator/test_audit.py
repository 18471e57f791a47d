"""`veritrain audit` agrees with the database, and notices when they differ."""

import json

import sqlalchemy as sa
from nacl.signing import SigningKey

from cli.audit_cmd import main as audit_main


def _some_movements(make_client):
    alice, bob = make_client(SigningKey.generate()), make_client(SigningKey.generate())
    alice.faucet(1000)
    bob.faucet(50)
    alice.transfer(bob.public_key, 300)
    bob.transfer(alice.public_key, 20)
    return alice, bob


def test_audit_agrees_after_movements(server, make_client, capsys):
    _some_movements(make_client)
    assert audit_main(["audit", server.url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["log_size"] == 4 and report["accounts_checked"] == 3


def test_audit_reports_a_tampered_balance(server, make_client, capsys):
    alice, _ = _some_movements(make_client)
    engine = sa.create_engine(server.settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE ledger_accounts SET balance = balance + 5 WHERE owner = :o"),
            {"o": alice.public_key},
        )
    engine.dispose()
    assert audit_main(["audit", server.url]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and f"available:{alice.public_key}:" in out


def test_audit_reports_a_rewritten_log_entry(server, make_client, capsys):
    _some_movements(make_client)
    engine = sa.create_engine(server.settings.database_url)
    with engine.begin() as conn:
        body = conn.execute(sa.text("SELECT body FROM log_entries WHERE idx = 2")).scalar_one()
        forged = body.replace('"amount":300', '"amount":301')
        conn.execute(sa.text("UPDATE log_entries SET body = :b WHERE idx = 2"), {"b": forged})
    engine.dispose()
    assert audit_main(["audit", server.url]) == 1
    out = capsys.readouterr().out
    assert (
        "entry 2: leaf hash does not match" in out and "entry 2: bad coordinator signature" in out
    )


def test_audit_rejects_a_different_pinned_key(server, make_client, capsys):
    _some_movements(make_client)
    other = bytes(SigningKey.generate().verify_key).hex()
    assert audit_main(["audit", server.url, "--key", other]) == 1
    assert "signed by a different key" in capsys.readouterr().out


def test_audit_checks_an_earlier_head_is_a_prefix(server, make_client, capsys):
    alice, bob = _some_movements(make_client)
    assert audit_main(["audit", server.url, "--json"]) == 0
    earlier = json.loads(capsys.readouterr().out)
    alice.transfer(bob.public_key, 1)
    previous = f"{earlier['log_size']}:{earlier['root']}"
    assert audit_main(["audit", server.url, "--previous", previous]) == 0
    forged = f"{earlier['log_size']}:{'00' * 32}"
    assert audit_main(["audit", server.url, "--previous", forged]) == 1
    assert "not an extension" in capsys.readouterr().out
