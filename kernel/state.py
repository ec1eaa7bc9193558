"""The deterministic timer state machine: commands in, events out.

Every replica applies the same commands in the same order (Raft's job) and must
end in the same state, byte for byte. So this module reads no clock (each
command carries `now_ms`, stamped by the leader), draws no random numbers, does
no I/O and never lets dict/set order decide anything replicated. Time moves only
through `tick(now_ms)`.

Terminal timers leave the table after their tenant's retention (retention.py):
their purge deadline is a second entry in the same wheel (key ordinal | PURGE),
so a tick that reaches it removes them, without a scan.

Each command validates everything first and only then mutates, so it applies
completely or raises a KernelError with the state untouched. Every transition of
a timer bumps its `revision` and emits an Event with the next kernel-wide `seq`.
Events are returned, not stored: the layer above persists and streams them.
"""

from __future__ import annotations

from array import array
from functools import partial
from heapq import heappop, heappush
from itertools import compress
from operator import attrgetter, itemgetter
from collections.abc import Iterable, Mapping
from typing import Any, Iterator, Optional

from . import graph as _graph
from . import occurrences as _occ
from . import plain as _plain
from . import snapshot as _snapshot
from ._wheel import MAX_TIME, Wheel
from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, QuotaExceeded
from .quota import TenantLimit, TenantUsage, payload_len, usage_by_tenant
from .delivery import (MAX_ATTEMPT_LOG, MAX_ATTEMPTS, MAX_BODY_EXCERPT, MAX_LEASE_BATCH, MAX_VISIBILITY_MS,
                       MIN_VISIBILITY_MS, Attempt, DeliveryRecord, bounded_int, check_delivery, check_error_class,
                       check_queue, is_success)
from .retention import DEFAULT_RETENTION_MS, RetentionPolicy
from .graph import ESCALATE
from .schedule import check_schedule, first_occurrence, next_occurrence
from .recurrence import check_policies, flexed, scheduled_fires
from .recurrence_commands import RecurringCommands
from .snapshot import SnapshotCapture
from .table import FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID, FREE, NO_FIRE, PURGE, NO_TIME, Extra, Table, make_extra, timer_of
from .timer import (
    AckResult,
    CancelResult,
    CreateItem,
    CreateResult,
    DeliveryResult,
    DeleteResult,
    Event,
    Lease,
    LeaseResult,
    EventKind,
    RescheduleResult,
    TickResult,
    Timer,
    TimerSpec,
    TimerState,
)
from .validate import (
    MAX_ACTION_BYTES,
    MAX_PAYLOAD_BYTES,
    check_batch,
    check_bool,
    check_bytes,
    check_delta,
    check_id,
    check_idempotency_key,
    check_new_id,
    check_labels,
    check_name,
    check_seq,
    check_tenant,
    check_time,
    plain_spec,
)

__all__ = ["State", "SnapshotCapture", "ScanCursor"]

_SCHEDULED = int(TimerState.SCHEDULED)
_ARMED = int(TimerState.ARMED)
_FIRED = int(TimerState.FIRED)
_SETTLED = int(TimerState.SETTLED)
_CANCELLED = int(TimerState.CANCELLED)
_DEAD = int(TimerState.DEAD_LETTERED)
_DEAD_LETTERED = _DEAD
_DELIVERING = int(TimerState.DELIVERING)
_TERMINAL = frozenset((_SETTLED, _CANCELLED, _DEAD))

#: bytes.translate tables: the ARMED state byte -> 1 (0), every other byte -> 0 (1).
_ARMED_MASK = bytes(int(b == _ARMED) for b in range(256))
_UNARMED_MASK = bytes(int(b != _ARMED) for b in range(256))

#: Fields of a normalised spec (see _normalise_spec).
_TENANT_OF = itemgetter(0)
_EXTRA_OF = itemgetter(4)
_GRAPH_OF = attrgetter("graph")

_S_SCHEDULED = TimerState.SCHEDULED
_S_ARMED = TimerState.ARMED
_S_FIRED = TimerState.FIRED
_S_SETTLED = TimerState.SETTLED
_S_CANCELLED = TimerState.CANCELLED
_S_DEAD = TimerState.DEAD_LETTERED
_S_DELIVERING = TimerState.DELIVERING

_CREATED = EventKind.CREATED
_E_ARMED = EventKind.ARMED
_E_FIRED = EventKind.FIRED
_E_SETTLED = EventKind.SETTLED
_RESCHEDULED = EventKind.RESCHEDULED
_E_CANCELLED = EventKind.CANCELLED
_E_DUE = EventKind.DELIVERY_DUE
_E_ATTEMPTED = EventKind.DELIVERY_ATTEMPTED
_E_DEAD = EventKind.DEAD_LETTERED
_E_REDRIVEN = EventKind.REDRIVEN
_E_LEASED = EventKind.LEASED
_E_EXTENDED = EventKind.LEASE_EXTENDED
_E_PURGED = EventKind.PURGED
_E_DELETED = EventKind.DELETED
_STATE_OF = {int(s): s for s in TimerState}

#: bytes.translate table: a terminal state byte -> 1, every other byte (free rows too) -> 0.
_TERMINAL_MASK = bytes(int(_SETTLED <= b <= _DEAD_LETTERED) for b in range(256))


