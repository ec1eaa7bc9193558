"""What the clients of a drill were told and what its watchers saw, and the invariants checked on it.

The ledger is pure bookkeeping (no I/O, no clocks of its own: every time is
passed in as wall-clock milliseconds since the epoch), so the checker can be
unit-tested on synthetic data. The workload and the watchers write into it from
many threads; `check()` reads it once everything has stopped.

Facts recorded
--------------
* acknowledged creates: timer id, the fire_at the client asked for (absolute ms),
  the wall time of the acknowledgement, single or batch.
* creates whose outcome is unknown (the call raised): the timer may or may not
  exist. If it fires, fine; it is never counted as lost.
* cancels: acknowledged (with the wall time of the ack) or uncertain.
* reschedules: acknowledged (new fire_at, ack time) or uncertain (new fire_at).
* idempotent retries: the key and the timer ids both calls returned.
* events seen by each watcher: sequence, kind, timer id, `at` (the tick / command
  time the leader stamped), the timer's fire_at, and the wall time received.
* watcher errors (e.g. the SDK's DATA_LOSS on a skipped sequence).
* after the drill, the final state of every acknowledged timer that no watcher
  saw fire (GET through the SDK): NotFound means lost, still armed means missed.

Invariants (each a count that must be 0)
----------------------------------------
lost        acknowledged create, no acknowledged/uncertain cancel, and the cluster
            does not know the timer at the end.
missed      acknowledged create, not cancelled, due before the end, and no watcher
            saw it fire (the cluster still has it armed, or fired it unseen).
early_received  a watcher received a FIRED event more than the allowed skew before the
            deadline (wall clock of this machine: real-time earliness, e.g. a leader whose
            clock runs ahead stamps its ticks "on time" yet fires early).
early       a FIRED event whose tick time `at` is before the timer's fire_at minus
            the allowed clock skew; also a fire before the deadline the client was
            last acknowledged (create or reschedule) minus the skew.
cancelled_fired  a FIRED event whose tick time is after the acknowledgement of a
            cancel of that timer (plus skew), or a FIRED event after the timer's
            CANCELLED event in sequence order.
duplicates  FIRED events beyond the first for one timer.
gaps        sequence numbers a watcher skipped (its stream must be contiguous).
repeats     sequence numbers a watcher received twice.
divergent   one sequence number carrying different events on different watchers.
idempotency_violations  a retry with the same key that returned another timer, or
            claimed to have created a new one.
tick_regressions  the tick time `at` of FIRED events going backwards along the sequence.
watch_errors      watcher streams that failed for good (gap reported by the SDK...).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Iterable, Optional

FIRED = "fired"
CANCELLED = "cancelled"


def percentile(values: list[float], p: float) -> Optional[float]:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def distribution(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values) if values else None}


@dataclass
class CreateRec:
    timer_id: str
    fire_at_ms: int
    ack_ms: int
    batch: bool = False
    key: Optional[str] = None


@dataclass
class EventRec:
    watcher: str
    sequence: int
    kind: str              # EventKind name, lower case
    timer_id: str
    at_ms: int             # the leader's stamp (tick time for FIRED)
    fire_at_ms: int
    recv_ms: int           # wall time the watcher received it
    tenant: str = ""


@dataclass
class Ledger:
    tenant: str = "chaos"
    creates: dict = field(default_factory=dict)            # id -> CreateRec
    uncertain_creates: dict = field(default_factory=dict)  # id -> fire_at_ms asked
    cancels: dict = field(default_factory=dict)            # id -> ack_ms
    uncertain_cancels: set = field(default_factory=set)
    reschedules: dict = field(default_factory=dict)        # id -> [(fire_at_ms, ack_ms)]
    uncertain_reschedules: dict = field(default_factory=dict)  # id -> [fire_at_ms]
    idempotent: list = field(default_factory=list)         # (key, [(id, created), ...])
    events: dict = field(default_factory=dict)             # watcher -> [EventRec]
    watch_errors: list = field(default_factory=list)       # (watcher, message)
    final_states: dict = field(default_factory=dict)       # id -> state name or "not_found"
    failed_ops: dict = field(default_factory=dict)         # op -> count
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- recording (thread-safe) ---------------------------------------------

    def created(self, timer_id: str, fire_at_ms: int, ack_ms: int, *, batch: bool = False,
                key: Optional[str] = None) -> None:
        with self._lock:
            self.creates[timer_id] = CreateRec(timer_id, fire_at_ms, ack_ms, batch, key)
            self.uncertain_creates.pop(timer_id, None)

    def create_unknown(self, timer_id: str, fire_at_ms: int, op: str = "create") -> None:
        with self._lock:
            if timer_id not in self.creates:
                self.uncertain_creates[timer_id] = fire_at_ms
            self.failed_ops[op] = self.failed_ops.get(op, 0) + 1

    def cancelled(self, timer_id: str, ack_ms: int) -> None:
        with self._lock:
            self.cancels[timer_id] = ack_ms
            self.uncertain_cancels.discard(timer_id)

    def cancel_unknown(self, timer_id: str) -> None:
        with self._lock:
            if timer_id not in self.cancels:
                self.uncertain_cancels.add(timer_id)
            self.failed_ops["cancel"] = self.failed_ops.get("cancel", 0) + 1

    def rescheduled(self, timer_id: str, fire_at_ms: int, ack_ms: int) -> None:
        with self._lock:
            self.reschedules.setdefault(timer_id, []).append((fire_at_ms, ack_ms))

    def reschedule_unknown(self, timer_id: str, fire_at_ms: int) -> None:
        with self._lock:
            self.uncertain_reschedules.setdefault(timer_id, []).append(fire_at_ms)
            self.failed_ops["reschedule"] = self.failed_ops.get("reschedule", 0) + 1

    def op_failed(self, op: str) -> None:
        with self._lock:
            self.failed_ops[op] = self.failed_ops.get(op, 0) + 1

    def idempotent_retry(self, key: str, results: list) -> None:
        """results: [(timer_id, created_flag), ...] of calls with the same key."""
        with self._lock:
            self.idempotent.append((key, list(results)))

    def saw(self, ev: EventRec) -> None:
        with self._lock:
            self.events.setdefault(ev.watcher, []).append(ev)

    def watch_error(self, watcher: str, message: str) -> None:
        with self._lock:
            self.watch_errors.append((watcher, message))

    # ---- queries used while the drill runs -------------------------------------

    def fired_ids(self) -> set:
        with self._lock:
            return {e.timer_id for evs in self.events.values() for e in evs if e.kind == FIRED}

    def deadline_ms(self, timer_id: str) -> Optional[int]:
        """The latest deadline the timer can have: max over its create and every reschedule tried."""
        rec = self.creates.get(timer_id)
        cands = [rec.fire_at_ms] if rec else []
        if timer_id in self.uncertain_creates:
            cands.append(self.uncertain_creates[timer_id])
        cands += [f for f, _ in self.reschedules.get(timer_id, [])]
        cands += self.uncertain_reschedules.get(timer_id, [])
        return max(cands) if cands else None

    def expected_to_fire(self) -> set:
        """Acknowledged creates with no acknowledged or uncertain cancel."""
        with self._lock:
            return {t for t in self.creates if t not in self.cancels and t not in self.uncertain_cancels}

    def max_deadline_ms(self) -> int:
        with self._lock:
            ids = set(self.creates) | set(self.uncertain_creates)
            ds = [self.deadline_ms(t) for t in ids]
        return max([d for d in ds if d is not None], default=0)

    def pending_ids(self, now_ms: int) -> list:
        """Timers a workload may still cancel/reschedule (acknowledged, not cancelled, not yet due)."""
        with self._lock:
            return [t for t, r in self.creates.items()
                    if t not in self.cancels and t not in self.uncertain_cancels
                    and (self.deadline_ms(t) or 0) > now_ms]

    def merged_events(self) -> dict:
        """sequence -> the first EventRec any watcher saw with it."""
        with self._lock:
            merged = {}
            for evs in self.events.values():
                for e in evs:
                    merged.setdefault(e.sequence, e)
            return merged

    # ---- the checker ----------------------------------------------------------

    def check(self, *, end_ms: int, skew_ms: int = 0, windows: Iterable[tuple[int, int]] = ()) -> dict:
        """Check every invariant; returns a JSON-ready dict with "ok" and the counts.

        end_ms: timers due before this were expected to have fired by the end.
        skew_ms: clock skew allowed for "early" (a fire this much before its
        deadline is tolerated and reported as `early_within_skew`).
        windows: (start_ms, end_ms) fault windows; a timer whose deadline falls in
        one counts as "during failover" in the lateness split.
        """
        windows = list(windows)
        with self._lock:
            return self._check(end_ms, skew_ms, windows)

    def _check(self, end_ms: int, skew_ms: int, windows: list) -> dict:
        examples: dict[str, list] = {}

        def example(kind: str, item) -> None:
            lst = examples.setdefault(kind, [])
            if len(lst) < 5:
                lst.append(item)

        # Per watcher: contiguous, no repeats; across watchers: the same event per sequence.
        gaps = repeats = divergent = 0
        merged: dict[int, EventRec] = {}
        for w, evs in self.events.items():
            prev = None
            seen = set()
            for e in evs:
                if e.sequence in seen:
                    repeats += 1
                    example("repeats", {"watcher": w, "sequence": e.sequence})
                    continue
                seen.add(e.sequence)
                if prev is not None and e.sequence != prev + 1:
                    if e.sequence > prev + 1:
                        gaps += e.sequence - prev - 1
                        example("gaps", {"watcher": w, "after": prev, "next": e.sequence})
                    else:
                        repeats += 1
                        example("repeats", {"watcher": w, "sequence": e.sequence, "after": prev})
                prev = e.sequence if prev is None else max(prev, e.sequence)
                other = merged.get(e.sequence)
                if other is None:
                    merged[e.sequence] = e
                elif (other.kind, other.timer_id, other.at_ms) != (e.kind, e.timer_id, e.at_ms):
                    divergent += 1
                    example("divergent", {"sequence": e.sequence, "a": [other.watcher, other.kind, other.timer_id],
                                          "b": [w, e.kind, e.timer_id]})

        # Tick time must not go backwards along the sequence (FIRED events carry the tick's time;
        # other commands carry the time they were stamped, which need not follow commit order).
        regressions = 0
        last_at = None
        for seq in sorted(merged):
            e = merged[seq]
            if e.kind != FIRED:
                continue
            if last_at is not None and e.at_ms < last_at:
                regressions += 1
                example("tick_regressions", {"sequence": seq, "at": e.at_ms, "previous_tick_at": last_at})
            last_at = e.at_ms if last_at is None else max(last_at, e.at_ms)

        fires: dict[str, list[EventRec]] = {}
        cancel_seq: dict[str, int] = {}
        for seq in sorted(merged):
            e = merged[seq]
            if e.kind == FIRED:
                fires.setdefault(e.timer_id, []).append(e)
            elif e.kind == CANCELLED:
                cancel_seq.setdefault(e.timer_id, seq)
        first_recv = {}
        for evs in self.events.values():
            for e in evs:
                if e.kind == FIRED:
                    first_recv[e.timer_id] = min(first_recv.get(e.timer_id, e.recv_ms), e.recv_ms)

        ours = set(self.creates) | set(self.uncertain_creates)
        duplicates = early = early_within_skew = cancelled_fired = 0
        max_early_ms = 0
        early_received = early_received_within_skew = max_early_recv_ms = 0
        fire_at_mismatch = 0
        late_tick = {"steady": [], "failover": []}
        late_recv = {"steady": [], "failover": []}
        for tid, evs in fires.items():
            if tid not in ours:
                continue
            if len(evs) > 1:
                duplicates += len(evs) - 1
                example("duplicates", {"timer": tid, "sequences": [e.sequence for e in evs]})
            e = evs[0]
            # Early against the deadline the kernel fired it for, and against what the client was told.
            acked = self._acked_deadline(tid)
            deadline = e.fire_at_ms
            if acked is not None and tid not in self.uncertain_reschedules:
                if acked != e.fire_at_ms:
                    fire_at_mismatch += 1
                    example("fire_at_mismatch", {"timer": tid, "acknowledged": acked, "fired_for": e.fire_at_ms})
                deadline = max(deadline, acked)
            earliness = deadline - e.at_ms
            if earliness > 0:
                max_early_ms = max(max_early_ms, earliness)
                if earliness > skew_ms:
                    early += 1
                    example("early", {"timer": tid, "fire_at": deadline, "tick_at": e.at_ms, "early_ms": earliness})
                else:
                    early_within_skew += 1
            # Cancelled, then fired.
            c_ack = self.cancels.get(tid)
            if c_ack is not None and e.at_ms > c_ack + skew_ms:
                cancelled_fired += 1
                example("cancelled_fired", {"timer": tid, "cancel_ack": c_ack, "tick_at": e.at_ms})
            elif tid in cancel_seq and cancel_seq[tid] < e.sequence:
                cancelled_fired += 1
                example("cancelled_fired", {"timer": tid, "cancel_seq": cancel_seq[tid], "fire_seq": e.sequence})
            # Early in real time: a watcher received the fire before the deadline (on this machine's
            # clock, the one the client used for fire_at). Catches a leader whose clock runs ahead.
            recv = first_recv.get(tid, e.recv_ms)
            if recv < deadline:
                max_early_recv_ms = max(max_early_recv_ms, deadline - recv)
                if deadline - recv > skew_ms:
                    early_received += 1
                    example("early_received", {"timer": tid, "fire_at": deadline, "received": recv})
                else:
                    early_received_within_skew += 1
            bucket = "failover" if any(a <= e.fire_at_ms <= b for a, b in windows) else "steady"
            late_tick[bucket].append(e.at_ms - e.fire_at_ms)
            late_recv[bucket].append(first_recv.get(tid, e.recv_ms) - e.fire_at_ms)

        # Lost and missed: acknowledged, not cancelled, due before the end, never seen firing.
        lost = missed = not_due = 0
        for tid in self.creates:
            if tid in self.cancels or tid in self.uncertain_cancels or tid in fires:
                continue
            d = self.deadline_ms(tid)
            if d is not None and d > end_ms:
                not_due += 1
                continue
            state = self.final_states.get(tid)
            if state == "not_found":
                lost += 1
                example("lost", {"timer": tid, "fire_at": d})
            else:
                missed += 1
                example("missed", {"timer": tid, "fire_at": d, "final_state": state})

        idem_bad = 0
        for key, results in self.idempotent:
            ids = {r[0] for r in results}
            new = sum(1 for r in results if r[1])
            if len(ids) > 1 or new > 1:
                idem_bad += 1
                example("idempotency_violations", {"key": key, "results": results})

        unknown_fired = sum(1 for t in self.uncertain_creates if t in fires)
        counts = {
            "lost": lost, "missed": missed, "early": early, "early_received": early_received,
            "duplicates": duplicates,
            "cancelled_fired": cancelled_fired, "gaps": gaps, "repeats": repeats, "divergent": divergent,
            "idempotency_violations": idem_bad, "tick_regressions": regressions,
            "fire_at_mismatch": fire_at_mismatch, "watch_errors": len(self.watch_errors),
        }
        return {
            "ok": all(v == 0 for v in counts.values()),
            "invariants": counts,
            "info": {
                "acknowledged_creates": len(self.creates),
                "batch_creates": sum(1 for r in self.creates.values() if r.batch),
                "uncertain_creates": len(self.uncertain_creates),
                "uncertain_creates_fired": unknown_fired,
                "acknowledged_cancels": len(self.cancels),
                "uncertain_cancels": len(self.uncertain_cancels),
                "acknowledged_reschedules": sum(len(v) for v in self.reschedules.values()),
                "uncertain_reschedules": sum(len(v) for v in self.uncertain_reschedules.values()),
                "idempotent_retries": len(self.idempotent),
                "fired_seen": sum(1 for t in fires if t in ours),
                "not_due_at_end": not_due,
                "events_seen": len(merged),
                "watchers": {w: len(evs) for w, evs in self.events.items()},
                "skew_allowed_ms": skew_ms,
                "early_within_skew": early_within_skew,
                "max_early_ms": max_early_ms,
                "early_received_within_skew": early_received_within_skew,
                "max_early_received_ms": max_early_recv_ms,
                "failed_ops": dict(self.failed_ops),
                "watch_error_messages": [f"{w}: {m}" for w, m in self.watch_errors[:5]],
            },
            "lateness_ms": {
                "tick": {k: distribution(v) for k, v in late_tick.items()},
                "receive": {k: distribution(v) for k, v in late_recv.items()},
            },
            "examples": examples,
        }

    def _acked_deadline(self, tid: str) -> Optional[int]:
        """The fire_at of the last acknowledged create/reschedule (by ack time)."""
        rec = self.creates.get(tid)
        if rec is None:
            return None
        best = (rec.ack_ms, rec.fire_at_ms)
        for f, ack in self.reschedules.get(tid, []):
            if ack >= best[0]:
                best = (ack, f)
        return best[1]
