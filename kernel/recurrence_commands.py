"""The commands of recurring timers' controls, as a mixin of State (kernel/state.py):
pause, resume, trigger, the preview of next occurrences, and the catch-up step of a tick.
The rules are kernel/recurrence.py's; this module applies them to the table, the wheel,
the counters and the event sequence, with State's all-or-nothing discipline: everything
is checked before anything changes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import graph as _graph
from . import occurrences as _occ
from .occurrences import REARMED, SETTLED, WAITING      # the outcomes of a tick, one set for both
from .errors import FailedPrecondition
from .quota import payload_len
from .recurrence import (ALLOW_ALL, BUFFER_ONE, DEFAULT, MAX_PENDING, MAX_PREVIEW, Recur, catch_up,
                         flexed, pending, resume_at, scheduled_fires, upcoming)
from .table import FLAG_ACK_REQUIRED
from .schedule import next_occurrence
from .timer import Event, EventKind, Timer, TimerState
from .validate import _int, check_id, check_tenant, check_time
from .errors import InvalidArgument

__all__ = ["RecurringCommands", "ControlResult"]

_SCHEDULED, _ARMED, _SETTLED = int(TimerState.SCHEDULED), int(TimerState.ARMED), int(TimerState.SETTLED)
_FIRED = int(TimerState.FIRED)


@dataclass(frozen=True, slots=True)
class ControlResult:
    """Result of State.pause, State.resume and State.trigger."""

    events: tuple[Event, ...]
    timer: Timer


class RecurringCommands:
    """Mixed into State: reads and writes its `_table`, `_wheel`, `_counts`, `_seq`,
    `_live`, `_held` and `_last_tick` as State's own commands do."""

    __slots__ = ()

    def _recurring(self, now_ms, tenant, id) -> tuple:
        now = check_time("now_ms", now_ms)
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        o = self._find(tenant, timer_id)
        t = self._table
        sched = t.schedules.get(o) if t.schedules else None
        st = t.state[o]
        if sched is None:
            raise FailedPrecondition(f"timer {timer_id!r} in tenant {tenant!r} does not recur: only a timer with "
                                     "every or cron can be paused, resumed or triggered")
        return now, o, sched, st, t.recur.get(o, DEFAULT)

    def _set_recur(self, o: int, rc: Recur) -> None:
        if rc == DEFAULT:
            self._table.recur.pop(o, None)
        else:
            self._table.recur[o] = rc

    def _event(self, o: int, kind: EventKind, now: int, state: TimerState, fire_at: int, fire_id=None) -> Event:
        t = self._table
        rev = t.revision[o] + 1
        t.revision[o] = rev
        self._seq += 1
        return Event(self._seq, kind, t.tenant_names[t.tenant[o]], t.ids[o], now, rev, state, fire_at, fire_id)

    def pause(self, now_ms: int, tenant: str, id: str) -> ControlResult:
        """Stop an armed recurring timer's occurrences: out of the wheel, SCHEDULED and
        `paused` until resumed (a `paused` event)."""
        now, o, _, st, rc = self._recurring(now_ms, tenant, id)
        if st != _ARMED:
            why = "already paused" if rc.paused and st == _SCHEDULED else TimerState(st).name
            raise FailedPrecondition(f"timer {id!r} in tenant {tenant!r} is {why}; only an armed recurring timer "
                                     "can be paused")
        t = self._table
        self._wheel.cancel(o)
        t.state[o] = _SCHEDULED
        self._counts[_ARMED] -= 1
        self._counts[_SCHEDULED] += 1
        self._set_recur(o, rc._replace(paused=True))
        ev = self._event(o, EventKind.PAUSED, now, TimerState.SCHEDULED, t.fire_at[o])
        return ControlResult((ev,), t.view(o))

    def resume(self, now_ms: int, tenant: str, id: str) -> ControlResult:
        """Arm a paused timer again at its next occurrence after `now_ms` (or the last tick,
        if later): a `resumed` event. With no occurrence left (past until), it settles."""
        now, o, sched, st, rc = self._recurring(now_ms, tenant, id)
        if not (rc.paused and st == _SCHEDULED):
            raise FailedPrecondition(f"timer {id!r} in tenant {tenant!r} is {TimerState(st).name} and not paused; "
                                     "only a paused timer can be resumed")
        t = self._table
        nominal = pending(rc, t.fire_at[o])
        nxt = resume_at(sched, nominal, max(now, self._last_tick))
        rc = rc._replace(paused=False)
        if nxt is not None and nxt != nominal and rc.flex_ms:
            rc = rc._replace(nominal=nxt)
            nxt = flexed(rc, nxt)
        elif nxt is not None and rc.flex_ms:
            nxt = t.fire_at[o]                   # the pending occurrence keeps its flexed deadline
        self._set_recur(o, rc)
        self._counts[_SCHEDULED] -= 1
        if nxt is not None:
            t.fire_at[o] = nxt
            t.state[o] = _ARMED
            self._counts[_ARMED] += 1
            self._wheel.insert(o, nxt)
            return ControlResult((self._event(o, EventKind.RESUMED, now, TimerState.ARMED, nxt),), t.view(o))
        events = [self._event(o, EventKind.RESUMED, now, TimerState.SCHEDULED, t.fire_at[o])]
        t.state[o] = _SETTLED
        t.settled_at[o] = now
        self._counts[_SETTLED] += 1
        ti = t.tenant[o]
        self._live[ti] -= 1
        self._held[ti] -= payload_len(t.extra[o])
        events.append(self._event(o, EventKind.SETTLED, now, TimerState.SETTLED, t.fire_at[o],
                                  t.fire_id[o] or None))
        at_once = self._schedule_purges((o,), now)
        view = t.view(o)
        if t.graph.events:              # its children resolved: their events belong to this command
            events += _graph.drain(t)
        if at_once:
            events += self._purge(at_once, now, EventKind.PURGED)
        return ControlResult(tuple(events), view)

    def trigger(self, now_ms: int, tenant: str, id: str) -> ControlResult:
        """Fire one extra occurrence now (a `fired` event with its own fire_id and fire_at =
        `now_ms`), paused or not; the schedule stays as it was (an `armed` event, or a
        `paused` one for a paused timer). Not counted against max_count."""
        now, o, _, st, rc = self._recurring(now_ms, tenant, id)
        paused = rc.paused and st == _SCHEDULED
        if st != _ARMED and not paused:
            raise FailedPrecondition(f"timer {id!r} in tenant {tenant!r} is {TimerState(st).name}; only an armed "
                                     "or paused recurring timer can be triggered")
        t = self._table
        ack = t.flags[o] & FLAG_ACK_REQUIRED
        if ack and len(rc.pending) >= MAX_PENDING:
            raise FailedPrecondition(f"timer {id!r} in tenant {tenant!r} has {MAX_PENDING} fires awaiting acks")
        delivered = bool(t.occ) and o in t.occ      # a schedule with a delivery (occurrences.py)
        if delivered:
            _occ.check_trigger(t, o)
        t.attempts[o] += 1
        t.fired_at[o] = now
        fired = self._event(o, EventKind.FIRED, now, TimerState.FIRED, now, self._seq + 1)
        t.fire_id[o] = fired.seq
        self._set_recur(o, rc._replace(triggered=rc.triggered + 1,
                                       pending=rc.pending + (fired.seq,) if ack else rc.pending))
        due = (_occ.trigger(self, o, fired.seq, now),) if delivered else ()
        back = self._event(o, EventKind.PAUSED if paused else EventKind.ARMED, now,
                           TimerState.SCHEDULED if paused else TimerState.ARMED, t.fire_at[o])
        resolved = ()
        if t.graph:                     # a triggered fire meets `fired` like a tick's (graph.attach counts it too)
            _graph.after_fires(self, [o], [], now)
            resolved = _graph.drain(t)
        return ControlResult((fired, *due, back, *resolved), t.view(o))

    def next_occurrences(self, tenant: str, id: str, count: int) -> list[int]:
        """The timer's next `count` (1..MAX_PREVIEW) fire times, computed as ticks will: a
        one-shot armed timer has its deadline, an ended timer none, a paused one those it
        would have if resumed at the last tick."""
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        n = _int("count", count)
        if not 1 <= n <= MAX_PREVIEW:
            raise InvalidArgument("count", f"must be within 1..{MAX_PREVIEW}, got {n}")
        o = self._find(tenant, timer_id)
        t = self._table
        st = t.state[o]
        sched = t.schedules.get(o) if t.schedules else None
        if sched is None:
            return [t.fire_at[o]] if st == _ARMED else []
        rc = t.recur.get(o, DEFAULT)
        nominal = pending(rc, t.fire_at[o])
        if st == _ARMED:
            first = nominal
        elif rc.paused and st == _SCHEDULED:
            first = resume_at(sched, nominal, self._last_tick)
        else:
            return []
        if first is None:
            return []
        out = upcoming(sched, first, scheduled_fires(t.attempts[o], rc), n)
        if not rc.flex_ms:
            return out
        return [t.fire_at[o] if at == nominal else flexed(rc, at) for at in out]

    def _rescheduled(self, o: int, fire_at: int) -> None:
        """Reschedule moved a windowed timer's deadline: that is its occurrence now (no window)."""
        rc = self._table.recur.get(o)
        if rc is not None and rc.flex_ms:
            self._table.recur[o] = rc._replace(nominal=fire_at)

    def _catch_up_tick(self, o: int, now: int, seq: int, append: Callable) -> tuple[int, int, bool]:
        """Tick: occurrence fire_at[o] came due for a timer with a catch-up policy other than
        "once", a window or ack_required (recurrence.py). Returns (seq, REARMED, SETTLED or
        WAITING (ack_required: the schedule is over, fires await acks), fired at all)."""
        t = self._table
        sched, rc = t.schedules[o], t.recur.get(o, DEFAULT)
        deadline = t.fire_at[o]
        at = pending(rc, deadline)
        fires, skipped = catch_up(sched, rc, at, now, scheduled_fires(t.attempts[o], rc))
        ack = bool(t.flags[o] & FLAG_ACK_REQUIRED)
        name, tid = t.tenant_names[t.tenant[o]], t.ids[o]
        rev = t.revision[o]
        waiting, buffered, fired_any = list(rc.pending), rc.buffered, False
        for d in fires:
            if ack and (len(waiting) >= MAX_PENDING or (waiting and rc.overlap != ALLOW_ALL)):
                if rc.overlap == BUFFER_ONE and not buffered:
                    buffered = True         # fires once the pending ones are acknowledged
                else:
                    skipped += 1
                continue
            seq += 1
            rev += 1
            t.fire_id[o] = seq
            t.attempts[o] += 1
            t.fired_at[o] = now
            fired_any = True
            if ack:
                waiting.append(seq)
            append(Event(seq, EventKind.FIRED, name, tid, now, rev, TimerState.FIRED, deadline if d == at else d, seq))
        rc = rc._replace(skipped=rc.skipped + skipped, pending=tuple(waiting), buffered=buffered)
        last = fires[-1] if fires else at
        armed = _occ.rearm(self, o, rc, next_occurrence(sched, last, now, scheduled_fires(t.attempts[o], rc)), now,
                           seq, rev, append)
        if armed is not None:
            return armed, REARMED, fired_any
        t.fire_at[o] = deadline if last == at else last     # the occurrence it ended with
        if waiting or buffered:          # the schedule is over; the timer settles with its last ack
            t.state[o] = _FIRED
            if not fired_any:            # a transition needs an event: the fire it now waits for
                seq += 1
                rev += 1
                append(Event(seq, EventKind.FIRED, name, tid, now, rev, TimerState.FIRED, t.fire_at[o],
                             waiting[-1] if waiting else t.fire_id[o] or None))
            t.revision[o] = rev
            return seq, WAITING, fired_any
        seq += 1
        t.revision[o] = rev + 1
        t.state[o] = _SETTLED
        t.settled_at[o] = now
        ti = t.tenant[o]
        self._live[ti] -= 1
        self._held[ti] -= payload_len(t.extra[o])
        append(Event(seq, EventKind.SETTLED, name, tid, now, rev + 1, TimerState.SETTLED, t.fire_at[o],
                     t.fire_id[o] or None))
        return seq, SETTLED, fired_any

    def _ack_recurring(self, now: int, o: int, fid: int) -> tuple:
        """Ack of fire `fid` of a recurring ack_required timer: it leaves the pending fires
        (a `settled` event for that fire, the timer's state after it); a buffered occurrence
        then fires; the last ack after the schedule ended settles the timer.
        Returns (events, the timer's view)."""
        t = self._table
        rc = t.recur.get(o, DEFAULT)
        st = t.state[o]
        if fid not in rc.pending:
            raise FailedPrecondition(f"fire_id {fid} of timer {t.ids[o]!r} in tenant {t.tenant_names[t.tenant[o]]!r} "
                                     f"is not awaiting an ack (awaiting: {list(rc.pending)})")
        waiting = [f for f in rc.pending if f != fid]
        buffered = rc.buffered
        ends = st == _FIRED and not waiting and not buffered
        events = [self._event(o, EventKind.SETTLED, now, TimerState.SETTLED if ends else TimerState(st),
                              t.fire_at[o], fid)]
        if not waiting and buffered:       # the buffered occurrence fires now
            buffered = False
            t.attempts[o] += 1
            t.fired_at[o] = now
            ev = self._event(o, EventKind.FIRED, now, TimerState.FIRED, now, self._seq + 1)
            t.fire_id[o] = ev.seq
            waiting.append(ev.seq)
            events.append(ev)
            if st != _FIRED:
                events.append(self._event(o, EventKind.ARMED if st == _ARMED else EventKind.PAUSED, now,
                                          TimerState(st), t.fire_at[o]))
        self._set_recur(o, rc._replace(pending=tuple(waiting), buffered=buffered))
        if ends:
            t.state[o] = _SETTLED
            t.settled_at[o] = now
            self._counts[_FIRED] -= 1
            self._counts[_SETTLED] += 1
            ti = t.tenant[o]
            self._live[ti] -= 1
            self._held[ti] -= payload_len(t.extra[o])
            at_once = self._schedule_purges((o,), now)
            view = t.view(o)
            if t.graph.events:          # its children resolved: their events belong to this command
                events += _graph.drain(t)
            if at_once:
                events += self._purge(at_once, now, EventKind.PURGED)
            return tuple(events), view
        return tuple(events), t.view(o)
