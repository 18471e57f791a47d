"""A daemon's durable memory: one JSON file, rewritten atomically after every change, so a
kill -9 at any instant leaves either the old or the new state — never half of one."""

import json
from pathlib import Path
from typing import Any

from sdk.state_files import write_atomically


class DurableState:
    def __init__(self, path: Path, initial: dict[str, Any]):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self.data = json.loads(path.read_text())
        else:
            self.data = initial
            self.save()  # its existence also tells a supervisor the daemon is up

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.data, sort_keys=True).encode())
