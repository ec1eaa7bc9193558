"""Wire basics the server and the SDK share: protobuf time values <-> integer milliseconds, and
the form of a generated timer id. Imports protobuf only (neither the kernel nor grpc), so the
server's conversions (api/convert.py, api/validation.py) and the SDK's (api/client/wire.py)
both use these one definitions.

Sub-millisecond parts of a timestamp or duration are truncated toward zero (the kernel counts
whole milliseconds).
"""
from __future__ import annotations

import os

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["BadTime", "timestamp_ms", "duration_ms", "ms_timestamp", "set_timestamp", "new_timer_id",
           "new_timer_ids"]

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


def set_timestamp(field: Timestamp, ms: int) -> None:
    """Write ms since the epoch into `field` in place (a message's own Timestamp field)."""
    field.seconds, rem = divmod(ms, 1000)
    field.nanos = rem * _NANOS_PER_MS


def ms_timestamp(ms: int) -> Timestamp:
    """ms since the epoch as a new Timestamp."""
    ts = Timestamp()
    set_timestamp(ts, ms)
    return ts


# uuid4's bits (RFC 4122): version 4 in bits 76-79, variant 10 in bits 62-63.
_UUID4_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (4 << 76) | (0x8000 << 48)


def new_timer_id() -> str:
    """A generated timer id, uuid4 hex (the SDK's for a spec without one, the server's for a
    request without one: made before proposing, since the kernel draws no random numbers).
    The same value uuid.uuid4().hex gives, without building a UUID object (a batch of
    10,000 generated ids spent most of its validation time there)."""
    return "%032x" % ((int.from_bytes(os.urandom(16), "big") & _UUID4_KEEP) | _UUID4_SET)


def new_timer_ids(n: int) -> list[str]:
    """n generated timer ids (as new_timer_id), from one read of the system's random source."""
    raw = os.urandom(16 * n)
    return ["%032x" % ((int.from_bytes(raw[i:i + 16], "big") & _UUID4_KEEP) | _UUID4_SET)
            for i in range(0, 16 * n, 16)]
