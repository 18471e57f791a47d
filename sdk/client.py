"""Typed HTTP client of the coordinator: signs every mutating request, retries with the same
idempotency key, takes an injected httpx transport and explicit timeouts, and answers with the
frozen dataclasses of `sdk.responses`.

The wire format (signed-request message, header names, verification commit, tree head) is
protocol.wire's; this module only adds what needs a key and a clock (`compute_signed_headers`).
It imports no server code (no fastapi, no sqlalchemy, no coordinator).
"""

import hashlib
import json
import secrets
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from nacl.signing import SigningKey

from protocol.errors import InvalidInput
from protocol.signing import DOMAIN_REQUEST, get_public_key, sign
from protocol.spec import JobSpec, get_job_file_hashes
from protocol.state import METRIC_PREFIX
from protocol.state_stream import parse_header_length, parse_state_header
from protocol.wire import (
    HEADER_IDEMPOTENCY,
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    UNSIGNED_PAYLOAD,
    DisputeStatus,
    JobState,
    TreeHead,
    compute_request_message_for_digest,
)
from sdk.responses import (
    AccountView,
    AssignmentView,
    CheckpointView,
    ClockView,
    CoordinatorError,
    DatasetView,
    DisputeView,
    InfoView,
    InvalidResponse,
    JobEventView,
    JobView,
    LedgerAccountView,
    LogEntryView,
    MovementView,
    ProofJson,
    SweepView,
    TreeHeadJson,
    UploadView,
    VerifierView,
    parse_page,
    parse_response,
)
from sdk.transfers import (
    DEFAULT_PART_SIZE,
    compute_file_sha256,
    finish_download,
    get_partial_path,
    iter_file_range,
)

