"""The timer table: every timer record, stored column-wise by ordinal.

A million timers must fit in a few hundred MB, so there is no Python object per
timer for the record. Each timer gets a dense ordinal (0, 1, 2, ... in creation
order; it is also the timer's key in the wheel, which makes expiry order
(fire_at, ordinal) deterministic). Fixed-size fields live in `array.array`
columns indexed by ordinal; the id is one str per timer in a list; the rarely
used variable fields (name, payload, labels, action, idempotency key) share one
list slot that stays None while all of them have their defaults. Tenant names
are interned into a small table and stored as a 4-byte index.

Lookups go through one dict per tenant (id -> ordinal), which is far cheaper
than one dict keyed by (tenant, id) tuples. Those dicts are indexes, never
iterated for anything replicated: snapshots are written from the columns, in
ordinal order, and the indexes rebuilt from them.

Terminal timers leave the table after their tenant's retention (state.py):
their row becomes a free row (state 0, id "", every field reset) and its ordinal
goes on a min-heap of free ordinals; a create takes the smallest free ordinal
before growing the columns. "Smallest first" makes the next ordinal a function of
the set of free rows alone, so a replica restored from a snapshot (which rebuilds
the heap from the state column) hands out the same ordinals as one that applied
every command. The columns never shrink: a steady workload reuses its rows.
"""

from __future__ import annotations

from array import array
from dataclasses import replace
from heapq import heappop, heappush
from itertools import compress, repeat
from operator import is_not
from types import MappingProxyType
from typing import Iterator, NamedTuple, Optional, Union

from .delivery import DeliveryRecord
from .graph import Graph, view_fields as _graph_fields
from .recurrence import CATCH_UP_NAMES as _CATCH_UP_NAMES, OVERLAP_NAMES as _OVERLAP_NAMES
from .timer import EMPTY_LABELS, Timer, TimerState

__all__ = ["Extra", "Table", "NO_TIME", "NO_FIRE", "FLAG_ACK_REQUIRED", "FLAG_KEY_IS_ID", "COLUMNS", "timer_of",
           "as_extra", "make_extra", "FREE", "PURGE"]

NO_TIME = -1              # armed_at/fired_at/settled_at before the transition happened
NO_FIRE = 0               # fire_id before the first fire (seqs start at 1)
FLAG_ACK_REQUIRED = 1
#: The timer's idempotency key equals its id (what the SDK sends): the key is kept
#: once, as the id, and found through the id index, not the idempotency index.
FLAG_KEY_IS_ID = 2
FLAGS_KNOWN = FLAG_ACK_REQUIRED | FLAG_KEY_IS_ID
#: State byte of a free row (a purged timer's ordinal, waiting for reuse); not a TimerState.
FREE = 0
#: Wheel key bit of a purge deadline: a terminal timer o waits in the wheel as o | PURGE
#: (an armed one as o), so fire and purge deadlines share the wheel and never a key.
PURGE = 1 << 63

#: Fixed-size columns: attribute name -> array typecode. Order is the snapshot order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("tenant", "I"),      # index into Table.tenant_names
    ("state", "B"),       # TimerState value
    ("flags", "B"),       # FLAG_* bits
    ("fire_at", "q"),
    ("created_at", "q"),
    ("armed_at", "q"),
    ("fired_at", "q"),
    ("settled_at", "q"),
    ("fire_id", "q"),
    ("revision", "q"),
    ("attempts", "I"),
)

# The snapshot writes these columns' raw bytes; make sure their widths are the
# fixed ones on this platform, or refuse to run rather than write foreign bytes.
for _name, _code in COLUMNS:
    if array(_code).itemsize != {"B": 1, "I": 4, "q": 8}[_code]:
        raise ImportError(f"array typecode {_code!r} has an unexpected size on this platform")

#: Up to this many tenants, restore builds each id index with C-level passes.
_FEW_TENANTS = 16

_STATES: tuple[Optional[TimerState], ...] = (None,) + tuple(TimerState)


class Extra(NamedTuple):
    """The variable fields of a timer that has any of them set.

    `labels` is a tuple of (key, value) pairs sorted by key: immutable, compact,
    and in an order that does not depend on how the client built its dict.
    """

    name: str
    payload: bytes
    labels: tuple[tuple[str, str], ...]
    action: bytes
    idempotency_key: Optional[str]


#: What the extra column holds for one timer: None (every variable field has its
#: default), the payload bytes alone (only a payload is set: no tuple per timer),
#: or an Extra.
ExtraField = Union[None, bytes, Extra]

_NO_EXTRA = Extra("", b"", (), b"", None)


