"""Alembic environment: run programmatically by coordinator.db.upgrade_database with a live
connection in `config.attributes["connection"]` (there is no alembic.ini)."""

from alembic import context

from coordinator.models import Base

target_metadata = Base.metadata


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
