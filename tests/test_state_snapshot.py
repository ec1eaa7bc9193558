"""Snapshot codec: round trips, identical behaviour after restore, and every way
bad bytes must turn into SnapshotError (never another exception)."""

import hashlib
import re
import struct
import zlib
from array import array

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
        _refused(data, needle)
    for data in (b"", b"MNT", b"\x00" * 3, MAGIC, b"junk"):
        with pytest.raises(SnapshotError):
            State.from_bytes(data)
    with pytest.raises(SnapshotError) as info:
        State.from_bytes("not bytes")
    assert str(info.value) == "snapshot must be bytes, not str"
    _refused(reseal(body, version=3), "unsupported snapshot format version 3 (this build reads 1, 2)")
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
        assert str(info.value) == "snapshot is inconsistent: an idempotency key appears twice in one tenant"
    # An id twice in a tenant.
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 1), TimerSpec("b", T0 + 2)])
    s._table.ids[1] = "a"
    with pytest.raises(SnapshotError) as info:
        State.from_bytes(s.to_bytes())
    assert str(info.value) == "snapshot is inconsistent: a timer id appears twice in one tenant"
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
    ("wheel", lambda s, t: s._wheel.cancel(1), "the wheel holds exactly the armed timers at their fire_at, the "
                                                 "waiting retries at next_at and the terminal ones at purge_at$"),
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


def _recurring_base() -> State:
    """A recurring ack_required timer fired twice without an ack ("r", ordinal 0: ARMED with two
    pending fires, overlap allow_all), a paused recurring one ("p", 1) and a plain one ("x", 2)."""
    s = State()
    s.create(T0, [TimerSpec("r", T0 + 1000, every_ms=1000, ack_required=True, overlap="allow_all"),
                  TimerSpec("p", T0 + 1000, every_ms=1000), TimerSpec("x", T0 + 90_000)])
    s.pause(T0 + 1, "default", "p")
    s.tick(T0 + 1000)
    s.tick(T0 + 2000)
    return s


def _set_recur(o, **kw):
    return lambda s, t: t.recur.__setitem__(o, t.recur[o]._replace(**kw))


RECURRENCE_BREAKS = [
    ("pending out of order", lambda s, t: _set_recur(0, pending=tuple(reversed(t.recur[0].pending)))(s, t),
     "pending fires of ordinal 0 are increasing seqs"),
    ("pending fire 0", _set_recur(0, pending=(0,)), "pending fires of ordinal 0 are increasing seqs"),
    ("pending fire not emitted yet", lambda s, t: _set_recur(0, pending=(s.seq + 1,))(s, t),
     "pending fires of ordinal 0 are increasing seqs"),
    ("pending without ack_required", lambda s, t: t.flags.__setitem__(0, 0),
     r"only an ack_required timer \(0\) has fires awaiting acks"),
    ("paused while armed", _set_recur(0, paused=True), "paused ordinal 0 is scheduled \\(or ended\\)"),
    ("recurrence state of a plain timer", lambda s, t: t.recur.__setitem__(2, t.recur[1]),
     "recurrence state of ordinal 2 is a recurring timer's"),
    ("default recurrence state stored", lambda s, t: t.recur.__setitem__(0, type(t.recur[0])()),
     "recurrence state of ordinal 0 is a recurring timer's"),
    ("fired recurring timer awaiting nothing",
     lambda s, t: (t.state.__setitem__(0, TimerState.FIRED), s._counts.__setitem__(TimerState.FIRED, 1),
                   s._counts.__setitem__(TimerState.ARMED, 1), s._wheel.cancel(0),
                   t.recur.__setitem__(0, t.recur[0]._replace(pending=()))),
     r"a fired recurring timer \(0\) awaits acks"),
]


