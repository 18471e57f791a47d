"""Wire format of the public log: pure functions shared by the server and `veritrain audit`.

An entry is canonical JSON {index, prev, time, kind, data, postings}; its RFC 9162 leaf hash is
both its Merkle leaf and the `prev` link of the next entry, so the chain and the tree commit to
the same bytes. `postings` lists [account, delta] pairs summing to zero: replaying them from an
empty ledger must reproduce every balance the server reports.
"""

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from protocol.merkle import EMPTY_ROOT, compute_leaf_hash, compute_node_hash
from protocol.signing import DOMAIN_LOG_ENTRY, DOMAIN_LOG_HEAD, is_valid_signature, sign

GENESIS_PREV = "0" * 64
HEAD_TAG = b"VTHEAD1"


def encode_canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode_entry(
    index: int, prev: str, time_s: float, kind: str, data: dict, postings: Sequence[tuple[str, int]]
) -> bytes:
    return encode_canonical_json(
        {
            "index": index,
            "prev": prev,
            "time": round(time_s, 3),
            "kind": kind,
            "data": data,
            "postings": [[account, delta] for account, delta in postings],
        }
    )


def sign_entry(key: SigningKey, body: bytes) -> bytes:
    return sign(key, DOMAIN_LOG_ENTRY, body)


def is_valid_entry_signature(public_key: bytes, body: bytes, signature: bytes) -> bool:
    return is_valid_signature(public_key, DOMAIN_LOG_ENTRY, body, signature)


def encode_tree_head(size: int, timestamp_ms: int, root: bytes) -> bytes:
    return HEAD_TAG + struct.pack("<QQ", size, timestamp_ms) + root


def sign_tree_head(key: SigningKey, size: int, timestamp_ms: int, root: bytes) -> bytes:
    return sign(key, DOMAIN_LOG_HEAD, encode_tree_head(size, timestamp_ms, root))


def is_valid_tree_head(
    public_key: bytes, size: int, timestamp_ms: int, root: bytes, signature: bytes
) -> bool:
    return is_valid_signature(
        public_key, DOMAIN_LOG_HEAD, encode_tree_head(size, timestamp_ms, root), signature
    )


# --- compact range: the log's root in O(log n) without reading old entries -----------------


@dataclass(frozen=True)
class Frontier:
    """Roots of the perfect subtrees covering leaves [0, size), largest first (RFC 9162 shape)."""

    size: int
    roots: tuple[bytes, ...]

    def encode(self) -> str:
        return ",".join(r.hex() for r in self.roots)

    @classmethod
    def decode(cls, size: int, text: str) -> "Frontier":
        return cls(size, tuple(bytes.fromhex(h) for h in text.split(",") if h))


def compute_frontier_append(frontier: Frontier, leaf_hash: bytes) -> Frontier:
    roots = list(frontier.roots) + [leaf_hash]
    size = frontier.size + 1
    # each trailing 1-bit of the old size is a subtree of equal height that now merges
    merges, n = 0, frontier.size
    while n & 1:
        merges += 1
        n >>= 1
    for _ in range(merges):
        right = roots.pop()
        left = roots.pop()
        roots.append(compute_node_hash(left, right))
    return Frontier(size, tuple(roots))


def compute_frontier_root(frontier: Frontier) -> bytes:
    if not frontier.roots:
        return bytes(EMPTY_ROOT)
    root = frontier.roots[-1]
    for left in reversed(frontier.roots[:-1]):
        root = compute_node_hash(left, root)
    return root


def compute_entry_leaf_hash(body: bytes) -> bytes:
    return compute_leaf_hash(body)
