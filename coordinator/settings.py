"""Runtime settings from the environment (prefix VERITRAIN_), plus the constants they default to.

The coordinator's signing key comes from a key file (created 0600 on first start, like
ssh-keygen) or from VERITRAIN_SIGNING_KEY_HEX; a placeholder value refuses to start, so a
copy-pasted example config can never sign a public log.
"""

import os
from pathlib import Path
from typing import Literal

from nacl.signing import SigningKey
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocol.errors import InvalidInput
from protocol.signing import generate_signing_key
from sdk.keys import check_key_file_mode

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "placeholder", "secret", "xxx", "0" * 64}

# Limits a client can rely on (also served by GET /v1/info).
MAX_JSON_BODY = 256 * 1024
# The largest checkpoint, dataset or dispute state: bodies stream to disk, so this bounds storage,
# not memory (docs/coordinator.md, "Blob store").
MAX_CHECKPOINT_BODY = 16 * 1024**3
BLOB_GC_GRACE_S = 24 * 3600
MAX_SINGLE_PUT_BODY = 256 * 1024 * 1024
UPLOAD_SESSION_TTL_S = 24 * 3600
# Anti-abuse floors: a verifier slot must cost something to hold (free registrations let one
# party flood the draw), and a job must pay something (zero-bounty jobs are free spam).
MIN_VERIFIER_BOND = 100
MIN_BOUNTY = 1
# Per-key quotas and rate: what one key may hold open or stored, and how fast it may write.
MAX_OPEN_JOBS_PER_KEY = 100
MAX_DATASET_BYTES_PER_KEY = 1024 * 1024 * 1024
RATE_LIMIT_PER_S = 20.0
# Job terms (protocol.assurance): S ≥ margin·P/k; a verified job pays each verifier something.
STAKE_MARGIN = 5 / 3
MIN_VERIFIER_FEE = 1
VERIFIER_BOND_MULTIPLE = 10
FORCED_ERROR_PPM = 100_000  # φ = 10%, the simulator's market
RATE_LIMIT_BURST = 200


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VERITRAIN_", extra="ignore")

    database_url: str = "sqlite:///veritrain-coordinator.db"
    signing_key_file: Path | None = Path("veritrain-coordinator.key")
    signing_key_hex: SecretStr | None = None
    dev: bool = False  # enables the faucet and the protocol-clock offset; never in production
    # Signed requests: how far a timestamp may be from the server's clock, both ways.
    request_max_skew_s: int = Field(default=300, ge=1, le=3600)
    max_json_body: int = Field(default=MAX_JSON_BODY, ge=1024)
    max_checkpoint_body: int = Field(default=MAX_CHECKPOINT_BODY, ge=1024)
    # Market timing (seconds); a tiny preset for tests lowers them.
    min_bidding_s: int = Field(default=1, ge=0)
    heartbeat_timeout_s: int = Field(default=600, ge=1)
    commit_timeout_s: int = Field(default=24 * 3600, ge=1)
    move_timeout_s: int = Field(default=600, ge=1)  # bounds a dragged-out game (docs/dispute.md)
    challenge_window_s: int = Field(default=3600, ge=0)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    run_sweeper: bool = True
    referee_timeout_s: int = Field(default=600, ge=1)
    # The ruling phase has a deadline too: each referee attempt gets ruling_timeout_s (keep it
    # above referee_timeout_s + sweep_interval_s); after referee_attempts failures, or a missed
    # deadline, the dispute ends by protocol.dispute.RULING_FAILURE (docs/dispute.md).
    ruling_timeout_s: int = Field(default=900, ge=1)
    referee_attempts: int = Field(default=3, ge=1, le=100)
    # Standing stake a verifier must hold after registering; smallest bounty a job may offer.
    min_verifier_bond: int = Field(default=MIN_VERIFIER_BOND, ge=1)
    min_bounty: int = Field(default=MIN_BOUNTY, ge=1)
    stake_margin: float = Field(default=STAKE_MARGIN, ge=0, le=100)  # 0: no stake rule
    min_verifier_fee: int = Field(default=MIN_VERIFIER_FEE, ge=0)
    # A verifier drawn for (or challenging) a job holds at least this × the job's fee.
    verifier_bond_multiple: int = Field(default=VERIFIER_BOND_MULTIPLE, ge=0)
    # Share of drawn assignments that are forced errors, in parts per million (docs/dispute.md).
    forced_error_ppm: int = Field(default=FORCED_ERROR_PPM, ge=0, le=1_000_000)
    max_open_jobs_per_key: int = Field(default=MAX_OPEN_JOBS_PER_KEY, ge=1)
    # Volunteer assignments (open challenges, POST /v1/jobs/{id}/challenges) one job may hold.
    max_challenges_per_job: int = Field(default=16, ge=0)
    max_dataset_bytes_per_key: int = Field(default=MAX_DATASET_BYTES_PER_KEY, ge=1024)
    # Signed requests per key: sustained rate (0 turns the limit off) and burst.
    rate_limit_per_s: float = Field(default=RATE_LIMIT_PER_S, ge=0)
    rate_limit_burst: int = Field(default=RATE_LIMIT_BURST, ge=1)
    # Blob store (docs/coordinator.md, "Blob store"): where checkpoint, dataset and dispute-state
    # bytes live. filesystem: under blob_dir (default: "<database file>.blobs" beside a SQLite
    # database, else ./veritrain-blobs). s3: bucket s3_bucket, keys under s3_prefix, credentials
    # from boto3's standard chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, instance roles, ...).
    blob_store: Literal["filesystem", "s3"] = "filesystem"
    blob_dir: Path | None = None
    # staged uploads and upload sessions; default <blob_dir>/.uploads (s3: ./veritrain-uploads)
    upload_dir: Path | None = None
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # An upload session untouched this long is abandoned; an unreferenced blob this young is kept.
    upload_session_ttl_s: int = Field(default=UPLOAD_SESSION_TTL_S, ge=1)
    blob_gc_grace_s: int = Field(default=BLOB_GC_GRACE_S, ge=0)
    # A single-request PUT of a checkpoint or dataset is signed over its whole body, so it can
    # only be authenticated once received: it is capped lower; larger blobs use /v1/uploads.
    max_single_put_body: int = Field(default=MAX_SINGLE_PUT_BODY, ge=1024)
    # Request bodies a replica streams to disk at once; one more is answered 503 (retried by the
    # SDK). Each holds up to ~13 MiB in flight, so this bounds a replica's upload memory.
    max_receiving_bodies: int = Field(default=16, ge=1)
    # A job's checkpoint 0 (the root every solver must start from) is built in the replica when
    # its state is at most this large, else in a worker process: the replica's memory stays
    # bounded whatever the job's size.
    max_in_process_bytes: int = Field(default=64 * 2**20, ge=0)

    def get_blob_dir(self) -> Path:
        if self.blob_dir is not None:
            return self.blob_dir
        prefix = "sqlite:///"
        database = self.database_url.removeprefix(prefix)
        if self.database_url.startswith(prefix) and database and ":memory:" not in database:
            return Path(database + ".blobs")
        return Path("veritrain-blobs")

    def get_upload_dir(self) -> Path:
        if self.upload_dir is not None:
            return self.upload_dir
        if self.blob_store == "filesystem":
            return self.get_blob_dir() / ".uploads"  # same filesystem: a commit is a rename
        return Path("veritrain-uploads")

    def load_signing_key(self) -> SigningKey:
        """The coordinator's log key; refuses placeholders and key files others may access."""
        if self.signing_key_hex is not None:
            return _parse_key_hex(
                self.signing_key_hex.get_secret_value(), "VERITRAIN_SIGNING_KEY_HEX"
            )
        if self.signing_key_file is None:
            raise InvalidInput(
                "set VERITRAIN_SIGNING_KEY_FILE or VERITRAIN_SIGNING_KEY_HEX", "signing_key"
            )
        return _load_or_create_key_file(self.signing_key_file)


