"""Recurring timers: `every` and `cron` schedules, next occurrences from committed data only.

A timer created with `every_ms` > 0 fires first at its fire_at, then every
`every_ms` after: occurrence k is due at fire_at + k * every_ms. A timer created
with a `cron` expression (5 fields, or 6 with seconds last; croniter's syntax)
and an IANA time zone fires at the expression's times in that zone: its first
occurrence is the first one at or after the spec's fire_at (the start), computed
when the create applies.

Each occurrence is a fire of its own (a `fired` event whose seq is its fire_id);
in the same tick the timer re-arms at its next occurrence (an `armed` event): the
schedule moves on when an occurrence fires, whatever becomes of its delivery. The
next occurrence is the first one strictly after the tick's time, so after an
outage the missed occurrences fire once, together (catch-up "fire once"). The
timer settles (and its retention starts) with its last occurrence: the
`max_count`-th fire, or the last one due at or before `until`.

Determinism: nothing here reads a clock or the machine's zone files. Time zones
come from the pinned `tzdata` package (ZoneInfo.from_file on its files, never the
system's /usr/share/zoneinfo or $TZ), cron arithmetic from the pinned croniter,
and every input is committed data (the spec, the tick's time). So every replica,
on any machine, computes the same occurrences. Daylight-saving time, as croniter
does it: a wall time that does not exist (the spring-forward gap) fires at the
first instant after the gap (02:30 in a 02:00->03:00 gap fires at 03:00); a wall
time that happens twice (the fall-back hour) fires both times.

Catch-up policies other than "fire once", pause / resume / trigger-now, the preview and
the flexible window: kernel/recurrence.py. Not yet: ack_required, a webhook or a queue on a
recurring timer (refused), and so the overlap policy has nothing to decide.
"""
from __future__ import annotations

import importlib.resources
import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, NamedTuple, Optional
from zoneinfo import ZoneInfo

from ._wheel import MAX_TIME
from .errors import InvalidArgument

__all__ = ["Schedule", "MIN_EVERY_MS", "MAX_OCCURRENCES", "MAX_CRON_LEN", "MAX_TZ_LEN", "NO_UNTIL",
           "check_schedule", "next_occurrence", "first_occurrence", "zone"]

MIN_EVERY_MS = 1000            # one occurrence a second at most per timer: bounds the events it makes
MAX_OCCURRENCES = (1 << 32) - 1
MAX_CRON_LEN = 128
MAX_TZ_LEN = 64
NO_UNTIL = -1
_TZ_RE = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*")