@pytest.mark.parametrize("what, corrupt, message", RECURRENCE_BREAKS, ids=[b[0] for b in RECURRENCE_BREAKS])
def test_check_invariants_catches_each_recurrence_corruption(what, corrupt, message):
    s = _recurring_base()
    assert len(s._table.recur[0].pending) == 2 and s._table.recur[1].paused and 2 not in s._table.recur
    s.check_invariants()
    corrupt(s, s._table)
    with pytest.raises(AssertionError, match="^kernel invariant broken: " + message + "$"):
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
# ---- checked decoding, one rule at a time (fourth mutation pass) ----------------------
# Each case writes a snapshot with the real encoder from a table changed in one way the
# decoder must refuse, and checks the refusal's own message: a random flip may be caught
# by any later check, these pin each check down.


def _tampered(s, change) -> bytes:
    """The snapshot of `s` after `change(table)`: encode writes whatever the table holds."""
    change(s._table)
    return s.to_bytes()


# Every refusal an operator may read starts by saying what it is about.
_REFUSAL = re.compile(r"(snapshot |not a MINOOTS kernel snapshot \(bad magic\)$|unsupported snapshot format version )")


def _refused(data: bytes, needle: str) -> None:
    with pytest.raises(SnapshotError) as info:
        State.from_bytes(data)
    assert needle in str(info.value), str(info.value)
    assert _REFUSAL.match(str(info.value)), str(info.value)


def _two_armed() -> State:
    s = State()
    s.create(T0, [TimerSpec("aa", T0 + 1), TimerSpec("ab", T0 + 2)])
    return s


def test_a_state_byte_just_above_the_highest_state_is_refused_in_both_formats():
    top = max(TimerState)
    v1 = _tampered(_two_armed(), lambda t: t.state.__setitem__(0, top + 1))
    _refused(v1, "holds an unknown state")
    v2 = busy_state()
    v2.create(T0 + 29, [TimerSpec("r", T0 + 100_000, every_ms=60_000)])   # a recurring timer: format 2
    data = _tampered(v2, lambda t: t.state.__setitem__(0, top + 1))
    assert data[8] == 2
    _refused(data, "holds an unknown state")
    # The control: the highest state itself is known (a delivering timer needs its record,
    # so it is refused later and for that reason).
    _refused(_tampered(_two_armed(), lambda t: t.state.__setitem__(0, top)), "without a delivery record")


def _recurring() -> State:
    """Format 2: a plain timer "p", a recurring one "r", a settled one "s"."""
    s = State()
    s.create(T0, [TimerSpec("p", T0 + 100_000), TimerSpec("r", T0 + 60_000, every_ms=60_000),
                  TimerSpec("s", T0 + 1, payload=b"x")])
    s.tick(T0 + 2)
    return s


def _o(s, tid, tenant=0):
    return s._table.by_id[tenant][tid]


def _set_column(col, o, v):
    return lambda t: getattr(t, col).__setitem__(o, v)


def _sched(**kw):
    """Change the schedule of _recurring's "r" (ordinal 1)."""
    return lambda t: t.schedules.__setitem__(1, t.schedules[1]._replace(**kw))


_MAX_TIME = 253402300799999


