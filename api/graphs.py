"""The wire side of timer graphs and bulk operations: checked requests in, messages out.

Dependencies and escalation ladders (kernel/graph.py) arrive as TimerSpec fields 40-45
and go back as Timer fields 40-49; bulk cancel / reschedule requests become the kernel's
arguments here (ids or a label selector, a page of at most MAX_BULK).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from minoots.kernel import InvalidArgument
from minoots.kernel import validate as rules
from minoots.kernel.bulk import MAX_BULK
from minoots.kernel.graph import GraphSpec, check_graph
from minoots.v1 import timers_pb2 as pb

from .wirebase import BadTime, duration_ms, timestamp_ms

__all__ = ["has_graph", "graph_spec", "fill_graph", "BulkQuery", "bulk_query", "bulk_change", "bulk_item_pb"]


def has_graph(spec: pb.TimerSpec) -> bool:
    return bool(spec.after or spec.escalate or spec.on or spec.mode or spec.on_parent_cancel
                or spec.HasField("after_delay"))


def _ms(field: str, d) -> int:
    try:
        return duration_ms(d)
    except BadTime as exc:
        raise InvalidArgument(field, str(exc)) from None


def graph_spec(p: str, spec: pb.TimerSpec) -> Optional[GraphSpec]:
    """The spec's dependencies and ladder as a kernel GraphSpec (checked), or None."""
    if not has_graph(spec):
        return None
    delay = _ms(f"{p}.after_delay", spec.after_delay) if spec.HasField("after_delay") else 0
    if delay < 0:
        raise InvalidArgument(f"{p}.after_delay", "must not be negative")
    steps = tuple((_ms(f"{p}.escalate[{k}].after", s.after), bytes(s.action)) for k, s in enumerate(spec.escalate))
    g = GraphSpec(tuple(spec.after), spec.on or "settled", spec.mode or "all", delay,
                  spec.on_parent_cancel or "cancel", steps)
    return check_graph(p, g, bool(spec.ack_required), bool(spec.HasField("every") or spec.cron))


def fill_graph(out: pb.Timer, t) -> None:
    """Write a Timer view's graph fields into `out`."""
    if t.after:
        out.after.extend(t.after)
        out.on, out.mode, out.on_parent_cancel, out.dependency = t.on, t.mode, t.on_parent_cancel, t.dependency
        if t.delay_ms:
            out.after_delay.FromMilliseconds(t.delay_ms)
        out.waiting_on.extend(t.waiting_on)
    if t.children:
        out.children.extend(t.children)
    for after_ms, action in t.escalate:
        step = out.escalate.add(action=action)
        step.after.FromMilliseconds(after_ms)
    if t.escalated:
        out.escalated = t.escalated


@dataclass(frozen=True)
class BulkQuery:
    tenant: str
    ids: tuple               # named ids (empty with a selector)
    labels: tuple            # the selector's pairs (empty with ids)
    page_size: int
    start: int               # position to resume a selector's scan at


def bulk_query(req, tenant_of, label_selector, decode_token) -> BulkQuery:
    """CancelTimersRequest / RescheduleTimersRequest -> BulkQuery (ids xor selector)."""
    tenant = tenant_of("tenant", req.tenant)
    ids = tuple(req.ids)
    sel = req.label_selector
    if bool(ids) == bool(sel.strip()):
        raise InvalidArgument("ids", "give either ids or a label_selector (not both, not neither)")
    page = req.page_size or MAX_BULK
    if page > MAX_BULK:
        raise InvalidArgument("page_size", f"must be within 1..{MAX_BULK}")
    if ids:
        if len(ids) > MAX_BULK:
            raise InvalidArgument("ids", f"at most {MAX_BULK} ids per request, got {len(ids)}")
        ids = tuple(rules.check_id(f"ids[{i}]", x) for i, x in enumerate(ids))
        if len(set(ids)) != len(ids):
            raise InvalidArgument("ids", "names a timer twice")
        if req.page_token:
            raise InvalidArgument("page_token", "applies to a label_selector only")
        return BulkQuery(tenant, ids, (), page, 0)
    labels = label_selector(sel)
    start = decode_token(req.page_token) if req.page_token else 0
    return BulkQuery(tenant, (), labels, page, start)


def bulk_change(req: pb.RescheduleTimersRequest, now_ms: int) -> tuple[Optional[int], Optional[int]]:
    """(fire_at, extend_by) of a RescheduleTimersRequest, exactly one set."""
    which = req.WhichOneof("change")
    if which == "fire_at":
        try:
            return rules.check_time("fire_at", timestamp_ms(req.fire_at)), None
        except BadTime as exc:
            raise InvalidArgument("fire_at", str(exc)) from None
    if which == "extend_by":
        return None, rules.check_delta("extend_by", _ms("extend_by", req.extend_by))
    if which == "delay":
        d = _ms("delay", req.delay)
        if d < 0:
            raise InvalidArgument("delay", "must not be negative")
        return rules.check_time("delay", now_ms + d), None
    raise InvalidArgument("change", "set exactly one of fire_at, extend_by or delay")


def bulk_item_pb(item, fill_timer) -> pb.BulkResult:
    out = pb.BulkResult(id=item.id, code=item.code, message=item.message)
    if item.timer is not None:
        fill_timer(out.timer, item.timer)
    return out
