"""Bulk cancel and reschedule: many timers of one tenant in one command, a result per timer.

Unlike State.cancel (all or nothing), each named timer is handled on its own: one
that is missing, ended or no longer carries the selector's labels gets its own
result code and the others still apply. Each timer goes through the ordinary
State.cancel / State.reschedule, so dependents, ladders and retention behave
exactly as for a single call. The ids come from the leader's read of the
selector; the labels are checked again here, at apply time, so a timer purged and
recreated meanwhile under the same id without the labels is left alone.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from .errors import InvalidArgument, KernelError
from .table import Extra
from .timer import Event, Timer
from .validate import check_delta, check_id, check_labels, check_tenant, check_time

__all__ = ["MAX_BULK", "BulkItem", "BulkResult", "cancel_each", "reschedule_each"]

MAX_BULK = 1000          # timers per bulk command (the API pages through more)


class BulkItem(NamedTuple):
    id: str
    code: str                   # OK, NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT, NO_MATCH
    message: str
    timer: Optional[Timer]      # as the command left it (None when not found)


class BulkResult(NamedTuple):
    events: tuple
    items: tuple


def _check(tenant, ids, labels) -> tuple:
    tenant = check_tenant("tenant", tenant)
    if not isinstance(ids, (tuple, list)) or not 1 <= len(ids) <= MAX_BULK:
        raise InvalidArgument("ids", f"must name 1..{MAX_BULK} timers")
    ids = [check_id(f"ids[{i}]", x) for i, x in enumerate(ids)]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("ids", "names a timer twice")
    pairs = check_labels("labels", dict(labels) if labels else None)
    return tenant, ids, pairs


def _each(st, tenant: str, ids: list, pairs: tuple, apply) -> BulkResult:
    t = st._table
    events: list[Event] = []
    items = []
    for timer_id in ids:
        o = t.lookup(tenant, timer_id)
        if o is None:
            items.append(BulkItem(timer_id, "NOT_FOUND", f"timer {timer_id!r} not found in tenant {tenant!r}", None))
            continue
        if pairs:
            ex = t.extra[o]
            if type(ex) is not Extra or not set(pairs) <= set(ex.labels):
                items.append(BulkItem(timer_id, "NO_MATCH", "the timer does not carry the selector's labels",
                                      t.view(o)))
                continue
        try:
            ev, timer = apply(timer_id)
        except KernelError as exc:
            msg = str(exc)
            if msg.startswith("refs[0]: "):
                msg = msg[len("refs[0]: "):]
            live = t.lookup(tenant, timer_id)
            items.append(BulkItem(timer_id, exc.code, msg, t.view(live) if live is not None else None))
            continue
        events.extend(ev)
        items.append(BulkItem(timer_id, "OK", "", timer))
    return BulkResult(tuple(events), tuple(items))


def cancel_each(st, now_ms: int, tenant: str, ids, labels=()) -> BulkResult:
    """Cancel each of `ids` (of `tenant`, carrying `labels`) on its own."""
    tenant, ids, pairs = _check(tenant, ids, labels)

    def one(timer_id):
        res = st.cancel(now_ms, [(tenant, timer_id)])
        return res.events, res.timers[0]
    return _each(st, tenant, ids, pairs, one)


def reschedule_each(st, now_ms: int, tenant: str, ids, labels=(), fire_at: Optional[int] = None,
                    extend_by: Optional[int] = None) -> BulkResult:
    """Reschedule each of `ids` (of `tenant`, carrying `labels`) on its own."""
    tenant, ids, pairs = _check(tenant, ids, labels)
    if (fire_at is None) == (extend_by is None):
        raise InvalidArgument("fire_at", "give exactly one of fire_at and extend_by")
    if fire_at is not None:
        check_time("fire_at", fire_at)
    else:
        check_delta("extend_by", extend_by)

    def one(timer_id):
        res = st.reschedule(now_ms, tenant, timer_id, fire_at=fire_at, extend_by=extend_by)
        return res.events, res.timer
    return _each(st, tenant, ids, pairs, one)
