"""The node's wall clock, in integer milliseconds since the Unix epoch.

Only the raft layer reads clocks: the leader stamps commands and proposes ticks
with it, and the kernel sees nothing but the numbers. The offset exists so the
clock-skew drill can run one node seconds ahead of or behind the others.
"""
from __future__ import annotations

import time


def now_ms() -> int:
    """This machine's wall clock, ms since the Unix epoch (the one definition; tools use it too)."""
    return time.time_ns() // 1_000_000


class Clock:
    """Wall clock with an optional fixed offset (ms)."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = int(offset_ms)

    def now_ms(self) -> int:
        return now_ms() + self.offset_ms

    def seconds_until(self, deadline_ms: int) -> float:
        """Seconds from now until deadline_ms (negative when it has passed)."""
        return (deadline_ms - self.offset_ms) / 1000.0 - time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (for local timeouts, never replicated)."""
        return time.monotonic()
