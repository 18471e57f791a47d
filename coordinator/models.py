"""SQLAlchemy 2.0 typed models of every table; the schema itself is owned by the Alembic migrations.

Keys and hashes are stored as lowercase hex strings (what the API speaks) so rows read the same
in psql, sqlite3 and the JSON log. Amounts are BIGINT micro-units. Times are epoch seconds.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from protocol.wire import BidStatus

HEX64 = String(64)


class Base(DeclarativeBase):
    pass


# --- ledger ----------------------------------------------------------------------------------


class LedgerAccount(Base):
    """One balance. `kind` is available | escrow | stake | burn | fees | mint; mint alone may go
    negative (it is where deposits and faucet money come from)."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("kind", "owner", "job_id", name="uq_ledger_accounts_key"),
        CheckConstraint("balance >= 0 OR kind = 'mint'", name="ck_ledger_accounts_nonnegative"),
        Index("ix_ledger_accounts_owner", "owner"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(64), default="")
    job_id: Mapped[str] = mapped_column(String(64), default="")
    balance: Mapped[int] = mapped_column(BigInteger, default=0)


class Posting(Base):
    """One leg of a balanced movement; the movement is identified by its public log entry."""

    __tablename__ = "postings"
    __table_args__ = (Index("ix_postings_account", "account_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    log_index: Mapped[int] = mapped_column(BigInteger)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    delta: Mapped[int] = mapped_column(BigInteger)


# --- requests --------------------------------------------------------------------------------


class Nonce(Base):
    __tablename__ = "nonces"
    __table_args__ = (Index("ix_nonces_expires_at", "expires_at"),)

    public_key: Mapped[str] = mapped_column(HEX64, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"

    public_key: Mapped[str] = mapped_column(HEX64, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(HEX64)
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


# --- public log ------------------------------------------------------------------------------


class LogEntry(Base):
    __tablename__ = "log_entries"

    index: Mapped[int] = mapped_column("idx", BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # canonical JSON, exactly the signed bytes
    leaf_hash: Mapped[str] = mapped_column(HEX64)
    signature: Mapped[str] = mapped_column(String(128))


class LogState(Base):
    """Singleton row: the log's size, last leaf hash and RFC 9162 frontier. Locking it
    serialises appends, so the log is one chain however many writers there are."""

    __tablename__ = "log_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(HEX64)
    frontier: Mapped[str] = mapped_column(Text, default="")  # comma-separated hex subtree roots
    clock_offset: Mapped[float] = mapped_column(Float, default=0.0)  # dev-only protocol clock


# --- market ----------------------------------------------------------------------------------


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_deadline", "state", "deadline"),
        Index("ix_jobs_submitter_state", "submitter", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(HEX64, unique=True)
    submitter: Mapped[str] = mapped_column(HEX64)
    spec_json: Mapped[str] = mapped_column(Text)
    profile_label: Mapped[str] = mapped_column(String(128))
    bounty: Mapped[int] = mapped_column(BigInteger)
    min_stake: Mapped[int] = mapped_column(BigInteger)
    verifier_fee: Mapped[int] = mapped_column(BigInteger)  # per verifier, out of the bounty
    # standing stake a verifier needs for this job (fixed at submission; 0 before revision 0005)
    verifier_bond: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # share (ppm) of drawn assignments that are forced errors (fixed at submission; 0 before 0005)
    forced_error_ppm: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_verifiers: Mapped[int] = mapped_column(Integer)
    num_segments: Mapped[int] = mapped_column(Integer)
    num_checkpoints: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    bidding_deadline: Mapped[float] = mapped_column(Float)
    solver: Mapped[str | None] = mapped_column(HEX64, nullable=True)
    price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stake: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deadline: Mapped[float] = mapped_column(Float)  # next move due (bidding: its deadline)
    commit_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    trajectory_root: Mapped[str | None] = mapped_column(HEX64, nullable=True)
    final_model_root: Mapped[str | None] = mapped_column(HEX64, nullable=True)
    commitment_signature: Mapped[str | None] = mapped_column(String(128), nullable=True)
    selection_seed: Mapped[str | None] = mapped_column(HEX64, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # canonical JSON {step: loss} the solver reported with its commitment: not signed, not
    # verified, shown as such (revision 0006; NULL when none was reported)
    reported_losses: Mapped[str | None] = mapped_column(Text, nullable=True)
    # its training state in bytes, fixed at submission: the draw passes over verifiers that
    # declared less (revision 0008; NULL for older jobs: no bound)
    state_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Bid(Base):
    __tablename__ = "bids"
    __table_args__ = (UniqueConstraint("job_id", "bidder", name="uq_bids_job_bidder"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id"))
    bidder: Mapped[str] = mapped_column(HEX64)
    price: Mapped[int] = mapped_column(BigInteger)
    stake: Mapped[int] = mapped_column(BigInteger)
    profile_label: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default=BidStatus.OPEN)


# Blob namespaces: the same bytes may live under several kinds, and a lookup in one kind never
# sees another's (a checkpoint's hash is not a dataset reference).
BLOB_CHECKPOINT = "checkpoint"
BLOB_DATASET = "dataset"
BLOB_STATE = "state"  # a dispute party's supplied game state


class Blob(Base):
    """A content-addressed blob (key: namespace and SHA-256 of the bytes). The bytes live in the
    blob store (coordinator.blobstore); the row is what the ledger knows: address, size, owner."""

    __tablename__ = "blobs"
    __table_args__ = (
        CheckConstraint("kind IN ('checkpoint', 'dataset', 'state')", name="ck_blobs_kind"),
        Index("ix_blobs_uploader_kind", "uploader", "kind"),
    )

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    sha256: Mapped[str] = mapped_column(HEX64, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # the key whose upload stored it first (what its quota counts); NULL before quotas existed
    uploader: Mapped[str | None] = mapped_column(HEX64, nullable=True)
    # when the row was written (GC's grace period); 0 for rows from before revision 0007
    created_at: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # bytes of a row written before revision 0007, until the coordinator's start-up moves them
    # into the blob store (coordinator.blobstore.legacy); NULL afterwards
    legacy_data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class UploadSession(Base):
    """A resumable upload (coordinator/uploads): `received` bytes of the declared `size` are
    staged on disk; the commit checks they hash to `sha256` and stores them under `kind`.
    `target` is canonical JSON of what the blob is for (a checkpoint's job, index, step and
    proof; {} for a dataset)."""

    __tablename__ = "upload_sessions"
    __table_args__ = (
        Index("ix_upload_sessions_owner_sha256", "owner", "kind", "sha256"),
        Index("ix_upload_sessions_updated_at", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(HEX64)
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(HEX64)
    size: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    target: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        ForeignKeyConstraint(
            ["blob_kind", "blob_sha256"], ["blobs.kind", "blobs.sha256"], name="fk_checkpoints_blob"
        ),
        CheckConstraint("blob_kind = 'checkpoint'", name="ck_checkpoints_blob_kind"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id"), primary_key=True)
    index: Mapped[int] = mapped_column("idx", Integer, primary_key=True, autoincrement=False)
    step: Mapped[int] = mapped_column(BigInteger)
    state_root: Mapped[str] = mapped_column(HEX64)
    blob_kind: Mapped[str] = mapped_column(String(16), default=BLOB_CHECKPOINT)
    blob_sha256: Mapped[str] = mapped_column(HEX64)


class Verifier(Base):
    __tablename__ = "verifiers"

    public_key: Mapped[str] = mapped_column(HEX64, primary_key=True)
    profiles: Mapped[str] = mapped_column(Text)  # JSON list of profile labels
    registered_at: Mapped[float] = mapped_column(Float)
    # the largest training state it replays (bytes); None: no bound declared
    max_state_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VerifierProfile(Base):
    """One (verifier, profile) pair: `verifiers.profiles` as rows, so the draw's candidates
    for a profile are one indexed query instead of a scan of every verifier."""

    __tablename__ = "verifier_profiles"
    __table_args__ = (Index("ix_verifier_profiles_profile_label", "profile_label", "public_key"),)

    public_key: Mapped[str] = mapped_column(ForeignKey("verifiers.public_key"), primary_key=True)
    profile_label: Mapped[str] = mapped_column(String(128), primary_key=True)


class Assignment(Base):
    """Verifier `verifier` replays segment `segment` (checkpoint i -> i+1) of `job_id`."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint(
            "job_id", "verifier", "segment", name="uq_assignments_job_verifier_segment"
        ),
        Index("ix_assignments_state_deadline", "state", "deadline"),
        Index("ix_assignments_verifier", "verifier"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id"))
    verifier: Mapped[str] = mapped_column(HEX64)
    segment: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    commit_hash: Mapped[str | None] = mapped_column(HEX64, nullable=True)
    claimed_root: Mapped[str | None] = mapped_column(HEX64, nullable=True)
    deadline: Mapped[float] = mapped_column(Float)
    # opened by the verifier's own challenge (POST /v1/jobs/{id}/challenges), not drawn: never
    # paid a fee, never replaced, invisible to the draw's replacement rules (migration 0004)
    volunteer: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Dispute(Base):
    """A bisection game; `state_json` is protocol.dispute's JSON-serialisable state."""

    __tablename__ = "disputes"
    __table_args__ = (Index("ix_disputes_status_deadline", "status", "deadline"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id"))
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"))
    status: Mapped[str] = mapped_column(String(16))
    state_json: Mapped[str] = mapped_column(Text)
    deadline: Mapped[float] = mapped_column(Float)
    winner: Mapped[str | None] = mapped_column(String(16), nullable=True)
