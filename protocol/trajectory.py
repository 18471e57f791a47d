"""Trajectory commitments: one leaf (step, state root) per checkpoint, and the signed commitment."""

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from nacl.signing import SigningKey

from protocol.errors import InvalidInput
from protocol.merkle import inclusion_proof, merkle_root, verify_inclusion
from protocol.signing import DOMAIN_COMMITMENT, is_valid_signature, sign
from protocol.types import HASH_SIZE, JobId, Root, StepIndex

TRAJECTORY_LEAF_TAG = b"VTTRAJ1"


def encode_trajectory_leaf(step: StepIndex, state_root: Root) -> bytes:
    return TRAJECTORY_LEAF_TAG + struct.pack("<Q", step) + bytes(state_root)


def compute_trajectory_root(entries: Sequence[tuple[StepIndex, Root]]) -> Root:
    return Root(merkle_root([encode_trajectory_leaf(s, r) for s, r in entries]))


def compute_trajectory_proof(entries: Sequence[tuple[StepIndex, Root]], index: int) -> list[bytes]:
    return inclusion_proof([encode_trajectory_leaf(s, r) for s, r in entries], index)


def is_valid_trajectory_proof(
    step: StepIndex, state_root: Root, index: int, size: int, proof: Sequence[bytes], root: Root
) -> bool:
    return verify_inclusion(encode_trajectory_leaf(step, state_root), index, size, proof, root)


@dataclass(frozen=True)
class Commitment:
    """What a solver signs once training is done."""

    job_id: JobId
    trajectory_root: Root
    num_checkpoints: int
    final_model_root: Root

    def encode(self) -> bytes:
        return b"".join(
            [
                b"VTCOMMIT1",
                bytes(self.job_id),
                bytes(self.trajectory_root),
                struct.pack("<Q", self.num_checkpoints),
                bytes(self.final_model_root),
            ]
        )

    def to_json(self) -> dict:
        return {
            "job_id": self.job_id.hex(),
            "trajectory_root": self.trajectory_root.hex(),
            "num_checkpoints": self.num_checkpoints,
            "final_model_root": self.final_model_root.hex(),
        }

    @classmethod
    def from_json(cls, obj: dict) -> "Commitment":
        try:
            fields = {
                k: bytes.fromhex(obj[k]) for k in ("job_id", "trajectory_root", "final_model_root")
            }
            count = obj["num_checkpoints"]
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidInput(f"malformed commitment ({err})", "commitment") from err
        if any(len(v) != HASH_SIZE for v in fields.values()):
            raise InvalidInput("hashes must be 32 bytes", "commitment")
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:
            raise InvalidInput("must be an integer ≥ 2", "commitment.num_checkpoints")
        return cls(
            JobId(fields["job_id"]),
            Root(fields["trajectory_root"]),
            count,
            Root(fields["final_model_root"]),
        )

    def canonical_json(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


def sign_commitment(key: SigningKey, commitment: Commitment) -> bytes:
    return sign(key, DOMAIN_COMMITMENT, commitment.encode())


def is_valid_commitment_signature(
    public_key: bytes, commitment: Commitment, signature: bytes
) -> bool:
    return is_valid_signature(public_key, DOMAIN_COMMITMENT, commitment.encode(), signature)
