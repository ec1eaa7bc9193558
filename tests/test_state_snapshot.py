"""Snapshot codec: round trips, identical behaviour after restore, and every way
bad bytes must turn into SnapshotError (never another exception)."""

import hashlib
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minoots.kernel import InvalidArgument, KernelError, SnapshotError, State, TimerSpec, TimerState
from minoots.kernel.snapshot import MAGIC, VERSION

from support import T0, busy_state

HEADER = struct.Struct("<8sHHQI")


def continue_with(s):
    """The same commands applied to a state and to its restored copy."""
    out = []
    b_fire = s.get("default", "b").fire_id
    out.append(s.ack(T0 + 30, "default", "b", b_fire).events)
    out.append(s.create(T0 + 31, [TimerSpec("f", T0 + 100), TimerSpec("z", T0 + 1, idempotency_key="kb")]).items)
    out.append(s.next_deadline())
    out.append(s.tick(T0 + 10_000).events)
    out.append((s.seq, s.last_tick, len(s), s.counts()))
    return out


def test_empty_state_roundtrip():
    s = State()
    b = s.to_bytes()
    assert b[:8] == MAGIC
    r = State.from_bytes(b)
    assert r == s and r.to_bytes() == b
    assert (r.seq, r.last_tick, len(r), r.next_deadline()) == (0, 0, 0, None)


def test_roundtrip_at_several_points_and_same_behaviour_after():
    s = State()
    steps = [
        lambda: None,
        lambda: s.create(T0, [TimerSpec("x", T0 + 50, ack_required=True, payload=b"p"), TimerSpec("y", T0 + 5)]),
        lambda: s.tick(T0 + 5),
        lambda: s.tick(T0 + 50),
        lambda: s.create(T0, [TimerSpec("w", T0 - 1, tenant="t2")]),
        lambda: s.reschedule(T0 + 51, "t2", "w", fire_at=T0 + 65),
        lambda: s.cancel(T0 + 60, [("default", "x")]),
        lambda: s.tick(T0 + 70),
    ]
    for step in steps:
        step()
        b = s.to_bytes()
        r = State.from_bytes(b)
        assert r == s and r.to_bytes() == b
        r.check_invariants()
        assert list(r) == list(s)
        assert (r.seq, r.last_tick, r.counts(), r.next_deadline()) == (s.seq, s.last_tick, s.counts(), s.next_deadline())


def test_busy_state_roundtrip_then_identical_future():
    s = busy_state()
    r = State.from_bytes(s.to_bytes())
    assert r == s
    assert r.get("default", "b") == s.get("default", "b")
    assert r.counts()[TimerState.CANCELLED] == 1 and r.counts()[TimerState.FIRED] == 1
    assert continue_with(s) == continue_with(r)
    assert r.to_bytes() == s.to_bytes()
    r.check_invariants()


def test_from_bytes_accepts_bytearray_and_memoryview():
    s = busy_state()
    b = s.to_bytes()
    assert State.from_bytes(bytearray(b)) == s
    assert State.from_bytes(memoryview(b)) == s


def test_state_equality():
    a, b = busy_state(), busy_state()
    assert a == b
    b.tick(T0 + 10**7)
    assert a != b
    assert (a == "x") is False


GOLDEN_SHA256 = "9afe840759cf70ccb151def6320c73012473ec0fd553e53e19ced8d63a028c82"


def test_golden_bytes_are_stable():
    """The encoding is a persisted format: any change must bump VERSION."""
    b = busy_state().to_bytes()
    assert HEADER.unpack(b[:HEADER.size])[1] == VERSION == 1
    assert hashlib.sha256(b).hexdigest() == GOLDEN_SHA256



def test_large_table_roundtrip_is_fast_and_exact():
    """50k timers over three tenants; a guard against accidentally quadratic codecs
    (1M timers encode in ~0.3 s and decode in ~1-1.5 s on the 2-core dev box)."""
    import time

    s = State()
    for b in range(0, 50_000, 10_000):
        s.create(T0, [TimerSpec(f"t{i}", T0 + (i * 7919) % 86_400_000, tenant=f"ten{i % 3}",
                                payload=b"p" if i % 10 == 0 else b"") for i in range(b, b + 10_000)])
    s.tick(T0 + 3_600_000)
    start = time.perf_counter()
    b = s.to_bytes()
    r = State.from_bytes(b)
    assert time.perf_counter() - start < 5.0
    assert r.to_bytes() == b
    assert r.next_deadline() == s.next_deadline()
    assert r.tick(T0 + 86_400_000).events == s.tick(T0 + 86_400_000).events


