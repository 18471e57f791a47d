"""The three user modules exported once per session through the real `veritrain model export`."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.onnx_models import user_models

USER_MODELS = Path(user_models.__file__)
EXPORTS = {  # factory → (input shape, input dtype)
    "gpt": ((user_models.GPT_BATCH, user_models.GPT_CONTEXT), "int64"),
    "resnet": ((user_models.CNN_BATCH, *user_models.CNN_SHAPE), "float32"),
    "mlp": ((user_models.MLP_BATCH, user_models.MLP_INPUTS), "float32"),
}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@dataclass(frozen=True)
class Export:
    path: Path
    stdout: str


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict[str, Export]:
    out = tmp_path_factory.mktemp("onnx")
    exports = {}
    for factory, (shape, dtype) in EXPORTS.items():
        path = out / f"{factory}.onnx"
        result = run_cli(
            "model",
            "export",
            f"{USER_MODELS}:{factory}",
            "--input-shape",
            ",".join(map(str, shape)),
            "--input-dtype",
            dtype,
            "--out",
            str(path),
        )
        assert result.returncode == 0, result.stderr
        exports[factory] = Export(path, result.stdout)
    return exports
