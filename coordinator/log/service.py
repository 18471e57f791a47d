"""Appending to the public log and serving its tree heads and proofs."""

from collections.abc import Sequence
from dataclasses import dataclass

from nacl.signing import SigningKey
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.log import repository
from coordinator.log.format import (
    Frontier,
    compute_entry_leaf_hash,
    compute_frontier_append,
    compute_frontier_root,
    encode_entry,
    sign_entry,
    sign_tree_head,
)
from coordinator.models import LogEntry
from protocol.errors import InvalidInput
from protocol.merkle import consistency_proof_from_hashes, inclusion_proof_from_hashes
from protocol.signing import get_public_key
from protocol.wire import TreeHead

MAX_PAGE = 1000


@dataclass(frozen=True)
class NewEntry:
    index: int
    leaf_hash: str


def process_log_append(
    session: Session,
    key: SigningKey,
    now: float,
    kind: str,
    data: dict,
    postings: Sequence[tuple[str, int]] = (),
    posting_rows: Sequence[tuple[int, int]] = (),
) -> NewEntry:
    """Append one signed entry (and the ledger postings it records, by account id). Locks the
    log head row: call it last in a transaction, after every other row lock, so lock order
    stays job -> ledger accounts -> log."""
    size, last_hash, frontier_text = repository.lock_log_head(session)
    body = encode_entry(size, last_hash, now, kind, data, postings)
    leaf = compute_entry_leaf_hash(body)
    frontier = compute_frontier_append(Frontier.decode(size, frontier_text), leaf)
    entry = {
        "idx": size,
        "kind": kind,
        "body": body.decode(),
        "leaf_hash": leaf.hex(),
        "signature": sign_entry(key, body).hex(),
    }
    repository.write_entry(
        session, entry, (frontier.size, leaf.hex(), frontier.encode()), list(posting_rows)
    )
    return NewEntry(size, leaf.hex())


def get_tree_head(session: Session, key: SigningKey, now: float) -> TreeHead:
    state = repository.get_log_state(session)
    root = compute_frontier_root(Frontier.decode(state.size, state.frontier))
    timestamp_ms = int(now * 1000)
    return TreeHead(
        state.size,
        timestamp_ms,
        root,
        sign_tree_head(key, state.size, timestamp_ms, root),
        get_public_key(key),
    )


def get_entries(session: Session, start: int, limit: int) -> list[LogEntry]:
    if start < 0 or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"start must be >= 0 and limit in 1..{MAX_PAGE}", "start")
    return repository.get_entries(session, start, start + limit)


def _checked_size(session: Session, size: int) -> int:
    current = repository.get_log_state(session).size
    if not 1 <= size <= current:
        raise NotFound(f"the log has {current} entries; no tree of size {size}")
    return size


def get_inclusion_proof(session: Session, index: int, size: int) -> list[bytes]:
    _checked_size(session, size)
    if not 0 <= index < size:
        # in the schema's range but not in this tree: absent, like a size past the log's end
        raise NotFound(f"a tree of size {size} has no entry {index}")
    return inclusion_proof_from_hashes(repository.get_leaf_hashes(session, size), index)


def get_consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    _checked_size(session, new_size)
    if not 1 <= old_size <= new_size:
        raise NotFound(f"no consistency proof from size {old_size} to the smaller {new_size}")
    return consistency_proof_from_hashes(repository.get_leaf_hashes(session, new_size), old_size)