def test_every_column_and_block_rule_of_the_decoder_refuses_with_its_own_message():
    from minoots.kernel.table import FLAGS_KNOWN
    from minoots.kernel.validate import MAX_ID_LEN, MAX_LABELS, MAX_TENANT_LEN
    from minoots.kernel.schedule import MAX_OCCURRENCES, MIN_EVERY_MS
    from minoots.kernel.table import FLAG_KEY_IS_ID, Extra

    def plain():
        return _two_armed()
    rec = _recurring
    cases = [
        (plain, lambda t: t.tenant_names.__setitem__(0, "x" * (MAX_TENANT_LEN + 1)), "tenant name"),
        (plain, lambda t: t.tenant_names.__setitem__(0, ""), "tenant name"),
        (plain, lambda t: t.tenant_names.__setitem__(0, "a b"), "tenant name"),
        (plain, _set_column("tenant", 1, 1), "names a tenant that is not in the table"),
        (busy_state, _set_column("tenant", 0, 2), "names a tenant that is not in the table"),
        (plain, _set_column("flags", 0, FLAGS_KNOWN + 1), "holds unknown flags"),
        (plain, _set_column("fire_at", 0, _MAX_TIME + 1), "column fire_at has a value outside"),
        (plain, _set_column("fire_at", 1, -1), "column fire_at has a value outside"),
        (plain, lambda t: t.ids.__setitem__(0, ""), "an id that is empty"),
        (plain, lambda t: t.ids.__setitem__(1, ""), "an id that is empty"),
        (plain, lambda t: t.ids.__setitem__(0, "a" * (MAX_ID_LEN + 1)), "an id that is empty or longer"),
        (plain, lambda t: t.ids.__setitem__(0, "a@b"), "an id that is empty or longer"),
        (plain, lambda t: t.extra.__setitem__(0, Extra("", b"", tuple((f"k{i}", "") for i in range(MAX_LABELS + 1)), b"", None)),
         "label counts has a value outside"),
        (busy_state, _set_column("settled_at", 0, _MAX_TIME + 1), "snapshot column settled_at has a value outside"),
        (busy_state, _set_column("settled_at", 0, -1), "snapshot column settled_at has a value outside"),
        (rec, _set_column("purge_at", 2, _MAX_TIME + 1), "column purge_at has a value outside"),
        (rec, _set_column("purge_at", 2, -5), "column purge_at has a value outside"),
        (rec, _set_column("purge_at", 0, T0), "gives a deadline to a timer that is not terminal"),
        (rec, _sched(every_ms=MIN_EVERY_MS - 1), "schedule of timer 1 is invalid"),
        (rec, _sched(every_ms=_MAX_TIME + 1), "schedule of timer 1 is invalid"),
        (rec, _sched(every_ms=0), "schedule of timer 1 is invalid"),
        (rec, _sched(cron="* * * * *"), "schedule of timer 1 is invalid"),
        (rec, _sched(every_ms=0, cron="* * * * *"), "schedule of timer 1 is invalid"),
        (rec, _sched(until=-2), "schedule of timer 1 is invalid"),
        (rec, _sched(until=_MAX_TIME + 1), "schedule of timer 1 is invalid"),
        (rec, _sched(max_count=MAX_OCCURRENCES + 1), "schedule of timer 1 is invalid"),
        (rec, _sched(max_count=-1), "schedule of timer 1 is invalid"),
        (rec, _sched(every_ms=0, cron="61 * * * *", tz="UTC"), "bad cron or time zone"),
        (rec, lambda t: t.schedules.__setitem__(3, t.schedules[1]), "schedule ordinals are not increasing"),
        (rec, lambda t: t.extra.__setitem__(0, Extra("", b"", (), b"", "p")), None),   # canonical: key == id
        (rec, lambda t: (t.extra.__setitem__(0, Extra("", b"", (), b"", "k")),
                             t.flags.__setitem__(0, t.flags[0] | FLAG_KEY_IS_ID)),
         "an idempotency key besides its id"),
        (rec, lambda t: t.extra.__setitem__(0, Extra("", b"", (), b"", "")), "as having extras but all are empty"),
    ]
    for make, change, needle in cases:
        data = _tampered(make(), change)
        if needle is None:      # a key equal to the id is stored the canonical way: a flag, no extras
            back = State.from_bytes(data)
            back.check_invariants()
            assert back._table.extra[0] is None and back._table.flags[0] & FLAG_KEY_IS_ID
            assert back.get("default", "p").idempotency_key == "p"
        else:
            _refused(data, needle)
    # The controls: each bound itself loads.
    for make, change in [
        (plain, lambda t: t.tenant_names.__setitem__(0, "x" * MAX_TENANT_LEN)),
        (plain, _set_column("flags", 0, FLAGS_KNOWN)),
        (plain, _set_column("fire_at", 0, _MAX_TIME)),
        (plain, _set_column("fire_at", 1, 0)),
        (plain, lambda t: (t.fire_at.__setitem__(0, 0), t.fire_at.__setitem__(1, _MAX_TIME))),   # the exact check's bounds
        (plain, lambda t: t.ids.__setitem__(0, "a" * MAX_ID_LEN)),
        # With an occurrence id ("<id>@<fire id>") every id takes the exact check: MAX_ID_LEN passes it.
        (plain, lambda t: (t.ids.__setitem__(0, "a" * MAX_ID_LEN), t.ids.__setitem__(1, "ab@5"))),
        (plain, lambda t: t.extra.__setitem__(0, Extra("", b"", tuple((f"k{i}", "") for i in range(MAX_LABELS)), b"", None))),
        (rec, _sched(every_ms=MIN_EVERY_MS)),
        (rec, _sched(every_ms=_MAX_TIME)),
        (rec, _sched(until=_MAX_TIME)),
        (rec, _sched(until=0)),
        (rec, _sched(max_count=MAX_OCCURRENCES)),
        (rec, _sched(every_ms=0, cron="* * * * *", tz="UTC")),
        (rec, _set_column("purge_at", 2, _MAX_TIME)),
        (rec, _set_column("purge_at", 2, 0)),
    ]:
        data = _tampered(make(), change)
        State.from_bytes(data)