def _parse_key_hex(text: str, field: str) -> SigningKey:
    text = text.strip()
    if text.lower() in PLACEHOLDER_SECRETS or len(set(text)) <= 1:
        raise InvalidInput("refusing to start with a placeholder signing key", field)
    try:
        seed = bytes.fromhex(text)
    except ValueError as err:
        raise InvalidInput("signing key must be 64 hex digits", field) from err
    if len(seed) != 32:
        raise InvalidInput("signing key must be 64 hex digits", field)
    return generate_signing_key(seed)


def _load_or_create_key_file(path: Path) -> SigningKey:
    if path.exists():
        check_key_file_mode(path)  # the same rule as every other key file
        return _parse_key_hex(path.read_text(), str(path))
    key = generate_signing_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(bytes(key).hex() + "\n")
    return key


def tiny_preset(**overrides) -> Settings:
    """Settings for tests: short deadlines, dev features on, no background sweeper."""
    values = dict(
        dev=True,
        min_bidding_s=0,
        heartbeat_timeout_s=60,
        commit_timeout_s=120,
        move_timeout_s=60,
        challenge_window_s=30,
        run_sweeper=False,
        min_verifier_bond=10,
        min_bounty=1,
        stake_margin=0.25,  # small stakes, like the small bond; the rule's own tests use 5/3
        forced_error_ppm=0,  # balances in tests stay exact; forced errors have their own tests
    )
    values.update(overrides)
    return Settings(**values)
