"""the largest training state a verifier takes, and each job's state size

`verifiers.max_state_bytes`: a verifier declares at registration the largest state it can replay; the draw (and a
challenge) passes over it for a job whose state is larger, so a submitter cannot get it
penalised by posting a job beyond its memory. NULL (every row before this revision, and a
verifier that declares nothing): no bound. `jobs.state_bytes`: the job's training state in
bytes, fixed (and logged) at submission, which the draw compares with; NULL for jobs from
before this revision, whose draws stay unbounded.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("verifiers", sa.Column("max_state_bytes", sa.BigInteger(), nullable=True))
    op.add_column("jobs", sa.Column("state_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "state_bytes")
    op.drop_column("verifiers", "max_state_bytes")
