"""Domain types: say what a value means, not only what it is made of."""

from typing import NewType

JobId = NewType("JobId", bytes)  # SHA-256 of the canonical job spec
Root = NewType("Root", bytes)  # a 32-byte Merkle root
StepIndex = NewType("StepIndex", int)  # number of optimizer steps applied to a state
Amount = NewType("Amount", int)  # integer micro-units of the marketplace currency

HASH_SIZE = 32
