"""RFC 9162 (RFC 6962) Merkle trees: SHA-256, 0x00 leaf prefix, 0x01 node prefix.

Stable interop surface: `merkle_root`, `inclusion_proof`, `verify_inclusion` take raw leaf data.
Roots are built by merkly (its level-by-level tree with the odd node promoted has RFC 6962's
shape); we hand it precomputed leaf hashes so large leaves are hashed once, without copies.
Audit and consistency paths are our own: merkly's proofs look leaves up by value, which
duplicate leaves would confuse.
"""

import hashlib
from collections.abc import Sequence
from typing import Any

from merkly.mtree import MerkleTree

from protocol.errors import InvalidInput
from protocol.types import HASH_SIZE, Root

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = Root(hashlib.sha256(b"").digest())


def compute_leaf_hash(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + bytes(data)).digest()


def compute_node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _merkly_hash(left: bytes, right: bytes) -> bytes:
    # merkly hashes each leaf as f(leaf.encode(), b""): our leaves are already-hashed hex strings.
    if not right:
        return bytes.fromhex(left.decode())
    return compute_node_hash(left, right)


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> Root:
    """Root of the tree whose leaves hash to `leaf_hashes` (RFC 9162 MTH)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    if len(leaf_hashes) == 1:
        return Root(bytes(leaf_hashes[0]))
    return Root(MerkleTree([h.hex() for h in leaf_hashes], _merkly_hash).root)


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle Tree Hash of raw leaf data; the empty tree's root is SHA-256("")."""
    return root_from_leaf_hashes([compute_leaf_hash(leaf) for leaf in leaves])


def _split_point(size: int) -> int:
    """Largest power of two strictly smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def compute_subtree_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of leaves [start, end) given their leaf hashes (recursive RFC 9162 definition)."""
    size = end - start
    if size == 1:
        return leaf_hashes[start]
    if size == 0:
        return EMPTY_ROOT
    k = _split_point(size)
    return compute_node_hash(
        compute_subtree_root(leaf_hashes, start, start + k),
        compute_subtree_root(leaf_hashes, start + k, end),
    )


def inclusion_proof_from_hashes(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 audit path PATH(index, D[n]), leaf level first; InvalidInput for an
    index outside the tree (unlike `verify_*`, building a proof from a bad request is an error)."""
    if not 0 <= index < len(leaf_hashes):
        raise InvalidInput(
            f"leaf index {index} outside a tree of {len(leaf_hashes)} leaves", "index"
        )
    path: list[bytes] = []
    start, end = 0, len(leaf_hashes)
    while end - start > 1:
        k = _split_point(end - start)
        if index < start + k:
            path.append(compute_subtree_root(leaf_hashes, start + k, end))
            end = start + k
        else:
            path.append(compute_subtree_root(leaf_hashes, start, start + k))
            start = start + k
    path.reverse()
    return path


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for raw leaf `index` in RFC 9162 order."""
    return inclusion_proof_from_hashes([compute_leaf_hash(leaf) for leaf in leaves], index)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def _as_hashes(proof: Any) -> list[bytes] | None:
    """`proof` as a list of 32-byte hashes, or None when it is anything else (so `verify_*`
    can answer False instead of raising on junk, and a one-shot iterator is read once)."""
    try:
        items = list(proof)
    except TypeError:
        return None
    return items if all(_is_hash(p) for p in items) else None


def verify_inclusion_of_hash(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: check an audit path; malformed input is simply invalid. Never raises."""
    if not (isinstance(index, int) and isinstance(size, int) and 0 <= index < size):
        return False
    proof = _as_hashes(proof)
    if proof is None or not (_is_hash(root) and _is_hash(leaf_hash)):
        return False
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = compute_node_hash(bytes(p), r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = compute_node_hash(r, bytes(p))
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == bytes(root)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff raw `leaf` is at `index` of the `size`-leaf tree with `root`. Never raises."""
    if not isinstance(leaf, bytes | bytearray | memoryview):
        return False
    return verify_inclusion_of_hash(compute_leaf_hash(leaf), index, size, proof, root)


def consistency_proof_from_hashes(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]): the old tree of `old_size` leaves is a prefix of this one;
    InvalidInput for an old size outside 1..n."""
    if not 0 < old_size <= len(leaf_hashes):
        raise InvalidInput(f"old size {old_size} outside 1..{len(leaf_hashes)}", "old_size")
    return _subproof(leaf_hashes, old_size, 0, len(leaf_hashes), complete=True)


def _subproof(
    hashes: Sequence[bytes], m: int, start: int, end: int, *, complete: bool
) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[start:end], b), with b = `complete`."""
    n = end - start
    if m == n:
        return [] if complete else [compute_subtree_root(hashes, start, end)]
    k = _split_point(n)
    if m <= k:
        return _subproof(hashes, m, start, start + k, complete=complete) + [
            compute_subtree_root(hashes, start + k, end)
        ]
    return _subproof(hashes, m - k, start + k, end, complete=False) + [
        compute_subtree_root(hashes, start, start + k)
    ]


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: check that `new_root` extends `old_root`. Never raises."""
    if not (isinstance(old_size, int) and isinstance(new_size, int)):
        return False
    proof = _as_hashes(proof)
    if proof is None or not (_is_hash(old_root) and _is_hash(new_root)):
        return False
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # old tree is a complete subtree: its root starts the path
        path.insert(0, bytes(old_root))
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = compute_node_hash(c, fr)
            sr = compute_node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = compute_node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == bytes(old_root) and sr == bytes(new_root)
