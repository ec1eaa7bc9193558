"""Recurring timers with a webhook or a queue: one delivery per occurrence.

A recurring timer that carries a delivery (the *schedule*) never delivers itself. Each
occurrence fires the schedule (a `fired` event with the occurrence's fire_id, as for any
recurring timer) and, in the same command, spawns one *occurrence timer*:

    id        "<schedule id>@<fire_id>"   e.g. "report@8123"
    tenant    the schedule's tenant
    fire_at   the occurrence time (the schedule's deadline it fired at)
    fire_id   the occurrence's fire_id (the seq of the schedule's `fired` event)
    payload, name, labels, action: the schedule's (no idempotency key)
    delivery  the schedule's, state DELIVERING with attempt 1 due (a `delivery_due` event)

The occurrence timer is an ordinary one-shot delivery timer from then on: the leader's
dispatcher attempts it, its attempts, retries and leases are replicated records keyed by
(its id, its fire_id), it settles or is dead-lettered, can be redriven, and leaves the
table after its tenant's retention. Its Standard Webhooks `webhook-id` is msg_<fire_id>,
so it is unique per occurrence and the same across retries and failovers. A delivery
outcome names the occurrence timer and its fire_id, so an outcome for an old occurrence can
never settle a newer one, and a dead-lettered occurrence ends only itself: the schedule
re-armed at the occurrence already (it never waits for delivery).

Ids are deterministic (fire ids are cluster-wide seqs, never reused) and cannot collide with
a user's: '@' is not allowed in the id of a create, only in names of occurrence timers.

Overlap policy (Temporal's names), when an occurrence comes due while earlier occurrences of
the schedule are still in delivery (their occurrence timers not terminal yet):
  skip (default)  the occurrence does not fire (counted in `skipped`);
  buffer_one      it waits (one at most; further ones are skipped) and fires, with a fresh
                  fire_id, in the command that ends the last delivery in flight;
  allow_all       it fires: at most MAX_IN_DELIVERY occurrences are in delivery at once,
                  beyond that occurrences are skipped.
A trigger fires whatever is in delivery (but not beyond MAX_IN_DELIVERY). Catch-up and the
flexible window work as for every recurring timer (kernel/recurrence.py). When the schedule
is over the timer settles at once, unless an occurrence is buffered: it stays FIRED until
that one has fired. Cancelling the schedule stops its occurrences (a buffered one is
dropped); deliveries already in flight go on (cancel `<id>@<fire_id>` to stop one). A
redriven occurrence is not counted against the overlap bound again.

Escalation timers. An ack_required timer with an escalation ladder (kernel/graph.py) and a
delivery has its steps delivered: each step that comes with no ack spawns, in the tick that
emits its `escalated` event (seq E), the timer "<id>@E" (fire_id E, fire_at the step's
deadline, action the step's, DeliveryRecord.step its number) -- an ordinary delivery timer
from then on, like an occurrence timer. The ladder's delivery lives in Table.esc.

Per-schedule state (`Occ`) lives in Table.occ and in the snapshot block under header flag
FLAG_OCC (16); a state without such a timer writes the bytes it wrote before.
Deterministic: nothing here reads a clock or draws a number; ids and fire ids are seqs.
"""
from __future__ import annotations

import json
from typing import NamedTuple

from .delivery import Delivery, DeliveryPolicy, DeliveryRecord, Webhook
from .errors import FailedPrecondition, SnapshotError
from .quota import payload_len
from .recurrence import ALLOW_ALL, BUFFER_ONE, DEFAULT, NO_NOMINAL, catch_up, flexed, pending, scheduled_fires
from .schedule import next_occurrence
from .table import NO_TIME, as_extra, make_extra
from .timer import Event, EventKind, TimerState

__all__ = ["Occ", "MAX_IN_DELIVERY", "SEP", "occurrence_id", "tick", "trigger", "on_ended",
           "encode", "decode", "check"]

#: Occurrences of one schedule in delivery at once (overlap allow_all); the bound keeps a
#: schedule whose receiver is down from filling the table: at most this many occurrence
#: timers in delivery per schedule, plus the ended ones until their retention.
MAX_IN_DELIVERY = 100
SEP = "@"

_ARMED, _FIRED, _SETTLED = int(TimerState.ARMED), int(TimerState.FIRED), int(TimerState.SETTLED)
_DELIVERING = int(TimerState.DELIVERING)
_TERMINAL = frozenset((int(TimerState.SETTLED), int(TimerState.CANCELLED), int(TimerState.DEAD_LETTERED)))
REARMED, SETTLED, WAITING = 0, 1, 2      # outcomes of tick and of recurrence_commands._catch_up_tick


