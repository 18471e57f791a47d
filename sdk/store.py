"""Checkpoint directories: safetensors checkpoints, chunk-hash sidecars and a JSON manifest.

Layout of a run directory:

    manifest.json                 job id, spec, chunk size, one entry per written checkpoint
    files/<sha256>                the job's files: a user dataset, ONNX graph, initial weights
    checkpoints/000003.safetensors    state at checkpoint 3
    checkpoints/000003.hashes         its chunk leaf hashes (32 bytes each), to locate bad chunks

Every file is written to a temporary name, fsynced and renamed, so a crash never leaves a
half-written checkpoint behind the manifest's back.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import CheckpointCorrupt, InvalidInput
from protocol.job_files import JobFiles, collect_job_files, get_job_file
from protocol.merkle import root_from_leaf_hashes
from protocol.spec import (
    JobSpec,
    compute_checkpoint_steps,
    compute_job_id,
    get_job_file_hashes,
    parse_job_spec,
    spec_to_json,
)
from protocol.state import (
    CHUNK_SIZE,
    TrainingState,
    compute_chunk_hashes,
    compute_chunk_layout,
    compute_model_root,
    get_step,
    locate_bad_chunk,
)
from protocol.trajectory import compute_trajectory_root
from protocol.types import HASH_SIZE, Root, StepIndex
from sdk.state_files import read_state_file, write_atomically, write_hashed_state_file

MANIFEST = "manifest.json"
FILES_DIR = "files"
RUN_FORMAT = "veritrain-run-v1"


def read_job_files(paths: "list[Path] | list[str]") -> dict[str, bytes]:
    """Local job files, keyed by their SHA-256 (a missing file is InvalidInput naming it)."""
    try:
        return collect_job_files(Path(path).read_bytes() for path in paths)
    except OSError as err:
        raise InvalidInput(f"cannot read a job file ({err})", "files") from err


@dataclass(frozen=True)
class CheckpointEntry:
    index: int
    step: StepIndex
    state_root: Root


class CheckpointStore:
    """One training run's directory."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory = directory
        self.manifest = manifest
        self.spec: JobSpec = parse_job_spec(manifest["spec"])
        self.checkpoint_steps = compute_checkpoint_steps(self.spec)

    # --- opening -----------------------------------------------------------------------------
    @classmethod
    def create(
        cls, directory: Path, spec: JobSpec, files: JobFiles | None = None
    ) -> "CheckpointStore":
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "checkpoints").mkdir(exist_ok=True)
        for sha256 in get_job_file_hashes(spec):  # a replay needs exactly these
            (directory / FILES_DIR).mkdir(exist_ok=True)
            write_atomically(directory / FILES_DIR / sha256, get_job_file(files, sha256, "files"))
        manifest = {
            "format": RUN_FORMAT,
            "job_id": compute_job_id(spec).hex(),
            "spec": spec_to_json(spec),
            "chunk_size": CHUNK_SIZE,
            "checkpoints": [],
            "complete": False,
        }
        store = cls(directory, manifest)
        store._save_manifest()
        return store

    @classmethod
    def open(cls, directory: Path) -> "CheckpointStore":
        path = directory / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError as err:
            raise InvalidInput(f"no {MANIFEST} in {directory}", "dir") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InvalidInput(f"{path} is not valid JSON ({err})", "dir") from err
        if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
            raise InvalidInput(f"{path} is not a veritrain run manifest", "dir")
        if manifest.get("chunk_size") != CHUNK_SIZE:
            raise InvalidInput(
                f"chunk size {manifest.get('chunk_size')} is not {CHUNK_SIZE}", "dir"
            )
        return cls(directory, manifest)

    @classmethod
    def open_or_create(
        cls, directory: Path, spec: JobSpec, files: JobFiles | None
    ) -> "CheckpointStore":
        if (directory / MANIFEST).exists():
            store = cls.open(directory)
            if store.manifest["job_id"] != compute_job_id(spec).hex():
                raise InvalidInput(f"{directory} holds a different job", "out")
            return store
        return cls.create(directory, spec, files)

    # --- reading -----------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.manifest["job_id"]

    def entries(self) -> list[CheckpointEntry]:
        return [
            CheckpointEntry(e["index"], StepIndex(e["step"]), Root(bytes.fromhex(e["state_root"])))
            for e in self.manifest["checkpoints"]
        ]

    def job_files(self) -> dict[str, bytes]:
        return read_job_files(self.file_paths())

    def file_paths(self) -> list[Path]:
        return [self.directory / FILES_DIR / sha for sha in get_job_file_hashes(self.spec)]

    def checkpoint_path(self, index: int) -> Path:
        return self.directory / "checkpoints" / f"{index:06d}.safetensors"

    def get_file_sha256(self, index: int) -> str | None:
        """The checkpoint file's SHA-256 as written (None in a run from before it was kept)."""
        return self.manifest["checkpoints"][index].get("sha256")

    def _entry(self, index: int) -> CheckpointEntry:
        entries = self.entries()
        if not 0 <= index < len(entries):
            raise InvalidInput(
                f"checkpoint {index} does not exist (have {len(entries)})", "segment"
            )
        return entries[index]

    def load_checkpoint(self, index: int) -> TrainingState:
        """The state at checkpoint `index`, verified against its committed root."""
        entry = self._entry(index)
        state = read_state_file(self.checkpoint_path(index))
        return verify_state(state, entry.state_root, entry.step, self._sidecar_hashes(index))

    def _sidecar_hashes(self, index: int) -> list[bytes] | None:
        path = self.checkpoint_path(index).with_suffix(".hashes")
        if not path.exists():
            return None
        raw = path.read_bytes()
        return [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]

    # --- writing -----------------------------------------------------------------------------
    def write_checkpoint(self, state: TrainingState) -> CheckpointEntry:
        index = len(self.manifest["checkpoints"])
        step = get_step(state)
        if index >= len(self.checkpoint_steps) or self.checkpoint_steps[index] != step:
            raise InvalidInput(f"step {step} is not checkpoint {index} of this job", "state")
        hashes = compute_chunk_hashes(state)
        root = root_from_leaf_hashes(hashes)
        path = self.checkpoint_path(index)
        sha256 = write_hashed_state_file(path, state)
        write_atomically(path.with_suffix(".hashes"), b"".join(hashes))
        self.manifest["checkpoints"].append(
            {
                "index": index,
                "step": step,
                "state_root": root.hex(),
                "file": f"checkpoints/{path.name}",
                "sha256": sha256,
            }
        )
        if index == len(self.checkpoint_steps) - 1:
            self._finalize(state)
        self._save_manifest()
        return CheckpointEntry(index, StepIndex(step), root)

    def _finalize(self, final_state: TrainingState) -> None:
        entries = [
            (e["step"], bytes.fromhex(e["state_root"])) for e in self.manifest["checkpoints"]
        ]
        self.manifest.update(
            complete=True,
            trajectory_root=compute_trajectory_root(entries).hex(),
            final_state_root=entries[-1][1].hex(),
            final_model_root=compute_model_root(final_state).hex(),
        )

    def _save_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=2, sort_keys=True)
        write_atomically(self.directory / MANIFEST, text.encode())

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "trajectory_root": self.manifest.get("trajectory_root"),
            "final_state_root": self.manifest.get("final_state_root"),
            "final_model_root": self.manifest.get("final_model_root"),
            "checkpoints": len(self.manifest["checkpoints"]),
            "complete": self.manifest["complete"],
        }


def verify_state(
    state: TrainingState, root: Root, step: int, sidecar: list[bytes] | None
) -> TrainingState:
    """Check a state read from a file (`read_state_file`: canonical bytes) against a committed
    root; name the first bad chunk."""
    hashes = compute_chunk_hashes(state)
    if root_from_leaf_hashes(hashes) != root:
        bad = (
            locate_bad_chunk(state, sidecar)
            if sidecar and root_from_leaf_hashes(sidecar) == root
            else None
        )
        if bad is not None:
            raise CheckpointCorrupt(
                f"chunk {bad.index} (tensor {bad.tensor!r}, bytes {bad.start}-{bad.end}) does not match "
                "the committed state root",
                chunk_index=bad.index,
                tensor=bad.tensor,
            )
        raise CheckpointCorrupt("state does not match the committed state root")
    if get_step(state) != step:
        raise CheckpointCorrupt(f"checkpoint holds step {get_step(state)}, expected {step}")
    return state


def describe_chunk(state: TrainingState, chunk_index: int) -> str:
    ref = compute_chunk_layout(state)[chunk_index]
    return f"chunk {ref.index}: tensor {ref.tensor!r} bytes {ref.start}-{ref.end}"