# ---- bad bytes -------------------------------------------------------------------


def reseal(body: bytes, version=VERSION, flags=0, magic=MAGIC) -> bytes:
    return HEADER.pack(magic, version, flags, len(body), zlib.crc32(body)) + body


def test_header_errors_have_clear_messages():
    b = busy_state().to_bytes()
    body = b[HEADER.size:]
    cases = {
        "bad magic": b"PK\x03\x04" + b[4:],
        "version 3": reseal(body, version=3),   # 2 is the delivery format (kernel/snapshot.py)
        "flags": reseal(body, flags=1),
        "truncated": b[:-1],
        "padded": b + b"\x00",
        "checksum": b[:-1] + bytes([b[-1] ^ 1]),
    }
    for needle, data in cases.items():
        with pytest.raises(SnapshotError) as info:
            State.from_bytes(data)
        assert needle in str(info.value), (needle, str(info.value))
    for data in (b"", b"MNT", b"\x00" * 3, MAGIC, b"junk"):
        with pytest.raises(SnapshotError):
            State.from_bytes(data)
    with pytest.raises(SnapshotError):
        State.from_bytes("not bytes")
    with pytest.raises(SnapshotError):
        State.from_bytes(None)
    assert issubclass(SnapshotError, KernelError)


def _body_of(s):
    return bytearray(s.to_bytes()[HEADER.size:])


def test_checksummed_but_inconsistent_content_is_rejected():
    """A foreign writer with a correct CRC still cannot smuggle in a broken table."""
    s = State()
    s.create(T0, [TimerSpec("aa", T0 + 1), TimerSpec("ab", T0 + 2)])
    good = _body_of(s)
    ids_at = good.find(b"aa\nab\n")
    assert ids_at > 0
    state_col = good.find(bytes([2, 2]))  # the state column: two ARMED bytes
    cases = {
        "duplicate id": good[:ids_at] + b"aa\naa\n" + good[ids_at + 6:],
        "bad id char": good[:ids_at] + b"a \nab\n" + good[ids_at + 6:],
        "missing terminator": good[:ids_at] + b"aa\nabX" + good[ids_at + 6:],
        "unknown state": good[:state_col] + bytes([9, 2]) + good[state_col + 2:],
        "trailing": good + b"\x00",
        "short": good[:-1],
        "timer count": good[:16] + struct.pack("<Q", 3) + good[24:],
        "tenant count": good[:24] + struct.pack("<I", 0) + good[28:],
        "negative seq": struct.pack("<q", -1) + good[8:],
        "last_tick": good[:8] + struct.pack("<q", -5) + good[16:],
    }
    # The control: the untouched body, resealed the same way, loads (so each case below
    # fails for its own change, not for the resealing).
    assert State.from_bytes(reseal(bytes(good))).to_bytes() == s.to_bytes()
    for what, body in cases.items():
        assert bytes(body) != bytes(good), f"case {what!r} changes nothing"
        with pytest.raises(SnapshotError):
            State.from_bytes(reseal(bytes(body)))


def test_header_is_little_endian():
    b = State().to_bytes()
    magic, version, flags, body_len, crc = HEADER.unpack(b[:HEADER.size])
    assert b[8:10] == b"\x01\x00" and body_len == len(b) - HEADER.size
    assert crc == zlib.crc32(b[HEADER.size:])


_BUSY = busy_state().to_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_BUSY) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_byte_flips_are_snapshot_error_or_identical(flips):
    data = bytearray(_BUSY)
    for pos, xor in flips:
        data[pos] ^= xor
    try:
        r = State.from_bytes(bytes(data))
    except SnapshotError:
        return
    assert r.to_bytes() == _BUSY


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(_BUSY) - 1))
def test_truncation_anywhere_is_snapshot_error(cut):
    with pytest.raises(SnapshotError):
        State.from_bytes(_BUSY[:cut])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_after_valid_header_is_snapshot_error(junk):
    # Passes the magic, version and CRC checks, so the structural decoder sees it.
    try:
        State.from_bytes(reseal(junk))
    except SnapshotError:
        return
    # Only a structurally perfect body may decode; then it must round-trip.
    assert State.from_bytes(reseal(junk)).to_bytes() == reseal(junk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_BUSY) - HEADER.size - 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_resealed_body_flips_never_escape_as_other_errors(flips):
    """Corrupt the body but fix the CRC, so the structural checks must catch it."""
    body = bytearray(_BUSY[HEADER.size:])
    for pos, xor in flips:
        body[pos] ^= xor
    data = reseal(bytes(body))
    try:
        r = State.from_bytes(data)
    except SnapshotError:
        return
    # Decoded: then it is a self-consistent table that re-encodes to the same bytes.
    assert r.to_bytes() == data
    list(r)
    r.counts()
    r.next_deadline()


