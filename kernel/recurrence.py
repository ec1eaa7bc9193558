"""Controls and policies of recurring timers: pause / resume / trigger-now, the catch-up
policy after an outage, the overlap policy, and the preview of the next occurrences.

Per-timer state (`Recur`) exists only for a recurring timer that is paused, has a
policy other than the default, or was triggered or skipped occurrences: every other
timer costs nothing and snapshots without any such timer keep their old bytes
(kernel/snapshot.py writes this block under header flag FLAG_RECUR only when some
timer has it).

Pause takes an armed recurring timer out of the wheel: it waits SCHEDULED (with
`paused` set) and no occurrence fires. Resume arms it again at its next occurrence
after the resume command's time (the leader's `now`, carried in the command; never
earlier than the last tick): the occurrences due while it was paused are skipped, not
caught up. Trigger fires one extra occurrence at the command's time with its own
fire_id; the schedule (the next occurrence, and `max_count`, which counts scheduled
occurrences only) is left as it was.

Catch-up, when a tick finds several occurrences of a timer due at once (an outage,
or a leader that could not tick in time), D = the due occurrences, oldest first:
  once (default)  one fire, stamped with D's first occurrence (what every earlier build did);
  all             one fire per occurrence of D, each with its own fire_id and fire_at, at
                  most MAX_CATCH_UP of them (the oldest); the rest are skipped and counted;
  skip            a single due occurrence fires as usual; when several are due none fires,
                  all are skipped and counted.
Either way the timer then re-arms at its first occurrence strictly after the tick.
Counting the skipped occurrences of a cron timer costs a croniter step each, so a
catch-up scans at most MAX_SCAN of them (the count is then a lower bound); `every`
timers count exactly.

Overlap (Temporal's names) says what happens when an occurrence is due while an earlier
one has not settled, which happens to a recurring timer with ack_required: each
occurrence is a fire awaiting its own ack (by its fire_id) while the schedule moves on.
  skip (default)  the occurrence does not fire (counted as skipped);
  buffer_one      it fires when the pending ones are all acknowledged (one waits; more are skipped);
  allow_all       it fires anyway: several fires await acks at once (at most MAX_PENDING).
A trigger fires whatever is pending. When the schedule is over the timer stays FIRED
until every pending fire is acknowledged (and a buffered one fired and acknowledged),
then settles. Recurring timers cannot carry a webhook or a queue yet (one delivery
record per timer).

Flexible window (EventBridge's): a timer with `flex_ms` > 0 fires each occurrence at a
time in [occurrence, occurrence + flex_ms]. The point chosen is random to the user but
never drawn by a replica: the node that accepted the create drew a 63-bit seed, carried in
the replicated create command, and every replica derives occurrence t's offset as
blake2b(seed, t) mod (flex_ms + 1). One draw per timer, not one proposal per occurrence:
the offsets are data of the committed command, the same on every replica and on replay,
and the preview shows the exact times. The schedule stays on its nominal grid (the
occurrence time is kept beside the flexed deadline), so offsets never accumulate. An
`every` window must be shorter than the interval; a cron window (at most 24 h) longer
than the gap to the next occurrence merges the two, as a late tick would. Catch-up fires
beyond the first are stamped with their nominal time.

Nothing here reads a clock or draws a random number: every input is committed data.
"""
from __future__ import annotations

from hashlib import blake2b
from typing import Any, NamedTuple, Optional

from ._wheel import MAX_TIME
from .errors import InvalidArgument
from .schedule import NO_UNTIL, Schedule, _cron_after, next_occurrence

__all__ = ["Recur", "DEFAULT", "MAX_FLEX_MS", "NO_NOMINAL", "flexed", "pending", "CATCH_UP", "OVERLAP", "CATCH_UP_NAMES", "OVERLAP_NAMES", "ONCE", "ALL", "SKIP",
           "MAX_CATCH_UP", "MAX_SCAN", "MAX_PREVIEW", "check_policies", "catch_up", "resume_at", "upcoming",
           "scheduled_fires"]

ONCE, ALL, SKIP = 0, 1, 2
CATCH_UP = {"once": ONCE, "all": ALL, "skip": SKIP}
CATCH_UP_NAMES = tuple(CATCH_UP)
OVERLAP = {"skip": 0, "buffer_one": 1, "allow_all": 2}
OVERLAP_NAMES = tuple(OVERLAP)
MAX_CATCH_UP = 100      # fires of one timer in one catch-up ("all")
MAX_SCAN = 1000         # cron occurrences one catch-up steps through to count the skipped ones
MAX_PREVIEW = 100       # occurrences one preview returns
MAX_PENDING = 100       # unacknowledged fires of one recurring timer (allow_all); further ones are skipped
SKIP_OVERLAP, BUFFER_ONE, ALLOW_ALL = 0, 1, 2
MAX_FLEX_MS = 24 * 3600 * 1000
MAX_SEED = (1 << 63) - 1
NO_NOMINAL = -1


class Recur(NamedTuple):
    """A recurring timer's controls and policies (the defaults: absent from the table)."""

    paused: bool = False
    catch_up: int = ONCE
    overlap: int = 0
    triggered: int = 0      # extra fires from TriggerTimer (not counted against max_count)
    skipped: int = 0        # occurrences the catch-up policy did not fire
    flex_ms: int = 0        # flexible window: each occurrence fires within [t, t + flex_ms]
    seed: int = 0           # the accepting node's draw (in the create command) the offsets derive from
    nominal: int = NO_NOMINAL   # with a window: the occurrence time of the pending (flexed) deadline
    pending: tuple = ()     # ack_required: fire ids not acknowledged yet, oldest first
    buffered: bool = False  # ack_required, overlap buffer_one: an occurrence waits for the pending ones


