"""Recurring timers: an `every` schedule, and the next occurrence, from committed data only.

A timer created with `every_ms` > 0 fires first at its fire_at, then every
`every_ms` after: occurrence k is due at fire_at + k * every_ms. Each occurrence
is a fire of its own (a `fired` event whose seq is its fire_id); in the same
tick the timer re-arms at its next occurrence (an `armed` event): the schedule
moves on when an occurrence fires, whatever becomes of its delivery. The next
occurrence is the first one strictly after the tick's time, so after an outage
the missed occurrences fire once, together (catch-up "fire once"), and the
schedule stays on its grid. The timer settles (and its retention starts) with
its last occurrence: the `max_count`-th fire, or the last one due at or before
`until`. Nothing here reads a clock: every replica computes the same times from
the committed fire_at, every_ms and the tick's time.

Not yet: cron expressions and time zones, overlap and catch-up policies other
than "fire once", and ack_required on a recurring timer (refused).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from ._wheel import MAX_TIME
from .errors import InvalidArgument

__all__ = ["Every", "MIN_EVERY_MS", "MAX_OCCURRENCES", "check_every", "next_occurrence", "NO_UNTIL"]

MIN_EVERY_MS = 1000            # one occurrence a second at most per timer: bounds the events it makes
MAX_OCCURRENCES = (1 << 32) - 1
NO_UNTIL = -1


class Every(NamedTuple):
    """A timer's recurrence as the table stores it."""

    every_ms: int
    until: int          # last time an occurrence may be due (inclusive); NO_UNTIL: none
    max_count: int      # occurrences in all; 0: unbounded


def _int(field: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(field, f"must be an int, not {type(v).__name__}")
    return int(v)


def check_every(p: str, every_ms: Any, until: Any, max_count: Any, fire_at: int, ack: bool) -> Optional[Every]:
    """The spec's schedule (None for a one-shot timer), or InvalidArgument naming the field."""
    every_ms = _int(f"{p}.every_ms", every_ms)
    max_count = _int(f"{p}.max_count", max_count)
    if not every_ms:
        if until is not None or max_count:
            raise InvalidArgument(f"{p}.every_ms", "until and max_count need an every_ms")
        return None
    if not MIN_EVERY_MS <= every_ms <= MAX_TIME:
        raise InvalidArgument(f"{p}.every_ms", f"must be 0 (no recurrence) or {MIN_EVERY_MS}..{MAX_TIME} ms, "
                                               f"got {every_ms}")
    if not 0 <= max_count <= MAX_OCCURRENCES:
        raise InvalidArgument(f"{p}.max_count", f"must be within 0..{MAX_OCCURRENCES} (0: unbounded)")
    if until is None:
        end = NO_UNTIL
    else:
        end = _int(f"{p}.until", until)
        if not fire_at <= end <= MAX_TIME:
            raise InvalidArgument(f"{p}.until", f"must be within fire_at..{MAX_TIME} ms, got {end}")
    if ack:
        raise InvalidArgument(f"{p}.ack_required", "a recurring timer cannot require acks yet")
    return Every(every_ms, end, max_count)


def next_occurrence(sched: Every, due_at: int, now: int, fired: int) -> Optional[int]:
    """The occurrence after the one due at `due_at` that fired at `now` (the `fired`-th
    fire of the timer): the first one on the grid strictly after `now`, or None when the
    schedule is over (max_count reached, past until, or beyond MAX_TIME)."""
    if sched.max_count and fired >= sched.max_count:
        return None
    every = sched.every_ms
    nxt = due_at + every * (max(now - due_at, 0) // every + 1)
    if nxt > MAX_TIME or (sched.until != NO_UNTIL and nxt > sched.until):
        return None
    return nxt
