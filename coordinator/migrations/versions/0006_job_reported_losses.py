"""the loss curve the solver reported with its commitment (shown, never verified)

`jobs.reported_losses` holds canonical JSON {step: loss} (steps as decimal strings, at most
10,000 finite floats, bounded by the request schema). It is not part of the signed commitment
bytes and nothing checks it: the dashboard labels it "reported by the solver, not verified".
Rows from before this revision, and commitments without a curve, hold NULL.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# Plain ALTERs, no batch mode (as 0003 and 0005): SQLite (3.35+) adds and drops a column in place.
def upgrade() -> None:
    op.add_column("jobs", sa.Column("reported_losses", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "reported_losses")