class State(RecurringCommands):
    """All timers of one kernel plus the wheel that arms them.

    Commands: create, cancel, reschedule, tick, ack, delete (each takes `now_ms`
    first). Configuration: `retention` (a RetentionPolicy, set by the layer above
    from replicated data). Queries: get, len() (timers held), positions,
    counts(), usage(tenant), next_deadline(), last_tick, seq, iteration.
    Snapshot: to_bytes() / State.from_bytes(); capture() for a cheap copy to
    encode in another thread; two states are equal when their snapshots are.
    """

    __slots__ = ("_table", "_wheel", "_seq", "_last_tick", "_counts", "_live", "_held", "_due", "_queues",
                 "_retention", "_ret_cache", "_v1")

    def __init__(self) -> None:
        self._table = Table()
        self._wheel = Wheel(0)
        self._seq = 0            # seq of the last emitted event
        self._last_tick = 0      # now of the last tick; ticks never go backwards
        self._counts = [0] * (len(TimerState) + 1)  # by TimerState value
        # By tenant index (kernel/quota.py): outstanding (non-terminal) timers and
        # their payload bytes; kept by every command, rebuilt by from_bytes.
        self._live: list[int] = []
        self._held: list[int] = []
        # Ordinals of DELIVERING timers with an attempt due (not waiting in the wheel):
        # derived from the delivery records, so a sweep costs what is due, not every
        # webhook timer ever held. Never iterated unsorted for anything replicated.
        self._due: set[int] = set()
        # (tenant index, queue) -> heap of (avail seq, ordinal): the queue timers available
        # to lease, oldest first. Derived from the delivery records (rebuilt by from_bytes);
        # entries whose record moved on are skipped when popped.
        self._queues: dict[tuple[int, str], list] = {}
        self._init_retention()

    def _init_retention(self) -> None:
        self._retention = RetentionPolicy()
        self._ret_cache: list[int] = []     # retention by tenant index (derived from the policy)
        # True while the state is what snapshot format 1 can say: no row ever freed and
        # every purge deadline the default one (snapshot.py). Set by commands only.
        self._v1 = True

    @property
    def retention(self) -> RetentionPolicy:
        """The retention policy applied to timers when they end (retention.py)."""
        return self._retention

    @retention.setter
    def retention(self, policy: RetentionPolicy) -> None:
        if not isinstance(policy, RetentionPolicy):
            raise InvalidArgument("retention", f"must be a RetentionPolicy, not {type(policy).__name__}")
        self._retention = policy
        self._ret_cache = []

    # ---- commands ----------------------------------------------------------

    def create(self, now_ms: int, specs: list[TimerSpec], limits: Optional[Mapping[str, TenantLimit]] = None,
               default_limit: Optional[TenantLimit] = None) -> CreateResult:
        """Create timers (SCHEDULED then ARMED at once: two events each).

        The whole batch is validated before anything changes. An id already used
        in the tenant raises AlreadyExists, unless the spec's idempotency key was
        already used in that tenant: then that earlier timer is returned with
        created=False (whatever the spec's id). Within one batch a repeated
        (tenant, idempotency key) returns the first spec's timer; a repeated
        (tenant, id) without that is InvalidArgument.

        `limits` (tenant -> TenantLimit) and `default_limit` (for tenants not in
        `limits`; None: unlimited) bound what each tenant may hold: if the timers
        this batch creates would take a tenant past its max_timers or
        max_payload_bytes (counted over its outstanding timers), the batch raises
        QuotaExceeded, naming the first such tenant in spec order, and changes
        nothing. Timers an idempotency key returns are not new and count nothing.
        """
        now = check_time("now_ms", now_ms)
        specs = check_batch("specs", specs)
        norm = [_normalise_spec(i, spec) for i, spec in enumerate(specs)]
        delivs: Optional[list] = None       # checked Delivery per spec, when any spec has one
        recurs: Optional[list] = None       # recurrence.Recur per spec, when any spec has a policy
        for i, spec in enumerate(specs):
            if spec.catch_up or spec.overlap or spec.flex_ms:
                if recurs is None:
                    recurs = [None] * len(specs)
                n = norm[i]
                rc = recurs[i] = check_policies(f"specs[{i}]", spec.catch_up, spec.overlap, n[5], n[2],
                                                spec.flex_ms, spec.flex_seed)
                if rc is not None and rc.flex_ms:     # the first occurrence within its window
                    norm[i] = (n[0], n[1], flexed(rc, n[2]), n[3], n[4], n[5])
            if spec.delivery is not None:
                if delivs is None:
                    delivs = [None] * len(specs)
                delivs[i] = check_delivery(f"specs[{i}].delivery", spec.delivery)
                if spec.ack_required and not (type(spec.graph) is _graph.GraphSpec and spec.graph.escalate):
                    raise InvalidArgument(f"specs[{i}].ack_required",
                                          "a timer with a webhook or queue settles when it is delivered; "
                                          "it cannot also require an ack (unless it has an escalation ladder: "
                                          "then its steps are delivered there)")

        t = self._table
        # plan[i]: ("old", ordinal) | ("new", j) | ("dup", j), j indexing `new`
        plan: list[tuple[str, int]] = []
        new: list[tuple] = []
        new_at: list[int] = []              # spec index of each new timer
        batch_ids: dict[tuple[str, str], int] = {}
        batch_keys: dict[tuple[str, str], int] = {}
        for i, spec in enumerate(norm):
            tenant, timer_id, _, flags, extra, _ = spec
            key = timer_id if flags & FLAG_KEY_IS_ID else (extra.idempotency_key if type(extra) is Extra else None)
            if key is not None:
                o = t.lookup_idem(tenant, key)
                if o is not None:
                    plan.append(("old", o))
                    continue
                j = batch_keys.get((tenant, key))
                if j is not None:
                    plan.append(("dup", j))
                    continue
            if t.lookup(tenant, timer_id) is not None:
                raise AlreadyExists(tenant, timer_id, f"specs[{i}].id")
            j = batch_ids.get((tenant, timer_id))
            if j is not None:
                raise InvalidArgument(
                    f"specs[{i}].id", f"{timer_id!r} repeats the id of specs[{new_at[j]}] in tenant {tenant!r}"
                )
            j = len(new)
            batch_ids[(tenant, timer_id)] = j
            if key is not None:
                batch_keys[(tenant, key)] = j
            plan.append(("new", j))
            new.append(spec)
            new_at.append(i)

        # What the new timers add to each tenant's usage, in spec order; checked
        # against the limits before anything changes.
        adding: dict[str, list[int]] = {}
        if len(set(map(_TENANT_OF, new))) == 1:     # the usual batch: one tenant, C-level passes
            extras = list(map(_EXTRA_OF, new))
            nbytes = 0 if extras.count(None) == len(extras) else sum(map(payload_len, filter(None, extras)))
            adding[new[0][0]] = [len(new), nbytes]
        else:
            for tenant, _, _, _, extra, _ in new:
                a = adding.get(tenant)
                if a is None:
                    a = adding[tenant] = [0, 0]
                a[0] += 1
                if extra is not None:
                    a[1] += len(extra) if type(extra) is bytes else len(extra.payload)
        if limits or default_limit is not None:
            self._check_limits(adding, limits, default_limit)
        # Dependencies and escalation ladders (graph.py): checked before anything changes.
        gplan = _graph.plan(t, specs, new, new_at) if any(map(_GRAPH_OF, specs)) else None
        waiting = gplan.waiting if gplan is not None else ()

        # Apply. The wheel is the only step that could refuse (it cannot here:
        # fresh keys, deadlines checked), and it is all-or-nothing, so go first.
        nfree = len(t.free)
        ords = t.take_ordinals(len(new))
        try:
            if waiting:                     # timers with parents wait outside the wheel
                self._wheel.insert_many([o for j, o in enumerate(ords) if j not in waiting],
                                        [n[2] for j, n in enumerate(new) if j not in waiting])
            else:
                self._wheel.insert_many(ords, [n[2] for n in new])
        except BaseException:
            t.untake(ords)
            raise
        self._counts[FREE] -= nfree - len(t.free)
        events: list[Event] = []
        fresh: list[partial] = []           # each new timer as this command leaves it, built on demand
        seq = self._seq
        for j, (o, (tenant, timer_id, fire_at, flags, extra, sched)) in enumerate(zip(ords, new)):
            ti = t.intern_tenant(tenant)
            tenant = t.tenant_names[ti]   # the interned string object
            if waiting and j in waiting:    # SCHEDULED until its parents meet the condition
                t.put(o, ti, timer_id, fire_at, flags, extra, _SCHEDULED, 1, now, NO_TIME, sched)
                if sched is not None:
                    self._v1 = False      # snapshot format 1 has no schedules
                events.append(Event(seq + 1, _CREATED, tenant, timer_id, now, 1, _S_SCHEDULED, fire_at))
                fresh.append(None)
                seq += 1
                continue
            t.put(o, ti, timer_id, fire_at, flags, extra, _ARMED, 2, now, now, sched)
            if sched is not None:
                self._v1 = False          # snapshot format 1 has no schedules
            events.append(Event(seq + 1, _CREATED, tenant, timer_id, now, 1, _S_SCHEDULED, fire_at))
            events.append(Event(seq + 2, _E_ARMED, tenant, timer_id, now, 2, _S_ARMED, fire_at))
            fresh.append(partial(timer_of, tenant, timer_id, fire_at, flags, extra, _ARMED, now, now,
                                 NO_TIME, NO_TIME, 0, NO_FIRE, 2, sched))
            seq += 2
        self._seq = seq
        self._counts[_ARMED] += len(new) - len(waiting)
        self._counts[_SCHEDULED] += len(waiting)
        if delivs is not None:
            for j, i in enumerate(new_at):
                if delivs[i] is not None and new[j][5] is not None:    # a schedule (occurrences.py)
                    t.occ[ords[j]] = _occ.Occ(delivs[i])
                    fresh[j] = t.view(ords[j])
                elif delivs[i] is not None and new[j][3] & FLAG_ACK_REQUIRED:   # its ladder's steps
                    t.esc[ords[j]] = delivs[i]
                    self._v1 = False
                    fresh[j] = t.view(ords[j])
                elif delivs[i] is not None:
                    t.deliv[ords[j]] = DeliveryRecord(delivs[i])
                    fresh[j] = t.view(ords[j])     # the view with its delivery (few such timers)
        if recurs is not None:
            for j, i in enumerate(new_at):
                if recurs[i] is not None:
                    t.recur[ords[j]] = recurs[i]
                    fresh[j] = t.view(ords[j])
        live, held = self._live, self._held
        while len(live) < len(t.tenant_names):
            live.append(0)
            held.append(0)
        index = t.tenant_index
        for tenant, (n, nbytes) in adding.items():
            ti = index[tenant]
            live[ti] += n
            held[ti] += nbytes
        if gplan is not None:
            _graph.attach(self, gplan, ords, now)
            events += _graph.drain(t)
            for j in _graph.touched(gplan):    # as this command leaves them (few such timers)
                fresh[j] = t.view(ords[j])

        view = t.view
        items = tuple(
            CreateItem(view(ref), False) if how == "old" else CreateItem(fresh[ref], how == "new")
            for how, ref in plan
        )
        return CreateResult(tuple(events), items)

    def create_plain(self, now_ms: int, tenant: str, ids: list, fire_at: array, flags: bytes, payloads: list,
                     limits: Optional[Mapping[str, TenantLimit]] = None,
                     default_limit: Optional[TenantLimit] = None):
        """`create` of plain timers given as columns, without an object per timer (kernel/plain.py)."""
        return _plain.create_plain(self, now_ms, tenant, ids, fire_at, flags, payloads, limits, default_limit)

    def cancel(self, now_ms: int, refs: list) -> CancelResult:
        """Cancel timers named by (tenant, id); all or nothing.

        Scheduled, armed and fired (awaiting ack) timers can be cancelled;
        settled, cancelled and dead-lettered ones cannot (FailedPrecondition).
        Naming one timer twice in a batch is InvalidArgument.
        """
        now = check_time("now_ms", now_ms)
        refs = check_batch("refs", refs)
        named = [_check_ref(f"refs[{i}]", ref) for i, ref in enumerate(refs)]
        t = self._table
        ords: list[int] = []
        first: dict[int, int] = {}
        for i, (tenant, timer_id) in enumerate(named):
            o = self._find(tenant, timer_id)
            st = t.state[o]
            if st in _TERMINAL:
                raise FailedPrecondition(
                    f"refs[{i}]: timer {timer_id!r} in tenant {tenant!r} is {TimerState(st).name}; "
                    "only scheduled, armed, fired or delivering timers can be cancelled"
                )
            if o in first:
                raise InvalidArgument(f"refs[{i}]", f"names the same timer as refs[{first[o]}]")
            first[o] = i
            ords.append(o)

        events: list[Event] = []
        seq = self._seq
        counts = self._counts
        live, held = self._live, self._held
        for o in ords:
            st = t.state[o]
            if st == _ARMED:
                self._wheel.cancel(o)
            elif st == _DELIVERING:
                rec = t.deliv[o]
                if rec.waiting:
                    self._wheel.cancel(o)
                t.deliv[o] = rec._replace(waiting=False, lease="", avail=0)
                self._due.discard(o)
            counts[st] -= 1
            ti = t.tenant[o]
            live[ti] -= 1
            held[ti] -= payload_len(t.extra[o])
            counts[_CANCELLED] += 1
            t.state[o] = _CANCELLED
            t.settled_at[o] = now
            rev = t.revision[o] + 1
            t.revision[o] = rev
            seq += 1
            events.append(
                Event(seq, _E_CANCELLED, t.tenant_names[t.tenant[o]], t.ids[o], now, rev, _S_CANCELLED, t.fire_at[o])
            )
        self._seq = seq
        at_once = self._schedule_purges(ords, now)
        views = tuple(t.view(o) for o in ords)
        if t.graph.events:
            events += _graph.drain(t)
        if at_once:
            events += self._purge(at_once, now, _E_PURGED)
        return CancelResult(tuple(events), views)

    def reschedule(
        self,
        now_ms: int,
        tenant: str,
        id: str,
        fire_at: Optional[int] = None,
        extend_by: Optional[int] = None,
    ) -> RescheduleResult:
        """Move a scheduled or armed timer's deadline.

        Give exactly one of `fire_at` (absolute) or `extend_by` (relative to the
        current fire_at). extend_by may be negative: pulling a deadline in is a
        legitimate request, as long as the result stays within 0..MAX_TIME. A
        new deadline at or before the last tick fires on the next tick. The
        timer keeps its armed_at; the `rescheduled` event records the change.
        """
        now = check_time("now_ms", now_ms)
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        if (fire_at is None) == (extend_by is None):
            raise InvalidArgument("fire_at", "give exactly one of fire_at and extend_by")
        new_at = check_time("fire_at", fire_at) if fire_at is not None else None
        delta = check_delta("extend_by", extend_by) if extend_by is not None else 0
        t = self._table
        o = self._find(tenant, timer_id)
        st = t.state[o]
        if st != _ARMED and st != _SCHEDULED:
            raise FailedPrecondition(
                f"timer {timer_id!r} in tenant {tenant!r} is {TimerState(st).name}; "
                "only scheduled or armed timers can be rescheduled"
            )
        if new_at is None:
            new_at = t.fire_at[o] + delta
            if new_at < 0 or new_at > MAX_TIME:
                raise InvalidArgument(
                    "extend_by", f"moves fire_at to {new_at}, outside 0..{MAX_TIME} ms"
                )

        if st == _ARMED:
            self._wheel.reschedule(o, new_at)
        t.fire_at[o] = new_at
        if t.recur:
            self._rescheduled(o, new_at)
        rev = t.revision[o] + 1
        t.revision[o] = rev
        self._seq += 1
        ev = Event(self._seq, _RESCHEDULED, t.tenant_names[t.tenant[o]], t.ids[o], now, rev, TimerState(st), new_at)
        return RescheduleResult((ev,), t.view(o))

    def tick(self, now_ms: int) -> TickResult:
        """Let time pass: everything due fires, in (fire_at, ordinal) order.

        A `now_ms` below the last tick counts as the last tick. Each due timer
        becomes FIRED with fired_at = the tick's time, attempts + 1, and
        fire_id = the seq of its `fired` event; without ack_required it settles
        in the same tick (a `settled` event right after). A recurring timer with
        occurrences left is armed again at its next one instead (an `armed` event;
        schedule.py).
        """
        now = check_time("now_ms", now_ms)
        if now < self._last_tick:
            now = self._last_tick
        due = self._wheel.advance(now)
        self._last_tick = now
        if not due:
            return TickResult((), now, ())
        expired: list[int] = []
        escalations: list[int] = []
        if max(due) >= ESCALATE:         # purge deadlines (ordinal | PURGE) or escalation steps came due too
            expired = [k ^ PURGE for k in due if k >= PURGE]
            escalations = [k ^ ESCALATE for k in due if ESCALATE <= k < PURGE]
            due = [k for k in due if k < ESCALATE]

        t = self._table
        schedules = t.schedules
        rearm: list[int] = []               # recurring timers back in the wheel at their next occurrence
        state, flags, revision, fire_id = t.state, t.flags, t.revision, t.fire_id
        fired_at, settled_at, attempts, fire_at = t.fired_at, t.settled_at, t.attempts, t.fire_at
        names, tcol, ids, extra = t.tenant_names, t.tenant, t.ids, t.extra
        live, held = self._live, self._held
        events: list[Event] = []
        append = events.append
        seq = self._seq
        settled = 0
        deliv = t.deliv
        retries: list[int] = []     # DELIVERING timers whose retry came due (not fires)
        delivering = 0
        ended: list[int] = []
        recur = t.recur
        quiet: list[int] = []       # recurring timers whose catch-up skipped every due occurrence
        occ = t.occ
        for o in due:
            if occ and o in occ:            # a schedule with a delivery (occurrences.py)
                seq, outcome, any_fired = _occ.tick(self, o, now, seq, append)
                if outcome == 0:
                    rearm.append(o)
                elif outcome == 1:
                    settled += 1
                    ended.append(o)
                if not any_fired:
                    quiet.append(o)
                continue
            if (recur and o in recur and (recur[o].catch_up or recur[o].flex_ms or recur[o].pending)) \
                    or (flags[o] & FLAG_ACK_REQUIRED and schedules and o in schedules):      # recurrence.py
                seq, outcome, any_fired = self._catch_up_tick(o, now, seq, append)
                if outcome == 0:            # re-armed
                    rearm.append(o)
                elif outcome == 1:          # settled (else: fired, awaiting acks)
                    settled += 1
                    ended.append(o)
                if not any_fired:
                    quiet.append(o)
                continue
            if deliv and o in deliv:
                rec = deliv[o]
                rev = revision[o] + 1
                ti = tcol[o]
                if state[o] == _DELIVERING and rec.spec.queue is not None:   # lease expired / backoff over
                    seq = self._queue_wake(o, rec, now, seq, append)
                    retries.append(o)
                    if state[o] == _DEAD:     # its last lease expired: dead-lettered, purged in time
                        ended.append(o)
                    continue
                if state[o] == _DELIVERING:     # a retry's time came: the attempt is due again
                    seq += 1
                    deliv[o] = rec._replace(waiting=False)
                    self._due.add(o)
                    revision[o] = rev
                    append(Event(seq, _E_DUE, names[ti], ids[o], now, rev, _S_DELIVERING, fire_at[o], fire_id[o]))
                    retries.append(o)
                    continue
                # Fired: delivering at once, attempt 1 due (the leader dispatches on the event).
                seq += 1
                fire_id[o] = seq
                fired_at[o] = now
                attempts[o] += 1
                state[o] = _DELIVERING
                revision[o] = rev + 1
                if rec.spec.queue is not None:     # available on its queue (event seq = seq + 1)
                    deliv[o] = rec._replace(attempt=0, waiting=False, next_at=-1, lease="", avail=seq + 1)
                    self._enqueue(o, ti, rec.spec.queue, seq + 1)
                else:
                    deliv[o] = rec._replace(attempt=0, waiting=False, next_at=-1)
                    self._due.add(o)
                append(Event(seq, _E_FIRED, names[ti], ids[o], now, rev, _S_FIRED, fire_at[o], seq))
                append(Event(seq + 1, _E_DUE, names[ti], ids[o], now, rev + 1, _S_DELIVERING, fire_at[o], seq))
                seq += 1
                delivering += 1
                continue
            seq += 1
            rev = revision[o] + 1
            fire_id[o] = seq
            fired_at[o] = now
            attempts[o] += 1
            ti = tcol[o]
            tenant = names[ti]
            timer_id = ids[o]
            at = fire_at[o]
            sched = schedules.get(o) if schedules else None
            if sched is not None:
                nxt = next_occurrence(sched, at, now, scheduled_fires(attempts[o], recur.get(o)) if recur
                                      else attempts[o])
                if nxt is not None:       # fired, and armed again at its next occurrence
                    fire_at[o] = nxt
                    revision[o] = rev + 1
                    append(Event(seq, _E_FIRED, tenant, timer_id, now, rev, _S_FIRED, at, seq))
                    append(Event(seq + 1, _E_ARMED, tenant, timer_id, now, rev + 1, _S_ARMED, nxt))
                    seq += 1
                    rearm.append(o)
                    continue
            if flags[o] & FLAG_ACK_REQUIRED:
                state[o] = _FIRED
                revision[o] = rev
                append(Event(seq, _E_FIRED, tenant, timer_id, now, rev, _S_FIRED, at, seq))
            else:
                state[o] = _SETTLED
                settled_at[o] = now
                revision[o] = rev + 1
                live[ti] -= 1
                ex = extra[o]
                if ex is not None:
                    held[ti] -= len(ex) if type(ex) is bytes else len(ex.payload)
                append(Event(seq, _E_FIRED, tenant, timer_id, now, rev, _S_FIRED, at, seq))
                append(Event(seq + 1, _E_SETTLED, tenant, timer_id, now, rev + 1, _S_SETTLED, at, seq))
                seq += 1
                settled += 1
                ended.append(o)
        self._seq = seq
        counts = self._counts
        fires = len(due) - len(retries)
        counts[_ARMED] -= fires - len(rearm)
        counts[_SETTLED] += settled
        counts[_DELIVERING] += delivering
        counts[_FIRED] += fires - settled - delivering - len(rearm)
        if rearm:
            self._wheel.insert_many(rearm, [fire_at[o] for o in rearm])
        if t.graph:
            skip = set(retries).union(quiet)
            _graph.after_fires(self, [o for o in due if o not in skip], escalations, now)
        at_once = self._schedule_purges(ended, now) if ended else ()
        view = t.view
        if retries or quiet:
            skip = set(retries).union(quiet)
            fired = tuple(view(o) for o in due if o not in skip)
        else:
            fired = tuple(view(o) for o in due)
        if t.graph.events:
            events += _graph.drain(t)
        if expired:
            events += self._purge(expired, now, _E_PURGED)
        if at_once:
            events += self._purge(at_once, now, _E_PURGED)
        return TickResult(tuple(events), now, fired, len(expired) + len(at_once))

    def ack(self, now_ms: int, tenant: str, id: str, fire_id: int) -> AckResult:
        """Settle a FIRED timer; `fire_id` must name its current fire, so a late
        ack of an earlier fire cannot settle a later one."""
        now = check_time("now_ms", now_ms)
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        fid = check_seq("fire_id", fire_id)
        t = self._table
        o = self._find(tenant, timer_id)
        if t.schedules and o in t.schedules:        # a recurring timer's fire (recurrence.py)
            return AckResult(*self._ack_recurring(now, o, fid))
        st = t.state[o]
        if st != _FIRED:
            raise FailedPrecondition(
                f"timer {timer_id!r} in tenant {tenant!r} is {TimerState(st).name}; "
                "only a fired timer can be acknowledged"
            )
        current = t.fire_id[o]
        if fid != current:
            raise FailedPrecondition(
                f"fire_id {fid} is not the current fire of timer {timer_id!r} in tenant {tenant!r} ({current})"
            )
        t.state[o] = _SETTLED
        t.settled_at[o] = now
        rev = t.revision[o] + 1
        t.revision[o] = rev
        self._counts[_FIRED] -= 1
        self._counts[_SETTLED] += 1
        ti = t.tenant[o]
        self._live[ti] -= 1
        self._held[ti] -= payload_len(t.extra[o])
        self._seq += 1
        ev = Event(self._seq, _E_SETTLED, t.tenant_names[t.tenant[o]], t.ids[o], now, rev, _S_SETTLED, t.fire_at[o], fid)
        at_once = self._schedule_purges((o,), now)
        view = t.view(o)
        more = _graph.drain(t) if t.graph.events else []
        if at_once:
            return AckResult((ev, *more, *self._purge(at_once, now, _E_PURGED)), view)
        return AckResult((ev, *more), view)

    def delete(self, now_ms: int, refs: list) -> DeleteResult:
        """Remove terminal timers named by (tenant, id) now, before their retention
        ends; all or nothing. A timer that is not terminal is FailedPrecondition
        (cancel it first); naming one timer twice is InvalidArgument. Each emits a
        `deleted` event; the result holds the timers as they were."""
        now = check_time("now_ms", now_ms)
        refs = check_batch("refs", refs)
        named = [_check_ref(f"refs[{i}]", ref) for i, ref in enumerate(refs)]
        t = self._table
        ords: list[int] = []
        first: dict[int, int] = {}
        for i, (tenant, timer_id) in enumerate(named):
            o = self._find(tenant, timer_id)
            st = t.state[o]
            if st not in _TERMINAL:
                raise FailedPrecondition(
                    f"refs[{i}]: timer {timer_id!r} in tenant {tenant!r} is {TimerState(st).name}; "
                    "only settled, cancelled or dead-lettered timers can be deleted (cancel it first)"
                )
            if o in first:
                raise InvalidArgument(f"refs[{i}]", f"names the same timer as refs[{first[o]}]")
            first[o] = i
            ords.append(o)
        views = tuple(t.view(o) for o in ords)
        self._wheel.cancel_many([o | PURGE for o in ords])
        return DeleteResult(tuple(self._purge(ords, now, _E_DELETED)), views)

    # ---- retention -----------------------------------------------------------

    def _retention_of(self, ti: int) -> int:
        cache = self._ret_cache
        if ti >= len(cache):
            of, names = self._retention.of, self._table.tenant_names
            cache.extend(of(names[i]) for i in range(len(cache), len(names)))
        return cache[ti]

    def _schedule_purges(self, ords, now: int) -> list[int]:
        """Timers `ords` just ended at `now`: give each its purge deadline (in the
        purge_at column and the wheel). Returns those whose retention is 0, for the
        caller to purge in this command once it has built its views."""
        t = self._table
        tcol, purge_at = t.tenant, t.purge_at
        ret = self._retention_of
        at_once: list[int] = []
        keys: list[int] = []
        deadlines: list[int] = []
        for o in ords:
            r = ret(tcol[o])
            if r != DEFAULT_RETENTION_MS:
                self._v1 = False
                if not r:
                    at_once.append(o)
                    continue
            d = now + r
            if d > MAX_TIME:
                d = MAX_TIME
            purge_at[o] = d
            keys.append(o | PURGE)
            deadlines.append(d)
        if keys:
            self._wheel.insert_many(keys, deadlines)
        if t.graph:                 # ladders stop; children waiting on these timers resolve
            at_once += _graph.on_ended(self, ords, now)
        if t.occ:                   # occurrences leave their schedule's deliveries in flight
            at_once += _occ.on_ended(self, ords, now)
        return at_once

    def _purge(self, ords, now: int, kind: EventKind) -> list[Event]:
        """Remove terminal timers `ords` (their purge entries already out of the
        wheel) from the table and its indexes; one `kind` event each."""
        t = self._table
        counts = self._counts
        events: list[Event] = []
        seq = self._seq
        for o in ords:
            st = t.state[o]
            rev = t.revision[o] + 1
            seq += 1
            events.append(Event(seq, kind, t.tenant_names[t.tenant[o]], t.ids[o], now, rev, _STATE_OF[st],
                                t.fire_at[o]))
            counts[st] -= 1
            counts[FREE] += 1
            t.release(o)
        self._seq = seq
        if ords:
            self._v1 = False
        return events

    def delivery_attempt(self, now_ms: int, tenant: str, id: str, fire_id: int, attempt: int, status: int,
                         latency_ms: int, error: str, body: bytes, next_at: Optional[int]) -> DeliveryResult:
        """Record the outcome of delivery attempt `attempt` of fire `fire_id`, as the leader
        proposed it. It must be the attempt now due (else FailedPrecondition: a stale or
        repeated outcome, e.g. from a deposed leader, changes nothing).

        Success (a 2xx, no error) settles the timer. A failure with attempts left puts the
        retry at `next_at` (the leader's draw; required then) into the wheel; a failure of
        the last attempt dead-letters the timer. Events: `delivery_attempted`, then
        `settled` or `dead_lettered` when the delivery ends.
        """
        now = check_time("now_ms", now_ms)
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        fid = check_seq("fire_id", fire_id)
        n = bounded_int("attempt", attempt, 1, MAX_ATTEMPTS)
        status = bounded_int("status", status, 0, 999)
        latency = bounded_int("latency_ms", latency_ms, 0, 2**31 - 1)
        error = check_error_class("error", error)
        body = check_bytes("body", body, MAX_BODY_EXCERPT)
        retry_at = None if next_at is None else check_time("next_at", next_at)
        t = self._table
        o = self._find(tenant, timer_id)
        rec = t.deliv.get(o)
        st = t.state[o]
        if rec is None or st != _DELIVERING:
            raise FailedPrecondition(f"timer {timer_id!r} in tenant {tenant!r} is {TimerState(st).name}, "
                                     "not delivering")
        if rec.spec.queue is not None:
            raise FailedPrecondition(f"timer {timer_id!r} in tenant {tenant!r} is delivered through queue "
                                     f"{rec.spec.queue!r}: its attempts are leases")
        if fid != t.fire_id[o]:
            raise FailedPrecondition(f"fire_id {fid} is not the current fire of timer {timer_id!r} "
                                     f"in tenant {tenant!r} ({t.fire_id[o]})")
        if rec.waiting or n != rec.attempt + 1:
            due = "none" if rec.waiting else rec.attempt + 1
            raise FailedPrecondition(f"attempt {n} of timer {timer_id!r} in tenant {tenant!r} is not the attempt "
                                     f"due ({due}): its outcome is already recorded")
        ok = is_success(status, error)
        last = n >= rec.spec.policy.max_attempts
        if not ok and not last and retry_at is None:
            raise InvalidArgument("next_at", "a failed attempt with attempts left needs the retry time")
        keep_at = None if ok or last else retry_at
        entry = Attempt(n, fid, now, status, latency, error, body, keep_at)
        log = (rec.log + (entry,))[-MAX_ATTEMPT_LOG:]
        seq = self._seq
        rev = t.revision[o] + 1
        name = t.tenant_names[t.tenant[o]]
        at = t.fire_at[o]
        events = [Event(seq + 1, _E_ATTEMPTED, name, timer_id, now, rev, _S_DELIVERING, at, fid)]
        self._due.discard(o)
        if keep_at is not None:
            self._wheel.insert(o, keep_at)
            t.deliv[o] = rec._replace(attempt=n, waiting=True, next_at=keep_at, log=log)
        else:
            final, kind, fstate = (_SETTLED, _E_SETTLED, _S_SETTLED) if ok else (_DEAD, _E_DEAD, _S_DEAD)
            t.deliv[o] = rec._replace(attempt=n, waiting=False, next_at=-1, log=log)
            t.state[o] = final
            t.settled_at[o] = now
            self._counts[_DELIVERING] -= 1
            self._counts[final] += 1
            ti = t.tenant[o]
            self._live[ti] -= 1
            self._held[ti] -= payload_len(t.extra[o])
            rev += 1
            events.append(Event(seq + 2, kind, name, timer_id, now, rev, fstate, at, fid))
        t.revision[o] = rev
        self._seq = seq + len(events)
        return self._delivery_result(o, events, now, keep_at is None)

    def _delivery_result(self, o: int, events: list, now: int, ended: bool) -> DeliveryResult:
        """The result of a delivery outcome; a timer that just ended gets its purge
        deadline like every other terminal transition (purged at once for retention 0)."""
        view = self._table.view(o)
        if ended:
            at_once = self._schedule_purges((o,), now)
            if self._table.graph.events:
                events += _graph.drain(self._table)
            if at_once:
                events += self._purge(at_once, now, _E_PURGED)
        return DeliveryResult(tuple(events), view)

    def redrive(self, now_ms: int, tenant: str, id: str) -> DeliveryResult:
        """Re-deliver a dead-lettered timer: DELIVERING again with a fresh attempt budget and
        attempt 1 due at once (events `redriven`, `delivery_due`); its fire id (the
        receiver's webhook-id) and its attempt history stay."""
        now = check_time("now_ms", now_ms)
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        t = self._table
        o = self._find(tenant, timer_id)
        rec = t.deliv.get(o)
        st = t.state[o]
        if rec is None or st != _DEAD:
            raise FailedPrecondition(f"timer {timer_id!r} in tenant {tenant!r} is {TimerState(st).name}; "
                                     "only a dead-lettered timer with a webhook or queue can be redriven")
        seq = self._seq
        ti = t.tenant[o]
        if rec.spec.queue is not None:
            t.deliv[o] = rec._replace(attempt=0, waiting=False, next_at=-1, lease="", avail=seq + 2)
            self._enqueue(o, ti, rec.spec.queue, seq + 2)
        else:
            t.deliv[o] = rec._replace(attempt=0, waiting=False, next_at=-1)
            self._due.add(o)
        t.state[o] = _DELIVERING
        t.settled_at[o] = NO_TIME
        self._wheel.cancel_many([o | PURGE])      # not terminal any more: no purge deadline
        t.purge_at[o] = NO_TIME
        self._counts[_DEAD] -= 1
        self._counts[_DELIVERING] += 1
        self._live[ti] += 1
        self._held[ti] += payload_len(t.extra[o])
        rev = t.revision[o]
        name = t.tenant_names[ti]
        at, fid = t.fire_at[o], t.fire_id[o]
        events = (Event(seq + 1, _E_REDRIVEN, name, timer_id, now, rev + 1, _S_DELIVERING, at, fid),
                  Event(seq + 2, _E_DUE, name, timer_id, now, rev + 2, _S_DELIVERING, at, fid))
        t.revision[o] = rev + 2
        self._seq = seq + 2
        return DeliveryResult(events, t.view(o))

    def deliveries_due(self) -> list[tuple[str, str]]:
        """(tenant, id) of the DELIVERING timers whose next attempt is due (not waiting in the
        wheel), in ordinal order: what a new leader dispatches at once. Cost: one step per
        webhook timer held."""
        t = self._table
        return [(t.tenant_names[t.tenant[o]], t.ids[o]) for o in sorted(self._due)]

    def delivery_due(self, tenant: str, id: str) -> Optional[tuple[Timer, int]]:
        """(the timer, the number of its attempt now due), or None when no attempt is due."""
        t = self._table
        o = t.lookup(tenant, id)
        if o is None:
            return None
        rec = t.deliv.get(o)
        if rec is None or rec.waiting or rec.spec.queue is not None or t.state[o] != _DELIVERING:
            return None
        return t.view(o), rec.attempt + 1

    # ---- pull queues ---------------------------------------------------------

    def lease(self, now_ms: int, tenant: str, queue: str, max_timers: int, visibility_ms: int) -> LeaseResult:
        """Lease up to `max_timers` of the oldest timers available on `queue` (of `tenant`) for
        `visibility_ms`: each gets a lease id (the seq of its `leased` event), attempt + 1,
        and its expiry in the wheel. None available: an empty result, nothing changes."""
        now = check_time("now_ms", now_ms)
        tenant = check_tenant("tenant", tenant)
        queue = check_queue("queue", queue)
        n = bounded_int("max_timers", max_timers, 1, MAX_LEASE_BATCH)
        vis = bounded_int("visibility_ms", visibility_ms, MIN_VISIBILITY_MS, MAX_VISIBILITY_MS)
        expires = check_time("visibility_ms", now + vis)
        t = self._table
        ti = t.tenant_index.get(tenant)
        heap = self._queues.get((ti, queue)) if ti is not None else None
        events: list[Event] = []
        leases: list[tuple] = []
        seq = self._seq
        while heap and len(leases) < n:
            avail, o = heappop(heap)
            rec = t.deliv.get(o)
            if rec is None or rec.avail != avail or rec.lease or rec.waiting or t.state[o] != _DELIVERING:
                continue                     # stale: leased, cancelled or redriven since
            seq += 1
            attempt = rec.attempt + 1
            lease_id = str(seq)
            t.deliv[o] = rec._replace(attempt=attempt, lease=lease_id, waiting=True, next_at=expires, avail=0)
            self._wheel.insert(o, expires)
            rev = t.revision[o] + 1
            t.revision[o] = rev
            events.append(Event(seq, _E_LEASED, tenant, t.ids[o], now, rev, _S_DELIVERING, t.fire_at[o],
                                t.fire_id[o]))
            leases.append((o, lease_id, attempt, expires))
        if heap is not None and not heap:
            del self._queues[(ti, queue)]
        self._seq = seq
        return LeaseResult(tuple(events), tuple(Lease(t.view(o), lid, a, e) for o, lid, a, e in leases))

    def ack_lease(self, now_ms: int, tenant: str, id: str, lease_id: str) -> DeliveryResult:
        """The worker holding lease `lease_id` is done: the timer settles."""
        now, o, rec = self._leased(now_ms, tenant, id, lease_id)
        self._wheel.cancel(o)
        return self._lease_outcome(now, o, rec, "", None)

    def nack_lease(self, now_ms: int, tenant: str, id: str, lease_id: str, next_at: Optional[int]) -> DeliveryResult:
        """The worker gives the timer back: the attempt failed. With attempts left it becomes
        available again at `next_at` (the leader's draw; required then), else it is dead-lettered."""
        retry_at = None if next_at is None else check_time("next_at", next_at)
        now, o, rec = self._leased(now_ms, tenant, id, lease_id)
        last = rec.attempt >= rec.spec.policy.max_attempts
        if not last and retry_at is None:
            raise InvalidArgument("next_at", "a nack with attempts left needs the retry time")
        self._wheel.cancel(o)
        return self._lease_outcome(now, o, rec, "nack", None if last else retry_at)

    def extend_lease(self, now_ms: int, tenant: str, id: str, lease_id: str, visibility_ms: int) -> LeaseResult:
        """Keep the lease: it now expires `visibility_ms` after `now_ms` (a heartbeat)."""
        vis = bounded_int("visibility_ms", visibility_ms, MIN_VISIBILITY_MS, MAX_VISIBILITY_MS)
        now, o, rec = self._leased(now_ms, tenant, id, lease_id)
        t = self._table
        expires = check_time("visibility_ms", now + vis)
        self._wheel.reschedule(o, expires)
        t.deliv[o] = rec._replace(next_at=expires)
        rev = t.revision[o] + 1
        t.revision[o] = rev
        self._seq += 1
        ev = Event(self._seq, _E_EXTENDED, t.tenant_names[t.tenant[o]], t.ids[o], now, rev, _S_DELIVERING,
                   t.fire_at[o], t.fire_id[o])
        return LeaseResult((ev,), (Lease(t.view(o), lease_id, rec.attempt, expires),))

    def queue_depth(self, tenant: str, queue: str) -> int:
        """Timers available to lease on `queue` now (counts stale heap entries out)."""
        t = self._table
        ti = t.tenant_index.get(tenant)
        heap = self._queues.get((ti, queue)) if ti is not None else None
        if not heap:
            return 0
        deliv, state = t.deliv, t.state
        return sum(1 for avail, o in heap
                   if (r := deliv.get(o)) is not None and r.avail == avail and not r.lease and not r.waiting
                   and state[o] == _DELIVERING)

    def live_leases(self, tenant: str, refs) -> list:
        """Those of `refs` ((timer id, lease id) pairs of `tenant`) that are still live leases:
        not acked, nacked or expired (a lease stream's outstanding ones)."""
        t = self._table
        live = []
        for timer_id, lease_id in refs:
            o = t.lookup(tenant, timer_id)
            rec = t.deliv.get(o) if o is not None else None
            if rec is not None and rec.lease == lease_id and t.state[o] == _DELIVERING:
                live.append((timer_id, lease_id))
        return live

    def _leased(self, now_ms: int, tenant: str, id: str, lease_id: str) -> tuple:
        now = check_time("now_ms", now_ms)
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        if not isinstance(lease_id, str) or not lease_id:
            raise InvalidArgument("lease_id", "must name a lease")
        t = self._table
        o = self._find(tenant, timer_id)
        rec = t.deliv.get(o)
        if rec is None or rec.spec.queue is None or t.state[o] != _DELIVERING or rec.lease != lease_id:
            raise FailedPrecondition(f"lease {lease_id!r} is not the live lease of timer {timer_id!r} in tenant "
                                     f"{tenant!r} (it expired, was acked or nacked, or never existed)")
        return now, o, rec

    def _lease_outcome(self, now: int, o: int, rec, error: str, retry_at: Optional[int]) -> DeliveryResult:
        """Record a lease's end (ack: error ""; nack; expiry inside tick has its own path)."""
        t = self._table
        fid = t.fire_id[o]
        entry = Attempt(rec.attempt, fid, now, 0, 0, error, b"", retry_at)
        log = (rec.log + (entry,))[-MAX_ATTEMPT_LOG:]
        seq = self._seq
        rev = t.revision[o] + 1
        name = t.tenant_names[t.tenant[o]]
        at = t.fire_at[o]
        events = [Event(seq + 1, _E_ATTEMPTED, name, t.ids[o], now, rev, _S_DELIVERING, at, fid)]
        if retry_at is not None:
            self._wheel.insert(o, retry_at)
            t.deliv[o] = rec._replace(lease="", waiting=True, next_at=retry_at, log=log, avail=0)
        else:
            final, kind, fstate = (_SETTLED, _E_SETTLED, _S_SETTLED) if not error else (_DEAD, _E_DEAD, _S_DEAD)
            t.deliv[o] = rec._replace(lease="", waiting=False, next_at=-1, log=log, avail=0)
            self._finish(o, final, now)
            rev += 1
            events.append(Event(seq + 2, kind, name, t.ids[o], now, rev, fstate, at, fid))
        t.revision[o] = rev
        self._seq = seq + len(events)
        return self._delivery_result(o, events, now, retry_at is None)

    def _finish(self, o: int, final: int, now: int) -> None:
        t = self._table
        t.state[o] = final
        t.settled_at[o] = now
        self._counts[_DELIVERING] -= 1
        self._counts[final] += 1
        ti = t.tenant[o]
        self._live[ti] -= 1
        self._held[ti] -= payload_len(t.extra[o])

    def _enqueue(self, o: int, ti: int, queue: str, avail: int) -> None:
        heap = self._queues.get((ti, queue))
        if heap is None:
            heap = self._queues[(ti, queue)] = []
        heappush(heap, (avail, o))

    def _queue_wake(self, o: int, rec, now: int, seq: int, append) -> int:
        """Tick: a queue timer's wheel deadline came. A lease expired (the attempt failed:
        available again, or dead-lettered after the last) or a nack's backoff ended
        (available again). Returns the new seq."""
        t = self._table
        ti = t.tenant[o]
        name, tid, at, fid = t.tenant_names[ti], t.ids[o], t.fire_at[o], t.fire_id[o]
        log = rec.log
        rev = t.revision[o]
        if rec.lease:
            log = (log + (Attempt(rec.attempt, fid, now, 0, 0, "lease_expired", b"", None),))[-MAX_ATTEMPT_LOG:]
            seq += 1
            rev += 1
            append(Event(seq, _E_ATTEMPTED, name, tid, now, rev, _S_DELIVERING, at, fid))
            if rec.attempt >= rec.spec.policy.max_attempts:
                t.deliv[o] = rec._replace(lease="", waiting=False, next_at=-1, log=log, avail=0)
                self._finish(o, _DEAD, now)
                seq += 1
                rev += 1
                t.revision[o] = rev
                append(Event(seq, _E_DEAD, name, tid, now, rev, _S_DEAD, at, fid))
                return seq
        seq += 1
        rev += 1
        t.deliv[o] = rec._replace(lease="", waiting=False, next_at=-1, log=log, avail=seq)
        self._enqueue(o, ti, rec.spec.queue, seq)
        t.revision[o] = rev
        append(Event(seq, _E_DUE, name, tid, now, rev, _S_DELIVERING, at, fid))
        return seq

    # ---- queries -----------------------------------------------------------

    def get(self, tenant: str, id: str) -> Timer:
        """The timer's current view; NotFound if the tenant has no such id."""
        tenant = check_tenant("tenant", tenant)
        timer_id = check_id("id", id)
        return self._table.view(self._find(tenant, timer_id))

    def timers(self, tenant: Optional[str] = None) -> Iterator[Timer]:
        """Views in creation (ordinal) order, optionally of one tenant."""
        if tenant is not None:
            tenant = check_tenant("tenant", tenant)
        return self._table.views(tenant)

    def __iter__(self) -> Iterator[Timer]:
        return self._table.views()

    # ---- positional scans ----------------------------------------------------
    #
    # A timer's position is its ordinal: the same on every replica (it comes from
    # the replicated command order), so a position saved on one node resumes a scan
    # on any other. Positions grow with creation order, except that a create first
    # reuses the smallest position a purged timer freed (table.py): a scan resumed
    # at p finds every timer that existed then at a position >= p exactly once, and
    # may miss one created meanwhile in a freed position below p.

    def scan(
        self,
        start: int,
        limit: int,
        *,
        tenant: Optional[str] = None,
        states: Optional[Iterable[TimerState]] = None,
        fire_at_from: Optional[int] = None,
        fire_at_to: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
        max_positions: Optional[int] = None,
    ) -> tuple[list[Timer], Optional[int]]:
        """Up to `limit` matching timers at positions >= `start`, in position order.

        Returns (timers, next_position): where to resume, or None once every
        position up to the end of the table has been examined. `max_positions`
        bounds the work: at most that many positions are examined, so a sparse
        filter may return fewer than `limit` timers (even none) and a
        next_position. Filters as for `cursor`. Raises InvalidArgument for a bad
        argument.
        """
        limit = _check_count("limit", limit)
        stop = None
        if max_positions is not None:
            stop = _check_position("start", start) + _check_count("max_positions", max_positions)
        cur = self.cursor(start, stop, tenant=tenant, states=states, fire_at_from=fire_at_from,
                          fire_at_to=fire_at_to, labels=labels)
        out: list[Timer] = []
        if limit:
            for timer in cur:
                out.append(timer)
                if len(out) >= limit:
                    break
        return out, (cur.position if cur.position < len(self._table) else None)

    def cursor(
        self,
        start: int,
        stop: Optional[int] = None,
        *,
        tenant: Optional[str] = None,
        states: Optional[Iterable[TimerState]] = None,
        fire_at_from: Optional[int] = None,
        fire_at_to: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
    ) -> "ScanCursor":
        """An iterator over the matching timers at start <= position < stop (stop
        None: the table's length), in position order; its `position` says where
        to resume (see ScanCursor).

        Filters (all must hold): `tenant` (None: every tenant), `states` (any of
        them; None or empty: any state), `fire_at_from` <= fire_at < `fire_at_to`
        (ms), `labels` (every pair present). Records that do not match cost no
        Timer object. Arguments are checked here, before iteration. A cursor is a
        read: use it between commands, not across them.
        """
        start = _check_position("start", start)
        if stop is not None:
            stop = max(start, _check_position("stop", stop))
        if tenant is not None:
            tenant = check_tenant("tenant", tenant)
        wanted = frozenset(_check_state(f"states[{i}]", s) for i, s in enumerate(states or ()))
        lo = None if fire_at_from is None else check_time("fire_at_from", fire_at_from)
        hi = None if fire_at_to is None else check_time("fire_at_to", fire_at_to)
        pairs = check_labels("labels", labels)
        return ScanCursor(self._table, start, stop, tenant, wanted, lo, hi, pairs)

    def __len__(self) -> int:
        """Timers held (purged ones are gone)."""
        return self._table.held

    @property
    def positions(self) -> int:
        """The end of the positions: every position below it was examined by a scan
        that reached it (free positions hold no timer)."""
        return len(self._table)

    def counts(self) -> dict[TimerState, int]:
        """Number of timers in each state, every state listed in enum order."""
        return {s: self._counts[s] for s in TimerState}

    def usage(self, tenant: str) -> TenantUsage:
        """What `tenant` holds now: its outstanding (scheduled, armed or fired)
        timers and their payload bytes; zeros for a tenant never seen."""
        tenant = check_tenant("tenant", tenant)
        ti = self._table.tenant_index.get(tenant)
        if ti is None:
            return TenantUsage(0, 0)
        return TenantUsage(self._live[ti], self._held[ti])

    def next_deadline(self) -> Optional[int]:
        """Earliest deadline in the wheel -- an armed timer's fire_at or a terminal
        timer's purge deadline -- or None: when the leader should tick. May be <=
        last_tick (a timer created with a past deadline): tick at once."""
        return self._wheel.next_deadline()

    @property
    def has_graph(self) -> bool:
        """Whether some timer has dependencies or an escalation ladder (graph.py)."""
        return bool(self._table.graph)

    @property
    def last_tick(self) -> int:
        """The effective time of the last tick (0 before any)."""
        return self._last_tick

    @property
    def seq(self) -> int:
        """Seq of the last emitted event (0 before any)."""
        return self._seq

    # ---- snapshots -----------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state as versioned, checksummed bytes (see snapshot.py)."""
        return _snapshot.encode(self._table, self._seq, self._last_tick, self._v1)

    def capture(self) -> SnapshotCapture:
        """A consistent copy of what a snapshot needs, fast (memcpy of the columns,
        pointer copies of the id and extra lists: ~tens of ms at a million timers).

        Call it where commands are applied, between two of them; its `to_bytes()`
        may then run in another thread while this state keeps changing, and
        returns exactly what `self.to_bytes()` would have returned now. The
        point: the Raft layer captures in its apply thread and encodes elsewhere,
        instead of stalling heartbeats for the whole encode.
        """
        return SnapshotCapture(self._table, self._seq, self._last_tick, self._v1)

    @classmethod
    def from_bytes(cls, data: bytes) -> "State":
        """Rebuild a state from to_bytes() output; SnapshotError if it is unusable."""
        table, seq, last_tick, v1 = _snapshot.decode(data)
        self = cls.__new__(cls)
        self._init_retention()
        self._v1 = v1
        self._table = table
        self._seq = seq
        self._last_tick = last_tick
        n = len(table)
        states = table.state.tobytes()     # one byte per timer; bytes.count is C-speed
        counts = [0] * (len(TimerState) + 1)
        for s in TimerState:
            counts[s] = states.count(s)
        counts[FREE] = states.count(FREE)
        self._counts = counts
        self._live, self._held = usage_by_tenant(table)
        # The wheel is derived state: exactly the armed timers at their fire_at.
        # insert_many/cancel_many read typed buffers (array 'Q' keys, 'q'
        # deadlines) in place; what costs is making Python ints to pick rows.
        # Mostly armed: insert every row straight from the fire_at column, then
        # cancel the few that are not armed. Otherwise: pick the armed rows.
        # Either way the wheel ends up holding exactly the same (key, deadline)
        # pairs, which is all it ever reveals (expiry order is (deadline, key)).
        wheel = Wheel(last_tick)
        waiting = [(o, r.next_at) for o, r in sorted(table.deliv.items())
                   if r.waiting and states[o] == _DELIVERING]
        self._due = {o for o, r in table.deliv.items()
                     if not r.waiting and r.spec.queue is None and states[o] == _DELIVERING}
        self._queues = {}
        for o, r in sorted(table.deliv.items()):
            if r.spec.queue is not None and r.avail and not r.waiting and states[o] == _DELIVERING:
                self._enqueue(o, table.tenant[o], r.spec.queue, r.avail)
        armed = counts[_ARMED]
        if armed * 2 >= n and armed:
            wheel.insert_many(array("Q", range(n)), table.fire_at)
            if armed != n:
                wheel.cancel_many(array("Q", compress(range(n), states.translate(_UNARMED_MASK))))
        elif armed:
            keys = array("Q", compress(range(n), states.translate(_ARMED_MASK)))
            wheel.insert_many(keys, array("q", map(table.fire_at.__getitem__, keys)))
        for o, at in waiting:               # delivery retries wait in the wheel too
            wheel.insert(o, at)
        # Pending purges: every terminal timer at its purge deadline (key ordinal | PURGE).
        ended = list(compress(range(n), states.translate(_TERMINAL_MASK)))
        if ended:
            wheel.insert_many(array("Q", [o | PURGE for o in ended]),
                              array("q", map(table.purge_at.__getitem__, ended)))
        if table.graph:                     # escalation steps waiting (graph.py)
            for o, at in table.graph.pending_steps(states):
                wheel.insert(o | ESCALATE, at)
        self._wheel = wheel
        return self

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        c = self._counts
        return (
            f"<State timers={len(self)} armed={c[_ARMED]} fired={c[_FIRED]} free={c[FREE]} "
            f"seq={self._seq} last_tick={self._last_tick}>"
        )

    def check_invariants(self) -> None:
        """Raise AssertionError if derived structures disagree with the records.

        O(n) in Python; for tests and for paranoid checks after a restore. Uses
        explicit raises, not `assert`, so it still checks under `python -O`.
        """
        t = self._table
        n = len(t)

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise AssertionError(f"kernel invariant broken: {what}")

        for name in ("tenant", "state", "flags", "fire_at", "created_at", "armed_at",
                     "fired_at", "settled_at", "fire_id", "revision", "attempts", "ids", "extra", "purge_at"):
            need(len(getattr(t, name)) == n, f"column {name} has {n} entries")
        for s in TimerState:
            need(self._counts[s] == t.state.count(s), f"count of {s.name}")
        free = [o for o in range(n) if t.state[o] == FREE]
        need(self._counts[FREE] == len(free) and sorted(t.free) == free, "free rows are the free heap")
        for o in free:
            need(t.ids[o] == "" and t.extra[o] is None and t.purge_at[o] == NO_TIME and t.tenant[o] == 0,
                 f"free row {o} is reset")
        live = [0] * len(t.tenant_names)
        held = [0] * len(t.tenant_names)
        for o in range(n):
            if t.state[o] != FREE and t.state[o] not in _TERMINAL:
                live[t.tenant[o]] += 1
                held[t.tenant[o]] += payload_len(t.extra[o])
        need(self._live == live, "outstanding timers by tenant")
        need(self._held == held, "payload bytes of outstanding timers by tenant")
        armed = sorted([(o, t.fire_at[o]) for o in range(n) if t.state[o] == _ARMED]
                       + [(o, r.next_at) for o, r in t.deliv.items() if r.waiting])
        ended = [(o | PURGE, t.purge_at[o]) for o in range(n) if t.state[o] in _TERMINAL]
        steps = [(o | ESCALATE, at) for o, at in t.graph.pending_steps(t.state)]
        need(self._wheel.items() == armed + steps + ended,
             "the wheel holds exactly the armed timers at their fire_at, the waiting retries at next_at "
             "and the terminal ones at purge_at")
        for o, r in t.deliv.items():
            need(0 <= o < n and t.state[o] != FREE, f"delivery record of ordinal {o} within the table, not free")
            need(not r.waiting or t.state[o] == _DELIVERING, f"only a delivering timer waits, ordinal {o}")
        for o in range(n):
            need(t.state[o] != _DELIVERING or o in t.deliv, f"delivering ordinal {o} has a delivery record")
        need(self._due == {o for o, r in t.deliv.items()
                           if not r.waiting and r.spec.queue is None and t.state[o] == _DELIVERING},
             "the due set is exactly the webhook timers delivering and not waiting")
        queued = {(avail, o) for heap in self._queues.values() for avail, o in heap}
        for o, r in t.deliv.items():
            if r.spec.queue is not None and t.state[o] == _DELIVERING and not r.waiting:
                need(r.avail > 0 and (r.avail, o) in queued and not r.lease, f"available queue timer {o} queued")
        need(self._wheel.now == self._last_tick, "wheel time is the last tick")
        need(sum(map(len, t.by_id)) == n - len(free), "id index size")
        for o in range(n):
            if t.state[o] == FREE:
                continue
            need((t.purge_at[o] == NO_TIME) == (t.state[o] not in _TERMINAL), f"purge_at iff terminal of ordinal {o}")
            need(t.by_id[t.tenant[o]].get(t.ids[o]) == o, f"id index of ordinal {o}")
            need(0 <= t.fire_id[o] <= self._seq, f"fire_id of ordinal {o} within 0..seq")
            need(t.revision[o] >= (1 if t.state[o] == _SCHEDULED else 2), f"revision of ordinal {o}")
            need((t.fired_at[o] == NO_TIME) == (t.attempts[o] == 0), f"fired_at iff attempts of ordinal {o}")
            need((t.settled_at[o] == NO_TIME) == (t.state[o] not in _TERMINAL),
                 f"settled_at iff terminal of ordinal {o}")
        if t.graph:
            _graph.check(t, need)
        if t.occ or t.esc:
            _occ.check(self, need)
        for o, sched in t.schedules.items():
            need(0 <= o < n and t.state[o] != FREE, f"schedule of ordinal {o} belongs to a timer")
            rc = t.recur.get(o)
            need(t.state[o] != _FIRED or (rc is not None and (rc.pending or rc.buffered)) or o in t.occ,
                 f"a fired recurring timer ({o}) awaits acks")
        for o, rc in t.recur.items():
            need(o in t.schedules and rc != type(rc)(), f"recurrence state of ordinal {o} is a recurring timer's")
            need(not rc.paused or t.state[o] == _SCHEDULED or t.state[o] in _TERMINAL,
                 f"paused ordinal {o} is scheduled (or ended)")
            need(not (rc.pending or rc.buffered) or t.flags[o] & FLAG_ACK_REQUIRED,
                 f"only an ack_required timer ({o}) has fires awaiting acks")
            need(list(rc.pending) == sorted(set(rc.pending)) and all(0 < f <= self._seq for f in rc.pending),
                 f"pending fires of ordinal {o} are increasing seqs")
        for ti, keys in enumerate(t.by_idem):
            for key, o in keys.items():
                ex = t.extra[o]
                need(t.tenant[o] == ti and type(ex) is Extra and ex.idempotency_key == key, "idempotency index")
                same_id = t.by_id[ti].get(key)
                need(same_id is None or not t.flags[same_id] & FLAG_KEY_IS_ID, "idempotency key also an id key")

    # ---- helpers -------------------------------------------------------------

    def _check_limits(self, adding: dict, limits: Optional[Mapping[str, TenantLimit]],
                      default_limit: Optional[TenantLimit]) -> None:
        """QuotaExceeded if the usage `adding` (tenant -> [timers, bytes]) takes a tenant
        past its limit; tenants in spec order, timers before bytes."""
        index = self._table.tenant_index
        for tenant, (n, nbytes) in adding.items():
            lim = limits.get(tenant, default_limit) if limits else default_limit
            if lim is None:
                continue
            if type(lim) is not TenantLimit:
                raise InvalidArgument("limits", f"the limit of tenant {tenant!r} must be a TenantLimit, "
                                                f"not {type(lim).__name__}")
            ti = index.get(tenant)
            live = self._live[ti] if ti is not None else 0
            held = self._held[ti] if ti is not None else 0
            if lim.max_timers and live + n > lim.max_timers:
                raise QuotaExceeded(tenant, "max_timers", lim.max_timers, live, n)
            if lim.max_payload_bytes and held + nbytes > lim.max_payload_bytes:
                raise QuotaExceeded(tenant, "max_payload_bytes", lim.max_payload_bytes, held, nbytes)

    def _find(self, tenant: str, timer_id: str) -> int:
        o = self._table.lookup(tenant, timer_id)
        if o is None:
            raise NotFound(tenant, timer_id)
        return o