def test_a_snapshot_repeating_an_idempotency_key_in_a_tenant_is_refused():
    """Two ways a key can repeat in a tenant: stored twice, or stored once and equal to a
    timer id whose key is that id (FLAG_KEY_IS_ID). Both are refused; a key equal to the id
    of a timer whose own key is something else is no repeat and loads."""
    from minoots.kernel.table import Extra

    def with_key_of_b(key, specs):
        s = State()
        s.create(T0, specs)
        t = s._table
        o = t.by_id[0]["b"]
        t.extra[o] = Extra("", b"", (), b"", key)
        return s.to_bytes()

    twice = with_key_of_b("k", [TimerSpec("a", T0 + 1, idempotency_key="k"), TimerSpec("b", T0 + 2, idempotency_key="k2")])
    as_id = with_key_of_b("a", [TimerSpec("a", T0 + 1, idempotency_key="a"), TimerSpec("b", T0 + 2, idempotency_key="k2")])
    for data in (twice, as_id):
        with pytest.raises(SnapshotError) as info:
            State.from_bytes(data)
        assert "an idempotency key appears twice in one tenant" in str(info.value)
    # The control: "a"'s key is "ka", so "a" is free as b's key.
    fine = with_key_of_b("a", [TimerSpec("a", T0 + 1, idempotency_key="ka"), TimerSpec("b", T0 + 2, idempotency_key="k2")])
    r = State.from_bytes(fine)
    assert r.get("default", "b").idempotency_key == "a" and r.get("default", "a").idempotency_key == "ka"
    r.check_invariants()
    # The same key in another tenant is no repeat either.
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 1, idempotency_key="k"), TimerSpec("b", T0 + 2, tenant="other", idempotency_key="k")])
    assert State.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes()


# ---- check_invariants: every check fires on the corruption it is there for ------------------

def _invariants_base() -> State:
    """One state with every kind of record: a free row (tenant "z", retention 0), armed,
    fired, settled, a webhook due and one waiting for its retry, a queue timer available
    and one leased, a recurring timer, idempotency keys (one equal to its id)."""
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
    from minoots.kernel.retention import RetentionPolicy
    s = State()
    s.retention = RetentionPolicy({"z": 0})
    hook = Delivery(Webhook("http://127.0.0.1:9/h", ()), DeliveryPolicy(max_attempts=3))
    q = Delivery(None, DeliveryPolicy(max_attempts=3), "jobs")
    s.create(10, [TimerSpec("gone", 50, tenant="z"),                                   # 0 free
                  TimerSpec("armed", 5000, payload=b"abc", idempotency_key="k1"),      # 1
                  TimerSpec("fired", 50, ack_required=True),                           # 2
                  TimerSpec("done", 50),                                               # 3 settled
                  TimerSpec("due", 50, delivery=hook),                                 # 4
                  TimerSpec("retry", 50, delivery=hook),                               # 5 waiting
                  TimerSpec("avail", 50, delivery=q),                                  # 6 available
                  TimerSpec("leased", 40, delivery=q),                                 # 7 leased
                  TimerSpec("every", 3000, every_ms=1000),                             # 8
                  TimerSpec("self", 6000, idempotency_key="self")])                    # 9
    s.tick(60)
    s.lease(70, "default", "jobs", 1, 5000)
    s.delivery_attempt(80, "default", "retry", s.get("default", "retry").fire_id, 1, 500, 1, "http_status", b"",
                       900)
    return s


def _set(col, i, v):
    col[i] = v


