"""job terms: the verifier bond and the forced-error rate a job fixes at submission

`jobs.verifier_bond` is the standing stake a verifier must hold to be drawn for the job or to
challenge it; `jobs.forced_error_ppm` the share of its drawn assignments that are forced errors
(a jackpot for the verifier that recomputed). Both are fixed (and logged) when the job is
submitted, so a change of settings later never changes who was eligible or what was forced.
Rows from before this revision get 0: no bond beyond registration, no forced errors.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# Plain ALTERs, no batch mode (as 0003): SQLite (3.35+) adds and drops a column in place.
def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("verifier_bond", sa.BigInteger(), nullable=False, server_default="0")
    )
    op.add_column(
        "jobs", sa.Column("forced_error_ppm", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("jobs", "forced_error_ppm")
    op.drop_column("jobs", "verifier_bond")