def _check_position(field: str, v: Any) -> int:
    p = _int_arg(field, v)
    if p < 0:
        raise InvalidArgument(field, f"must be a position >= 0, got {p}")
    return p


def _check_count(field: str, v: Any) -> int:
    n = _int_arg(field, v)
    if n < 0:
        raise InvalidArgument(field, f"must be >= 0, got {n}")
    return n


def _int_arg(field: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(field, f"must be an int, not {type(v).__name__}")
    return int(v)


_STATE_VALUES = frozenset(int(s) for s in TimerState)


def _check_state(field: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or int(v) not in _STATE_VALUES:
        raise InvalidArgument(field, f"must be a TimerState, got {v!r}")
    return int(v)


class ScanCursor(Iterator[Timer]):
    """A positional scan in progress (State.cursor): iterate it for Timers.

    `position` is where to resume: just past the last timer yielded, and once
    the iterator is exhausted, past everything it examined (its stop, or the end
    of the table). A cursor over a tenant the state has never seen is exhausted
    from the start, with `position` at the end of the table: no record before
    it can match. Pass `position` to a new cursor (on this or another replica)
    to continue.
    """

    __slots__ = ("position", "_it")

    def __init__(self, table: Table, start: int, stop: Optional[int], tenant: Optional[str], wanted: frozenset,
                 lo: Optional[int], hi: Optional[int], pairs: tuple) -> None:
        end = len(table) if stop is None else min(stop, len(table))
        ti = None
        if tenant is not None:
            ti = table.tenant_index.get(tenant)
            if ti is None:
                end = start = max(start, len(table))
        self.position = start
        self._it = self._walk(table, start, end, ti, wanted, lo, hi, pairs)

    def __next__(self) -> Timer:
        return next(self._it)

    def _walk(self, t: Table, start: int, end: int, ti: Optional[int], wanted: frozenset,
              lo: Optional[int], hi: Optional[int], pairs: tuple) -> Iterator[Timer]:
        tenant_col, state_col, fire_col, extra = t.tenant, t.state, t.fire_at, t.extra
        bounded = lo is not None or hi is not None
        for o in range(start, end):
            if state_col[o] == FREE or (ti is not None and tenant_col[o] != ti):
                continue
            if wanted and state_col[o] not in wanted:
                continue
            if bounded:
                fa = fire_col[o]
                if (lo is not None and fa < lo) or (hi is not None and fa >= hi):
                    continue
            if pairs:
                ex = extra[o]
                if type(ex) is not Extra or not _has_labels(ex.labels, pairs):
                    continue
            self.position = o + 1
            yield t.view(o)
        self.position = max(self.position, end)


def _has_labels(have: tuple, wanted: tuple) -> bool:
    """Both are (key, value) pairs sorted by key; every wanted pair must be in `have`."""
    if len(wanted) == 1:
        return wanted[0] in have
    return set(wanted) <= set(have)


def _normalise_spec(i: int, spec: Any) -> tuple:
    """Validate specs[i]; return (tenant, id, fire_at, flags, extra, schedule or None)."""
    if type(spec) is TimerSpec:
        tenant, timer_id, fire_at, name = spec.tenant, spec.id, spec.fire_at, spec.name
        payload, labels, action, key, ack = (spec.payload, spec.labels, spec.action, spec.idempotency_key,
                                             spec.ack_required)
        if plain_spec(tenant, timer_id, fire_at, name, payload, labels, action, key, ack) \
                and spec.every_ms == 0 and spec.until is None and spec.max_count == 0 and not spec.cron \
                and not spec.tz:
            flags = FLAG_ACK_REQUIRED if ack else 0
            if spec.graph is not None:
                return _normalise_spec_full(i, spec)
            if key is not None and key == timer_id:
                flags |= FLAG_KEY_IS_ID
                key = None
            return tenant, timer_id, fire_at, flags, make_extra(name, payload, (), action, key), None
    return _normalise_spec_full(i, spec)


def _normalise_spec_full(i: int, spec: Any) -> tuple:
    p = f"specs[{i}]"
    if not isinstance(spec, TimerSpec):
        raise InvalidArgument(p, f"must be a TimerSpec, not {type(spec).__name__}")
    tenant = check_tenant(f"{p}.tenant", spec.tenant)
    timer_id = check_new_id(f"{p}.id", spec.id)
    fire_at = check_time(f"{p}.fire_at", spec.fire_at)
    name = check_name(f"{p}.name", spec.name)
    payload = check_bytes(f"{p}.payload", spec.payload, MAX_PAYLOAD_BYTES)
    labels = check_labels(f"{p}.labels", spec.labels)
    action = check_bytes(f"{p}.action", spec.action, MAX_ACTION_BYTES)
    key = check_idempotency_key(f"{p}.idempotency_key", spec.idempotency_key)
    flags = FLAG_ACK_REQUIRED if check_bool(f"{p}.ack_required", spec.ack_required) else 0
    sched = check_schedule(p, spec.every_ms, spec.until, spec.max_count, spec.cron, spec.tz, fire_at, bool(flags))
    if sched is not None and sched.cron:
        fire_at = first_occurrence(p, sched, fire_at)       # the start -> the first cron time at or after it
    if key is not None and key == timer_id:
        flags |= FLAG_KEY_IS_ID
        key = None
    return tenant, timer_id, fire_at, flags, make_extra(name, payload, labels, action, key), sched


def _check_ref(p: str, ref: Any) -> tuple[str, str]:
    if not isinstance(ref, (tuple, list)) or len(ref) != 2:
        raise InvalidArgument(p, f"must be a (tenant, id) pair, not {type(ref).__name__}")
    return check_tenant(f"{p}.tenant", ref[0]), check_id(f"{p}.id", ref[1])