def _with_deliveries() -> State:
    """Format 2 with delivery records: a webhook timer "w" (ordinal 0), a queue timer "q" (1)."""
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
    s = State()
    s.create(T0, [TimerSpec("w", T0 + 10, delivery=Delivery(Webhook("https://example.com/h"))),
                  TimerSpec("q", T0 + 10, delivery=Delivery(None, DeliveryPolicy(), "jobs"))])
    return s


def _deliv(o=0, **kw):
    return lambda t: t.deliv.__setitem__(o, t.deliv[o]._replace(**kw))


def _spec(o=0, **kw):
    return lambda t: t.deliv.__setitem__(o, t.deliv[o]._replace(spec=t.deliv[o].spec._replace(**kw)))


def _paused_recurring() -> State:
    """_recurring with "r" (ordinal 1) paused: a recurrence block (FLAG_RECUR)."""
    s = _recurring()
    s.pause(T0 + 3, "default", "r")
    return s


def _recur(**kw):
    return lambda t: t.recur.__setitem__(1, t.recur[1]._replace(**kw))


def test_every_delivery_and_recurrence_rule_of_the_decoder_refuses_with_its_own_message():
    from minoots.kernel.recurrence import CATCH_UP, MAX_FLEX_MS, MAX_PENDING, OVERLAP, Recur
    d, r = _with_deliveries, _paused_recurring
    armed_r = _recurring   # "r" armed, no recurrence block yet

    def armed_recur(**kw):
        return lambda t: t.recur.__setitem__(1, Recur(**kw))

    def ack(change):
        return lambda t: (t.flags.__setitem__(1, t.flags[1] | 1), change(t))

    cases = [
        (d, _spec(endpoint=5), "delivery record has the wrong fields"),
        (d, _spec(1, endpoint="ep"), "delivery record has the wrong fields"),     # a queue timer with an endpoint
        (d, _deliv(step=-1), "delivery record has the wrong fields"),
        (d, lambda t: t.deliv.__setitem__(2, t.deliv[0]), "delivery record names timer 2 wrongly"),
        (d, _deliv(waiting=1), "delivery record of timer 0 waits wrongly"),
        (d, _deliv(waiting=True, next_at=T0), "delivery record of timer 0 waits wrongly"),   # ARMED, not DELIVERING
        (d, lambda t: (t.state.__setitem__(0, 7), _deliv(waiting=True, next_at=_MAX_TIME + 1)(t)),
         "delivery record of timer 0 waits wrongly"),
        (d, lambda t: (t.state.__setitem__(0, 7), _deliv(waiting=True, next_at=-1)(t)),
         "delivery record of timer 0 waits wrongly"),
        (d, _spec(webhook=None), "delivery record of timer 0 is inconsistent"),
        (d, _spec(queue="jobs"), "delivery record of timer 0 is inconsistent"),
        (d, _deliv(1, lease=None), "delivery record of timer 1 is inconsistent"),
        (d, _deliv(1, avail="0"), "delivery record of timer 1 is inconsistent"),
        (d, lambda t: (t.state.__setitem__(0, 7), t.state.__setitem__(1, 7), t.deliv.pop(0)),
         "has 1 delivering timers without a delivery record"),
        (r, _recur(paused=2), "recurrence of timer 1 is invalid"),
        (r, _recur(catch_up=len(CATCH_UP)), "recurrence of timer 1 is invalid"),
        (r, _recur(overlap=len(OVERLAP)), "recurrence of timer 1 is invalid"),
        (r, _recur(triggered=-1), "recurrence of timer 1 is invalid"),
        (r, _recur(skipped=-1), "recurrence of timer 1 is invalid"),
        (r, _recur(flex_ms=MAX_FLEX_MS + 1), "recurrence of timer 1 is invalid"),
        (r, _recur(flex_ms=-1), "recurrence of timer 1 is invalid"),
        (r, _recur(seed=-1), "recurrence of timer 1 is invalid"),
        (r, _recur(nominal=-2), "recurrence of timer 1 is invalid"),
        (r, _recur(nominal=_MAX_TIME + 1), "recurrence of timer 1 is invalid"),
        (r, ack(_recur(buffered=2)), "recurrence of timer 1 is invalid"),
        (r, _recur(buffered=True), "recurrence of timer 1 is invalid"),           # buffered without ack_required
        (r, _recur(pending=(5,)), "recurrence of timer 1 is invalid"),            # pending without ack_required
        (r, ack(_recur(pending=(5, 3))), "recurrence of timer 1 is invalid"),
        (r, ack(_recur(pending=(3, 3))), "recurrence of timer 1 is invalid"),
        (r, ack(_recur(pending=(0, 3))), "recurrence of timer 1 is invalid"),
        (r, ack(_recur(pending=tuple(range(1, MAX_PENDING + 2)))), "too many pending fires"),
        (r, lambda t: t.recur.__setitem__(0, t.recur[1]), "recurrence of timer 0 is invalid"),   # not recurring
        (r, lambda t: t.recur.__setitem__(1, Recur()), "holds only defaults"),
        (armed_r, armed_recur(paused=True), "recurrence of timer 1 is invalid"),      # paused but ARMED
        (armed_r, armed_recur(flex_ms=5), "recurrence of timer 1 is invalid"),        # a window, no nominal, armed
    ]
    for make, change, needle in cases:
        _refused(_tampered(make(), change), needle)
    # The controls: each bound itself loads.
    for make, change in [
        (d, _deliv(step=1)),
        (d, _spec(endpoint="ep")),
        (d, lambda t: (t.state.__setitem__(0, 7), _deliv(waiting=True, next_at=_MAX_TIME)(t))),
        (d, lambda t: (t.state.__setitem__(0, 7), _deliv(waiting=True, next_at=0)(t))),
        (r, _recur(catch_up=len(CATCH_UP) - 1, overlap=len(OVERLAP) - 1, flex_ms=MAX_FLEX_MS, nominal=_MAX_TIME,
                   triggered=0, skipped=0, seed=0)),
        (r, _recur(nominal=0)),
        (r, ack(_recur(pending=tuple(range(1, MAX_PENDING + 1)), buffered=True))),
        (armed_r, armed_recur(flex_ms=5, nominal=T0)),
        (armed_r, armed_recur(triggered=1)),
    ]:
        State.from_bytes(_tampered(make(), change))