class Occ(NamedTuple):
    """A schedule's delivery: the spec each occurrence gets, the fire ids of its occurrences
    still in delivery (oldest first) and the buffered occurrence's time (NO_TIME: none)."""

    spec: Delivery
    inflight: tuple = ()
    buffered: int = NO_TIME


def occurrence_id(schedule_id: str, fire_id: int) -> str:
    """The id of the occurrence timer of fire `fire_id` of schedule `schedule_id`."""
    return f"{schedule_id}{SEP}{fire_id}"


def _spawn(st, o: int, spec: Delivery, fid: int, stamp: int, now: int, seq: int, step: int = 0,
           action: bytes = b"") -> Event:
    """Put the occurrence timer of fire `fid` (seq of its `delivery_due` event: seq); with
    `step`, the escalation timer of that ladder step (its action is the step's)."""
    t = st._table
    ti = t.tenant[o]
    cid = occurrence_id(t.ids[o], fid)
    ex = as_extra(t.extra[o])
    extra = make_extra(ex.name, ex.payload, ex.labels, action if step else ex.action, None)
    nfree = len(t.free)
    (c,) = t.take_ordinals(1)
    st._counts[0] -= nfree - len(t.free)        # FREE rows
    t.put(c, ti, cid, stamp, 0, extra, _DELIVERING, 2, now, now)
    t.fired_at[c] = now
    t.attempts[c] = 1
    t.fire_id[c] = fid
    if spec.queue is not None:
        t.deliv[c] = DeliveryRecord(spec, avail=seq, step=step)
        st._enqueue(c, ti, spec.queue, seq)
    else:
        t.deliv[c] = DeliveryRecord(spec, step=step)
        st._due.add(c)
    st._counts[_DELIVERING] += 1
    while len(st._live) <= ti:
        st._live.append(0)
        st._held.append(0)
    st._live[ti] += 1
    st._held[ti] += payload_len(extra)
    return Event(seq, EventKind.DELIVERY_DUE, t.tenant_names[ti], cid, now, 2, TimerState.DELIVERING, stamp, fid)


def _fire(st, o: int, spec: Delivery, stamp: int, now: int, seq: int, rev: int, append) -> tuple[int, int, int]:
    """One occurrence: the schedule's `fired` event and its occurrence timer.
    Returns (seq, revision, fire id)."""
    t = st._table
    seq += 1
    rev += 1
    fid = seq
    t.fire_id[o] = fid
    t.attempts[o] += 1
    t.fired_at[o] = now
    append(Event(fid, EventKind.FIRED, t.tenant_names[t.tenant[o]], t.ids[o], now, rev, TimerState.FIRED, stamp,
                 fid))
    seq += 1
    append(_spawn(st, o, spec, fid, stamp, now, seq))
    return seq, rev, fid


def tick(st, o: int, now: int, seq: int, append) -> tuple[int, int, bool]:
    """Tick: the schedule's deadline fire_at[o] came. Fires the due occurrences (catch-up and
    overlap policies), re-arms at the next one or ends. Returns (seq, REARMED, SETTLED or
    WAITING (a buffered occurrence keeps it FIRED), whether anything fired)."""
    t = st._table
    sched, rc, oc = t.schedules[o], t.recur.get(o, DEFAULT), t.occ[o]
    deadline = t.fire_at[o]
    at = pending(rc, deadline)
    # A buffered occurrence counts against max_count from the moment it is buffered.
    fires, skipped = catch_up(sched, rc, at, now, _counted(t, o, rc, oc.buffered))
    name, tid = t.tenant_names[t.tenant[o]], t.ids[o]
    rev = t.revision[o]
    inflight, buffered, fired_any = list(oc.inflight), oc.buffered, False
    for d in fires:
        stamp = deadline if d == at else d
        if inflight and (rc.overlap != ALLOW_ALL or len(inflight) >= MAX_IN_DELIVERY):
            if rc.overlap == BUFFER_ONE and buffered == NO_TIME:
                buffered = stamp
            else:
                skipped += 1
            continue
        seq, rev, fid = _fire(st, o, oc.spec, stamp, now, seq, rev, append)
        inflight.append(fid)
        fired_any = True
    t.occ[o] = oc._replace(inflight=tuple(inflight), buffered=buffered)
    if skipped:
        rc = rc._replace(skipped=rc.skipped + skipped)
    last = fires[-1] if fires else at
    armed = rearm(st, o, rc, next_occurrence(sched, last, now, _counted(t, o, rc, buffered)), now, seq, rev, append)
    if armed is not None:
        return armed, REARMED, fired_any
    t.fire_at[o] = deadline if last == at else last
    if buffered != NO_TIME:         # the schedule is over; it ends once the buffered one fired
        t.state[o] = _FIRED
        if not fired_any:
            seq += 1
            rev += 1
            append(Event(seq, EventKind.FIRED, name, tid, now, rev, TimerState.FIRED, t.fire_at[o],
                         t.fire_id[o] or None))
        t.revision[o] = rev
        return seq, WAITING, fired_any
    seq += 1
    t.revision[o] = rev + 1
    _settle(st, o, now)
    append(Event(seq, EventKind.SETTLED, name, tid, now, rev + 1, TimerState.SETTLED, t.fire_at[o],
                 t.fire_id[o] or None))
    return seq, SETTLED, fired_any


