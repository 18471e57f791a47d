"""Typed HTTP client of the coordinator: signs every mutating request, retries with the same
idempotency key, and takes an injected httpx transport and explicit timeouts.

Wire contract of a signed request (the server checks exactly this):
    message = "VTREQ1\\n" METHOD "\\n" TARGET "\\n" hex(SHA-256(body)) "\\n" TIMESTAMP "\\n"
              NONCE "\\n" IDEMPOTENCY-KEY
signed with `protocol.signing.sign(key, DOMAIN_REQUEST, message)`; TARGET is the raw path plus
"?query" when there is one; TIMESTAMP is integer Unix seconds; NONCE is 16-64 characters of
[A-Za-z0-9_-]. Headers: X-Veritrain-Key (hex public key), X-Veritrain-Timestamp,
X-Veritrain-Nonce, X-Veritrain-Signature (hex), Idempotency-Key (optional but signed).

This module imports no server code (no fastapi, no sqlalchemy, no coordinator).
"""

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from nacl.signing import SigningKey

from protocol.errors import InvalidInput, VeritrainError
from protocol.signing import DOMAIN_REQUEST, get_public_key, sign

REQUEST_TAG = b"VTREQ1"
HEADER_KEY = "X-Veritrain-Key"
HEADER_TIMESTAMP = "X-Veritrain-Timestamp"
HEADER_NONCE = "X-Veritrain-Nonce"
HEADER_SIGNATURE = "X-Veritrain-Signature"
HEADER_IDEMPOTENCY = "Idempotency-Key"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
RETRY_STATUSES = {502, 503, 504}


def compute_request_message(method: str, target: str, body: bytes, timestamp: int, nonce: str,
                            idempotency_key: str = "") -> bytes:
    return b"\n".join([
        REQUEST_TAG, method.upper().encode(), target.encode(),
        hashlib.sha256(body).hexdigest().encode(), str(timestamp).encode(), nonce.encode(),
        idempotency_key.encode(),
    ])


def compute_signed_headers(key: SigningKey, method: str, target: str, body: bytes,
                           idempotency_key: str = "", timestamp: int | None = None,
                           nonce: str | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16)
    message = compute_request_message(method, target, body, timestamp, nonce, idempotency_key)
    headers = {
        HEADER_KEY: get_public_key(key).hex(),
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(key, DOMAIN_REQUEST, message).hex(),
    }
    if idempotency_key:
        headers[HEADER_IDEMPOTENCY] = idempotency_key
    return headers


class CoordinatorError(VeritrainError):
    """The coordinator answered with a problem response (RFC 9457)."""

    code = "coordinator_error"

    def __init__(self, status: int, problem: dict[str, Any]):
        self.status = status
        self.problem = problem
        self.problem_code = problem.get("code", "unknown")
        super().__init__(f"HTTP {status} {self.problem_code}: {problem.get('detail', '')}")


@dataclass(frozen=True)
class TreeHead:
    size: int
    timestamp_ms: int
    root: bytes
    signature: bytes
    public_key: bytes


