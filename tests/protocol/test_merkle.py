"""RFC 9162 Merkle trees: published vectors, an independent reference, and tampering."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import InvalidInput
from protocol.merkle import (
    EMPTY_ROOT,
    compute_leaf_hash,
    consistency_proof_from_hashes,
    inclusion_proof,
    inclusion_proof_from_hashes,
    merkle_root,
    verify_consistency,
    verify_inclusion,
    verify_inclusion_of_hash,
)

# Certificate Transparency reference leaves and roots for sizes 0..8 (RFC 6962 test vectors).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (
        0,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, written from the definition and independent of merkly."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(
        b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])
    ).digest()


@pytest.mark.parametrize("size", range(9))
def test_roots_match_certificate_transparency_vectors(size):
    assert merkle_root(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "proof"), CT_INCLUSION)
def test_inclusion_proofs_match_published_vectors(index, proof):
    assert [p.hex() for p in inclusion_proof(CT_LEAVES, index)] == proof
    assert verify_inclusion(
        CT_LEAVES[index], index, 8, [bytes.fromhex(p) for p in proof], bytes.fromhex(CT_ROOTS[8])
    )


def test_empty_tree_root_is_sha256_of_empty_string():
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


# Sizes around powers of two, with duplicates made likely by a tiny alphabet.
leaf_lists = st.lists(st.binary(max_size=4), min_size=0, max_size=70)


@given(leaf_lists)
def test_merkly_root_matches_the_reference_definition(leaves):
    assert merkle_root(leaves) == reference_root(leaves)


@given(st.lists(st.sampled_from([b"", b"a", b"b"]), min_size=1, max_size=70), st.data())
def test_every_proof_verifies_even_with_duplicate_leaves(leaves, data):
    root = merkle_root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(leaves, index)
    assert verify_inclusion(leaves[index], index, len(leaves), proof, root)


@given(st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=40, unique=True), st.data())
def test_any_tampering_fails(leaves, data):
    root = merkle_root(leaves)
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(leaves, index)
    leaf = leaves[index]
    assert not verify_inclusion(leaf + b"x", index, n, proof, root)
    assert not verify_inclusion(leaf, index, n, proof, hashlib.sha256(root).digest())
    other_index = data.draw(st.integers(0, n - 1).filter(lambda i: i != index)) if n > 1 else None
    if other_index is not None:
        assert not verify_inclusion(leaf, other_index, n, proof, root)
    assert not verify_inclusion(leaf, index, n, proof + [root], root)  # long proof
    if proof:
        assert not verify_inclusion(leaf, index, n, proof[:-1], root)  # short proof
        flipped = bytearray(proof[0])
        flipped[0] ^= 1
        assert not verify_inclusion(leaf, index, n, [bytes(flipped), *proof[1:]], root)
    for size in {n + 1, n * 2, n - 1} - {n}:
        if size > index and path_shape(index, size) != path_shape(index, n):
            assert not verify_inclusion(leaf, index, size, proof, root)


def path_shape(index: int, size: int) -> list[bool]:
    """Left/right pattern of an RFC 9162 audit path. Proofs do not bind the tree size when the
    shape is equal (the signed tree head does): a sibling hash could be a leaf or a node."""
    shape, start, end = [], 0, size
    while end - start > 1:
        k = 1 << ((end - start - 1).bit_length() - 1)
        shape.append(index < start + k)
        start, end = (start, start + k) if index < start + k else (start + k, end)
    return shape[::-1]


JUNK = [None, "abc", 7, [b"x"], [1, 2], [b"\x00" * 31], b"\x00" * 31]


@pytest.mark.parametrize("junk", JUNK)
def test_malformed_input_returns_false_never_raises(junk):
    leaves = [b"a", b"b", b"c"]
    root, proof = merkle_root(leaves), inclusion_proof(leaves, 0)
    assert verify_inclusion(b"a", 0, 3, proof, root)
    assert not verify_inclusion(junk, 0, 3, proof, root)
    assert not verify_inclusion(b"a", junk, 3, proof, root)
    assert not verify_inclusion(b"a", 0, junk, proof, root)
    assert not verify_inclusion(b"a", 0, 3, junk, root)
    assert not verify_inclusion(b"a", 0, 3, proof, junk)
    assert not verify_inclusion(b"a", -1, 3, proof, root)
    assert not verify_inclusion(b"a", 3, 3, proof, root)
    assert not verify_inclusion(b"a", 0, 0, [], root)


@given(st.integers(1, 40), st.data())
def test_consistency_proofs_verify_and_detect_rewrites(new_size, data):
    leaves = [bytes([i]) for i in range(new_size)]
    hashes = [compute_leaf_hash(leaf) for leaf in leaves]
    old_size = data.draw(st.integers(1, new_size))
    proof = consistency_proof_from_hashes(hashes, old_size)
    old_root, new_root = merkle_root(leaves[:old_size]), merkle_root(leaves)
    assert verify_consistency(old_size, new_size, proof, old_root, new_root)
    rewritten = merkle_root([b"evil", *leaves[1:old_size]])
    assert not verify_consistency(old_size, new_size, proof, rewritten, new_root)


@pytest.mark.parametrize("junk", [*JUNK, b"\x00" * 64, iter([b"\x00" * 32])])
def test_every_verify_returns_false_on_junk_never_raises(junk):
    leaves = [b"a", b"b", b"c"]
    hashes = [compute_leaf_hash(leaf) for leaf in leaves]
    old_root, new_root = merkle_root(leaves[:1]), merkle_root(leaves)
    proof = consistency_proof_from_hashes(hashes, 1)
    assert verify_consistency(1, 3, proof, old_root, new_root)
    assert not verify_consistency(1, 3, junk, old_root, new_root)
    assert not verify_consistency(junk, 3, proof, old_root, new_root)
    assert not verify_consistency(1, junk, proof, old_root, new_root)
    assert not verify_consistency(1, 3, proof, junk, new_root)
    assert not verify_consistency(1, 3, proof, old_root, junk)
    assert not verify_inclusion_of_hash(hashes[0], 0, 3, junk, new_root)
    assert not verify_inclusion_of_hash(junk, 0, 3, inclusion_proof(leaves, 0), new_root)


def test_a_one_shot_iterator_proof_is_read_once():
    leaves = [b"a", b"b", b"c"]
    proof = inclusion_proof(leaves, 2)
    assert verify_inclusion(b"c", 2, 3, iter(proof), merkle_root(leaves))


@pytest.mark.parametrize("index", [-1, 3, 10])
def test_proofs_for_leaves_outside_the_tree_are_invalid_input(index):
    with pytest.raises(InvalidInput) as caught:
        inclusion_proof_from_hashes([compute_leaf_hash(b"x")] * 3, index)
    assert caught.value.field == "index"


@pytest.mark.parametrize("old_size", [0, -1, 4])
def test_consistency_proofs_from_impossible_sizes_are_invalid_input(old_size):
    with pytest.raises(InvalidInput) as caught:
        consistency_proof_from_hashes([compute_leaf_hash(b"x")] * 3, old_size)
    assert caught.value.field == "old_size"