INVARIANT_BREAKS = [
    ("column", lambda s, t: t.fire_at.append(0), "column fire_at has 10 entries"),
    ("count", lambda s, t: s._counts.__setitem__(TimerState.ARMED, 4), "count of ARMED"),
    ("free count", lambda s, t: s._counts.__setitem__(0, 2), "free rows are the free heap"),
    ("free heap", lambda s, t: t.free.append(3), "free rows are the free heap"),
    ("free id", lambda s, t: _set(t.ids, 0, "x"), "free row 0 is reset"),
    ("free extra", lambda s, t: _set(t.extra, 0, b"x"), "free row 0 is reset"),
    ("free purge_at", lambda s, t: _set(t.purge_at, 0, 5), "free row 0 is reset"),
    ("free tenant", lambda s, t: _set(t.tenant, 0, 1), "free row 0 is reset"),
    ("live", lambda s, t: s._live.__setitem__(1, 99), "outstanding timers by tenant"),
    ("held", lambda s, t: s._held.__setitem__(1, 99), "payload bytes of outstanding timers by tenant"),
    ("wheel", lambda s, t: s._wheel.cancel(1), "the wheel holds exactly the armed timers"),
    ("record of a free row", lambda s, t: t.deliv.__setitem__(0, t.deliv[4]), "delivery record of ordinal 0 within"),
    ("record past the table", lambda s, t: t.deliv.__setitem__(10, t.deliv[4]), "delivery record of ordinal 10"),
    ("waiting, not delivering", lambda s, t: (t.deliv.__setitem__(3, t.deliv[5]), s._wheel.insert(3, 900)),
     "only a delivering timer waits, ordinal 3"),
    ("delivering without record", lambda s, t: (t.deliv.pop(4), s._due.discard(4)),
     "delivering ordinal 4 has a delivery record"),
    ("due set", lambda s, t: s._due.add(6), "the due set is exactly"),
    ("not queued", lambda s, t: s._queues.clear(), "available queue timer 6 queued"),
    ("available at 0", lambda s, t: (t.deliv.__setitem__(6, t.deliv[6]._replace(avail=0)),
                                     s._queues.__setitem__((1, "jobs"), [(0, 6)])), "available queue timer 6 queued"),
    ("available and leased", lambda s, t: t.deliv.__setitem__(6, t.deliv[6]._replace(lease="1")),
     "available queue timer 6 queued"),
    ("wheel time", lambda s, t: setattr(s, "_last_tick", 61), "wheel time is the last tick"),
    ("id index size", lambda s, t: t.by_id[1].__setitem__("ghost", 1), "id index size"),
    ("purge_at of a live timer", lambda s, t: _set(t.purge_at, 1, 99), "purge_at iff terminal of ordinal 1"),
    ("id index", lambda s, t: (t.by_id[1].__setitem__("armed", 2), t.by_id[1].__setitem__("fired", 1)),
     "id index of ordinal 1"),
    ("fire_id past seq", lambda s, t: _set(t.fire_id, 2, 37), "fire_id of ordinal 2 within 0..seq"),
    ("revision", lambda s, t: _set(t.revision, 1, 1), "revision of ordinal 1"),
    ("fired_at", lambda s, t: _set(t.attempts, 1, 1), "fired_at iff attempts of ordinal 1"),
    ("settled_at", lambda s, t: _set(t.settled_at, 1, 5), "settled_at iff terminal of ordinal 1"),
    ("schedule of a free row", lambda s, t: t.schedules.__setitem__(0, t.schedules[8]), "schedule of ordinal 0"),
    ("schedule past the table", lambda s, t: t.schedules.__setitem__(10, t.schedules[8]), "schedule of ordinal 10"),
    ("idempotency index", lambda s, t: t.by_idem[1].__setitem__("k1", 2), "idempotency index"),
    ("idempotency tenant", lambda s, t: (t.by_idem[1].pop("k1"), t.by_idem[0].__setitem__("k1", 1)),
     "idempotency index"),
    ("key also an id key", lambda s, t: (_set(t.ids, 9, "k1"), t.by_id[1].pop("self"), t.by_id[1].__setitem__("k1", 9)),
     "idempotency key also an id key"),
]


@pytest.mark.parametrize("what, corrupt, message", INVARIANT_BREAKS, ids=[b[0] for b in INVARIANT_BREAKS])
def test_check_invariants_catches_each_corruption(what, corrupt, message):
    s = _invariants_base()
    s.check_invariants()
    corrupt(s, s._table)
    with pytest.raises(AssertionError, match="^kernel invariant broken: " + message.replace("..", r"\.\.")):
        s.check_invariants()