def _with_a_free_row() -> State:
    """Format 2 with a free row: _recurring after "s" (ordinal 2) was purged."""
    from minoots.kernel.retention import DEFAULT_RETENTION_MS
    s = _recurring()
    s.tick(T0 + 2 + DEFAULT_RETENTION_MS + 1)
    assert s._table.state[2] == 0 and s._table.ids[2] == ""
    return s


def test_a_free_row_holds_nothing_and_nothing_refers_to_it():
    from minoots.kernel.delivery import Delivery, DeliveryRecord, Webhook
    from minoots.kernel.table import Extra
    f = _with_a_free_row
    cases = [
        (lambda t: (t.tenant_names.append("other"), t.tenant.__setitem__(2, 1)), "free row holds a tenant, an id or extras"),
        (lambda t: t.ids.__setitem__(2, "x"), "free row holds a tenant, an id or extras"),
        (lambda t: t.extra.__setitem__(2, b"payload"), "free row holds a tenant, an id or extras"),
        (lambda t: t.extra.__setitem__(2, Extra("n", b"", (), b"", None)), "free row holds a tenant, an id or extras"),
        (lambda t: t.ids.__setitem__(0, ""), "an id that is empty"),
        (lambda t: t.schedules.__setitem__(2, t.schedules[1]), "schedule of timer 2 is invalid"),
        (lambda t: t.deliv.__setitem__(2, DeliveryRecord(Delivery(Webhook("https://example.com/h")))),
         "delivery block is empty or names a free row"),
    ]
    for change, needle in cases:
        _refused(_tampered(f(), change), needle)
    # The control: the free row as it is loads, stays free, and the state re-encodes the same.
    data = f().to_bytes()
    back = State.from_bytes(data)
    assert back.to_bytes() == data and back._table.state[2] == 0
    back.check_invariants()