def make_extra(name: str, payload: bytes, labels: tuple, action: bytes, key: Optional[str]) -> ExtraField:
    """The extra column's value for these fields; `key` is the stored key (None when
    FLAG_KEY_IS_ID says the key is the id)."""
    if not name and not labels and not action and key is None:
        return payload if payload else None
    return Extra(name, payload, labels, action, key)


def as_extra(extra: ExtraField) -> Extra:
    """Any extra column value as an Extra (with its stored key)."""
    if extra is None:
        return _NO_EXTRA
    if type(extra) is bytes:
        return Extra("", extra, (), b"", None)
    return extra


def timer_of(tenant: str, timer_id: str, fire_at: int, flags: int, extra: ExtraField, state: int,
             created_at: int, armed_at: int, fired_at: int, settled_at: int, attempts: int, fire_id: int,
             revision: int, sched: Optional[tuple] = None, graph: Optional[dict] = None) -> Timer:
    """A Timer from one record's fields as the table stores them (NO_TIME/NO_FIRE for unset;
    `sched` a kernel.schedule.Schedule for a recurring timer)."""
    if extra is None:
        name, payload, labels, action, key = "", b"", EMPTY_LABELS, b"", None
    elif type(extra) is bytes:
        name, payload, labels, action, key = "", extra, EMPTY_LABELS, b"", None
    else:
        name, payload, pairs, action, key = extra
        labels = MappingProxyType(dict(pairs)) if pairs else EMPTY_LABELS
    if flags & FLAG_KEY_IS_ID:
        key = timer_id
    return Timer(
        tenant=tenant,
        id=timer_id,
        name=name,
        fire_at=fire_at,
        payload=payload,
        labels=labels,
        action=action,
        idempotency_key=key,
        ack_required=bool(flags & FLAG_ACK_REQUIRED),
        state=_STATES[state],
        created_at=created_at,
        armed_at=None if armed_at == NO_TIME else armed_at,
        fired_at=None if fired_at == NO_TIME else fired_at,
        settled_at=None if settled_at == NO_TIME else settled_at,
        attempts=attempts,
        fire_id=None if fire_id == NO_FIRE else fire_id,
        revision=revision,
        **({} if sched is None else {"every_ms": sched[0], "until": None if sched[1] < 0 else sched[1],
                                     "max_count": sched[2], "cron": sched[3], "tz": sched[4],
                                     "catch_up": _CATCH_UP_NAMES[0], "overlap": _OVERLAP_NAMES[0]}),
        **({} if graph is None else graph),
    )


