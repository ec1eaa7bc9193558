"""Every length-prefixed block of a kernel snapshot (kernel/snapshot.py) is named by the
refusal of a snapshot whose block claims one byte more than it holds: the operator reading
"snapshot schedule until holds 17 bytes, expected 16" knows which part is corrupt. The
blocks are found by watching the real decoder read a snapshot that holds every kind of
block (tenants, extras, schedules, recurrences, deliveries, queues, graphs, ladders,
occurrences, retention), so a block added later is covered too."""
from __future__ import annotations

import struct
import zlib

import pytest

from minoots.kernel import SnapshotError, State, TimerSpec
from minoots.kernel import snapshot as snap
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.graph import GraphSpec
from minoots.kernel.retention import RetentionPolicy
from support import T0, busy_state

S = 1000
HOOK = Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2))


BLOCKS = [
    "tenant names lengths", "tenant names", "column tenant", "column state", "column flags", "column fire_at",
    "column created_at", "column armed_at", "column fired_at", "column settled_at", "column fire_id",
    "column revision", "column attempts", "ids", "extra ordinals", "names lengths", "names", "payloads lengths",
    "payloads", "actions lengths", "actions", "idempotency keys lengths", "idempotency keys", "label counts",
    "label keys lengths", "label keys", "label values lengths", "label values", "column purge_at",
    "schedule ordinals", "schedule every_ms", "schedule until", "schedule max_count", "schedule crons lengths",
    "schedule crons", "schedule time zones lengths", "schedule time zones", "delivery records", "graph",
    "recurrence ordinals", "recurrence paused", "recurrence catch_up", "recurrence overlap", "recurrence triggered",
    "recurrence skipped", "recurrence flex_ms", "recurrence seed", "recurrence nominal", "recurrence buffered",
    "recurrence pending counts", "recurrence pending fires", "schedule deliveries"]


def every_kind_of_block() -> State:
    s = busy_state()
    s.retention = RetentionPolicy({"acme": 5 * S})
    s.create(T0 + 30, [
        TimerSpec("cron", T0 + 60 * S, cron="*/5 * * * *", tz="Europe/Paris", until=T0 + 3_600 * S, max_count=9),
        TimerSpec("flex", T0 + 10 * S, every_ms=10 * S, flex_ms=2 * S, flex_seed=5, ack_required=True,
                  overlap="buffer_one", catch_up="all"),
        TimerSpec("hook", T0 + 40 * S, delivery=HOOK, payload=b"p"),
        TimerSpec("queued", T0 + 40 * S, delivery=Delivery(None, DeliveryPolicy(max_attempts=3), queue="jobs")),
        TimerSpec("occ", T0 + 60 * S, every_ms=60 * S, delivery=HOOK),
        TimerSpec("parent", T0 + 50 * S, ack_required=True, delivery=HOOK,
                  graph=GraphSpec(escalate=((S, b"page"),))),
        TimerSpec("child", 0, graph=GraphSpec(("parent",), on="settled", delay_ms=5)),
    ])
    s.pause(T0 + 31, "default", "cron")
    return s


def blocks_read(data: bytes) -> list[tuple[str, int]]:
    """(name, offset in the body of its length prefix) of every block the decoder reads."""
    seen = []
    real = snap._Reader.block

    def block(self, what):
        seen.append((what, self.pos))
        return real(self, what)

    snap._Reader.block = block
    try:
        State.from_bytes(data)
    finally:
        snap._Reader.block = real
    return seen


def with_longer_block(data: bytes, at: int) -> bytes:
    head = snap._HEADER
    magic, version, flags, body_len, _ = head.unpack(data[:head.size])
    body = bytearray(data[head.size:])
    (n,) = snap._LEN.unpack_from(body, at)
    snap._LEN.pack_into(body, at, n + 1)
    return head.pack(magic, version, flags, body_len, zlib.crc32(body)) + bytes(body)


def test_a_block_one_byte_longer_than_it_holds_is_refused_by_its_name():
    s = every_kind_of_block()
    data = s.to_bytes()
    assert State.from_bytes(data) == s
    seen = blocks_read(data)
    names = [w for w, _ in seen]
    assert names == BLOCKS                  # the names the refusals use, in the order of the format
    unnamed = []
    for what, at in seen:
        with pytest.raises(SnapshotError) as info:
            State.from_bytes(with_longer_block(data, at))
        if what not in str(info.value):
            unnamed.append((what, str(info.value)))
    assert unnamed == []


@pytest.mark.parametrize("what, needle", [
    ("extra ordinals", "snapshot extra ordinals are not increasing within the table"),
    ("schedule ordinals", "snapshot schedule ordinals are not increasing within the table"),
    ("recurrence ordinals", "snapshot recurrence ordinals are empty or not increasing"),
])
def test_an_ordinal_block_naming_a_row_twice_is_refused(what, needle):
    data = every_kind_of_block().to_bytes()
    at = dict(blocks_read(data))[what]
    head = snap._HEADER
    magic, version, flags, body_len, _ = head.unpack(data[:head.size])
    body = bytearray(data[head.size:])
    (n,) = snap._LEN.unpack_from(body, at)
    assert n >= 16                                   # two ordinals at least
    first = body[at + 8:at + 16]
    body[at + 16:at + 24] = first                    # the second names the first's row again
    bad = head.pack(magic, version, flags, body_len, zlib.crc32(body)) + bytes(body)
    with pytest.raises(SnapshotError) as info:
        State.from_bytes(bad)
    assert str(info.value) == needle
