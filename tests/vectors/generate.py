"""Writes the test vectors another implementation can check itself against:

- tests/vectors/dispute_games.json: deterministic dispute games (set-up, every event in order,
  the game state after each, the outcome);
- tests/vectors/primitives.json: the non-game primitives of docs/wire.md (signing domains,
  request messages, commitments, trajectory leaves, RFC 9162 trees, state chunks and roots, job
  ids, the beacon and the draws, verification commits), replayed by the standalone
  tests/vectors/independent_check.py (stdlib + PyNaCl only).

Run: python3 tests/vectors/generate.py     (tests/protocol/test_vectors.py replays both files and
checks that regenerating gives the same bytes)
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from coordinator.log.format import (  # noqa: E402
    GENESIS_PREV,
    compute_entry_leaf_hash,
    encode_entry,
    encode_tree_head,
    sign_entry,
    sign_tree_head,
)
from protocol.dispute import SOLVER, VERIFIER, compute_initial_game  # noqa: E402
from protocol.merkle import (  # noqa: E402
    compute_leaf_hash,
    consistency_proof_from_hashes,
    inclusion_proof,
    merkle_root,
)
from protocol.presets import example_job_spec  # noqa: E402
from protocol.sampling import (  # noqa: E402
    compute_beacon_commitment,
    compute_segment_choice,
    compute_selection_seed,
    compute_verifier_choice,
)
from protocol.signing import (  # noqa: E402
    DOMAIN_COMMITMENT,
    DOMAIN_DISPUTE_MOVE,
    DOMAIN_LOG_ENTRY,
    DOMAIN_LOG_HEAD,
    DOMAIN_REQUEST,
    DOMAIN_VERIFICATION,
    compute_signing_digest,
    sign,
)
from protocol.spec import compute_job_id, encode_job_spec, spec_to_json  # noqa: E402
from protocol.standin import Player, StandinTrajectory, iterate_game  # noqa: E402
from protocol.state import (  # noqa: E402
    _chunk_header,
    compute_chunk_hashes,
    compute_chunk_layout,
    compute_model_root,
    compute_state_root,
)
from protocol.trajectory import (  # noqa: E402
    Commitment,
    compute_trajectory_proof,
    compute_trajectory_root,
    encode_trajectory_leaf,
    sign_commitment,
)
from protocol.types import JobId, Root, StepIndex  # noqa: E402
from protocol.wire import compute_request_message, compute_verification_commit  # noqa: E402

VECTORS = Path(__file__).with_name("dispute_games.json")
PRIMITIVES = Path(__file__).with_name("primitives.json")
PRIMITIVES_VERSION = 1
SIGNER_SEED = bytes(range(32))  # the one key every primitive signature is made with
SOLVER_SEED, VERIFIER_SEED = b"\x01" * 32, b"\x02" * 32

# name, start, length, chunks, arity, solver divergence, solver policy, verifier divergence, verifier policy
CASES = [
    ("honest-verifier-catches-perturbed-chunk", 0, 20, 8, 2, (8, 3), "follow", None, "follow"),
    ("cheat-from-first-step-all-chunks", 100, 1000, 64, 2, (101, None), "follow", None, "follow"),
    ("kary-4-bisection", 0, 1000, 16, 4, (517, 9), "follow", None, "follow"),
    ("frivolous-verifier-times-out", 0, 16, 4, 2, None, "follow", "fake", "follow"),
    ("wrong-verifier-loses-at-referee", 40, 10, 5, 2, None, "follow", (45, 2), "follow"),
    ("solver-no-show", 0, 8, 4, 2, (3, 0), "no-show", None, "follow"),
    ("one-step-segment-one-chunk", 7, 1, 1, 2, (8, 0), "follow", None, "follow"),
    ("solver-equivocates", 0, 64, 8, 2, (10, 1), "equivocate", None, "follow"),
    # the solver bound another root at step 32 in another game of the same job
    ("equivocation-across-games", 0, 64, 8, 2, (10, 1), "follow", None, "follow", {32: "ab" * 32}),
]


def _trajectory(seed: bytes, chunks: int, divergence, tag: bytes, end: int) -> StandinTrajectory:
    if divergence == "fake":
        return StandinTrajectory(seed, chunks, fake_roots=((end, b"\xf0" * 32),))
    return StandinTrajectory(seed, chunks, divergence, tag)


def generate_case(  # noqa: PLR0913 -- one vector's whole set-up
    name, start, length, chunks, arity, s_div, s_policy, v_div, v_policy, known_roots=None
) -> dict:
    seed, end = name.encode()[:8].ljust(8, b"."), start + length
    truth = StandinTrajectory(seed, chunks)
    mine = _trajectory(seed, chunks, s_div, b"solver", end)
    theirs = _trajectory(seed, chunks, v_div, b"verifier", end)
    keys = SigningKey(SOLVER_SEED), SigningKey(VERIFIER_SEED)
    game = compute_initial_game(
        game_id=seed.hex() * 4,
        solver_key=bytes(keys[0].verify_key).hex(),
        verifier_key=bytes(keys[1].verify_key).hex(),
        start_step=start,
        start_root=truth.root(start).hex(),
        end_step=end,
        solver_root=mine.root(end).hex(),
        verifier_root=theirs.root(end).hex(),
        num_chunks=chunks,
        now=0,
        move_timeout=10,
        arity=arity,
        known_roots=known_roots,
    )
    players = {
        SOLVER: Player(SOLVER, keys[0], mine, s_policy),
        VERIFIER: Player(VERIFIER, keys[1], theirs, v_policy),
    }
    initial, events = game.to_json(), []
    for event, after in iterate_game(game, players[SOLVER], players[VERIFIER], truth):
        events.append({**event, "after": after.to_json()})
        game = after
    return {
        "name": name,
        "initial": initial,
        "events": events,
        "outcome": {
            "winner": game.winner,
            "reason": game.reason,
            "step": game.lo,
            "chunk": game.chunk if game.node[1] - game.node[0] == 1 else None,
            "moves": game.moves,
        },
    }


def generate() -> str:
    cases = [generate_case(*case) for case in CASES]
    return (
        json.dumps(
            {"format": "veritrain-dispute-vectors-v1", "cases": cases}, indent=1, sort_keys=True
        )
        + "\n"
    )


def _h(data: bytes) -> str:
    return bytes(data).hex()


def _sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _signing_vectors(key: SigningKey) -> list[dict]:
    domains = [
        DOMAIN_REQUEST,
        DOMAIN_COMMITMENT,
        DOMAIN_DISPUTE_MOVE,
        DOMAIN_VERIFICATION,
        DOMAIN_LOG_ENTRY,
        DOMAIN_LOG_HEAD,
    ]
    messages = [b"", b"veritrain", bytes(range(256))]
    return [
        {
            "domain": domain,
            "message": _h(message),
            "digest": _h(compute_signing_digest(domain, message)),
            "signature": _h(sign(key, domain, message)),
        }
        for domain in domains
        for message in messages
    ]


def _request_vectors(key: SigningKey) -> list[dict]:
    cases = [
        ("post", "/v1/jobs", b'{"spec":{}}', 1_700_000_000, "nonce-0123456789ab", "job-1"),
        ("DELETE", "/v1/jobs/abc?force=1", b"", 1, "A" * 64, ""),
        ("PUT", "/v1/checkpoints/7", bytes(range(64)), 4_102_444_800, "x_y-z" * 4, "~!key#"),
    ]
    out = []
    for method, target, body, timestamp, nonce, idem in cases:
        message = compute_request_message(method, target, body, timestamp, nonce, idem)
        out.append(
            {
                "method": method,
                "target": target,
                "body": _h(body),
                "timestamp": timestamp,
                "nonce": nonce,
                "idempotency_key": idem,
                "message": _h(message),
                "signature": _h(sign(key, DOMAIN_REQUEST, message)),
            }
        )
    return out


def _trajectory_entries() -> list[tuple[StepIndex, Root]]:
    return [(StepIndex(step), Root(_sha(b"state", bytes([step])))) for step in (0, 10, 20, 25)]


def _commitment(key: SigningKey, job_id: bytes, model_root: bytes) -> dict:
    entries = _trajectory_entries()
    commitment = Commitment(
        JobId(job_id), compute_trajectory_root(entries), len(entries), Root(model_root)
    )
    return {
        **commitment.to_json(),
        "encoded": _h(commitment.encode()),
        "signature": _h(sign_commitment(key, commitment)),
    }


def _trajectory_vectors() -> dict:
    entries = _trajectory_entries()
    index = 2
    return {
        "entries": [{"step": s, "state_root": _h(r)} for s, r in entries],
        "leaves": [_h(encode_trajectory_leaf(s, r)) for s, r in entries],
        "root": _h(compute_trajectory_root(entries)),
        "proof_index": index,
        "proof": [_h(p) for p in compute_trajectory_proof(entries, index)],
    }


def _merkle_vectors() -> dict:
    leaves = [bytes([i]) * i for i in range(7)]  # leaf i is i copies of byte i ("" first)
    trees = []
    for size in range(8):
        tree = leaves[:size]
        trees.append(
            {
                "size": size,
                "root": _h(merkle_root(tree)),
                "inclusion": [
                    {"index": i, "proof": [_h(p) for p in inclusion_proof(tree, i)]}
                    for i in range(size)
                ],
            }
        )
    hashes = [compute_leaf_hash(leaf) for leaf in leaves]
    consistency = [
        {
            "old_size": old,
            "new_size": len(leaves),
            "proof": [_h(p) for p in consistency_proof_from_hashes(hashes, old)],
        }
        for old in range(1, len(leaves) + 1)
    ]
    return {
        "leaves": [_h(leaf) for leaf in leaves],
        "trees": trees,
        "consistency": consistency,
    }


def _example_state() -> dict:
    return {
        "param/w": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4 - 0.5,
        "param/empty": torch.zeros((0, 4), dtype=torch.float32),
        "opt/m/w": torch.full((16_400,), 0.25, dtype=torch.float32),  # over 64 KiB: two chunks
        "step": torch.tensor(7, dtype=torch.int64),
    }


def _state_vectors() -> dict:
    state = _example_state()
    hashes = compute_chunk_hashes(state)
    layout = compute_chunk_layout(state)
    tensors = {}
    for name in sorted(state):
        tensor = state[name]
        data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        tensors[name] = {
            "dtype": {torch.float32: "F32", torch.int64: "I64"}[tensor.dtype],
            "shape": list(tensor.shape),
            "data": _h(data),
        }
    counts = {name: sum(1 for r in layout if r.tensor == name) for name in state}
    chunks = [
        {
            "tensor": ref.tensor,
            "chunk": ref.chunk_in_tensor,
            "start": ref.start,
            "end": ref.end,
            "header": _h(
                _chunk_header(
                    ref.tensor, state[ref.tensor], ref.chunk_in_tensor, counts[ref.tensor]
                )
            ),
            "leaf_hash": _h(digest),
        }
        for ref, digest in zip(layout, hashes, strict=True)
    ]
    return {
        "tensors": tensors,
        "chunks": chunks,
        "state_root": _h(compute_state_root(state)),
        "model_root": _h(compute_model_root(state)),
    }


def _job_vector() -> dict:
    spec = example_job_spec("mlp")
    return {
        "spec": spec_to_json(spec),
        "canonical": _h(encode_job_spec(spec)),
        "job_id": _h(compute_job_id(spec)),
    }


def _sampling_vectors(commitment_bytes: bytes) -> dict:
    beacon = _sha(b"example beacon")
    seed = compute_selection_seed(beacon, commitment_bytes)
    candidates = [
        ("aa" * 32, 500),
        ("bb" * 32, 100),
        ("cc" * 32, 0),
        ("0f" * 32, 2500),
        ("dd" * 32, 1),
        ("ee" * 32, 10**18),
    ]
    return {
        "beacon": _h(beacon),
        "beacon_commitment": _h(compute_beacon_commitment(beacon)),
        "commitment_bytes": _h(commitment_bytes),
        "selection_seed": _h(seed),
        "segments": [
            {"total": total, "count": count, "choice": compute_segment_choice(seed, total, count)}
            for total, count in ((1, 1), (5, 2), (100, 7), (3, 5))
        ],
        "candidates": [[key, stake] for key, stake in candidates],
        "verifiers": [
            {"count": count, "choice": compute_verifier_choice(seed, candidates, count)}
            for count in (0, 1, 3, 6)
        ],
    }


def _verification_commit_vectors() -> list[dict]:
    out = []
    for root, salt in ((b"\x00" * 32, b"\x00" * 32), (_sha(b"root"), _sha(b"salt"))):
        out.append(
            {
                "root": _h(root),
                "salt": _h(salt),
                "commit": _h(compute_verification_commit(root, salt)),
            }
        )
    return out


def _log_vectors(key: SigningKey) -> dict:
    """Three chained log entries (canonical JSON bodies, leaf hashes, signatures) and the signed
    head of the tree they make."""
    rows = [
        (
            1700000000.0,
            "account.deposit",
            {"account": "ab" * 32},
            [["mint", -500], ["ab" * 32, 500]],
        ),
        (1700000001.25, "job.submitted", {"job_id": "cd" * 32, "bounty": 1000}, []),
        (1700000002.5, "job.awarded", {"job_id": "cd" * 32, "note": "é ✓"}, [["a", 3], ["b", -3]]),
    ]
    entries, prev, leaves = [], GENESIS_PREV, []
    for index, (time_s, kind, data, postings) in enumerate(rows):
        body = encode_entry(index, prev, time_s, kind, data, postings)
        leaf = compute_entry_leaf_hash(body)
        fields = {"time": time_s, "kind": kind, "data": data, "postings": postings}
        entries.append(
            {
                **fields,
                "index": index,
                "prev": prev,
                "body": body.decode(),
                "leaf_hash": _h(leaf),
                "signature": _h(sign_entry(key, body)),
            }
        )
        prev, leaves = leaf.hex(), [*leaves, body]
    root, timestamp_ms = merkle_root(leaves), 1700000003000
    head = {
        "size": len(leaves),
        "timestamp_ms": timestamp_ms,
        "root": _h(root),
        "encoded": _h(encode_tree_head(len(leaves), timestamp_ms, root)),
        "signature": _h(sign_tree_head(key, len(leaves), timestamp_ms, root)),
    }
    return {"entries": entries, "head": head}


def generate_primitives() -> str:
    key = SigningKey(SIGNER_SEED)
    state = _state_vectors()
    job = _job_vector()
    commitment = _commitment(key, bytes.fromhex(job["job_id"]), bytes.fromhex(state["model_root"]))
    vectors = {
        "format": "veritrain-primitive-vectors",
        "version": PRIMITIVES_VERSION,
        "signer": {"seed": _h(SIGNER_SEED), "public_key": _h(key.verify_key)},
        "signing": _signing_vectors(key),
        "requests": _request_vectors(key),
        "merkle": _merkle_vectors(),
        "trajectory": _trajectory_vectors(),
        "commitment": commitment,
        "state": state,
        "job": job,
        "sampling": _sampling_vectors(bytes.fromhex(commitment["encoded"])),
        "verification_commits": _verification_commit_vectors(),
        "log": _log_vectors(key),
    }
    return json.dumps(vectors, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    VECTORS.write_text(generate())
    print(f"wrote {VECTORS}")
    PRIMITIVES.write_text(generate_primitives())
    print(f"wrote {PRIMITIVES}")