def test_header_and_structure_refusals_name_what_is_wrong():
    from minoots.kernel.snapshot import FLAG_OCC, VERSION_2
    _refused(MAGIC[:5], "snapshot truncated: 5 bytes, the header alone is 24")
    _refused(b"MNTX", "bad magic")
    _refused(b"", "snapshot truncated: 0 bytes")
    v2 = _recurring().to_bytes()
    body = v2[HEADER.size:]
    assert v2[8] == VERSION_2
    _refused(reseal(body, version=VERSION_2, flags=FLAG_OCC * 2), "header flags 0x20 are unknown for format version 2")
    _refused(reseal(body, version=VERSION_2, flags=0x100), "header flags 0x100 are unknown")
    _refused(reseal(_body_of(_two_armed()), flags=FLAG_OCC), "header flags 0x10 are unknown for format version 1")
    _refused(v2 + b"\x00", "snapshot body is")
    # Counters.
    good = _body_of(_two_armed())
    _refused(reseal(bytes(good[:8] + struct.pack("<q", _MAX_TIME + 1) + good[16:])), "last_tick 253402300800000 is outside")
    State.from_bytes(reseal(bytes(good[:8] + struct.pack("<q", _MAX_TIME) + good[16:])))   # the bound itself
    _refused(reseal(bytes(struct.pack("<q", -1) + good[8:])), "snapshot seq -1 is negative")
    _refused(reseal(bytes(good[:10])), "snapshot truncated in counters")
    # A name that is not UTF-8 (the decoder's belt-and-braces wrapper names the codec's error).
    busy = _body_of(busy_state())
    at = busy.index("☃".encode())
    busy[at + 2] = 0x41
    _refused(reseal(bytes(busy)), "snapshot is malformed: 'utf-8' codec can't decode")
    _refused(reseal(bytes(good[:28] + struct.pack("<Q", 3) + good[36:])), "snapshot has 3 extras for 2 timers")
    # Blocks: a length that does not fit, an array of the wrong size, trailing bytes.
    _refused(reseal(bytes(good) + b"\x00"), "snapshot has 1 unexpected trailing bytes")
    assert good[36:44] == struct.pack("<Q", 4)    # the tenant name lengths: one u32
    _refused(reseal(bytes(good[:36]) + struct.pack("<Q", 8) + bytes(good[44:])),
             "snapshot tenant names lengths holds 8 bytes, expected 4")
    _refused(reseal(bytes(good[:36]) + struct.pack("<Q", 1 << 40) + bytes(good[44:])),
             "snapshot truncated in tenant names lengths")