def rearm(st, o: int, rc, nxt, now: int, seq: int, rev: int, append):
    """A recurring timer whose occurrences came due: re-armed at its next occurrence `nxt`
    (moved within its flexible window, if it has one) with an `armed` event, returning the new
    seq; with no next occurrence (None) its recurrence is kept without a nominal time and None
    is returned (the caller ends the schedule)."""
    if nxt is None:
        st._set_recur(o, rc._replace(nominal=NO_NOMINAL) if rc.flex_ms else rc)
        return None
    if rc.flex_ms:
        rc = rc._replace(nominal=nxt)
        nxt = flexed(rc, nxt)
    st._set_recur(o, rc)
    t = st._table
    t.fire_at[o] = nxt
    seq += 1
    t.revision[o] = rev + 1
    append(Event(seq, EventKind.ARMED, t.tenant_names[t.tenant[o]], t.ids[o], now, rev + 1, TimerState.ARMED, nxt))
    return seq


def _counted(t, o: int, rc, buffered: int) -> int:
    """Occurrences that count against max_count: the scheduled fires and a buffered one."""
    return scheduled_fires(t.attempts[o], rc) + (buffered != NO_TIME)


def _settle(st, o: int, now: int) -> None:
    t = st._table
    t.state[o] = _SETTLED
    t.settled_at[o] = now
    ti = t.tenant[o]
    st._live[ti] -= 1
    st._held[ti] -= payload_len(t.extra[o])


def trigger(st, o: int, fid: int, now: int) -> Event:
    """TriggerTimer fired schedule o (fire `fid`, event already made): its occurrence timer.
    Call check_trigger first."""
    t = st._table
    oc = t.occ[o]
    st._seq += 1
    ev = _spawn(st, o, oc.spec, fid, now, now, st._seq)
    t.occ[o] = oc._replace(inflight=oc.inflight + (fid,))
    return ev


def escalate(st, o: int, step: int, action: bytes, at: int, now: int) -> Event:
    """Escalation step `step` of timer o (whose ladder delivers: Table.esc) came due; its
    `escalated` event is the last one emitted (seq st._seq). Its escalation timer
    "<id>@<that seq>", delivering the step's action; returns its `delivery_due` event."""
    esc_seq = st._seq
    st._seq += 1
    return _spawn(st, o, st._table.esc[o], esc_seq, at, now, st._seq, step, action)


def check_trigger(t, o: int) -> None:
    oc = t.occ[o]
    if len(oc.inflight) >= MAX_IN_DELIVERY:
        raise FailedPrecondition(f"timer {t.ids[o]!r} in tenant {t.tenant_names[t.tenant[o]]!r} has "
                                 f"{MAX_IN_DELIVERY} occurrences in delivery")


def on_ended(st, ords, now: int) -> list[int]:
    """Timers `ords` just ended (State._schedule_purges). An occurrence timer leaves its
    schedule's deliveries in flight; the last one out fires a buffered occurrence (and ends a
    schedule that only waited for it). A schedule that ended drops its buffered occurrence.
    Events go to the command's graph event list (drained by every command). Returns the
    ordinals to purge at once (retention 0)."""
    t = st._table
    occ = t.occ
    at_once: list[int] = []
    for c in ords:
        oc = occ.get(c)
        if oc is not None:                   # a schedule ended (cancelled)
            if oc.buffered != NO_TIME:
                occ[c] = oc._replace(buffered=NO_TIME)
            continue
        cid = t.ids[c]
        if SEP not in cid:
            continue
        o = t.lookup(t.tenant_names[t.tenant[c]], cid.rpartition(SEP)[0])
        oc = occ.get(o) if o is not None else None
        fid = t.fire_id[c]
        if oc is None or fid not in oc.inflight:
            continue
        inflight = tuple(f for f in oc.inflight if f != fid)
        occ[o] = oc = oc._replace(inflight=inflight)
        if inflight or oc.buffered == NO_TIME or t.state[o] in _TERMINAL:
            continue
        at_once += _fire_buffered(st, o, oc, now)
    return at_once


