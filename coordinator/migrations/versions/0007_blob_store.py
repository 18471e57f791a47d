"""blob bytes leave SQL for the blob store; resumable upload sessions

`blobs` keeps the address, size and uploader of every blob; its bytes move to the blob store
(coordinator.blobstore). `blobs.data` becomes the nullable `blobs.legacy_data`, still holding
the bytes of rows written before this revision: the migration cannot move them itself, because
it runs with a database connection only — it does not know where the store is (a directory, an
S3 bucket and its credentials are the coordinator's settings) and a write to a store is not part
of the schema's transaction. The coordinator's start-up does it (`coordinator.blobstore.legacy`:
each row's bytes are stored, verified, then NULLed, one row per transaction, so an interrupted
start resumes). `blobs.created_at` (0 for existing rows) gives GC its grace period.
`upload_sessions` holds resumable uploads (coordinator/uploads).

Downgrade puts the bytes back only where `legacy_data` still holds them: below 0007 the bytes
must be in SQL, so it refuses when a row's bytes already live in the store alone.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# Plain ALTERs, no batch mode (as 0003): recreating `blobs` on SQLite would trip the
# checkpoints' foreign key, and SQLite (3.35+) adds and drops a column in place.
def upgrade() -> None:
    op.add_column("blobs", sa.Column("legacy_data", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE blobs SET legacy_data = data")
    op.drop_column("blobs", "data")
    op.add_column("blobs", sa.Column("created_at", sa.Float(), nullable=False, server_default="0"))
    op.create_table(
        "upload_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_upload_sessions_owner_sha256", "upload_sessions", ["owner", "kind", "sha256"]
    )
    op.create_index("ix_upload_sessions_updated_at", "upload_sessions", ["updated_at"])


def downgrade() -> None:
    moved = (
        op.get_bind()
        .exec_driver_sql("SELECT count(*) FROM blobs WHERE legacy_data IS NULL")
        .scalar_one()
    )
    if moved:
        raise RuntimeError(
            f"{moved} blobs live only in the blob store: copy their bytes back into "
            "blobs.legacy_data before downgrading below 0007"
        )
    op.drop_index("ix_upload_sessions_updated_at", table_name="upload_sessions")
    op.drop_index("ix_upload_sessions_owner_sha256", table_name="upload_sessions")
    op.drop_table("upload_sessions")
    op.drop_column("blobs", "created_at")
    op.add_column("blobs", sa.Column("data", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE blobs SET data = legacy_data")
    op.drop_column("blobs", "legacy_data")
    if op.get_bind().dialect.name == "postgresql":  # SQLite cannot tighten a column in place
        op.alter_column("blobs", "data", nullable=False)