T = TypeVar("T")
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
RETRY_STATUSES = {429, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0  # a server asking for a longer wait gets its error back instead


def compute_signed_headers(
    key: SigningKey,
    method: str,
    target: str,
    body: bytes,
    idempotency_key: str = "",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    body_sha256 = hashlib.sha256(body).hexdigest()
    return compute_signed_headers_for_digest(
        key, method, target, body_sha256, idempotency_key, timestamp, nonce
    )


def compute_signed_headers_for_digest(
    key: SigningKey,
    method: str,
    target: str,
    body_sha256: str,
    idempotency_key: str = "",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The same headers from the body's hex SHA-256 (a body streamed from disk)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16)
    message = compute_request_message_for_digest(
        method, target, body_sha256, timestamp, nonce, idempotency_key
    )
    headers = {
        HEADER_KEY: get_public_key(key).hex(),
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(key, DOMAIN_REQUEST, message).hex(),
    }
    if idempotency_key:
        headers[HEADER_IDEMPOTENCY] = idempotency_key
    return headers


def _is_resumable(error: Exception) -> bool:
    """A part that failed on the way (or met a concurrent writer, or an offset that moved on)
    is resumed from the offset the coordinator reports; anything else is final."""
    if isinstance(error, httpx.TransportError):
        return True
    return isinstance(error, CoordinatorError) and error.status in (409, 429, 502, 503, 504)


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a 206 answer (Content-Range: bytes FIRST-LAST/SIZE)."""
    value = response.headers.get("Content-Range", "")
    first = value.removeprefix("bytes ").split("-", 1)[0]
    return int(first) if value.startswith("bytes ") and first.isdigit() else None


def _retry_wait_s(response: httpx.Response, backoff_s: float) -> float | None:
    """How long to wait before retrying `response`, or None when it is final. A 429 waits its
    Retry-After (whole seconds), if that is short enough; a write conflict or a gateway error
    clears fast, so it waits `backoff_s`."""
    if response.status_code not in RETRY_STATUSES:
        return None
    if response.status_code != 429:
        return backoff_s
    header = response.headers.get("Retry-After", "")
    if not (header.isascii() and header.isdigit()) or int(header) > MAX_RETRY_AFTER_S:
        return None
    return float(header)


class CoordinatorClient:
    """One account's view of a coordinator. `key` may be None for read-only use."""

    def __init__(
        self,
        base_url: str,
        key: SigningKey | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff_s: float = 0.05,
    ):
        self.key = key
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(base_url=base_url, transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "CoordinatorClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def public_key(self) -> str:
        if self.key is None:
            raise InvalidInput("this client has no signing key", "key")
        return get_public_key(self.key).hex()

    # --- transport ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        params: dict | None = None,
        signed: bool = False,
        idempotency_key: str | None = None,
        content_type: str = "application/json",
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        body = (
            content
            if content is not None
            else (b"" if json_body is None else json.dumps(json_body).encode())
        )
        if signed and idempotency_key is None:
            idempotency_key = uuid.uuid4().hex  # one key for every retry of this call
        for attempt in range(self.retries + 1):
            request = self._http.build_request(
                method,
                path,
                content=body,
                params=params,
                headers={"Content-Type": content_type} if body else {},
                **({"timeout": timeout} if timeout else {}),
            )
            if signed:
                target = request.url.raw_path.decode()
                request.headers.update(
                    compute_signed_headers(
                        self._require_key(), method, target, body, idempotency_key or ""
                    )
                )
            try:
                response = self._http.send(request)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                wait_s = self.backoff_s * 2**attempt
            else:
                wait_s = _retry_wait_s(response, self.backoff_s * 2**attempt)
                if wait_s is None or attempt == self.retries:
                    return self._checked(response)
            time.sleep(wait_s)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _require_key(self) -> SigningKey:
        if self.key is None:
            raise InvalidInput("this client has no signing key", "key")
        return self.key

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:200]}
            raise CoordinatorError(
                response.status_code, problem if isinstance(problem, dict) else {}
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as err:
            raise InvalidResponse(
                f"{response.request.url.path} answered a body that is not JSON"
            ) from err

    def _get_json(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._json(self._send("GET", path, params=clean or None))

    def _get(self, cls: type[T], path: str, **params: Any) -> T:
        return parse_response(cls, self._get_json(path, **params))

    def _post(
        self,
        cls: type[T],
        path: str,
        body: Any = None,
        idempotency_key: str | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> T:
        response = self._send(
            "POST",
            path,
            json_body=body if body is not None else {},
            signed=True,
            idempotency_key=idempotency_key,
            timeout=timeout,
        )
        return parse_response(cls, self._json(response))

    def _put_bytes(self, cls: type[T], path: str, data: bytes, params: dict | None = None) -> T:
        response = self._send(
            "PUT",
            path,
            content=data,
            params=params,
            signed=True,
            content_type="application/octet-stream",
        )
        return parse_response(cls, self._json(response))

    # --- service -----------------------------------------------------------------------------

    def get_info(self) -> InfoView:
        return self._get(InfoView, "/v1/info")

    # --- accounts and ledger -----------------------------------------------------------------

    def faucet(self, amount: int, idempotency_key: str | None = None) -> MovementView:
        return self._post(MovementView, "/v1/dev/faucet", {"amount": amount}, idempotency_key)

    def transfer(self, to: str, amount: int, idempotency_key: str | None = None) -> MovementView:
        return self._post(
            MovementView, "/v1/accounts/transfer", {"to": to, "amount": amount}, idempotency_key
        )

    def get_account(self, public_key: str | None = None) -> AccountView:
        return self._get(AccountView, f"/v1/accounts/{public_key or self.public_key}")

    def get_balance(self, public_key: str | None = None) -> int:
        return self.get_account(public_key).available

    def iter_ledger_accounts(self, page: int = 500) -> Iterator[LedgerAccountView]:
        after = 0
        while True:
            body = self._get_json("/v1/ledger/accounts", after=after, limit=page)
            rows = parse_page(LedgerAccountView, body, "accounts")
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].id

    def advance_clock(self, seconds: float) -> ClockView:
        return self._post(ClockView, "/v1/dev/clock", {"advance_s": seconds})

    def sweep(self) -> SweepView:
        return self._post(SweepView, "/v1/sweep", {})

    # --- public log --------------------------------------------------------------------------

    def get_tree_head(self) -> TreeHead:
        return self._get(TreeHeadJson, "/v1/log/head").to_tree_head()

    def get_log_entries(self, start: int, limit: int = 1000) -> list[LogEntryView]:
        return parse_page(
            LogEntryView, self._get_json("/v1/log/entries", start=start, limit=limit), "entries"
        )

    def iter_log_entries(self, size: int, page: int = 1000) -> Iterator[LogEntryView]:
        start = 0
        while start < size:
            rows = self.get_log_entries(start, min(page, size - start))
            if not rows:
                return
            yield from rows
            start += len(rows)

    def get_inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return list(self._get(ProofJson, "/v1/log/proof/inclusion", index=index, size=size).proof)

    def get_consistency_proof(self, old: int, new: int) -> list[bytes]:
        return list(self._get(ProofJson, "/v1/log/proof/consistency", old=old, new=new).proof)

    # --- market ------------------------------------------------------------------------------

    def submit_job(
        self,
        spec: dict,
        bounty: int,
        *,
        min_stake: int | None = None,
        verifier_fee: int | None = None,
        num_verifiers: int = 1,
        num_segments: int = 1,
        bidding_s: float = 60,
        idempotency_key: str | None = None,
        assurance: str | None = None,
        detection: float | None = None,
    ) -> JobEventView:
        """`assurance` (a level of protocol.assurance) or `detection` sets num_segments and
        num_verifiers for the coordinator; an omitted `min_stake` or `verifier_fee` is derived
        by it (the stake rule, the default fee)."""
        body = {
            "spec": spec,
            "bounty": bounty,
            "num_verifiers": num_verifiers,
            "num_segments": num_segments,
            "bidding_s": bidding_s,
        }
        optional = {
            "min_stake": min_stake,
            "verifier_fee": verifier_fee,
            "assurance": assurance,
            "detection": detection,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return self._post(JobEventView, "/v1/jobs", body, idempotency_key)

    def list_jobs(
        self,
        state: JobState | None = None,
        profile: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[JobView]:
        """One page of jobs; pass the last job's `id` as `after` for the next."""
        body = self._get_json("/v1/jobs", state=state, profile=profile, after=after, limit=limit)
        return parse_page(JobView, body, "jobs")

    def get_job(self, job_id: str) -> JobView:
        """The job with its spec and its bids."""
        return self._get(JobView, f"/v1/jobs/{job_id}")

    def bid(
        self, job_id: str, price: int, stake: int, profile: str, idempotency_key: str | None = None
    ) -> JobEventView:
        """A second bid by the same account is refused with ProblemCode.ALREADY_EXISTS."""
        return self._post(
            JobEventView,
            f"/v1/jobs/{job_id}/bids",
            {"price": price, "stake": stake, "profile": profile},
            idempotency_key,
        )

    def award(self, job_id: str) -> JobEventView:
        return self._post(JobEventView, f"/v1/jobs/{job_id}/award")

    def heartbeat(self, job_id: str) -> JobEventView:
        return self._post(JobEventView, f"/v1/jobs/{job_id}/heartbeat")

    def report_invalid_spec(self, job_id: str) -> JobEventView:
        """Tell the coordinator the job this solver won cannot be run; it checks the claim."""
        return self._post(JobEventView, f"/v1/jobs/{job_id}/invalid-spec")

    def commit(
        self,
        job_id: str,
        commitment: dict,
        signature: bytes,
        initial_state_root: bytes,
        initial_proof: list[bytes],
        *,
        losses: dict[int, float] | None = None,
    ) -> JobEventView:
        """Commit the trajectory, with checkpoint 0's root and its proof at leaf 0: the
        coordinator checks it is the spec's initial state (a planted start is slashed).

        `losses` ({step: loss}, at most 10,000 finite values) is the loss curve to show on the
        dashboard: reported, not signed and not verified."""
        body = {
            "commitment": commitment,
            "signature": signature.hex(),
            "initial_state_root": initial_state_root.hex(),
            "initial_proof": [h.hex() for h in initial_proof],
        }
        if losses is not None:
            body["losses"] = {str(step): loss for step, loss in losses.items()}
        return self._post(JobEventView, f"/v1/jobs/{job_id}/commitment", body)

    def upload_checkpoint(
        self, job_id: str, index: int, step: int, data: bytes, proof: list[bytes]
    ) -> CheckpointView:
        params = {"step": step, "proof": ",".join(p.hex() for p in proof)}
        return self._put_bytes(
            CheckpointView, f"/v1/jobs/{job_id}/checkpoints/{index}", data, params
        )

    def upload_dataset(self, data: bytes) -> DatasetView:
        """Upload a safetensors dataset file; its address is its SHA-256."""
        sha256 = hashlib.sha256(data).hexdigest()
        return self._put_bytes(DatasetView, f"/v1/datasets/{sha256}", data)

    def download_dataset(self, sha256: str) -> bytes:
        data = self._send("GET", f"/v1/datasets/{sha256}").content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise InvalidResponse("dataset bytes do not match their SHA-256")
        return data

    def download_checkpoint(self, job_id: str, index: int) -> bytes:
        return self._send("GET", f"/v1/jobs/{job_id}/checkpoints/{index}").content

    def get_checkpoint_info(self, job_id: str, index: int) -> CheckpointView:
        return self._get(CheckpointView, f"/v1/jobs/{job_id}/checkpoints/{index}/info")

    # --- streaming, resumable transfers (sdk/transfers.py) -----------------------------------

    def upload_dataset_file(self, path: Path, part_size: int = DEFAULT_PART_SIZE) -> DatasetView:
        """Upload a safetensors dataset file from disk, resumably; its address is its SHA-256."""
        return parse_response(DatasetView, self.upload_file("dataset", path, part_size))

    def upload_checkpoint_file(
        self,
        job_id: str,
        index: int,
        step: int,
        path: Path,
        proof: list[bytes],
        part_size: int = DEFAULT_PART_SIZE,
        sha256: str | None = None,
    ) -> CheckpointView:
        target = {"job_id": job_id, "index": index, "step": step, "proof": [p.hex() for p in proof]}
        return parse_response(
            CheckpointView, self.upload_file("checkpoint", path, part_size, target, sha256)
        )

    def upload_file(
        self,
        kind: str,
        path: Path,
        part_size: int = DEFAULT_PART_SIZE,
        target: dict | None = None,
        sha256: str | None = None,
    ) -> Any:
        """Declare the upload (finding the open session of an earlier, interrupted attempt),
        send the file in signed parts from the committed offset on, then commit; a part that
        fails is resumed from the offset the coordinator reports, up to `retries` times.
        `sha256`: the file's, when the caller knows it (else it is hashed first)."""
        path = Path(path)
        size = path.stat().st_size
        body = {"kind": kind, "sha256": sha256 or compute_file_sha256(path), "size": size}
        upload = self._post(UploadView, "/v1/uploads", {**body, **(target or {})})
        upload = self._send_parts(upload, path, size, part_size)
        return self._json(
            self._send("POST", f"/v1/uploads/{upload.id}/commit", json_body={}, signed=True)
        )

    def _send_parts(self, upload: UploadView, path: Path, size: int, part_size: int) -> UploadView:
        failures = 0
        while upload.received < size:
            length = min(part_size, size - upload.received)
            try:
                upload = self._put_part(upload, path, length)
            except (httpx.TransportError, CoordinatorError) as err:
                if not _is_resumable(err) or failures >= self.retries:
                    raise
                failures += 1
                time.sleep(self.backoff_s * 2**failures)
                upload = self.get_upload(upload.id)
        return upload

    def get_upload(self, upload_id: str) -> UploadView:
        return self._get(UploadView, f"/v1/uploads/{upload_id}")

    def _put_part(
        self, upload: UploadView, path: Path, length: int, digest: str = UNSIGNED_PAYLOAD
    ) -> UploadView:
        """One signed part, streamed from disk: signed over UNSIGNED_PAYLOAD (its bytes are
        bound by the session's declared SHA-256; the coordinator checks the signature before
        it reads a byte), or over the part's own digest when given."""
        offset = upload.received
        request = self._http.build_request(
            "PUT",
            f"/v1/uploads/{upload.id}",
            params={"offset": offset},
            content=iter_file_range(path, offset, length),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
        )
        request.headers.update(
            compute_signed_headers_for_digest(
                self._require_key(),
                "PUT",
                request.url.raw_path.decode(),
                digest,
                uuid.uuid4().hex,
            )
        )
        return parse_response(UploadView, self._json(self._checked(self._http.send(request))))

    def download_dataset_to(self, sha256: str, path: Path) -> Path:
        """The dataset streamed to `path` (resuming a `<path>.part` left by an interrupted
        download), checked against its SHA-256 before it is moved into place."""
        return self._download_to(f"/v1/datasets/{sha256}", Path(path), sha256)

    def download_job_files(self, spec: JobSpec, directory: Path) -> list[str]:
        """Every file the job's program reads (`get_job_file_hashes`), cached in `directory`
        under its SHA-256 (each streamed and checked before it lands); their local paths."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for sha256 in get_job_file_hashes(spec):
            path = directory / sha256
            if not path.exists():
                self.download_dataset_to(sha256, path)
            paths.append(str(path))
        return paths

    def download_checkpoint_to(self, job_id: str, index: int, path: Path) -> Path:
        sha256 = self.get_checkpoint_info(job_id, index).sha256
        return self._download_to(f"/v1/jobs/{job_id}/checkpoints/{index}", Path(path), sha256)

    def _download_to(self, url: str, path: Path, sha256: str) -> Path:
        partial = get_partial_path(path)
        for attempt in range(self.retries + 1):
            try:
                self._receive_into(url, partial)
                break
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(self.backoff_s * 2**attempt)
        if not finish_download(partial, path, sha256):
            raise InvalidResponse(f"the bytes of {url} do not match their SHA-256")
        return path

    def read_checkpoint_metrics(self, job_id: str, index: int) -> dict[str, float]:
        """The evaluation metrics (`metric/*` scalars) in a stored checkpoint, read with three
        small range requests (header length, header, values) instead of the whole state. The
        coordinator checked the file against its committed root at upload; `job download`
        checks it again here."""
        url = f"/v1/jobs/{job_id}/checkpoints/{index}"
        size = self.get_checkpoint_info(job_id, index).size
        length = parse_header_length(self._read_range(url, 0, 8), size)
        tensors = parse_state_header(self._read_range(url, 8, length), 8 + length, size)
        metrics = {}
        for tensor in tensors:
            if tensor.name.startswith(METRIC_PREFIX) and tensor.dtype == "F64" and not tensor.shape:
                (value,) = struct.unpack("<d", self._read_range(url, tensor.begin, 8))
                metrics[tensor.name[len(METRIC_PREFIX) :]] = value
        return metrics

    def _read_range(self, url: str, start: int, length: int) -> bytes:
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        data = self._checked(self._http.get(url, headers=headers)).content
        if len(data) != length:
            raise InvalidResponse(f"asked for {length} bytes at {start}, got {len(data)}")
        return data

    def _receive_into(self, url: str, partial: Path) -> None:
        """Append what is missing from `partial` (a Range request from its size on)."""
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and have:
                return  # already whole (or longer: finish_download's hash check decides)
            if response.status_code >= 400:
                response.read()
                self._checked(response)
            resumed = response.status_code == 206 and _range_start(response) == have
            with open(partial, "ab" if resumed else "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)

    # --- verification ------------------------------------------------------------------------

    def register_verifier(
        self, profiles: list[str], stake: int, max_state_bytes: int | None = None
    ) -> VerifierView:
        """Register (or update) the profiles it replays, add to its standing stake, and declare
        the largest training state it takes (None: no bound): the draw passes it over for
        larger jobs."""
        body = {"profiles": profiles, "stake": stake, "max_state_bytes": max_state_bytes}
        return self._post(VerifierView, "/v1/verifiers", body)

    def withdraw_verifier_stake(self, amount: int) -> VerifierView:
        return self._post(VerifierView, "/v1/verifiers/withdraw", {"amount": amount})

    def get_job_assignments(self, job_id: str) -> list[AssignmentView]:
        return parse_page(
            AssignmentView, self._get_json(f"/v1/jobs/{job_id}/assignments"), "assignments"
        )

    def get_assignments(self, verifier: str | None = None) -> list[AssignmentView]:
        body = self._get_json("/v1/assignments", verifier=verifier or self.public_key)
        return parse_page(AssignmentView, body, "assignments")

    def challenge_segment(self, job_id: str, segment: int) -> AssignmentView:
        """Open a volunteer assignment on `segment` of a verifying job (the challenge window)."""
        return self._post(AssignmentView, f"/v1/jobs/{job_id}/challenges", {"segment": segment})

    def commit_verification(self, assignment_id: int, commit_hash: bytes) -> AssignmentView:
        return self._post(
            AssignmentView,
            f"/v1/assignments/{assignment_id}/commit",
            {"commit_hash": commit_hash.hex()},
        )

    def reveal_verification(self, assignment_id: int, root: bytes, salt: bytes) -> AssignmentView:
        return self._post(
            AssignmentView,
            f"/v1/assignments/{assignment_id}/reveal",
            {"root": root.hex(), "salt": salt.hex()},
        )

    # --- disputes ----------------------------------------------------------------------------

    def list_disputes(
        self, party: str | None = None, status: DisputeStatus | None = DisputeStatus.OPEN
    ) -> list[DisputeView]:
        """Disputes where `party` (default: this client's key) is the solver or the verifier;
        `status=None` for all of them."""
        body = self._get_json("/v1/disputes", party=party or self.public_key, status=status)
        return parse_page(DisputeView, body, "disputes")

    def get_dispute(self, dispute_id: int) -> DisputeView:
        return self._get(DisputeView, f"/v1/disputes/{dispute_id}")

    def post_dispute_move(self, dispute_id: int, move: dict) -> DisputeView:
        return self._post(DisputeView, f"/v1/disputes/{dispute_id}/moves", {"move": move})

    def upload_dispute_state(self, dispute_id: int, data: bytes) -> DisputeView:
        """The agreed state at the pinned step (safetensors bytes), owed by the solver."""
        return self._put_bytes(DisputeView, f"/v1/disputes/{dispute_id}/state", data)

    def upload_dispute_state_file(
        self, dispute_id: int, path: Path, part_size: int = DEFAULT_PART_SIZE
    ) -> DisputeView:
        """The same from a file, streamed in signed parts and resumable (any size)."""
        target = {"dispute_id": dispute_id}
        return parse_response(DisputeView, self.upload_file("state", path, part_size, target))

    def rule_dispute(self, dispute_id: int, timeout_s: float = 600.0) -> DisputeView:
        """Ask the referee to rule now. It recomputes one training step from the agreed state
        (on a warm worker), so the call may outlast an ordinary request: hence its own timeout.
        Idempotent: a retry returns the ruling already made."""
        return self._post(
            DisputeView,
            f"/v1/disputes/{dispute_id}/rule",
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )
