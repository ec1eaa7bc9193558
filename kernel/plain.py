"""Batch create of plain timers from columns: State.create without a Python object per timer.

A "plain" timer has only a tenant, an id, a deadline, a payload and two flags
(ack_required; idempotency key = its id, what the SDK sends). Most creates are plain,
and for them `create_plain` does what `State.create` does with the equivalent
TimerSpecs, byte for byte (same state, snapshot, events and items), but over the
columns it is given (ids, an int64 array of deadlines, a flags string, payloads),
with C-level bulk steps (one regex over the joined ids, array extends, dict.update,
events built by `map`) instead of a Python loop of checks, dict probes and puts.

Anything unusual takes the general path, before anything changes: a bad field, an
id that exists, a key already used, a repeat within the batch, an empty batch. Then
the TimerSpecs are built and `State.create` runs, so errors and idempotent replays
are exactly the general path's. Deterministic like the rest of the kernel.
"""
from __future__ import annotations

import re
from array import array
from functools import partial
from itertools import repeat
from typing import Mapping, Optional

from .errors import InvalidArgument
from .quota import TenantLimit
from .table import FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID, FREE, NO_FIRE, NO_TIME, timer_of
from .timer import CreateItem, Event, EventKind, Timer, TimerSpec, TimerState
from .validate import MAX_BATCH, MAX_ID_LEN, MAX_PAYLOAD_BYTES, MAX_TIME, _ID_CHARS, _TENANT_RE, check_time

__all__ = ["PlainCreateResult", "create_plain", "plain_specs", "FLAGS_PLAIN"]

#: The flag bits a plain timer may carry.
FLAGS_PLAIN = FLAG_ACK_REQUIRED | FLAG_KEY_IS_ID

# Ids joined by "\n" (not an id character): one match checks them all.
_IDS_RE = re.compile(f"(?:[{_ID_CHARS}]{{1,{MAX_ID_LEN}}}\n)*[{_ID_CHARS}]{{1,{MAX_ID_LEN}}}")

_ARMED = int(TimerState.ARMED)
_S_SCHEDULED = TimerState.SCHEDULED
_S_ARMED = TimerState.ARMED
_CREATED = EventKind.CREATED
_E_ARMED = EventKind.ARMED
_new_tuple = tuple.__new__


class PlainCreateResult:
    """State.create's result for a plain batch: `events` and `items` as CreateResult has
    them (items built on first use), plus the columns, so an answer can be written from
    them without a Timer per item (api/plain_answer.py). Every timer was created."""

    __slots__ = ("events", "_items", "tenant", "ids", "fire_at", "flags", "payloads", "now_ms")

    def __init__(self, events, tenant: str, ids, fire_at, flags: bytes, payloads, now_ms: int) -> None:
        self.events = events
        self._items = None
        self.tenant, self.ids, self.fire_at, self.flags, self.payloads, self.now_ms = \
            tenant, ids, fire_at, flags, payloads, now_ms

    @property
    def items(self) -> tuple:
        if self._items is None:
            tenant, now = self.tenant, self.now_ms
            self._items = tuple(
                CreateItem(partial(timer_of, tenant, i, f, fl, p or None, _ARMED, now, now, NO_TIME, NO_TIME, 0,
                                   NO_FIRE, 2, None), True)
                for i, f, fl, p in zip(self.ids, self.fire_at, self.flags, self.payloads))
        return self._items

    @property
    def timers(self) -> tuple[Timer, ...]:
        return tuple(item.timer for item in self.items)


def plain_specs(tenant: str, ids, fire_at, flags, payloads) -> list[TimerSpec]:
    """The TimerSpecs these columns stand for (the general path's input)."""
    return [TimerSpec(id=i, fire_at=f, tenant=tenant, payload=p,
                      idempotency_key=i if fl & FLAG_KEY_IS_ID else None, ack_required=bool(fl & FLAG_ACK_REQUIRED))
            if type(fl) is int and fl & ~FLAGS_PLAIN == 0 else _bad_flags(fl)
            for i, f, fl, p in zip(ids, fire_at, flags, payloads)]


def _bad_flags(fl):
    raise InvalidArgument("flags", f"a plain timer's flags must be a subset of {FLAGS_PLAIN}, got {fl!r}")


