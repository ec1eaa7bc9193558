"""Retention (issue 14) meets delivery (issue 13): every delivery end is purged in time,
a reused row starts without delivery state, and snapshot format 2 carries both."""
from __future__ import annotations

import struct

import pytest

from minoots.kernel import EventKind, InvalidArgument, NotFound, State, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.retention import RetentionPolicy
from minoots.kernel.snapshot import FLAG_DELIVERY, FLAG_RETENTION_V1, VERSION, VERSION_2

HOOK = Delivery(Webhook("http://127.0.0.1:9/hook", ()), DeliveryPolicy(max_attempts=1))
QUEUE = Delivery(None, DeliveryPolicy(max_attempts=1), "jobs")


def header(data: bytes) -> tuple[int, int]:
    return struct.unpack_from("<HH", data, 8)


def dead(retention: int) -> State:
    s = State()
    s.retention = RetentionPolicy({}, retention)
    s.create(10, [TimerSpec("w", 100, delivery=HOOK)])
    s.tick(100)
    fid = s.get("default", "w").fire_id
    res = s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", None)
    assert res.timer.state == TimerState.DEAD_LETTERED
    return s


def test_a_dead_letter_is_purged_after_its_retention():
    s = dead(5_000)
    s.check_invariants()
    assert s.next_deadline() == 120 + 5_000
    assert [e.kind for e in s.tick(120 + 5_000).events] == [EventKind.PURGED]
    with pytest.raises(NotFound):
        s.get("default", "w")
    s.check_invariants()


def test_a_dead_letter_with_retention_0_is_purged_in_the_same_command():
    s = State()
    s.retention = RetentionPolicy({}, 0)
    s.create(10, [TimerSpec("w", 100, delivery=HOOK)])
    s.tick(100)
    fid = s.get("default", "w").fire_id
    res = s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", None)
    assert [e.kind for e in res.events] == [EventKind.DELIVERY_ATTEMPTED, EventKind.DEAD_LETTERED,
                                            EventKind.PURGED]
    assert res.timer.state == TimerState.DEAD_LETTERED          # as it ended
    s.check_invariants()


def test_an_expired_last_lease_dead_letters_and_is_purged_in_time():
    s = State()
    s.retention = RetentionPolicy({}, 1_000)
    s.create(10, [TimerSpec("q", 100, delivery=QUEUE)])
    s.tick(100)
    s.lease(200, "default", "jobs", 1, 1_000)
    tick = s.tick(1_200)                                          # the lease expires: last attempt
    assert EventKind.DEAD_LETTERED in [e.kind for e in tick.events]
    s.check_invariants()
    assert [e.kind for e in s.tick(2_200).events] == [EventKind.PURGED]
    s.check_invariants()


def test_redrive_takes_the_purge_deadline_back():
    s = dead(5_000)
    s.redrive(200, "default", "w")
    s.check_invariants()
    assert s.tick(10_000).events == ()                            # nothing purged: it is delivering


def test_a_reused_row_has_no_delivery_state_and_delete_refuses_delivering():
    s = dead(0)
    s.create(300, [TimerSpec("plain", 400)])                     # takes the freed row
    assert s.positions == 1
    t = s.get("default", "plain")
    assert t.delivery is None and t.delivery_attempts == () and t.delivery_attempt == 0
    assert header(s.to_bytes()) == (VERSION_2, 0)               # a row was freed; no delivery block
    s.check_invariants()
    s2 = State()
    s2.create(10, [TimerSpec("w", 100, delivery=HOOK)])
    s2.tick(100)
    with pytest.raises(Exception, match="DELIVERING"):
        s2.delete(110, [("default", "w")])


def test_format_2_carries_delivery_and_retention_and_keeps_the_v1_bit():
    s = State()
    s.create(10, [TimerSpec("w", 100, delivery=HOOK), TimerSpec("p", 50)])
    s.tick(100)
    data = s.to_bytes()
    assert header(data) == (VERSION_2, FLAG_RETENTION_V1 | FLAG_DELIVERY)
    back = State.from_bytes(data)
    back.check_invariants()
    assert back.to_bytes() == data
    plain = State()
    plain.create(10, [TimerSpec("p", 50)])
    assert header(plain.to_bytes()) == (VERSION, 0)
    s3 = dead(5_000)
    data = s3.to_bytes()
    assert header(data) == (VERSION_2, FLAG_DELIVERY)            # retention 5 s is not the default
    back = State.from_bytes(data)
    back.check_invariants()
    assert back.to_bytes() == data
    assert [e.kind for e in back.tick(5_120).events] == [EventKind.PURGED]


def test_a_create_cannot_take_an_occurrence_timers_id():
    # A recurring timer with a delivery is allowed now (kernel/occurrences.py); the ids of its
    # occurrence timers ("<id>@<fire id>") are never accepted by a create.
    with pytest.raises(InvalidArgument, match="id"):
        State().create(10, [TimerSpec("w@5", 100, delivery=HOOK)])


def test_unknown_header_flags_and_a_missing_delivery_block_are_refused():
    import zlib

    from minoots.kernel import SnapshotError

    s = State()
    s.create(10, [TimerSpec("w", 100, delivery=HOOK)])
    data = s.to_bytes()
    body = data[24:]

    def seal(version: int, flags: int, b: bytes) -> bytes:
        return b"MNTSKRNL" + struct.pack("<HHQI", version, flags, len(b), zlib.crc32(b)) + b

    assert State.from_bytes(seal(VERSION_2, FLAG_RETENTION_V1 | FLAG_DELIVERY, body)).to_bytes() == data
    with pytest.raises(SnapshotError, match="flags"):
        State.from_bytes(seal(VERSION_2, 0x8000 | FLAG_DELIVERY, body))   # bit 4 is the recurrence block now
    with pytest.raises(SnapshotError, match="trailing"):         # the delivery block unannounced
        State.from_bytes(seal(VERSION_2, FLAG_RETENTION_V1, body))
    plain = State()
    plain.create(10, [TimerSpec("p", 100)])
    with pytest.raises(SnapshotError, match="flags"):
        State.from_bytes(seal(VERSION, FLAG_RETENTION_V1, plain.to_bytes()[24:]))


def test_the_api_accepts_a_recurring_webhook_timer_but_no_occurrence_id():
    from google.protobuf.duration_pb2 import Duration

    from minoots.api import validation
    from minoots.v1 import timers_pb2 as pb

    spec = pb.TimerSpec(id="w", delay=Duration(seconds=5), every=Duration(seconds=60),
                        webhook=pb.WebhookAction(url="http://127.0.0.1:9/hook"))
    got = validation.create_spec("timer", spec, 1_000)
    assert got.every_ms == 60_000 and got.delivery.webhook.url == "http://127.0.0.1:9/hook"
    with pytest.raises(InvalidArgument, match="timer.id"):
        validation.create_spec("timer", pb.TimerSpec(id="w@3", delay=Duration(seconds=5)), 1_000)
    ok = validation.create_spec("timer", pb.TimerSpec(id="r", delay=Duration(seconds=5), every=Duration(seconds=60)),
                                1_000)
    assert ok.every_ms == 60_000 and ok.delivery is None
