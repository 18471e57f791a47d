"""Independent replay of tests/vectors/primitives.json and dispute_games.json, written from
docs/wire.md alone.

It imports only the standard library and PyNaCl — never the project — so a mismatch means the
spec, the vectors or the implementation disagree. One line per group; exit status 1 on any
mismatch (or a malformed file), 0 when every vector replays.

Run: python3 tests/vectors/independent_check.py [primitives.json [dispute_games.json]]
"""

import hashlib
import json
import struct
import sys
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

SUPPORTED_VERSION = 1
CHUNK_SIZE = 65536


def sha256(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def unhex(text: str) -> bytes:
    return bytes.fromhex(text)


class VectorMismatch(Exception):
    """A recorded event the rules do not allow (raised even under `python -O`)."""


def require(condition, message: str) -> None:
    if not condition:
        raise VectorMismatch(message)


def canonical_json(value) -> bytes:
    """Sorted keys, no whitespace, non-ASCII as \\uXXXX escapes, floats as shortest repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


# --- signing -------------------------------------------------------------------------------------


def signing_digest(domain: str, message: bytes) -> bytes:
    return sha256(b"veritrain/v1/", domain.encode(), b"\x00", sha256(message))


def signature_ok(public_key: bytes, domain: str, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(signing_digest(domain, message), signature)
    except BadSignatureError:
        return False
    return True


# --- RFC 9162 -----------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00", data)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01", left, right)


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(hashes: list[bytes]) -> bytes:
    """Merkle Tree Hash over leaf hashes (RFC 9162 §2.1.1)."""
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = split(len(hashes))
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def audit_path(hashes: list[bytes], m: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1, leaf level first."""
    if len(hashes) <= 1:
        return []
    k = split(len(hashes))
    if m < k:
        return audit_path(hashes[:k], m) + [mth(hashes[k:])]
    return audit_path(hashes[k:], m - k) + [mth(hashes[:k])]


def consistency(hashes: list[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1."""

    def subproof(d: list[bytes], m: int, complete: bool) -> list[bytes]:
        if m == len(d):
            return [] if complete else [mth(d)]
        k = split(len(d))
        if m <= k:
            return subproof(d[:k], m, complete) + [mth(d[k:])]
        return subproof(d[k:], m - k, False) + [mth(d[:k])]

    return subproof(hashes, m, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --- the checks ---------------------------------------------------------------------------------


class Checker:
    def __init__(self) -> None:
        self.failures = 0

    def group(self, name: str, fn, data) -> None:
        problems: list[str] = []
        count = [0]

        def expect(label: str, got, want) -> None:
            count[0] += 1
            if got != want:
                problems.append(f"{label}: got {_show(got)}, want {_show(want)}")

        try:
            fn(data, expect)
        except Exception as err:  # a malformed vector is a failure, never a crash
            problems.append(f"malformed vectors ({type(err).__name__}: {err})")
        if problems:
            self.failures += 1
            print(f"FAIL {name}: {len(problems)} of {count[0]} checks")
            for line in problems[:10]:
                print(f"     {line}")
        else:
            print(f"ok   {name}: {count[0]} checks")


def _show(value) -> str:
    return value.hex() if isinstance(value, bytes) else repr(value)


def check_signer(v, expect) -> None:
    key = SigningKey(unhex(v["seed"]))
    expect("public key", bytes(key.verify_key), unhex(v["public_key"]))


def make_signing_check(public_key: bytes, seed: bytes):
    key = SigningKey(seed)

    def check(vectors, expect) -> None:
        for i, v in enumerate(vectors):
            message, digest = unhex(v["message"]), signing_digest(v["domain"], unhex(v["message"]))
            expect(f"[{i}] {v['domain']} digest", digest, unhex(v["digest"]))
            expect(f"[{i}] signature", key.sign(digest).signature, unhex(v["signature"]))
            ok = signature_ok(public_key, v["domain"], message, unhex(v["signature"]))
            expect(f"[{i}] signature verifies", ok, True)

    return check


def make_request_check(public_key: bytes):
    def check(vectors, expect) -> None:
        for i, v in enumerate(vectors):
            message = b"\n".join(
                [
                    b"VTREQ1",
                    v["method"].upper().encode(),
                    v["target"].encode(),
                    hashlib.sha256(unhex(v["body"])).hexdigest().encode(),
                    str(v["timestamp"]).encode(),
                    v["nonce"].encode(),
                    v["idempotency_key"].encode(),
                ]
            )
            expect(f"[{i}] message", message, unhex(v["message"]))
            ok = signature_ok(public_key, "request", message, unhex(v["signature"]))
            expect(f"[{i}] signature verifies", ok, True)

    return check


def check_merkle(v, expect) -> None:
    leaves = [unhex(x) for x in v["leaves"]]
    hashes = [leaf_hash(x) for x in leaves]
    for tree in v["trees"]:
        size = tree["size"]
        root = mth(hashes[:size])
        expect(f"root({size})", root, unhex(tree["root"]))
        for inc in tree["inclusion"]:
            proof = [unhex(p) for p in inc["proof"]]
            expect(f"path({inc['index']}, {size})", proof, audit_path(hashes[:size], inc["index"]))
            ok = verify_inclusion(hashes[inc["index"]], inc["index"], size, proof, root)
            expect(f"path({inc['index']}, {size}) verifies", ok, True)
    for c in v["consistency"]:
        proof = [unhex(p) for p in c["proof"]]
        want = consistency(hashes[: c["new_size"]], c["old_size"])
        expect(f"consistency({c['old_size']}, {c['new_size']})", proof, want)


def trajectory_leaf(step: int, state_root: bytes) -> bytes:
    return b"VTTRAJ1" + struct.pack("<Q", step) + state_root


def check_trajectory(v, expect) -> None:
    leaves = [trajectory_leaf(e["step"], unhex(e["state_root"])) for e in v["entries"]]
    expect("leaves", leaves, [unhex(x) for x in v["leaves"]])
    hashes = [leaf_hash(x) for x in leaves]
    root = mth(hashes)
    expect("root", root, unhex(v["root"]))
    index, proof = v["proof_index"], [unhex(p) for p in v["proof"]]
    expect("proof", proof, audit_path(hashes, index))
    expect("proof verifies", verify_inclusion(hashes[index], index, len(hashes), proof, root), True)


def make_commitment_check(public_key: bytes):
    def check(v, expect) -> None:
        encoded = b"".join(
            [
                b"VTCOMMIT1",
                unhex(v["job_id"]),
                unhex(v["trajectory_root"]),
                struct.pack("<Q", v["num_checkpoints"]),
                unhex(v["final_model_root"]),
            ]
        )
        expect("encoded", encoded, unhex(v["encoded"]))
        ok = signature_ok(public_key, "commitment", encoded, unhex(v["signature"]))
        expect("signature verifies", ok, True)

    return check


def chunk_header(name: str, dtype: str, shape: list[int], chunk: int, chunks: int) -> bytes:
    encoded = name.encode()
    return b"".join(
        [
            b"VTCHUNK1",
            struct.pack("<H", len(encoded)),
            encoded,
            dtype.encode(),
            struct.pack("<B", len(shape)),
            struct.pack(f"<{len(shape)}Q", *shape),
            struct.pack("<II", chunk, chunks),
        ]
    )


def state_chunks(tensors: dict) -> list[dict]:
    """Every chunk of a state: tensors in sorted name (UTF-8 byte) order, 64 KiB pieces, an
    empty tensor giving one empty chunk."""
    out = []
    for name in sorted(tensors, key=lambda n: n.encode()):
        t = tensors[name]
        data = unhex(t["data"])
        bounds = [(s, min(s + CHUNK_SIZE, len(data))) for s in range(0, len(data), CHUNK_SIZE)]
        bounds = bounds or [(0, 0)]
        for i, (start, end) in enumerate(bounds):
            header = chunk_header(name, t["dtype"], t["shape"], i, len(bounds))
            out.append(
                {
                    "tensor": name,
                    "chunk": i,
                    "start": start,
                    "end": end,
                    "header": header.hex(),
                    "leaf_hash": leaf_hash(header + data[start:end]).hex(),
                }
            )
    return out


def check_state(v, expect) -> None:
    sizes = {"F32": 4, "F64": 8, "I64": 8}
    for name, t in v["tensors"].items():
        count = 1
        for dim in t["shape"]:
            count *= dim
        expect(f"{name} byte length", len(unhex(t["data"])), count * sizes[t["dtype"]])
    chunks = state_chunks(v["tensors"])
    expect("chunk count", len(chunks), len(v["chunks"]))
    for i, (got, want) in enumerate(zip(chunks, v["chunks"], strict=False)):
        expect(f"chunk[{i}] ({want['tensor']}#{want['chunk']})", got, want)
    root = mth([unhex(c["leaf_hash"]) for c in chunks])
    expect("state root", root, unhex(v["state_root"]))
    params = {k: t for k, t in v["tensors"].items() if k.startswith("param/")}
    model = mth([unhex(c["leaf_hash"]) for c in state_chunks(params)])
    expect("model root", model, unhex(v["model_root"]))


def check_job(v, expect) -> None:
    canonical = json.dumps(
        v["spec"], sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()
    expect("canonical bytes", canonical, unhex(v["canonical"]))
    expect("job id", sha256(b"veritrain/v1/job\x00", canonical), unhex(v["job_id"]))


def draw(seed: bytes, purpose: bytes, counter: int, bound: int) -> int:
    digest = sha256(seed, purpose, struct.pack("<Q", counter))
    return int.from_bytes(digest, "little") % bound


def segment_choice(seed: bytes, total: int, count: int) -> list[int]:
    remaining, picked = list(range(total)), []
    for counter in range(min(count, total)):
        picked.append(remaining.pop(draw(seed, b"segment", counter, len(remaining))))
    return sorted(picked)


def verifier_choice(seed: bytes, candidates: list[list], count: int) -> list[str]:
    pool = sorted((key, stake) for key, stake in candidates if stake > 0)
    chosen = []
    for counter in range(min(count, len(pool))):
        point = draw(seed, b"verifier", counter, sum(stake for _, stake in pool))
        for i, (key, stake) in enumerate(pool):
            if point < stake:
                chosen.append(key)
                del pool[i]
                break
            point -= stake
    return chosen


def make_sampling_check(commitment_encoded: str):
    def check(v, expect) -> None:
        beacon = unhex(v["beacon"])
        expect("beacon commitment", sha256(b"VTBEACON1", beacon), unhex(v["beacon_commitment"]))
        expect("commitment bytes are the commitment's", v["commitment_bytes"], commitment_encoded)
        seed = sha256(b"VTSELECT2", beacon, unhex(v["commitment_bytes"]))
        expect("selection seed", seed, unhex(v["selection_seed"]))
        for s in v["segments"]:
            got = segment_choice(seed, s["total"], s["count"])
            expect(f"segments({s['total']}, {s['count']})", got, s["choice"])
        for c in v["verifiers"]:
            got = verifier_choice(seed, v["candidates"], c["count"])
            expect(f"verifiers({c['count']})", got, c["choice"])

    return check


def check_verification_commits(vectors, expect) -> None:
    for i, v in enumerate(vectors):
        got = sha256(b"VTVCOMMIT1", unhex(v["root"]), unhex(v["salt"]))
        expect(f"[{i}] commit", got, unhex(v["commit"]))


def make_log_check(public_key: bytes):
    def check(vectors, expect) -> None:
        prev, bodies = "0" * 64, []
        for v in vectors["entries"]:
            fields = {k: v[k] for k in ("index", "prev", "time", "kind", "data", "postings")}
            body = canonical_json(fields)
            expect(f"[{v['index']}] body", body.decode(), v["body"])
            expect(f"[{v['index']}] prev links the last leaf", v["prev"], prev)
            expect(f"[{v['index']}] leaf hash", leaf_hash(body), unhex(v["leaf_hash"]))
            signed = signature_ok(public_key, "log-entry", body, unhex(v["signature"]))
            expect(f"[{v['index']}] signature", signed, True)
            prev, bodies = leaf_hash(body).hex(), [*bodies, body]
        head = vectors["head"]
        root = mth([leaf_hash(b) for b in bodies])
        expect("head root", root, unhex(head["root"]))
        encoded = b"VTHEAD1" + struct.pack("<QQ", len(bodies), head["timestamp_ms"]) + root
        expect("head bytes", encoded, unhex(head["encoded"]))
        signed = signature_ok(public_key, "log-head", encoded, unhex(head["signature"]))
        expect("head signature", signed, True)

    return check


# --- the dispute game ---------------------------------------------------------------------------

GAME_FORMAT = "veritrain-dispute-vectors-v1"
MOVES = {("steps", "solver"): "dissect", ("steps", "verifier"): "choose"}
MOVES.update({("chunks", "solver"): "split", ("chunks", "verifier"): "pick"})
LATE = {("steps", "solver"), ("steps", "verifier"), ("chunks", "solver"), ("chunks", "verifier")}
LATE.add(("state", "solver"))
# the fields of a game state that two implementations must agree on ("reason" is prose)
NORMATIVE = [
    "phase",
    "turn",
    "round",
    "deadline",
    "lo",
    "hi",
    "points",
    "node",
    "node_hashes",
    "split",
    "roots",
    "verifier_roots",
    "winner",
    "moves",
]


def dissection_points(lo: int, hi: int, arity: int) -> list[int]:
    return sorted({lo + (hi - lo) * i // arity for i in range(1, arity)} - {lo, hi})


def child_ranges(start: int, end: int) -> tuple[list[int], list[int]]:
    k = split(end - start)
    return [start, start + k], [start + k, end]


def over(g: dict, winner) -> None:
    g.update(phase="over", turn=None, winner=winner)


def advance(g: dict, now: int, **changes) -> None:
    g.update(round=g["round"] + 1, deadline=now + g["move_timeout"], **changes)
    if g["phase"] == "steps" and g["hi"] - g["lo"] == 1:  # one step: bisect its chunks
        roots = (g["roots"][str(g["hi"])], g["verifier_roots"][str(g["hi"])])
        g.update(phase="chunks", turn="solver", node=[0, g["num_chunks"]], node_hashes=list(roots))
    if g["phase"] == "chunks" and g["node"][1] - g["node"][0] == 1:  # one chunk: the state is owed
        g.update(phase="state", turn="solver")


def children(payload: dict, parent: str) -> list[str]:
    left, right = payload["left"], payload["right"]
    require(node_hash(unhex(left), unhex(right)).hex() == parent, "children do not hash to claim")
    return [left, right]


def apply_move(g: dict, event: dict) -> None:
    move, now = event["move"], event["now"]
    party, kind, payload = move["party"], move["kind"], move["payload"]
    require(g["phase"] != "over" and now < g["deadline"], "a move after the end or the deadline")
    require(party == g["turn"] and MOVES.get((g["phase"], party)) == kind, "a move out of turn")
    require(move["round"] == g["round"], "a move for another round")
    body = {"game": g["game_id"], "party": party, "kind": kind, "round": move["round"]}
    message = canonical_json({**body, "payload": payload})
    key = unhex(g[f"{party}_key"])
    require(signature_ok(key, "dispute-move", message, unhex(move["signature"])), "bad signature")
    g["moves"] += 1
    if kind == "dissect":
        points = dissection_points(g["lo"], g["hi"], g["arity"])
        posted = {str(p): r for p, r in zip(points, payload["roots"], strict=True)}
        if any(g["roots"].get(p, r) != r for p, r in posted.items()):
            return over(g, "verifier")  # equivocation: it contradicts a root it is bound to
        advance(g, now, roots={**g["roots"], **posted}, points=points, turn="verifier")
    elif kind == "choose":
        bounds = [g["lo"], *g["points"], g["hi"]]
        lo, hi = bounds[payload["index"]], bounds[payload["index"] + 1]
        require(payload["root"] != g["roots"][str(hi)], "agreement is not a dispute")
        mine = {**g["verifier_roots"], str(lo): g["roots"][str(lo)], str(hi): payload["root"]}
        advance(g, now, lo=lo, hi=hi, points=[], turn="solver", verifier_roots=mine)
    elif kind == "split":
        advance(g, now, split=children(payload, g["node_hashes"][0]), turn="verifier")
    else:  # pick: the verifier's own children; the first that differs from the solver's wins
        mine = children(payload, g["node_hashes"][1])
        side = 0 if mine[0] != g["split"][0] else 1
        node = child_ranges(*g["node"])[side]
        hashes = [g["split"][side], mine[side]]
        advance(g, now, node=node, node_hashes=hashes, split=["", ""], turn="solver")


def apply_event(g: dict, event: dict) -> None:
    kind = event["event"]
    if kind == "move":
        apply_move(g, event)
    elif kind == "deadline":
        require(event["now"] >= g["deadline"], "a deadline event before the deadline")
        if g["phase"] != "over" and (g["phase"], g["turn"]) in LATE:
            over(g, "verifier" if g["turn"] == "solver" else "solver")
    elif kind == "state_supplied":
        require(g["phase"] == "state", "a state supplied outside the state phase")
        g.update(phase="ruling", turn="referee", round=g["round"] + 1)
        g["deadline"] = event["now"] + g["move_timeout"]
    else:  # ruling: the referee's hash of the disputed chunk
        require(g["phase"] == "ruling", "a ruling outside the ruling phase")
        truth, (solver, verifier) = event["chunk_hash"], g["node_hashes"]
        over(g, "solver" if truth == solver else "verifier" if truth == verifier else None)


def check_games(cases, expect) -> None:
    for case in cases:
        g = json.loads(json.dumps(case["initial"]))
        for number, event in enumerate(case["events"]):
            apply_event(g, event)
            for name in NORMATIVE:
                expect(f"{case['name']} event {number} {name}", g[name], event["after"][name])
        outcome = case["outcome"]
        expect(f"{case['name']} winner", g["winner"], outcome["winner"])
        expect(f"{case['name']} moves", g["moves"], outcome["moves"])


def check_game_file(path: Path, checker: "Checker") -> None:
    try:
        games = json.loads(path.read_text())
        require(games["format"] == GAME_FORMAT, f"format {games['format']!r}")
    except (OSError, ValueError, KeyError, TypeError, VectorMismatch) as err:
        print(f"FAIL reading {path}: {type(err).__name__}: {err}")
        checker.failures += 1
        return
    checker.group("dispute games", check_games, games["cases"])


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("primitives.json")
    try:
        vectors = json.loads(path.read_text())
        if vectors.get("version") != SUPPORTED_VERSION:
            print(
                f"FAIL version: {vectors.get('version')!r}, this checker reads {SUPPORTED_VERSION}"
            )
            return 1
        seed, public_key = unhex(vectors["signer"]["seed"]), unhex(vectors["signer"]["public_key"])
        commitment_encoded = vectors["commitment"]["encoded"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        print(f"FAIL reading {path}: {type(err).__name__}: {err}")
        return 1
    checker = Checker()
    groups = [
        ("signer", check_signer, "signer"),
        ("signing domains", make_signing_check(public_key, seed), "signing"),
        ("request messages", make_request_check(public_key), "requests"),
        ("rfc9162 trees", check_merkle, "merkle"),
        ("trajectory", check_trajectory, "trajectory"),
        ("commitment", make_commitment_check(public_key), "commitment"),
        ("state chunks and roots", check_state, "state"),
        ("job id", check_job, "job"),
        ("beacon, seed and draws", make_sampling_check(commitment_encoded), "sampling"),
        ("verification commits", check_verification_commits, "verification_commits"),
        ("log entries and head", make_log_check(public_key), "log"),
    ]
    for name, fn, key in groups:
        checker.group(name, fn, vectors.get(key))
    games = Path(argv[2]) if len(argv) > 2 else Path(__file__).with_name("dispute_games.json")
    check_game_file(games, checker)
    print("all vectors replay" if not checker.failures else f"{checker.failures} group(s) failed")
    return 1 if checker.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
