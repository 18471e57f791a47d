"""The protocol clock: wall time, plus an offset that only a dev server lets anyone move.

Deadlines (bidding, heartbeats, moves, challenge windows) use this clock; request signatures
always use the real one, so moving protocol time never weakens replay protection.
"""

import time

FAR_FUTURE = 1e15  # the deadline of something that owes no move


class Clock:
    def __init__(self, offset_s: float = 0.0):
        self.offset_s = offset_s

    def now(self) -> float:
        return time.time() + self.offset_s