def _fast_ok(t, tenant, ids, fire_at, flags, payloads, n: int) -> bool:
    """True when every field is valid and every timer is new: the fast path applies."""
    if not 1 <= n <= MAX_BATCH or len(fire_at) != n or len(flags) != n or len(payloads) != n:
        return False
    if type(tenant) is not str or _TENANT_RE.fullmatch(tenant) is None:
        return False
    if type(ids) is not list or set(map(type, ids)) != {str} or _IDS_RE.fullmatch("\n".join(ids)) is None:
        return False
    if type(fire_at) is not array or fire_at.typecode != "q" or min(fire_at) < 0 or max(fire_at) > MAX_TIME:
        return False
    if type(flags) is not bytes or max(flags) & ~FLAGS_PLAIN:
        return False
    if type(payloads) is not list or set(map(type, payloads)) != {bytes} or max(map(len, payloads)) > MAX_PAYLOAD_BYTES:
        return False
    if len(set(ids)) != n:
        return False                    # a repeat within the batch: the general path decides
    ti = t.tenant_index.get(tenant)
    if ti is not None:
        by_id = t.by_id[ti]
        if by_id and not by_id.keys().isdisjoint(ids):
            return False                # an id in use (or its key): AlreadyExists or a replay
        by_idem = t.by_idem[ti]
        if by_idem and not by_idem.keys().isdisjoint(ids):
            return False                # an id equal to another timer's key
    return True


def create_plain(state, now_ms: int, tenant: str, ids: list, fire_at: array, flags: bytes, payloads: list,
                 limits: Optional[Mapping[str, TenantLimit]] = None, default_limit: Optional[TenantLimit] = None):
    """`state.create(now_ms, plain_specs(...), limits, default_limit)`, without an object per timer
    when the batch is valid and all new (see the module doc). `fire_at` is an array('q'),
    `flags` one byte per timer (FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID), `ids` and `payloads` lists."""
    now = check_time("now_ms", now_ms)
    t = state._table
    n = len(ids)
    if not (len(fire_at) == len(flags) == len(payloads) == n):
        raise InvalidArgument("specs", f"the columns differ in length ({n} ids, {len(fire_at)} deadlines, "
                                       f"{len(flags)} flags, {len(payloads)} payloads)")
    if not _fast_ok(t, tenant, ids, fire_at, flags, payloads, n):
        return state.create(now_ms, plain_specs(tenant, ids, fire_at, flags, payloads), limits, default_limit)

    nbytes = sum(map(len, payloads))
    if limits or default_limit is not None:
        state._check_limits({tenant: [n, nbytes]}, limits, default_limit)

    nfree = len(t.free)
    ords = t.take_ordinals(n)
    try:
        state._wheel.insert_many(array("Q", ords), fire_at)
    except BaseException:
        t.untake(ords)
        raise
    k = nfree - len(t.free)                 # rows reused (the first k ordinals), the rest appended
    state._counts[FREE] -= k
    ti = t.intern_tenant(tenant)
    tenant = t.tenant_names[ti]             # the interned string object
    extras = payloads if b"" not in payloads else [p or None for p in payloads]
    for j in range(k):
        t.put(ords[j], ti, ids[j], fire_at[j], flags[j], extras[j], _ARMED, 2, now, now)
    m = n - k
    if m:
        one_q = array("q", [now]) * m
        t.tenant.extend(array("I", [ti]) * m)
        t.state.extend(array("B", [_ARMED]) * m)
        t.flags.frombytes(flags[k:])
        t.fire_at.extend(fire_at[k:] if k else fire_at)
        t.created_at.extend(one_q)
        t.armed_at.extend(one_q)
        none_q = array("q", [NO_TIME]) * m
        t.fired_at.extend(none_q)
        t.settled_at.extend(none_q)
        t.fire_id.extend(array("q", [NO_FIRE]) * m)
        t.revision.extend(array("q", [2]) * m)
        t.attempts.extend(array("I", [0]) * m)
        t.purge_at.extend(none_q)
        t.ids.extend(ids[k:] if k else ids)
        t.extra.extend(extras[k:] if k else extras)
        t.by_id[ti].update(zip(ids[k:], ords[k:]) if k else zip(ids, ords))

    seq = state._seq
    state._seq = seq + 2 * n
    fa = fire_at.tolist()
    events = [None] * (2 * n)
    events[0::2] = map(_new_tuple, repeat(Event), zip(range(seq + 1, seq + 2 * n, 2), repeat(_CREATED), repeat(tenant),
                                                      ids, repeat(now), repeat(1), repeat(_S_SCHEDULED), fa,
                                                      repeat(None), repeat(0), repeat(b"")))
    events[1::2] = map(_new_tuple, repeat(Event), zip(range(seq + 2, seq + 2 * n + 1, 2), repeat(_E_ARMED),
                                                      repeat(tenant), ids, repeat(now), repeat(2), repeat(_S_ARMED),
                                                      fa, repeat(None), repeat(0), repeat(b"")))
    state._counts[_ARMED] += n
    live, held = state._live, state._held
    while len(live) < len(t.tenant_names):
        live.append(0)
        held.append(0)
    live[ti] += n
    held[ti] += nbytes
    return PlainCreateResult(tuple(events), tenant, ids, fa, flags, payloads, now)
