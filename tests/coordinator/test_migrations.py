"""Migrations upgrade an empty database to head and downgrade it back to empty, on both engines."""

import sqlalchemy as sa

from coordinator.db import downgrade_database, make_engine, upgrade_database
from coordinator.models import Base
from tests.coordinator.server import database_url


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_and_downgrade_cleanly(backend, tmp_path):
    with database_url(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            assert _tables(engine) == set()
            upgrade_database(engine)
            assert _tables(engine) == set(Base.metadata.tables)
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT size FROM log_state").scalar_one() == 0
                checks = [
                    c["name"] for c in sa.inspect(conn).get_check_constraints("ledger_accounts")
                ]
                assert "ck_ledger_accounts_nonnegative" in checks
            downgrade_database(engine)
            assert _tables(engine) == set()
            upgrade_database(engine)  # and up again: the downgrade left nothing behind
            assert _tables(engine) == set(Base.metadata.tables)
        finally:
            engine.dispose()


def test_database_rejects_negative_balances_itself(backend, tmp_path):
    with database_url(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade_database(engine)
            insert = (
                "INSERT INTO ledger_accounts (kind, owner, job_id, balance) "
                "VALUES ('{kind}', 'x', '', -1)"
            )
            with engine.begin() as conn:
                conn.exec_driver_sql(insert.format(kind="mint"))  # mint alone may go negative
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(insert.format(kind="available"))
            except sa.exc.IntegrityError:
                pass
            else:
                raise AssertionError("CHECK constraint did not reject a negative balance")
        finally:
            engine.dispose()


def test_0002_backfills_profiles_and_blob_kinds_and_reverts(backend, tmp_path):
    """Rows written under 0001 survive 0002: each verifier's JSON profiles become rows, a blob
    named by a checkpoint stays a checkpoint, any other blob becomes a dataset; and back."""
    ckpt, other, key = "c" * 64, "d" * 64, "a" * 64
    with database_url(backend, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade_database(engine, "0001")
            with engine.begin() as conn:
                _insert_0001_rows(conn, ckpt, other, key)
            upgrade_database(engine)
            with engine.connect() as conn:
                kinds = dict(conn.exec_driver_sql("SELECT sha256, kind FROM blobs").all())
                labels = conn.exec_driver_sql(
                    "SELECT profile_label FROM verifier_profiles ORDER BY profile_label"
                ).scalars()
                assert kinds == {ckpt: "checkpoint", other: "dataset"}
                assert list(labels) == ["p", "q"]
            downgrade_database(engine, "0001")
            with engine.connect() as conn:
                blobs = conn.exec_driver_sql("SELECT sha256 FROM blobs ORDER BY sha256").scalars()
                assert list(blobs) == [ckpt, other]
        finally:
            engine.dispose()


def _insert_0001_rows(conn: sa.Connection, ckpt: str, other: str, key: str) -> None:
    conn.exec_driver_sql(
        f"INSERT INTO blobs (sha256, size, data) VALUES ('{ckpt}', 1, X'00'), ('{other}', 1, X'01')"
        if conn.dialect.name == "sqlite"
        else "INSERT INTO blobs (sha256, size, data) VALUES "
        f"('{ckpt}', 1, '\\x00'::bytea), ('{other}', 1, '\\x01'::bytea)"
    )
    conn.exec_driver_sql(
        "INSERT INTO jobs (job_id, submitter, spec_json, profile_label, bounty, min_stake, "
        "verifier_fee, num_verifiers, num_segments, num_checkpoints, state, created_at, "
        f"bidding_deadline, deadline) VALUES ('{'e' * 64}', '{key}', '{{}}', 'p', 1, 0, 0, 1, 1, "
        "2, 'bidding', 0, 0, 0)"
    )
    conn.exec_driver_sql(
        "INSERT INTO checkpoints (job_id, idx, step, state_root, blob_sha256) "
        f"VALUES ('{'e' * 64}', 0, 0, '{'0' * 64}', '{ckpt}')"
    )
    conn.exec_driver_sql(
        "INSERT INTO verifiers (public_key, profiles, registered_at) "
        f"VALUES ('{key}', '[\"q\", \"p\"]', 0)"
    )
