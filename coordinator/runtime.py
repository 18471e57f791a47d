"""What every service needs besides a session: settings, database, log key and clock."""

from dataclasses import dataclass

from nacl.signing import SigningKey

from coordinator.clock import Clock
from coordinator.db import Database
from coordinator.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    key: SigningKey
    clock: Clock
