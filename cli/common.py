"""Small helpers shared by command modules: JSON files, JSON output, progress bars."""

import dataclasses
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from protocol.errors import InvalidInput


def read_json_file(path: str, field: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise InvalidInput(f"no such file: {path}", field) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"{path} is not valid JSON ({err})", field) from err


def read_bytes_file(path: str | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InvalidInput(f"cannot read {path} ({err.strerror})", field) from err


def print_json(obj: Any) -> None:
    """`obj` as one line of JSON; the SDK's response dataclasses print as their fields."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=_to_json) + "\n")
    sys.stdout.flush()


def _to_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


@contextmanager
def step_progress(description: str, enabled: bool = True):
    """Yields an `on_progress(event)` callback that drives a progress bar on stderr."""
    if not enabled or not sys.stderr.isatty() and not _force_progress():
        yield lambda event: None
        return
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=False, console=_stderr_console()) as bar:
        task = bar.add_task(description, total=None, loss="")

        def on_progress(event: dict) -> None:
            loss = f"loss {event['loss']:.4f}" if "loss" in event else ""
            bar.update(task, completed=event.get("step", 0), total=event.get("steps"), loss=loss)

        yield on_progress


def _force_progress() -> bool:
    import os

    return os.environ.get("VERITRAIN_PROGRESS") == "1"


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
