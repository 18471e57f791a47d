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