def test_extra_ordinals_and_lengths_must_describe_the_table():
    s = State()
    s.create(T0, [TimerSpec("aa", T0 + 1, payload=b"p0"), TimerSpec("ab", T0 + 2, payload=b"p1"),
                  TimerSpec("ac", T0 + 3)])
    good = _body_of(s)
    ords = struct.pack("<Q", 16) + struct.pack("<qq", 0, 1)
    at = good.find(ords)
    assert at > 0
    for bad in ((1, 0), (0, 0), (0, 3), (-1, 0)):
        body = good[:at] + struct.pack("<Q", 16) + struct.pack("<qq", *bad) + good[at + len(ords):]
        _refused(reseal(bytes(body)), "extra ordinals are not increasing within the table")
    # The last timer may hold the last extra: ordinals (0, 2) load, and move the payload.
    body = good[:at] + struct.pack("<Q", 16) + struct.pack("<qq", 0, 2) + good[at + len(ords):]
    r = State.from_bytes(reseal(bytes(body)))
    assert [t.payload for t in r.timers()] == [b"p0", b"", b"p1"]
    # Payload lengths that do not add up to the blob.
    lens = struct.pack("<Q", 8) + struct.pack("<II", 2, 2) + struct.pack("<Q", 4) + b"p0p1"
    at = good.find(lens)
    assert at > 0
    body = good[:at] + struct.pack("<Q", 8) + struct.pack("<II", 2, 1) + good[at + 16:]
    _refused(reseal(bytes(body)), "payloads lengths do not add up to the blob size")


def test_an_empty_list_with_a_one_byte_blob_and_extras_on_every_timer():
    good = _body_of(_two_armed())             # no extras: the body ends with 13 empty blocks
    assert good.endswith(bytes(8 * 13))
    _refused(reseal(bytes(good[:-8]) + struct.pack("<Q", 1) + b"x"), "label values lengths do not add up")
    # Every timer with extras (as many extras as timers) loads.
    s = State()
    s.create(T0, [TimerSpec("aa", T0 + 1, payload=b"p0"), TimerSpec("ab", T0 + 2, name="n")])
    assert State.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes()


def test_encode_and_encode_parts_agree_and_default_to_what_version_1_can_say():
    from minoots.kernel.snapshot import encode, encode_parts
    s = busy_state()
    t, seq, last = s._table, s.seq, s.last_tick
    assert b"".join(encode_parts(t, seq, last)) == encode(t, seq, last) == s.to_bytes()
    assert encode(t, seq, last)[8] == VERSION
    assert b"".join(encode_parts(t, seq, last, False)) == encode(t, seq, last, False) != s.to_bytes()


def test_a_recurrence_block_must_name_increasing_ordinals_and_at_least_one():
    from minoots.kernel.snapshot import FLAG_RECUR, VERSION_2
    data = _recurring().to_bytes()          # format 2, no recurrence block
    flags = HEADER.unpack(data[:HEADER.size])[2]
    assert not flags & FLAG_RECUR
    empty = data[HEADER.size:] + bytes(8 * 12)   # twelve empty blocks
    _refused(reseal(empty, version=VERSION_2, flags=flags | FLAG_RECUR), "recurrence ordinals are empty or not increasing")
    # Two recurring timers, their recurrence rows swapped in the ordinals block.
    s = State()
    s.create(T0, [TimerSpec("r0", T0 + 60_000, every_ms=60_000), TimerSpec("r1", T0 + 60_000, every_ms=60_000)])
    s.pause(T0 + 1, "default", "r0")
    s.pause(T0 + 1, "default", "r1")
    body = _body_of(s)
    ords = struct.pack("<Qqq", 16, 0, 1)
    at = body.rfind(ords)             # the recurrence block comes after the schedule block
    assert at > body.find(ords) > 0
    for bad in ((1, 0), (1, 1)):
        b = body[:at] + struct.pack("<Qqq", 16, *bad) + body[at + len(ords):]
        _refused(reseal(bytes(b), version=VERSION_2, flags=FLAG_RECUR), "recurrence ordinals are empty or not increasing")
    assert State.from_bytes(reseal(bytes(body), version=VERSION_2, flags=FLAG_RECUR)) == s