class CoordinatorClient:
    """One account's view of a coordinator. `key` may be None for read-only use."""

    def __init__(self, base_url: str, key: SigningKey | None = None, *,
                 transport: httpx.BaseTransport | None = None,
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT, retries: int = 3,
                 backoff_s: float = 0.05):
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

    def _send(self, method: str, path: str, *, json_body: Any = None, content: bytes | None = None,
              params: dict | None = None, signed: bool = False, idempotency_key: str | None = None,
              content_type: str = "application/json",
              timeout: httpx.Timeout | None = None) -> httpx.Response:
        body = content if content is not None else (
            b"" if json_body is None else json.dumps(json_body).encode())
        if signed and idempotency_key is None:
            idempotency_key = uuid.uuid4().hex  # one key for every retry of this call
        for attempt in range(self.retries + 1):
            request = self._http.build_request(method, path, content=body, params=params,
                                               headers={"Content-Type": content_type} if body else {},
                                               **({"timeout": timeout} if timeout else {}))
            if signed:
                target = request.url.raw_path.decode()
                request.headers.update(
                    compute_signed_headers(self._require_key(), method, target, body, idempotency_key or ""))
            try:
                response = self._http.send(request)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return self._checked(response)
            time.sleep(self.backoff_s * 2**attempt)
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
            raise CoordinatorError(response.status_code, problem if isinstance(problem, dict) else {})
        return response

    def _get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, params=clean or None).json()

    def _post(self, path: str, body: Any = None, idempotency_key: str | None = None) -> Any:
        return self._send("POST", path, json_body=body if body is not None else {}, signed=True,
                          idempotency_key=idempotency_key).json()

    # --- service -----------------------------------------------------------------------------

    def get_info(self) -> dict:
        return self._get("/v1/info")

    # --- accounts and ledger -----------------------------------------------------------------

    def faucet(self, amount: int, idempotency_key: str | None = None) -> dict:
        return self._post("/v1/dev/faucet", {"amount": amount}, idempotency_key)

    def transfer(self, to: str, amount: int, idempotency_key: str | None = None) -> dict:
        return self._post("/v1/accounts/transfer", {"to": to, "amount": amount}, idempotency_key)

    def get_account(self, public_key: str | None = None) -> dict:
        return self._get(f"/v1/accounts/{public_key or self.public_key}")

    def get_balance(self, public_key: str | None = None) -> int:
        return int(self.get_account(public_key)["available"])

    def iter_ledger_accounts(self, page: int = 500) -> Iterator[dict]:
        after = 0
        while True:
            rows = self._get("/v1/ledger/accounts", after=after, limit=page)["accounts"]
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1]["id"]

    def advance_clock(self, seconds: float) -> dict:
        return self._post("/v1/dev/clock", {"advance_s": seconds})

    def sweep(self) -> dict:
        return self._post("/v1/sweep", {})

    # --- public log --------------------------------------------------------------------------

    def get_tree_head(self) -> TreeHead:
        head = self._get("/v1/log/head")
        return TreeHead(head["size"], head["timestamp_ms"], bytes.fromhex(head["root"]),
                        bytes.fromhex(head["signature"]), bytes.fromhex(head["public_key"]))

    def get_log_entries(self, start: int, limit: int = 1000) -> list[dict]:
        return self._get("/v1/log/entries", start=start, limit=limit)["entries"]

    def iter_log_entries(self, size: int, page: int = 1000) -> Iterator[dict]:
        start = 0
        while start < size:
            rows = self.get_log_entries(start, min(page, size - start))
            if not rows:
                return
            yield from rows
            start += len(rows)

    def get_inclusion_proof(self, index: int, size: int) -> list[bytes]:
        proof = self._get("/v1/log/proof/inclusion", index=index, size=size)["proof"]
        return [bytes.fromhex(h) for h in proof]

    def get_consistency_proof(self, old: int, new: int) -> list[bytes]:
        proof = self._get("/v1/log/proof/consistency", old=old, new=new)["proof"]
        return [bytes.fromhex(h) for h in proof]

    # --- market ------------------------------------------------------------------------------

    def submit_job(self, spec: dict, bounty: int, *, min_stake: int = 0, verifier_fee: int = 0,
                   num_verifiers: int = 1, num_segments: int = 1, bidding_s: float = 60,
                   idempotency_key: str | None = None) -> dict:
        body = {"spec": spec, "bounty": bounty, "min_stake": min_stake,
                "verifier_fee": verifier_fee, "num_verifiers": num_verifiers,
                "num_segments": num_segments, "bidding_s": bidding_s}
        return self._post("/v1/jobs", body, idempotency_key)

    def list_jobs(self, state: str | None = None, profile: str | None = None, after: int = 0,
                  limit: int = 100) -> list[dict]:
        """One page of jobs; pass the last job's `id` as `after` for the next."""
        return self._get("/v1/jobs", state=state, profile=profile, after=after, limit=limit)["jobs"]

    def get_job(self, job_id: str) -> dict:
        return self._get(f"/v1/jobs/{job_id}")

    def bid(self, job_id: str, price: int, stake: int, profile: str,
            idempotency_key: str | None = None) -> dict:
        return self._post(f"/v1/jobs/{job_id}/bids",
                          {"price": price, "stake": stake, "profile": profile}, idempotency_key)

    def award(self, job_id: str) -> dict:
        return self._post(f"/v1/jobs/{job_id}/award")

    def heartbeat(self, job_id: str) -> dict:
        return self._post(f"/v1/jobs/{job_id}/heartbeat")

    def commit(self, job_id: str, commitment: dict, signature: bytes) -> dict:
        return self._post(f"/v1/jobs/{job_id}/commitment",
                          {"commitment": commitment, "signature": signature.hex()})

    def upload_checkpoint(self, job_id: str, index: int, step: int, data: bytes,
                          proof: list[bytes]) -> dict:
        params = {"step": step, "proof": ",".join(p.hex() for p in proof)}
        response = self._send("PUT", f"/v1/jobs/{job_id}/checkpoints/{index}", content=data,
                              params=params, signed=True,
                              content_type="application/octet-stream")
        return response.json()

    def upload_dataset(self, data: bytes) -> dict:
        """Upload a safetensors dataset file; its address is its SHA-256."""
        sha256 = hashlib.sha256(data).hexdigest()
        return self._send("PUT", f"/v1/datasets/{sha256}", content=data, signed=True,
                          content_type="application/octet-stream").json()

    def download_dataset(self, sha256: str) -> bytes:
        data = self._send("GET", f"/v1/datasets/{sha256}").content
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CoordinatorError(502, {"code": "bad_content", "detail": "dataset bytes do not match their SHA-256"})
        return data

    def download_checkpoint(self, job_id: str, index: int) -> bytes:
        return self._send("GET", f"/v1/jobs/{job_id}/checkpoints/{index}").content

    def get_checkpoint_info(self, job_id: str, index: int) -> dict:
        return self._get(f"/v1/jobs/{job_id}/checkpoints/{index}/info")

    def register_verifier(self, profiles: list[str], stake: int) -> dict:
        return self._post("/v1/verifiers", {"profiles": profiles, "stake": stake})

    def withdraw_verifier_stake(self, amount: int) -> dict:
        return self._post("/v1/verifiers/withdraw", {"amount": amount})

    def get_job_assignments(self, job_id: str) -> list[dict]:
        return self._get(f"/v1/jobs/{job_id}/assignments")["assignments"]

    def get_assignments(self, verifier: str | None = None) -> list[dict]:
        return self._get("/v1/assignments", verifier=verifier or self.public_key)["assignments"]

    def commit_verification(self, assignment_id: int, commit_hash: bytes) -> dict:
        return self._post(f"/v1/assignments/{assignment_id}/commit", {"commit_hash": commit_hash.hex()})

    def list_disputes(self, party: str | None = None, status: str | None = "open") -> list[dict]:
        """Disputes where `party` (default: this client's key) is the solver or the verifier."""
        return self._get("/v1/disputes", party=party or self.public_key, status=status)["disputes"]

    def post_dispute_move(self, dispute_id: int, move: dict) -> dict:
        return self._post(f"/v1/disputes/{dispute_id}/moves", {"move": move})

    def upload_dispute_state(self, dispute_id: int, data: bytes) -> dict:
        """The agreed state at the pinned step (safetensors bytes), owed by the solver."""
        return self._send("PUT", f"/v1/disputes/{dispute_id}/state", content=data, signed=True,
                          content_type="application/octet-stream").json()

    def get_dispute(self, dispute_id: int) -> dict:
        return self._get(f"/v1/disputes/{dispute_id}")

    def rule_dispute(self, dispute_id: int, timeout_s: float = 600.0) -> dict:
        """Ask the referee to rule now; it replays a segment, so this may take minutes.
        Idempotent: a retry returns the ruling already made."""
        return self._send("POST", f"/v1/disputes/{dispute_id}/rule", json_body={}, signed=True,
                          timeout=httpx.Timeout(timeout_s, connect=5.0)).json()

    def reveal_verification(self, assignment_id: int, root: bytes, salt: bytes) -> dict:
        return self._post(f"/v1/assignments/{assignment_id}/reveal",
                          {"root": root.hex(), "salt": salt.hex()})


def compute_verification_commit(root: bytes, salt: bytes) -> bytes:
    """What a verifier commits before the solver's leaf is revealed: H(tag ‖ root ‖ salt)."""
    return hashlib.sha256(b"VTVCOMMIT1" + root + salt).digest()
