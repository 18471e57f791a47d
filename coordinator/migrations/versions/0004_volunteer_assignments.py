"""open challenge window: assignments a verifier opened itself

`assignments.volunteer` marks an assignment a bonded verifier opened by challenging a segment
(`POST /v1/jobs/{id}/challenges`) rather than one drawn from the job's seed: it is never paid a
fee and never replaced, and the draw's replacement rules ignore it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# Plain ALTERs, no batch mode (as 0003): SQLite (3.35+) adds and drops a column in place.
def upgrade() -> None:
    op.add_column(
        "assignments",
        sa.Column("volunteer", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("assignments", "volunteer")
