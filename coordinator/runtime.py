"""What every service needs besides a session: settings, database, log key, clock, and the
referee's warm workers."""

from dataclasses import dataclass, field

from nacl.signing import SigningKey

from coordinator.clock import Clock
from coordinator.db import Database
from coordinator.settings import Settings
from sdk.warm_worker import WorkerPool


@dataclass
class Runtime:
    settings: Settings
    db: Database
    key: SigningKey
    clock: Clock
    referee_workers: WorkerPool = field(default_factory=WorkerPool)
