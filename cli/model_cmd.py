"""`veritrain model …`: export a user's torch module as an ONNX training graph, check a graph.

The export imports the user's own module on their own machine (their code, their trust). It uses
torch's TorchScript exporter with `training=TrainingMode.TRAINING`, the one path measured to keep
training semantics: the dynamo exporter folds BatchNormalization into the convolution
(`optimize=True`) or writes it in inference form (`optimize=False`, even with TRAINING). Shape
arithmetic is then folded into constants (`protocol.onnx_model.compute_folded_onnx`).
"""

import argparse
import copy
import importlib.util
import io
import sys
import warnings
from pathlib import Path

from cli.common import read_bytes_file
from protocol.errors import InvalidInput

# onnx, torch and protocol.onnx_model are imported inside the commands: importing onnx takes
# about a second, which every other `veritrain` command would pay at start-up.

INPUT_DTYPES = ("float32", "int64")
OPSET = 20
EXPORTER = "torch.onnx.export(dynamo=False, training=TRAINING, do_constant_folding=False)"


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="bring your own model: ONNX training graphs")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")

    export = commands.add_parser("export", help="export FILE.py:FACTORY as an ONNX training graph")
    export.add_argument("factory", help="path/to/file.py:function returning a torch.nn.Module")
    export.add_argument("--input-shape", required=True, help="batch shape, e.g. 8,32 (fixed)")
    export.add_argument("--input-dtype", choices=INPUT_DTYPES, default="float32")
    export.add_argument("--out", required=True, help="the .onnx file to write")
    export.set_defaults(func=cmd_export)

    check = commands.add_parser("check", help="check a graph against the supported-op table")
    check.add_argument("file", help="an .onnx file")
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from protocol.onnx_model import load_onnx_model

    model = load_onnx_model(read_bytes_file(args.file, "file"))
    print(describe_model(args.file, model))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from protocol.onnx_model import load_onnx_model

    shape = parse_input_shape(args.input_shape)
    module = load_factory(args.factory)()
    if not isinstance(module, torch.nn.Module):
        raise InvalidInput(f"returned {type(module).__name__}, not a torch.nn.Module", "factory")
    blob, kept = export_training_graph(module, shape, getattr(torch, args.input_dtype))
    model = load_onnx_model(blob)
    try:
        Path(args.out).write_bytes(blob)
    except OSError as err:
        raise InvalidInput(f"cannot write {args.out} ({err.strerror})", "--out") from err
    print(f"{describe_model(args.out, model)}; kept: {kept}")
    return 0


def parse_input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError as err:
        raise InvalidInput(
            f"'{text}' is not a comma-separated list of sizes", "--input-shape"
        ) from err
    if not shape or any(size <= 0 for size in shape):
        raise InvalidInput(f"'{text}' must list positive sizes", "--input-shape")
    return shape


def load_factory(spec: str):
    """Import path/to/file.py and return its `factory` attribute."""
    path, _, name = spec.rpartition(":")
    if not path or not name or not path.endswith(".py"):
        raise InvalidInput(f"'{spec}' is not path/to/file.py:factory", "factory")
    if not Path(path).is_file():
        raise InvalidInput(f"no such file: {path}", "factory")
    module_spec = importlib.util.spec_from_file_location(f"veritrain_user_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses and pickling look a module up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 — the user's code may raise anything
        raise InvalidInput(
            f"importing {path} failed: {type(err).__name__}: {err}", "factory"
        ) from err
    factory = getattr(module, name, None)
    if not callable(factory):
        raise InvalidInput(f"{path} has no callable '{name}'", "factory")
    return factory


def export_training_graph(module, shape: tuple[int, ...], dtype) -> tuple[bytes, str]:
    """The module in train() mode as a folded ONNX graph, its initial state unchanged, and a line
    saying which training semantics the graph kept."""
    import torch

    from protocol.onnx_model import compute_folded_onnx

    module.train()
    snapshot = copy.deepcopy(module.state_dict())  # the trace runs forward: BN stats move
    example = _example_input(shape, dtype)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                training=torch.onnx.TrainingMode.TRAINING,
                do_constant_folding=False,
                input_names=["input"],
                output_names=["output"],
            )
    except Exception as err:  # noqa: BLE001 — the exporter raises many types
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise InvalidInput(
            f"torch.onnx.export failed: {type(err).__name__}: {first_line[:200]}", "factory"
        ) from err
    finally:
        module.load_state_dict(snapshot)
    blob = _restore_initializers(buffer.getvalue(), snapshot)
    kept = check_training_semantics(module, blob)
    return compute_folded_onnx(_stamp(blob, kept)), kept


def _example_input(shape: tuple[int, ...], dtype):
    import torch

    if dtype == torch.int64:
        return torch.zeros(shape, dtype=dtype)  # index 0 exists in every embedding
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def _restore_initializers(blob: bytes, snapshot: dict) -> bytes:
    """Write the pre-export values (the exporter's trace updated the running statistics)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_model_from_string(blob)
    for tensor in proto.graph.initializer:
        value = snapshot.get(tensor.name)
        if value is not None and list(value.shape) == list(tensor.dims):
            tensor.CopyFrom(numpy_helper.from_array(value.detach().cpu().numpy(), tensor.name))
    return proto.SerializeToString()


def check_training_semantics(module, blob: bytes) -> str:
    """Refuse an export that lost a training-mode batch norm or dropout."""
    import onnx
    from torch import nn

    nodes = onnx.load_model_from_string(blob).graph.node
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kept_norms = [n for n in nodes if n.op_type == "BatchNormalization" and _training(n)]
    if len(kept_norms) < len(norms):
        raise InvalidInput(
            f"the export kept {len(kept_norms)} of {len(norms)} batch norms in training mode",
            "factory",
        )
    dropouts = [m for m in module.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    kept_dropouts = [n for n in nodes if n.op_type == "Dropout"]
    if len(kept_dropouts) < len(dropouts):
        raise InvalidInput(
            f"the export lost {len(dropouts) - len(kept_dropouts)} dropout(s)", "factory"
        )
    return (
        f"{len(kept_norms)} BatchNormalization in training mode, {len(kept_dropouts)} Dropout "
        f"(exporter: {EXPORTER})"
    )


def _training(node) -> bool:
    return any(a.name == "training_mode" and a.i for a in node.attribute)


def _stamp(blob: bytes, kept: str) -> bytes:
    import onnx

    proto = onnx.load_model_from_string(blob)
    onnx.helper.set_model_props(proto, {"veritrain.exporter": EXPORTER, "veritrain.kept": kept})
    return proto.SerializeToString()


def describe_model(path: str, model) -> str:
    """One line: parameters, ops (fused patterns by name), repro-safety."""
    ops = ", ".join(f"{op} {count}" for op, count in sorted(model.op_counts.items()))
    unsafe = model.unsafe_steps
    safety = (
        "repro-safe"
        if not unsafe
        else (f"not repro-safe ({len(unsafe)} node(s), first '{unsafe[0].name}' {unsafe[0].op})")
    )
    frozen = sum(mode == "inference" for mode in model.batch_norm_modes.values())
    note = f"; {frozen} BatchNormalization in inference mode (frozen statistics)" if frozen else ""
    return f"{path}: {model.parameter_count} parameters; ops: {ops}; {safety}{note}"