DEFAULT = Recur()


def check_policies(p: str, catch_up: Any, overlap: Any, sched: Optional[Schedule], fire_at: int,
                   flex_ms: Any = 0, seed: Any = 0) -> Optional[Recur]:
    """The spec's policies as a Recur (None: the defaults), or InvalidArgument naming the
    field; with a window, `fire_at` (the first occurrence) is its nominal time."""
    cu = "" if catch_up is None else catch_up
    ov = "" if overlap is None else overlap
    if type(cu) is not str or type(ov) is not str:
        raise InvalidArgument(f"{p}.catch_up", "catch_up and overlap must be strings")
    for name, v in (("flex_ms", flex_ms), ("flex_seed", seed)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidArgument(f"{p}.{name}", f"must be an int, not {type(v).__name__}")
    if not cu and not ov and not flex_ms:
        return None
    if sched is None:
        what = "catch_up" if cu else "overlap" if ov else "flex_ms"
        raise InvalidArgument(f"{p}.{what}", "a catch-up or overlap policy or a flexible window needs an "
                                             "every_ms or a cron")
    if not 0 <= flex_ms <= MAX_FLEX_MS or (sched.every_ms and flex_ms >= sched.every_ms):
        raise InvalidArgument(f"{p}.flex_ms", f"must be within 0..{MAX_FLEX_MS} ms and shorter than the interval, "
                                              f"got {flex_ms}")
    if not 0 <= seed <= MAX_SEED:
        raise InvalidArgument(f"{p}.flex_seed", f"must be within 0..{MAX_SEED}")
    if cu and cu not in CATCH_UP:
        raise InvalidArgument(f"{p}.catch_up", f"must be one of {', '.join(CATCH_UP_NAMES)}, got {cu!r}")
    if ov and ov not in OVERLAP:
        raise InvalidArgument(f"{p}.overlap", f"must be one of {', '.join(OVERLAP_NAMES)}, got {ov!r}")
    r = Recur(catch_up=CATCH_UP.get(cu, ONCE), overlap=OVERLAP.get(ov, 0), flex_ms=flex_ms,
              seed=seed if flex_ms else 0, nominal=fire_at if flex_ms else NO_NOMINAL)
    return None if r == DEFAULT else r


def flexed(rec: Optional[Recur], nominal: int) -> int:
    """The deadline of occurrence `nominal`: itself, or within its window (see the module doc)."""
    if rec is None or not rec.flex_ms:
        return nominal
    h = blake2b(rec.seed.to_bytes(8, "little") + nominal.to_bytes(8, "little"), digest_size=8)
    return min(nominal + int.from_bytes(h.digest(), "little") % (rec.flex_ms + 1), MAX_TIME)


def pending(rec: Optional[Recur], fire_at: int) -> int:
    """The occurrence time of a timer's pending deadline `fire_at` (its nominal time)."""
    return rec.nominal if rec is not None and rec.flex_ms else fire_at


def scheduled_fires(attempts: int, rec: Optional[Recur]) -> int:
    """Fires that count against max_count: every fire but the triggered ones."""
    return attempts - rec.triggered if rec is not None else attempts


def _due_after(sched: Schedule, at: int, now: int, limit: int) -> tuple[list[int], int]:
    """The occurrences after `at` (exclusive) due at or before `now`, in order: at most
    `limit` of them listed, then how many there are in all (for cron, at most MAX_SCAN)."""
    out: list[int] = []
    end = now if sched.until == NO_UNTIL else min(now, sched.until)
    if sched.cron:
        t = at
        n = 0
        while n < MAX_SCAN:
            t = _cron_after(sched.cron, sched.tz, t)
            if t is None or t > end:
                return out, n
            if len(out) < limit:
                out.append(t)
            n += 1
        return out, n
    e = sched.every_ms
    if end <= at:
        return out, 0
    n = (end - at) // e
    out = [at + k * e for k in range(1, min(n, limit) + 1)]
    return out, n


def catch_up(sched: Schedule, rec: Recur, at: int, now: int, fired: int) -> tuple[list[int], int]:
    """A tick at `now` reaches the occurrence due at `at` of a timer with catch-up policy
    `rec.catch_up` that has fired `fired` scheduled occurrences so far.
    Returns (the due times to fire now, in order; how many occurrences are skipped)."""
    if rec.catch_up == ONCE:
        return [at], 0
    left = sched.max_count - fired if sched.max_count else MAX_TIME
    later, n_later = _due_after(sched, at, now, MAX_CATCH_UP)
    due = 1 + n_later
    if rec.catch_up == SKIP:
        return ([at], 0) if due == 1 else ([], due)
    fire = ([at] + later)[:min(MAX_CATCH_UP, left)]
    # Skipped occurrences do not count against max_count; once it is reached nothing is skipped.
    return fire, 0 if len(fire) == left else due - len(fire)


def resume_at(sched: Schedule, fire_at: int, now: int) -> Optional[int]:
    """Where a resumed timer re-arms: its pending occurrence `fire_at` if it is still in
    the future, else its first occurrence strictly after `now`; None when none is left."""
    if fire_at > now:
        return fire_at
    return next_occurrence(sched._replace(max_count=0), fire_at, now, 0)


def upcoming(sched: Schedule, first: int, fired: int, count: int) -> list[int]:
    """The next `count` occurrences from `first` (the timer's next one) for a timer that
    has fired `fired` scheduled occurrences: the code tick uses, run ahead."""
    out: list[int] = []
    at = first
    if sched.max_count and fired >= sched.max_count:
        return out
    while at is not None and len(out) < count:
        if at > MAX_TIME or (sched.until != NO_UNTIL and at > sched.until):
            break
        out.append(at)
        fired += 1
        at = next_occurrence(sched, at, at, fired)
    return out