def _fire_buffered(st, o: int, oc: Occ, now: int) -> list[int]:
    t = st._table
    events = t.graph.events
    st._seq, rev, fid = _fire(st, o, oc.spec, oc.buffered, now, st._seq, t.revision[o], events.append)
    t.occ[o] = oc._replace(inflight=(fid,), buffered=NO_TIME)
    name, tid, s = t.tenant_names[t.tenant[o]], t.ids[o], t.state[o]
    st._seq += 1
    if s == _FIRED:                 # the schedule was over: it settles now
        t.revision[o] = rev + 1
        st._counts[_FIRED] -= 1
        st._counts[_SETTLED] += 1
        _settle(st, o, now)
        events.append(Event(st._seq, EventKind.SETTLED, name, tid, now, rev + 1, TimerState.SETTLED, t.fire_at[o],
                            fid))
        return st._schedule_purges((o,), now)
    t.revision[o] = rev + 1         # back to what it was: armed, or paused
    events.append(Event(st._seq, EventKind.ARMED if s == _ARMED else EventKind.PAUSED, name, tid, now, rev + 1,
                        TimerState(s), t.fire_at[o]))
    return []


def check(st, need) -> None:
    """State.check_invariants' part for schedules with deliveries and delivered ladders."""
    t = st._table
    for o in t.esc:
        need(t.state[o] != 0 and t.flags[o] & 1 and o not in t.deliv and o not in t.occ,
             f"delivered ladder of timer {o} belongs to an ack_required timer without a delivery of its own")
    for o, oc in t.occ.items():
        need(o in t.schedules and t.state[o] != 0 and o not in t.deliv, f"schedule {o} with delivery is recurring")
        need(len(oc.inflight) <= MAX_IN_DELIVERY + 1 and list(oc.inflight) == sorted(set(oc.inflight)),
             f"occurrences in delivery of schedule {o}")
        need(oc.buffered == NO_TIME or (oc.inflight and t.state[o] not in _TERMINAL),
             f"a buffered occurrence of schedule {o} waits for one in delivery")
        need(t.state[o] != _FIRED or oc.buffered != NO_TIME, f"a fired schedule {o} waits for its buffered one")
        for f in oc.inflight:
            c = t.lookup(t.tenant_names[t.tenant[o]], occurrence_id(t.ids[o], f))
            need(c is not None and t.fire_id[c] == f and t.state[c] not in _TERMINAL,
                 f"occurrence {f} of schedule {o} is a timer in delivery")


# ---- snapshots (header flag FLAG_OCC) ----------------------------------------------------


def _spec_row(d: Delivery) -> list:
    wh = d.webhook
    return [wh.url if wh else None, [list(h) for h in wh.headers] if wh else [], list(d.policy), d.queue, d.endpoint]


def _spec_of(url, headers, pol, queue, endpoint) -> Delivery:
    hook = None if url is None else Webhook(url, tuple(tuple(h) for h in headers))
    return Delivery(hook, DeliveryPolicy(*pol), queue, endpoint)


def encode(occ: dict, esc: dict) -> bytes:
    """Canonical JSON, in ordinal order: [schedules, ladders]; a schedule is [o, url, headers,
    policy, queue, endpoint, inflight, buffered], a delivered ladder [o, url, headers, policy,
    queue, endpoint]."""
    rows = [[o, *_spec_row(occ[o].spec), list(occ[o].inflight), occ[o].buffered] for o in sorted(occ)]
    lads = [[o, *_spec_row(esc[o])] for o in sorted(esc)]
    return json.dumps([rows, lads], separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode(blob: bytes, n: int, states: bytes, schedules: dict) -> tuple[dict, dict]:
    out: dict = {}
    esc: dict = {}
    try:
        rows, lads = json.loads(blob)
        for o, url, headers, pol, queue, endpoint in lads:
            if type(o) is not int or not 0 <= o < n or o in esc or states[o] == 0 or (url is None) == (queue is None):
                raise SnapshotError(f"snapshot delivered ladder names timer {o!r} wrongly")
            esc[o] = _spec_of(url, headers, pol, queue, endpoint)
        for o, url, headers, pol, queue, endpoint, inflight, buffered in rows:
            if type(o) is not int or not 0 <= o < n or o in out or o not in schedules or states[o] == 0:
                raise SnapshotError(f"snapshot schedule delivery names timer {o!r} wrongly")
            if ((url is None) == (queue is None) or type(buffered) is not int
                    or any(type(f) is not int or f <= 0 for f in inflight) or len(inflight) > MAX_IN_DELIVERY + 1
                    or list(inflight) != sorted(set(inflight))):
                raise SnapshotError(f"snapshot schedule delivery of timer {o} is inconsistent")
            out[o] = Occ(_spec_of(url, headers, pol, queue, endpoint), tuple(inflight), buffered)
    except SnapshotError:
        raise
    except (ValueError, TypeError, IndexError) as e:
        raise SnapshotError(f"snapshot schedule deliveries are malformed: {e}") from None
    if not out and not esc:
        raise SnapshotError("snapshot schedule delivery block is empty")
    return out, esc

