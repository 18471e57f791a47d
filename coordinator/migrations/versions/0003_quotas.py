"""per-key quotas: who uploaded each blob; open jobs by submitter

`blobs.uploader` names the key whose upload first stored the bytes (NULL for rows stored before
this revision, which count against nobody), so a key's stored dataset bytes are one indexed sum.
`ix_jobs_submitter_state` makes a submitter's open jobs one indexed count.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Plain ALTERs, no batch mode: recreating `blobs` on SQLite would trip the checkpoints' foreign
# key, and SQLite (3.35+) adds and drops a column in place.
def upgrade() -> None:
    op.add_column("blobs", sa.Column("uploader", sa.String(length=64), nullable=True))
    op.create_index("ix_blobs_uploader_kind", "blobs", ["uploader", "kind"], unique=False)
    op.create_index("ix_jobs_submitter_state", "jobs", ["submitter", "state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_submitter_state", table_name="jobs")
    op.drop_index("ix_blobs_uploader_kind", table_name="blobs")
    op.drop_column("blobs", "uploader")
