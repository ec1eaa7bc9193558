"""State.capture(): a cheap, consistent copy whose to_bytes() equals the state's
to_bytes() at capture time, however the state changes afterwards and in
whichever thread the encoding runs. Plus the restore paths of State.from_bytes
(all armed / some armed / none armed) and the decode checks it relies on."""
from __future__ import annotations

import struct
import sys
import threading
import zlib

import pytest

from minoots.kernel import MAX_ID_LEN, MAX_TIME, SnapshotCapture, SnapshotError, State, TimerSpec, TimerState
from minoots.kernel.snapshot import MAGIC, VERSION

from support import T0, busy_state

HEADER = struct.Struct("<8sHHQI")


def churn(s: State, rounds: int, start: int = T0 + 100, tag: str = "r") -> None:
    """Heavy mutation of every kind: creates (new tenants, extras), ticks, cancels,
    reschedules and acks, so every column, list and counter changes."""
    now = start
    for r in range(rounds):
        now += 50
        s.create(now, [
            TimerSpec(f"{tag}{r}-{i}", now + (i * 13) % 200, tenant=f"t{(r + i) % 4}",
                      ack_required=i % 3 == 0, payload=b"x" * (i % 5),
                      labels={"k": str(i)} if i % 7 == 0 else None,
                      idempotency_key=f"idem-{tag}{r}-{i}" if i % 11 == 0 else None)
            for i in range(40)
        ])
        fired = s.tick(now + 60).fired
        for t in fired[:10]:
            if t.state is TimerState.FIRED:
                s.ack(now + 61, t.tenant, t.id, t.fire_id)
        live = [(t.tenant, t.id) for t in s.timers(f"t{r % 4}") if t.state is TimerState.ARMED][:5]
        if live:
            s.cancel(now + 62, live[:3])
            for tenant, timer_id in live[3:]:
                s.reschedule(now + 63, tenant, timer_id, extend_by=17)


def test_capture_of_empty_state():
    s = State()
    c = s.capture()
    assert isinstance(c, SnapshotCapture)
    assert len(c) == 0 and (c.seq, c.last_tick) == (0, 0)
    assert c.to_bytes() == s.to_bytes()
    assert c.to_bytes()[:8] == MAGIC
    s.create(T0, [TimerSpec("a", T0 + 1)])
    assert c.to_bytes() == State().to_bytes() != s.to_bytes()


def test_capture_then_heavy_mutation_keeps_the_captured_bytes():
    s = busy_state()
    want = s.to_bytes()
    c = s.capture()
    assert c.to_bytes() == want
    churn(s, 30)
    after = s.to_bytes()
    assert after != want
    assert c.to_bytes() == want                # unaffected by everything since
    assert c.to_bytes() == want                # and repeatable
    assert State.from_bytes(c.to_bytes()) == busy_state()
    assert s.capture().to_bytes() == after
    assert repr(c).startswith("<SnapshotCapture timers=6 ")


def test_captures_at_several_points_are_independent():
    s = State()
    snaps = []
    for r in range(6):
        churn(s, 3, start=T0 + r * 10_000, tag=f"p{r}.")
        snaps.append((s.capture(), s.to_bytes()))
    for c, want in snaps:
        assert c.to_bytes() == want
    assert len({want for _, want in snaps}) == len(snaps)


def test_capture_survives_the_state_being_dropped():
    s = busy_state()
    want = s.to_bytes()
    c = s.capture()
    del s
    assert c.to_bytes() == want


def _big_state(n: int) -> State:
    s = State()
    for b in range(0, n, 5_000):
        s.create(T0, [TimerSpec(f"t{i}", T0 + (i * 7919) % 3_600_000, tenant=f"ten{i % 3}",
                                payload=b"p" if i % 10 == 0 else b"") for i in range(b, b + 5_000)])
    s.tick(T0 + 600_000)
    return s


def test_to_bytes_in_a_thread_while_the_state_mutates():
    s = _big_state(40_000)
    want = s.to_bytes()
    c = s.capture()
    results: list[bytes] = []
    errors: list[BaseException] = []

    def encode() -> None:
        try:
            for _ in range(3):
                results.append(c.to_bytes())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)   # interleave the two threads as finely as possible
    try:
        th = threading.Thread(target=encode)
        th.start()
        now, mutations = T0 + 600_000, 0
        while th.is_alive() or mutations < 20:
            now += 100
            s.create(now, [TimerSpec(f"m{mutations}-{i}", now + 50, ack_required=i % 2 == 0,
                                     tenant=f"ten{i % 4}") for i in range(20)])
            for t in s.tick(now).fired[:5]:
                if t.state is TimerState.FIRED:
                    s.ack(now, t.tenant, t.id, t.fire_id)
            s.cancel(now, [("ten0", f"m{mutations}-0")])
            mutations += 1
        th.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors
    assert results == [want] * 3
    assert s.to_bytes() != want
    assert mutations >= 20


def test_capture_at_scale_is_a_copy_not_a_view():
    """The column arrays and lists of a capture are new objects."""
    s = _big_state(10_000)
    c = s.capture()
    t = s._table
    for name in ("fire_at", "state", "revision", "ids", "extra", "tenant_names"):
        assert getattr(c, name) == getattr(t, name)
        assert getattr(c, name) is not getattr(t, name)


# ---- restore paths ---------------------------------------------------------------


def _restored(s: State) -> State:
    b = s.to_bytes()
    r = State.from_bytes(b)
    r.check_invariants()
    assert r.to_bytes() == b
    assert r.counts() == s.counts()
    assert r.next_deadline() == s.next_deadline()
    return r