def test_snapshot_survivors_of_the_eighth_mutation_pass():
    """kernel/snapshot.py, shard 2 of 4 (ops/mutation.py): what no test had pinned."""
    import base64
    import json
    from minoots.kernel import snapshot as snap
    from minoots.kernel.table import FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID, Extra

    # L701: a key equal to the id, written out as a key, becomes the flag beside the others.
    s = State()
    s.create(T0, [TimerSpec("p", T0 + 100, ack_required=True)])
    s._table.extra[0] = Extra("", b"", (), b"", "p")
    back = State.from_bytes(s.to_bytes())
    assert back._table.flags[0] == FLAG_ACK_REQUIRED | FLAG_KEY_IS_ID
    assert back.get("default", "p").ack_required and back.get("default", "p").idempotency_key == "p"

    # L568: exactly a header and nothing else is a header with an empty body, not a truncated header.
    _refused(reseal(b""), "snapshot truncated in counters")

    # L632: the id refusal's whole text.
    s = State()
    s.create(T0, [TimerSpec("aa", T0 + 1), TimerSpec("ab", T0 + 2)])
    _refused(_tampered(s, lambda t: t.ids.__setitem__(0, "")),
             "snapshot holds an id that is empty or longer than 128 characters (an occurrence timer's "
             "<id>@<fire id> aside)")

    # L481, L492: a list of strings or of bytes whose lengths do not match its blob.
    def reader(*blocks):
        return snap._Reader(memoryview(b"".join(snap._LEN.pack(len(b)) + b for b in blocks)))
    ones = array("I", [1, 1]).tobytes()
    zeros = array("I", [0, 0]).tobytes()
    assert snap._utf8_list(reader(zeros, b""), 2, "names") == ["", ""]
    assert snap._bytes_list(reader(zeros, b""), 2, "payloads") == [b"", b""]
    for read, blocks in ((snap._utf8_list, (ones, b"")), (snap._bytes_list, (zeros, b"x")),
                         (snap._bytes_list, (ones, b""))):
        with pytest.raises(SnapshotError):
            read(reader(*blocks), 2, "names")

    # L399, L410: a delivery row with a step field of 0, an attempt body that is not strict base64.
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
    s = State()
    s.create(T0, [TimerSpec("w", T0, delivery=Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=3)))])
    s.tick(T0)
    s.delivery_attempt(T0 + 1, "default", "w", s.get("default", "w").fire_id, 1, 503, 5, "http_status", b"no",
                       T0 + 1_000)
    blob = snap._encode_deliv(s._table.deliv)
    states = s._table.state.tobytes()
    assert snap._decode_deliv(blob, 1, states) == s._table.deliv
    row = json.loads(blob)[0]
    assert len(row) == 11 and row[7][0][6] == base64.b64encode(b"no").decode()
    for bad in (row + [None, 0],                                                # a step field of 0
                row[:7] + [[row[7][0][:6] + ["bm8=!"] + row[7][0][7:]]] + row[8:]):  # a stray "!"
        with pytest.raises(SnapshotError) as info:
            snap._decode_deliv(json.dumps([bad]).encode(), 1, states)
        assert str(info.value).startswith("snapshot delivery record"), str(info.value)


def test_a_bad_id_character_and_a_schedule_with_two_deliveries_are_refused_by_their_whole_text():
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, DeliveryRecord, Webhook
    s = State()
    s.create(T0, [TimerSpec("aa", T0 + 5), TimerSpec("ab", T0 + 6)])
    _refused(_tampered(s, lambda t: t.ids.__setitem__(0, "a!b")),
             "snapshot ids are not newline-terminated [A-Za-z0-9._:~-] strings")
    hook = Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2))
    s = State()
    s.create(T0, [TimerSpec("occ", T0 + 60_000, every_ms=60_000, delivery=hook), TimerSpec("aa", T0 + 5)])
    assert list(s._table.occ) == [0]
    _refused(_tampered(s, lambda t: t.deliv.__setitem__(0, DeliveryRecord(hook))),
             "snapshot gives a schedule both a delivery record and a schedule delivery")
