"""verifier_profiles table; blobs keyed by (kind, sha256)

verifier_profiles holds `verifiers.profiles` as rows, indexed by profile label, so a job's
candidate verifiers are one query. Blobs gain a namespace so a checkpoint's hash is never served
as a dataset: existing rows named by a checkpoint become 'checkpoint', those named by a dispute's
state 'state', the rest 'dataset'.

Constraint names follow PostgreSQL's defaults (`<table>_pkey`, `<table>_<column>_fkey`); the
naming convention gives SQLite's unnamed constraints the same names, so one script serves both.

Revision ID: 0002
Revises: 0001
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NAMING = {"pk": "%(table_name)s_pkey", "fk": "%(table_name)s_%(column_0_name)s_fkey"}
CHECKPOINT_FK = "checkpoints_blob_sha256_fkey"


def upgrade() -> None:
    _add_blob_kinds()
    _add_verifier_profiles()


def downgrade() -> None:
    _drop_verifier_profiles()
    _drop_blob_kinds()


# --- blobs ------------------------------------------------------------------------------------


def _add_blob_kinds() -> None:
    with op.batch_alter_table("checkpoints", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint(CHECKPOINT_FK, type_="foreignkey")
        batch_op.add_column(
            sa.Column(
                "blob_kind", sa.String(length=16), nullable=False, server_default="checkpoint"
            )
        )
    with op.batch_alter_table("blobs", naming_convention=NAMING) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="dataset")
        )
        batch_op.drop_constraint("blobs_pkey", type_="primary")
        batch_op.create_primary_key("blobs_pkey", ["kind", "sha256"])
        batch_op.create_check_constraint(
            "ck_blobs_kind", "kind IN ('checkpoint', 'dataset', 'state')"
        )
    _classify_existing_blobs()
    with op.batch_alter_table("checkpoints", naming_convention=NAMING) as batch_op:
        batch_op.create_check_constraint("ck_checkpoints_blob_kind", "blob_kind = 'checkpoint'")
        batch_op.create_foreign_key(
            "fk_checkpoints_blob", "blobs", ["blob_kind", "blob_sha256"], ["kind", "sha256"]
        )


def _classify_existing_blobs() -> None:
    conn = op.get_bind()
    conn.exec_driver_sql(
        "UPDATE blobs SET kind = 'checkpoint' WHERE sha256 IN (SELECT blob_sha256 FROM checkpoints)"
    )
    states = {
        json.loads(text).get("state_sha256")
        for (text,) in conn.exec_driver_sql("SELECT state_json FROM disputes")
    }
    for sha256 in states - {None}:
        conn.execute(
            sa.text("UPDATE blobs SET kind = 'state' WHERE sha256 = :h AND kind = 'dataset'"),
            {"h": sha256},
        )


def _drop_blob_kinds() -> None:
    with op.batch_alter_table("checkpoints", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint("fk_checkpoints_blob", type_="foreignkey")
        batch_op.drop_constraint("ck_checkpoints_blob_kind", type_="check")
        batch_op.drop_column("blob_kind")
    # One row per hash survives, preferring the kind a foreign key may still need.
    conn = op.get_bind()
    conn.exec_driver_sql(
        "DELETE FROM blobs WHERE kind <> 'checkpoint' "
        "AND sha256 IN (SELECT sha256 FROM blobs WHERE kind = 'checkpoint')"
    )
    conn.exec_driver_sql(
        "DELETE FROM blobs WHERE kind = 'state' "
        "AND sha256 IN (SELECT sha256 FROM blobs WHERE kind = 'dataset')"
    )
    with op.batch_alter_table("blobs", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint("ck_blobs_kind", type_="check")
        batch_op.drop_constraint("blobs_pkey", type_="primary")
        batch_op.drop_column("kind")
        batch_op.create_primary_key("blobs_pkey", ["sha256"])
    with op.batch_alter_table("checkpoints", naming_convention=NAMING) as batch_op:
        batch_op.create_foreign_key(CHECKPOINT_FK, "blobs", ["blob_sha256"], ["sha256"])


# --- verifier profiles ------------------------------------------------------------------------


def _add_verifier_profiles() -> None:
    table = op.create_table(
        "verifier_profiles",
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("profile_label", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["public_key"], ["verifiers.public_key"]),
        sa.PrimaryKeyConstraint("public_key", "profile_label"),
    )
    with op.batch_alter_table("verifier_profiles", schema=None) as batch_op:
        batch_op.create_index(
            "ix_verifier_profiles_profile_label", ["profile_label", "public_key"], unique=False
        )
    rows = op.get_bind().exec_driver_sql("SELECT public_key, profiles FROM verifiers")
    pairs = [
        {"public_key": key, "profile_label": label}
        for key, profiles in rows
        for label in sorted(set(json.loads(profiles)))
    ]
    if pairs:
        op.bulk_insert(table, pairs)


def _drop_verifier_profiles() -> None:
    with op.batch_alter_table("verifier_profiles", schema=None) as batch_op:
        batch_op.drop_index("ix_verifier_profiles_profile_label")
    op.drop_table("verifier_profiles")
