"""Conversions between the wire types (minoots.v1 protobuf messages) and the kernel's values.

Pure functions, no I/O. Times on the wire are `google.protobuf.Timestamp` /
`Duration`; in the kernel they are integer milliseconds since the Unix epoch
(the conversions themselves are api/wirebase.py's, re-exported here).
"""
from __future__ import annotations

from minoots.kernel import Event, Timer
from minoots.kernel.recurrence import CATCH_UP_NAMES, OVERLAP_NAMES
from minoots.v1 import timers_pb2 as pb

from .graphs import fill_graph
from .wirebase import BadTime, duration_ms, ms_timestamp, timestamp_ms
from .wirebase import set_timestamp as _set_ts

__all__ = [
    "BadTime",
    "timestamp_ms",
    "duration_ms",
    "ms_timestamp",
    "timer_to_pb",
    "fill_timer_pb",
    "event_to_pb",
    "event_fields_to_pb",
    "lease_to_pb",
]

def timer_to_pb(t: Timer) -> pb.Timer:
    out = pb.Timer()
    fill_timer_pb(out, t)
    return out


def fill_timer_pb(out: pb.Timer, t: Timer) -> None:
    """Write `t` into an empty pb.Timer in place: building a response's timers where
    they live is several times cheaper than constructing each and copying it in."""
    out.id = t.id
    out.tenant = t.tenant
    if t.name:
        out.name = t.name
    if t.payload:
        out.payload = t.payload
    if t.labels:
        out.labels.update(t.labels)
    if t.action:
        out.action = t.action
    if t.idempotency_key:
        out.idempotency_key = t.idempotency_key
    if t.ack_required:
        out.ack_required = True
    out.state = int(t.state)
    out.revision = t.revision
    out.attempts = t.attempts
    if t.fire_id:
        out.fire_id = t.fire_id
    if t.every_ms or t.cron:
        if t.every_ms:
            out.every.FromMilliseconds(t.every_ms)
        else:
            out.cron, out.time_zone = t.cron, t.tz
        if t.until is not None:
            _set_ts(out.until, t.until)
        out.max_count = t.max_count
        _fill_recurrence(out, t)
    _set_ts(out.fire_at, t.fire_at)
    _set_ts(out.created_at, t.created_at)
    if t.armed_at is not None:
        _set_ts(out.armed_at, t.armed_at)
    if t.fired_at is not None:
        _set_ts(out.fired_at, t.fired_at)
    if t.settled_at is not None:
        _set_ts(out.settled_at, t.settled_at)
    if t.delivery is not None:
        _fill_delivery(out, t)
    if t.after or t.children or t.escalate:
        fill_graph(out, t)


def _fill_recurrence(out: pb.Timer, t: Timer) -> None:
    """A recurring timer's controls and policies (kernel/recurrence.py); the wire enums list
    the kernel's policy names in order from value 1."""
    if t.paused:
        out.paused = True
    if t.catch_up:
        out.catch_up = CATCH_UP_NAMES.index(t.catch_up) + 1
    if t.overlap:
        out.overlap = OVERLAP_NAMES.index(t.overlap) + 1
    if t.triggered:
        out.triggered = t.triggered
    if t.skipped:
        out.skipped_occurrences = t.skipped
    if t.flex_ms:
        out.flex.FromMilliseconds(t.flex_ms)
    if t.pending_fires:
        out.pending_fire_ids.extend(t.pending_fires)
    if t.buffered:
        out.buffered = True


def _fill_delivery(out: pb.Timer, t: Timer) -> None:
    d = t.delivery
    if d.queue is not None:
        out.queue.queue = d.queue
    else:
        out.webhook.url = d.webhook.url
        if d.webhook.headers:
            out.webhook.headers.update(dict(d.webhook.headers))
        if d.endpoint is not None:
            out.endpoint_id = d.endpoint
    p = out.delivery_policy
    p.max_attempts = d.policy.max_attempts
    p.backoff_base.FromMilliseconds(d.policy.backoff_base_ms)
    p.backoff_cap.FromMilliseconds(d.policy.backoff_cap_ms)
    p.attempt_timeout.FromMilliseconds(d.policy.attempt_timeout_ms)
    p.ack_deadline.FromMilliseconds(d.policy.ack_deadline_ms)
    for a in t.delivery_attempts:
        pa = out.delivery_attempts.add(attempt=a.attempt, fire_id=a.fire_id, status_code=a.status,
                                       latency_ms=a.latency_ms, error_class=a.error, response_body=a.body)
        _set_ts(pa.at, a.at_ms)
        if a.next_at is not None:
            _set_ts(pa.next_attempt_at, a.next_at)
    if t.next_attempt_at is not None:
        _set_ts(out.next_attempt_at, t.next_attempt_at)


def lease_to_pb(lease) -> pb.Lease:
    out = pb.Lease(lease_id=lease.lease_id, attempt=lease.attempt)
    fill_timer_pb(out.timer, lease.timer)
    _set_ts(out.expires_at, lease.expires_at)
    return out


def event_fields_to_pb(seq: int, kind: int, tenant: str, timer_id: str, at_ms: int, revision: int,
                       state: int, fire_at: int, fire_id: int, step: int = 0, action: bytes = b"") -> pb.Event:
    out = pb.Event(sequence=seq, kind=kind, tenant=tenant, timer_id=timer_id, revision=revision,
                   state=state, fire_id=fire_id)
    if step:                    # escalated: the ladder step that came due and its action
        out.escalation_step = step
        out.action = action
    _set_ts(out.at, at_ms)
    _set_ts(out.fire_at, fire_at)
    return out


def event_to_pb(e: Event) -> pb.Event:
    return event_fields_to_pb(e.seq, int(e.kind), e.tenant, e.timer_id, e.at_ms, e.revision,
                              int(e.state), e.fire_at, e.fire_id or 0, e.step, e.action)


def _check_enums_match() -> None:
    """The kernel's enum values are the wire's (both are persisted/wire formats: never renumber)."""
    from minoots.kernel import EventKind, TimerState

    for s in TimerState:
        if pb.TimerState.Value(f"TIMER_STATE_{s.name}") != s.value:
            raise ImportError(f"TimerState.{s.name} differs between the kernel and timers.proto")
    for k in EventKind:
        if pb.EventKind.Value(f"EVENT_KIND_{k.name}") != k.value:
            raise ImportError(f"EventKind.{k.name} differs between the kernel and timers.proto")


_check_enums_match()