class Table:
    """Columns, ids, extras and the per-tenant indexes of all timers."""

    __slots__ = tuple(name for name, _ in COLUMNS) + (
        "ids",
        "extra",
        "tenant_names",
        "tenant_index",
        "by_id",
        "by_idem",
        "deliv",
        "purge_at",
        "free",
        "schedules",
        "graph",
        "recur",
        "occ",
        "esc",
    )

    def __init__(self) -> None:
        for name, code in COLUMNS:
            setattr(self, name, array(code))
        self.ids: list[str] = []
        self.extra: list[ExtraField] = []
        self.tenant_names: list[str] = []           # tenant index -> name (first-seen order)
        self.tenant_index: dict[str, int] = {}      # name -> tenant index
        self.by_id: list[dict[str, int]] = []       # tenant index -> {id: ordinal}
        self.by_idem: list[dict[str, int]] = []     # tenant index -> {idempotency key: ordinal}
        # ordinal -> DeliveryRecord (kernel/delivery.py) of timers with a webhook: replicated
        # state (in snapshots, in ordinal order), never iterated in dict order for a decision.
        self.deliv: dict[int, DeliveryRecord] = {}
        # When a terminal timer leaves the table (NO_TIME while it is not terminal).
        # Not in COLUMNS: snapshot format 1 has no such block (snapshot.py).
        self.purge_at = array("q")
        self.free: list[int] = []                   # min-heap of free ordinals
        # ordinal -> kernel.schedule.Schedule of each recurring timer (few): never iterated
        # for anything replicated except in ordinal order (snapshot.py sorts it).
        self.schedules: dict[int, tuple] = {}
        # Dependencies and escalation ladders (kernel/graph.py); empty for most tables.
        self.graph = Graph()
        # ordinal -> kernel.recurrence.Recur of the recurring timers that are paused, have a
        # non-default policy or counters (fewer still); same rules as `schedules`.
        self.recur: dict[int, tuple] = {}
        # ordinal -> kernel.occurrences.Occ of the recurring timers with a webhook or queue
        # (schedules whose occurrences are delivered as occurrence timers); same rules.
        self.occ: dict[int, tuple] = {}
        # ordinal -> Delivery of the ack_required timers whose escalation steps are delivered
        # (kernel/occurrences.py: one escalation timer per step).
        self.esc: dict[int, tuple] = {}

    def __len__(self) -> int:
        """Rows, free ones included: the end of the positions."""
        return len(self.ids)

    @property
    def held(self) -> int:
        """Timers in the table (rows that are not free)."""
        return len(self.ids) - len(self.free)

    # ---- tenants and lookups ---------------------------------------------

    def intern_tenant(self, name: str) -> int:
        """Index of a tenant, registering it on first use."""
        t = self.tenant_index.get(name)
        if t is None:
            t = len(self.tenant_names)
            self.tenant_names.append(name)
            self.tenant_index[name] = t
            self.by_id.append({})
            self.by_idem.append({})
        return t

    def lookup(self, tenant: str, timer_id: str) -> Optional[int]:
        """Ordinal of (tenant, id), or None."""
        t = self.tenant_index.get(tenant)
        if t is None:
            return None
        return self.by_id[t].get(timer_id)

    def lookup_idem(self, tenant: str, key: str) -> Optional[int]:
        """Ordinal of the timer created with this (tenant, idempotency key), or None."""
        t = self.tenant_index.get(tenant)
        if t is None:
            return None
        o = self.by_idem[t].get(key)
        if o is None:
            o = self.by_id[t].get(key)
            if o is not None and not self.flags[o] & FLAG_KEY_IS_ID:
                o = None
        return o

    # ---- records ---------------------------------------------------------

    def take_ordinals(self, n: int) -> list[int]:
        """Ordinals for n new records, in order: the smallest free ones first (taken
        off the heap), then new rows at the end. Fill each with `put`."""
        free = self.free
        k = min(n, len(free))
        taken = [heappop(free) for _ in range(k)]
        end = len(self.ids)
        return taken + list(range(end, end + n - k)) if k else list(range(end, end + n))

    def untake(self, ords: list[int]) -> None:
        """Give back ordinals from take_ordinals that were not `put` (a refused batch)."""
        end = len(self.ids)
        for o in ords:
            if o < end:
                heappush(self.free, o)

    def put(
        self,
        o: int,
        tenant: int,
        timer_id: str,
        fire_at: int,
        flags: int,
        extra: ExtraField,
        state: int,
        revision: int,
        created_at: int,
        armed_at: int,
        sched: Optional[tuple] = None,
    ) -> None:
        """Write a record that has not fired yet at ordinal o, from take_ordinals
        (a free row, or the next new row); `sched`: its recurrence, if any."""
        if sched is not None:
            self.schedules[o] = sched
        if o < len(self.ids):
            self.tenant[o] = tenant
            self.state[o] = state
            self.flags[o] = flags
            self.fire_at[o] = fire_at
            self.created_at[o] = created_at
            self.armed_at[o] = armed_at
            self.revision[o] = revision
            self.ids[o] = timer_id
            self.extra[o] = extra
        else:
            self.tenant.append(tenant)
            self.state.append(state)
            self.flags.append(flags)
            self.fire_at.append(fire_at)
            self.created_at.append(created_at)
            self.armed_at.append(armed_at)
            self.fired_at.append(NO_TIME)
            self.settled_at.append(NO_TIME)
            self.fire_id.append(NO_FIRE)
            self.revision.append(revision)
            self.attempts.append(0)
            self.purge_at.append(NO_TIME)
            self.ids.append(timer_id)
            self.extra.append(extra)
        self.by_id[tenant][timer_id] = o
        if type(extra) is Extra and extra.idempotency_key is not None:
            self.by_idem[tenant][extra.idempotency_key] = o

    def release(self, o: int) -> None:
        """Forget timer o: out of the id and idempotency indexes, its row reset to a
        free row and its ordinal on the free heap."""
        ti = self.tenant[o]
        del self.by_id[ti][self.ids[o]]
        ex = self.extra[o]
        if type(ex) is Extra and ex.idempotency_key is not None:
            del self.by_idem[ti][ex.idempotency_key]
        self.tenant[o] = 0
        self.state[o] = FREE
        self.flags[o] = 0
        self.fire_at[o] = 0
        self.created_at[o] = 0
        self.armed_at[o] = NO_TIME
        self.fired_at[o] = NO_TIME
        self.settled_at[o] = NO_TIME
        self.fire_id[o] = NO_FIRE
        self.revision[o] = 0
        self.attempts[o] = 0
        self.purge_at[o] = NO_TIME
        self.ids[o] = ""
        self.extra[o] = None
        if self.schedules:
            self.schedules.pop(o, None)
        if self.recur:
            self.recur.pop(o, None)
        if self.occ:
            self.occ.pop(o, None)
        if self.esc:
            self.esc.pop(o, None)
        if self.deliv:                   # a reused row must not inherit the delivery state
            self.deliv.pop(o, None)
        if self.graph:
            self.graph.forget(o)
        heappush(self.free, o)

    def view(self, o: int) -> Timer:
        """A Timer snapshot of record o."""
        timer = timer_of(self.tenant_names[self.tenant[o]], self.ids[o], self.fire_at[o], self.flags[o],
                         self.extra[o], self.state[o], self.created_at[o], self.armed_at[o], self.fired_at[o],
                         self.settled_at[o], self.attempts[o], self.fire_id[o], self.revision[o],
                         self.schedules.get(o) if self.schedules else None,
                         _graph_fields(self, o) if self.graph else None)
        if self.deliv:
            rec = self.deliv.get(o)
            if rec is not None:
                timer = replace(timer, delivery=rec.spec, delivery_attempts=rec.log,
                                next_attempt_at=rec.next_at if rec.waiting and not rec.lease else None,
                                delivery_attempt=rec.attempt, escalation_step=rec.step)
        if self.recur:
            rc = self.recur.get(o)
            if rc is not None:
                timer = replace(timer, paused=rc.paused, catch_up=_CATCH_UP_NAMES[rc.catch_up],
                                overlap=_OVERLAP_NAMES[rc.overlap], triggered=rc.triggered, skipped=rc.skipped,
                                flex_ms=rc.flex_ms, pending_fires=rc.pending, buffered=rc.buffered)
        if self.occ:
            oc = self.occ.get(o)
            if oc is not None:      # a schedule's delivery; its occurrences in delivery (occurrences.py)
                timer = replace(timer, delivery=oc.spec, pending_fires=oc.inflight, buffered=oc.buffered != NO_TIME)
        if self.esc:
            d = self.esc.get(o)
            if d is not None:       # where its escalation steps are delivered
                timer = replace(timer, delivery=d)
        return timer

    def views(self, tenant: Optional[str] = None) -> Iterator[Timer]:
        """Views in ordinal (creation) order, optionally of one tenant only."""
        if tenant is None:
            state = self.state
            for o in range(len(self.ids)):
                if state[o] != FREE:
                    yield self.view(o)
            return
        t = self.tenant_index.get(tenant)
        if t is None:
            return
        col, state = self.tenant, self.state
        for o in range(len(self.ids)):
            if col[o] == t and state[o] != FREE:
                yield self.view(o)

    def rebuild_indexes(self) -> None:
        """Recreate tenant_index, by_id, by_idem and the free heap from the columns
        (after a restore). Raises ValueError if the columns contradict each other."""
        self.tenant_index = {}
        for t, name in enumerate(self.tenant_names):
            if name in self.tenant_index:
                raise ValueError(f"tenant {name!r} appears twice in the tenant table")
            self.tenant_index[name] = t
        n = len(self.ids)
        by_idem: list[dict[str, int]] = [{} for _ in self.tenant_names]
        if len(self.tenant_names) <= _FEW_TENANTS:
            # C-level passes (one per tenant) beat a Python loop over a million rows.
            by_id = []
            for t in range(len(self.tenant_names)):
                mask = list(map(t.__eq__, self.tenant)) if len(self.tenant_names) > 1 else None
                if mask is None:
                    by_id.append(dict(zip(self.ids, range(n))))
                else:
                    by_id.append(dict(zip(compress(self.ids, mask), compress(range(n), mask))))
        else:
            by_id = [{} for _ in self.tenant_names]
            for o, (t, timer_id) in enumerate(zip(self.tenant, self.ids)):
                by_id[t][timer_id] = o
        # Free rows have tenant 0 and id "": one "" key in tenant 0's dict, if any.
        free = list(compress(range(n), map(FREE.__eq__, self.state))) if self.state.count(FREE) else []
        if free:
            by_id[0].pop("", None)
        if sum(map(len, by_id)) != n - len(free):
            raise ValueError("a timer id appears twice in one tenant")
        self.free = free            # ascending: already a heap
        tenant = self.tenant
        extra = self.extra
        # Usually no timer has extras: skip the per-row loop with a C-level count.
        with_extra = () if extra.count(None) == n else compress(range(n), map(is_not, extra, repeat(None)))
        flags = self.flags
        for o in with_extra:
            ex = extra[o]
            if type(ex) is Extra and ex.idempotency_key is not None:
                key = ex.idempotency_key
                d = by_idem[tenant[o]]
                same_id = by_id[tenant[o]].get(key)
                if key in d or (same_id is not None and flags[same_id] & FLAG_KEY_IS_ID):
                    raise ValueError("an idempotency key appears twice in one tenant")
                d[key] = o
        self.by_id = by_id
        self.by_idem = by_idem
