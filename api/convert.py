"""Conversions between the wire types (minoots.v1 protobuf messages) and the kernel's values.

Pure functions, no I/O. Times on the wire are `google.protobuf.Timestamp` /
`Duration`; in the kernel they are integer milliseconds since the Unix epoch.
Sub-millisecond parts of a timestamp or duration are truncated toward zero
(the kernel counts whole milliseconds).
"""
from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from minoots.kernel import Event, Timer
from minoots.v1 import timers_pb2 as pb

__all__ = [
    "timestamp_ms",
    "duration_ms",
    "ms_timestamp",
    "timer_to_pb",
    "fill_timer_pb",
    "event_to_pb",
    "event_fields_to_pb",
]

_NANOS_PER_MS = 1_000_000
_MAX_NANOS = 999_999_999


class BadTime(ValueError):
    """A Timestamp/Duration whose nanos are outside the range protobuf allows."""


def timestamp_ms(ts: Timestamp) -> int:
    """A Timestamp as ms since the epoch (may be negative: the caller range-checks)."""
    if not 0 <= ts.nanos <= _MAX_NANOS:
        raise BadTime(f"nanos must be within 0..{_MAX_NANOS}, got {ts.nanos}")
    return ts.seconds * 1000 + ts.nanos // _NANOS_PER_MS


def duration_ms(d: Duration) -> int:
    """A Duration as signed ms (truncated toward zero)."""
    if not -_MAX_NANOS <= d.nanos <= _MAX_NANOS or (d.seconds > 0 > d.nanos) or (d.seconds < 0 < d.nanos):
        raise BadTime(f"nanos must be within -{_MAX_NANOS}..{_MAX_NANOS} with the sign of seconds, got {d.nanos}")
    ms = abs(d.nanos) // _NANOS_PER_MS
    return d.seconds * 1000 + (ms if d.nanos >= 0 else -ms)


def ms_timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.seconds, rem = divmod(ms, 1000)
    ts.nanos = rem * _NANOS_PER_MS
    return ts


def _set_ts(field: Timestamp, ms: int) -> None:
    field.seconds, rem = divmod(ms, 1000)
    field.nanos = rem * _NANOS_PER_MS


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
    _set_ts(out.fire_at, t.fire_at)
    _set_ts(out.created_at, t.created_at)
    if t.armed_at is not None:
        _set_ts(out.armed_at, t.armed_at)
    if t.fired_at is not None:
        _set_ts(out.fired_at, t.fired_at)
    if t.settled_at is not None:
        _set_ts(out.settled_at, t.settled_at)


def event_fields_to_pb(seq: int, kind: int, tenant: str, timer_id: str, at_ms: int, revision: int,
                       state: int, fire_at: int, fire_id: int) -> pb.Event:
    out = pb.Event(sequence=seq, kind=kind, tenant=tenant, timer_id=timer_id, revision=revision,
                   state=state, fire_id=fire_id)
    _set_ts(out.at, at_ms)
    _set_ts(out.fire_at, fire_at)
    return out


def event_to_pb(e: Event) -> pb.Event:
    return event_fields_to_pb(e.seq, int(e.kind), e.tenant, e.timer_id, e.at_ms, e.revision,
                              int(e.state), e.fire_at, e.fire_id or 0)


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