def test_restore_all_armed_most_armed_few_armed_none_armed():
    """from_bytes rebuilds the wheel one way when at least half the timers are
    armed and another way otherwise; both must give the same wheel."""
    s = State()
    s.create(T0, [TimerSpec(f"a{i}", T0 + 1 + i % 17, ack_required=i % 2 == 0) for i in range(510)])
    seen = []
    for now in (None, T0 + 7, T0 + 14, T0 + 20):
        if now is not None:
            s.tick(now)
        armed = s.counts()[TimerState.ARMED]
        seen.append("all" if armed == len(s) else "most" if 2 * armed >= len(s) else "few" if armed else "none")
        r = _restored(s)
        assert r._wheel.items() == s._wheel.items()
        assert r.tick(T0 + 30).events == State.from_bytes(s.to_bytes()).tick(T0 + 30).events
    assert seen == ["all", "most", "few", "none"]
    r = _restored(s)
    # Nothing armed: what is left in the wheel is the settled timers' purge deadlines
    # (the first settled at T0 + 7, the default retention after).
    assert r.next_deadline() == s.next_deadline() == T0 + 7 + 24 * 3600 * 1000
    spec = [TimerSpec("z", T0 + 40)]
    assert r.create(T0 + 30, spec).events == s.create(T0 + 30, spec).events


def test_restore_keeps_columns_growable():
    """Restore must not leave a buffer export on any column (arrays refuse to grow then)."""
    s = State()
    s.create(T0, [TimerSpec(f"a{i}", T0 + i) for i in range(100)])
    s.tick(T0 + 10)
    r = State.from_bytes(s.to_bytes())
    r.create(T0 + 11, [TimerSpec("more", T0 + 12)])
    r.check_invariants()


def test_restore_with_extras_and_idempotency_keys():
    s = busy_state()
    churn(s, 10)
    r = _restored(s)
    spec = [TimerSpec("new", T0 + 10**6 + 1, tenant="t0", idempotency_key="idem-r0-0")]
    a, b = r.create(T0 + 10**6, spec), s.create(T0 + 10**6, spec)
    assert a == b
    assert a.items[0].created is False and a.items[0].timer.id == "r0-0"


# ---- decode checks touched by the faster restore -----------------------------------


def _reseal(body: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, 0, len(body), zlib.crc32(body)) + body


def _one_tenant_body() -> bytearray:
    s = State()
    s.create(T0, [TimerSpec("aa", T0 + 1), TimerSpec("ab", T0 + 2)])
    return bytearray(s.to_bytes()[HEADER.size:])


def test_single_tenant_column_out_of_range_is_rejected():
    good = _one_tenant_body()
    assert State.from_bytes(_reseal(bytes(good))).get("default", "ab").fire_at == T0 + 2
    # The tenant column is the first fixed column: "u64 length 8 | u32 0 | u32 0".
    at = good.find(struct.pack("<Q", 8) + bytes(8))
    assert at > 0
    for value in (1, 256, 2**31):
        bad = good[:at + 8] + struct.pack("<II", 0, value) + good[at + 16:]
        with pytest.raises(SnapshotError, match="tenant"):
            State.from_bytes(_reseal(bytes(bad)))


@pytest.mark.parametrize("ids", [b"\nab\n", b"aa\n\n"])
def test_empty_ids_are_rejected(ids):
    good = _one_tenant_body()
    at = good.find(b"aa\nab\n")
    assert at > 0
    blob = struct.pack("<Q", len(ids)) + ids
    bad = good[:at - 8] + blob + good[at + 6:]
    with pytest.raises(SnapshotError):
        State.from_bytes(_reseal(bytes(bad)))


def test_overlong_id_is_rejected():
    good = _one_tenant_body()
    at = good.find(b"aa\nab\n")
    ids = b"aa\n" + b"b" * (MAX_ID_LEN + 1) + b"\n"
    bad = good[:at - 8] + struct.pack("<Q", len(ids)) + ids + good[at + 6:]
    with pytest.raises(SnapshotError, match="longer"):
        State.from_bytes(_reseal(bytes(bad)))


def _two_timer_body(fire_at=(T0 + 1, T0 + 2)) -> tuple[bytearray, int]:
    s = State()
    s.create(T0, [TimerSpec("aa", fire_at[0]), TimerSpec("ab", fire_at[1])])
    body = bytearray(s.to_bytes()[HEADER.size:])
    at = body.find(struct.pack("<qq", *fire_at))
    assert at > 0
    return body, at


@pytest.mark.parametrize("good", [0, 1, MAX_TIME, MAX_TIME - 1, (MAX_TIME >> 40) << 40, ((MAX_TIME >> 40) << 40) - 1])
def test_fire_at_range_check_accepts_the_edges(good):
    s = State()
    s.create(T0, [TimerSpec("aa", good), TimerSpec("ab", T0)])
    r = _restored(s)
    assert r.get("default", "aa").fire_at == good


@pytest.mark.parametrize("bad", [-1, -(2**63), MAX_TIME + 1, 2**48 - 1, 2**48, 2**56, 2**63 - 1])
@pytest.mark.parametrize("which", [0, 1])
def test_fire_at_out_of_range_is_rejected(bad, which):
    body, at = _two_timer_body()
    values = [T0 + 1, T0 + 2]
    values[which] = bad
    body[at:at + 16] = struct.pack("<qq", *values)
    with pytest.raises(SnapshotError, match="fire_at"):
        State.from_bytes(_reseal(bytes(body)))
