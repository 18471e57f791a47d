"""The loop both daemons run: one `step()` per round until SIGTERM; errors that a later round can
fix (the coordinator restarting, a refused move, a worker that died) are logged, not fatal."""

import logging
import signal
import time

import httpx

from protocol.errors import VeritrainError


class DaemonStopping(Exception):
    """SIGTERM arrived: leave the current work where it is (it resumes on restart)."""


class Daemon:
    poll_s: float = 1.0
    log = logging.getLogger("veritrain.daemon")

    def __init__(self) -> None:
        self.stopping = False

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        while not self.stopping:
            try:
                self.step()
            except DaemonStopping:
                break
            except (VeritrainError, httpx.TransportError, OSError) as err:  # retried next round
                self.log.warning("step failed: %s", err)
            time.sleep(self.poll_s)

    def _on_sigterm(self, *_args) -> None:
        self.stopping = True
