"""The CreateTimers answer for a plain batch (kernel/plain.py), written from its columns.

The general answer builds a kernel Timer per item and copies it into the reply
(api/convert.py fill_timer_pb). For a plain batch every item is a new ARMED timer
whose fields are the request's columns plus the command time, so the reply is
written as protobuf wire bytes straight from those columns and parsed once (in C).
It equals the general answer field for field (tests/test_plain_create.py). A brief
request (CreateTimersRequest.brief) is answered with ids and created flags only.
"""
from __future__ import annotations

from minoots.kernel.plain import PlainCreateResult
from minoots.kernel.table import FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID
from minoots.kernel.timer import TimerState
from minoots.v1 import timers_pb2 as pb

__all__ = ["plain_response", "brief_response"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_varint(i) for i in range(1 << 11)]


def _v(n: int) -> bytes:
    return _SMALL[n] if n < 2048 else _varint(n)


def _ts(ms: int) -> bytes:
    """A Timestamp's body (fields at their defaults are not written, as protobuf does)."""
    s, r = divmod(ms, 1000)
    return (b"\x08" + _varint(s) if s else b"") + (b"\x10" + _varint(r * 1_000_000) if r else b"")


def plain_response(res: PlainCreateResult) -> pb.CreateTimersResponse:
    """The CreateTimersResponse for a plain batch: each timer created and ARMED at res.now_ms."""
    tenant = res.tenant.encode()
    now = _ts(res.now_ms)
    # Fields every item shares: tenant, state, revision, created_at, armed_at.
    common = (b"\x12" + _v(len(tenant)) + tenant + b"\x50" + _v(int(TimerState.ARMED)) + b"\x58\x02"
              + b"\x62" + _v(len(now)) + now + b"\x6a" + _v(len(now)) + now)
    ack = b"\x48\x01"
    parts = []
    add = parts.append
    last_s, last_sb = -1, b""
    for i, f, fl, p in zip(res.ids, res.fire_at, res.flags, res.payloads):
        ib = i.encode()
        idf = b"\x0a" + _v(len(ib)) + ib
        s, r = divmod(f, 1000)
        if s != last_s:
            last_s, last_sb = s, (b"\x08" + _varint(s) if s else b"")
        ts = last_sb + (b"\x10" + _varint(r * 1_000_000) if r else b"")
        body = idf + b"\x22" + _SMALL[len(ts)] + ts + common
        if p:
            body += b"\x2a" + _v(len(p)) + p
        if fl & FLAG_KEY_IS_ID:
            body += b"\x42" + idf[1:]
        if fl & FLAG_ACK_REQUIRED:
            body += ack
        item = b"\x0a" + _v(len(body)) + body + b"\x10\x01"      # CreateTimerResponse{timer, created}
        add(b"\x0a" + _v(len(item)) + item)
    return pb.CreateTimersResponse.FromString(b"".join(parts))


def brief_response(res) -> pb.CreateTimersResponse:
    """A brief CreateTimersResponse (the request's `brief`): ids and created flags only."""
    if type(res) is PlainCreateResult:              # every timer of a column batch is new
        return pb.CreateTimersResponse(ids=res.ids, created=[True] * len(res.ids))
    items = res.items
    return pb.CreateTimersResponse(ids=[i.timer.id for i in items], created=[i.created for i in items])