class Schedule(NamedTuple):
    """A timer's recurrence as the table stores it: every_ms > 0, or a cron expression and zone."""

    every_ms: int
    until: int          # last time an occurrence may be due (inclusive); NO_UNTIL: none
    max_count: int      # occurrences in all; 0: unbounded
    cron: str = ""
    tz: str = ""


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name` from the tzdata package (never the system's files); KeyError if unknown."""
    if not _TZ_RE.fullmatch(name) or ".." in name:
        raise KeyError(name)
    try:
        with importlib.resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).open("rb") as f:
            return ZoneInfo.from_file(f, key=name)
    except (OSError, ValueError) as exc:
        raise KeyError(name) from exc


def _int(field: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(field, f"must be an int, not {type(v).__name__}")
    return int(v)


def _cron(expr: str, tz: str):
    from croniter import croniter    # imported on first use: most kernels never see a cron timer
    return croniter, expr, zone(tz)


def _cron_after(expr: str, tz: str, after_ms: int) -> Optional[int]:
    """The first time of `expr` in zone `tz` strictly after `after_ms` (ms), or None past MAX_TIME."""
    croniter, expr, z = _cron(expr, tz)
    start = datetime.fromtimestamp(after_ms // 1000, tz=timezone.utc).astimezone(z)
    try:
        nxt = croniter(expr, start).get_next(datetime)
    except Exception:               # croniter gives up far in the future (year 9999+): no more occurrences
        return None
    ms = int(nxt.timestamp()) * 1000
    return ms if ms <= MAX_TIME else None


def check_schedule(p: str, every_ms: Any, until: Any, max_count: Any, cron: Any, tz: Any, fire_at: int,
                   ack: bool) -> Optional[Schedule]:
    """The spec's schedule (None for a one-shot timer), or InvalidArgument naming the field."""
    every_ms = _int(f"{p}.every_ms", every_ms)
    max_count = _int(f"{p}.max_count", max_count)
    cron = "" if cron is None else cron
    tz = "" if tz is None else tz
    if type(cron) is not str or type(tz) is not str:
        raise InvalidArgument(f"{p}.cron", "cron and tz must be strings")
    if not every_ms and not cron:
        if until is not None or max_count or tz:
            raise InvalidArgument(f"{p}.every_ms", "until, max_count and tz need an every_ms or a cron")
        return None
    if every_ms and cron:
        raise InvalidArgument(f"{p}.cron", "give every_ms or cron, not both")
    if every_ms and not MIN_EVERY_MS <= every_ms <= MAX_TIME:
        raise InvalidArgument(f"{p}.every_ms", f"must be 0 (no recurrence) or {MIN_EVERY_MS}..{MAX_TIME} ms, "
                                               f"got {every_ms}")
    if every_ms and tz:
        raise InvalidArgument(f"{p}.tz", "a time zone goes with a cron expression")
    if cron:
        if len(cron) > MAX_CRON_LEN or not cron.isascii():
            raise InvalidArgument(f"{p}.cron", f"must be at most {MAX_CRON_LEN} ASCII characters")
        if not tz:
            raise InvalidArgument(f"{p}.tz", "a cron timer needs an IANA time zone (e.g. Europe/Paris, UTC)")
        if len(tz) > MAX_TZ_LEN:
            raise InvalidArgument(f"{p}.tz", f"must be at most {MAX_TZ_LEN} characters")
        try:
            zone(tz)
        except KeyError:
            raise InvalidArgument(f"{p}.tz", f"unknown IANA time zone {tz!r}") from None
        from croniter import croniter
        if len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
            raise InvalidArgument(f"{p}.cron", f"{cron!r} is not a valid 5- or 6-field cron expression")
    if not 0 <= max_count <= MAX_OCCURRENCES:
        raise InvalidArgument(f"{p}.max_count", f"must be within 0..{MAX_OCCURRENCES} (0: unbounded)")
    if until is None:
        end = NO_UNTIL
    else:
        end = _int(f"{p}.until", until)
        if not fire_at <= end <= MAX_TIME:
            raise InvalidArgument(f"{p}.until", f"must be within fire_at..{MAX_TIME} ms, got {end}")
    return Schedule(every_ms, end, max_count, cron, tz)


def first_occurrence(p: str, sched: Schedule, start: int) -> int:
    """The first fire time of a new timer: `start` (its fire_at) for `every`, the first
    cron time at or after `start` for `cron`; InvalidArgument when there is none
    (before `until` and MAX_TIME)."""
    if not sched.cron:
        return start
    first = _cron_after(sched.cron, sched.tz, start - 1)
    if first is None or (sched.until != NO_UNTIL and first > sched.until):
        raise InvalidArgument(f"{p}.cron", "has no occurrence between the start and until (or year 9999)")
    return first


def next_occurrence(sched: Schedule, due_at: int, now: int, fired: int) -> Optional[int]:
    """The occurrence after the one due at `due_at` that fired at `now` (the `fired`-th
    fire of the timer): the first one strictly after `now`, or None when the schedule is
    over (max_count reached, past until, or beyond MAX_TIME)."""
    if sched.max_count and fired >= sched.max_count:
        return None
    if sched.cron:
        nxt = _cron_after(sched.cron, sched.tz, max(now, due_at))
        if nxt is None:
            return None
    else:
        every = sched.every_ms
        nxt = due_at + every * (max(now - due_at, 0) // every + 1)
    if nxt > MAX_TIME or (sched.until != NO_UNTIL and nxt > sched.until):
        return None
    return nxt