def test_the_state_reprs_compares_and_counts_itself():
    s = _invariants_base()
    assert repr(s) == "<State timers=9 armed=3 fired=1 free=1 seq=36 last_tick=60>"
    assert repr(State()) == "<State timers=0 armed=0 fired=0 free=0 seq=0 last_tick=0>"
    assert s.__eq__(s.to_bytes()) is NotImplemented and s != "state"
    assert s == State.from_bytes(s.to_bytes()) and s != State()
    with pytest.raises(TypeError):
        hash(s)
    assert (len(s), s.positions, s.seq, s.last_tick, s.has_graph) == (9, 10, 36, 60, False)
    assert {st.name: n for st, n in s.counts().items()} == {
        "SCHEDULED": 0, "ARMED": 3, "FIRED": 1, "SETTLED": 1, "CANCELLED": 0, "DEAD_LETTERED": 0, "DELIVERING": 4}
    assert tuple(s.usage("default")) == (8, 3) and tuple(s.usage("z")) == (0, 0) and tuple(s.usage("never")) == (0, 0)
    with pytest.raises(InvalidArgument):
        s.usage("")
    assert s.next_deadline() == 900


def test_cancelling_every_kind_of_outstanding_timer_leaves_nothing_behind():
    """Cancel a waiting retry, an available and a leased queue timer, a due webhook, a fired
    and an armed timer in one command: one CANCELLED event each in ref order with the next
    revision, nothing due, queued or leased any more, no retry or lease expiry in the wheel."""
    s = _invariants_base()
    r = s.cancel(100, [("default", i) for i in ("retry", "avail", "leased", "due", "fired", "armed")])
    assert [(e.seq, e.kind.name, e.timer_id, e.at_ms, e.revision, e.state.name, e.fire_at, e.fire_id)
            for e in r.events] == [
        (37, "CANCELLED", "retry", 100, 6, "CANCELLED", 50, None), (38, "CANCELLED", "avail", 100, 5, "CANCELLED", 50, None),
        (39, "CANCELLED", "leased", 100, 6, "CANCELLED", 40, None), (40, "CANCELLED", "due", 100, 5, "CANCELLED", 50, None),
        (41, "CANCELLED", "fired", 100, 4, "CANCELLED", 50, None),
        (42, "CANCELLED", "armed", 100, 3, "CANCELLED", 5000, None)]
    assert all(e.tenant == "default" for e in r.events) and s.seq == 42
    assert [(v.id, v.state.name, v.settled_at, v.next_attempt_at) for v in r.timers] == [
        (i, "CANCELLED", 100, None) for i in ("retry", "avail", "leased", "due", "fired", "armed")]
    assert (s.deliveries_due(), s.queue_depth("default", "jobs"), tuple(s.usage("default"))) == ([], 0, (2, 0))
    assert s.lease(100, "default", "jobs", 5, 5000).leases == ()
    assert s.live_leases("default", [("leased", "35")]) == []
    # the snapshot keeps no live lease, wait or availability for a cancelled timer
    from minoots.kernel.snapshot import decode
    table = decode(s.to_bytes())[0]
    assert {table.ids[o]: (r.lease, r.waiting, r.avail) for o, r in table.deliv.items()} == {
        i: ("", False, 0) for i in ("due", "retry", "avail", "leased")}
    s.check_invariants()
    assert s.next_deadline() == 3000 and s.tick(900).events == ()
    assert [e.timer_id for e in s.tick(5070).events] == ["every", "every"]


def test_a_restored_state_with_every_kind_of_record_goes_on_exactly_like_the_original():
    """Restore rebuilds the derived parts (wheel with retries, lease expiries, purges and the
    armed; the due set; the queues in avail order): the same commands then give the same
    events and bytes on both, and each passes check_invariants."""
    a = _invariants_base()
    b = State.from_bytes(a.to_bytes())
    b.check_invariants()
    assert b.deliveries_due() == a.deliveries_due() == [("default", "due")]
    assert b.queue_depth("default", "jobs") == a.queue_depth("default", "jobs") == 1
    assert b.next_deadline() == a.next_deadline() == 900

    def run(s: State) -> list:
        out = [s.lease(100, "default", "jobs", 5, 1000).events, s.tick(900).events, s.deliveries_due()]
        out.append(s.tick(1100).events)                   # the new lease expires: available again
        out.append(s.tick(5070).events)                   # the first lease expires; "every" fires
        out.append(s.lease(5100, "default", "jobs", 5, 1000).leases)
        out.append(s.tick(90_000_000).events)             # purges after a day
        out.append((s.to_bytes(), s.seq, len(s), s.counts()))
        s.check_invariants()
        return out

    assert run(a) == run(b)
