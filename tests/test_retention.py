"""Retention of terminal timers in the kernel (kernel/retention.py, State.delete) and
its snapshot format (kernel/snapshot.py version 2)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from minoots.kernel import (
    EventKind,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SnapshotError,
    State,
    TimerSpec,
    TimerState,
)
from minoots.kernel.retention import DEFAULT_RETENTION_MS, MAX_RETENTION_MS, RetentionPolicy
from minoots.kernel.snapshot import VERSION, VERSION_RETENTION
from minoots.raft import snapshots

T0 = 1_700_000_000_000
DAY = 24 * 3600 * 1000
DATA = Path(__file__).parent / "data"


def kinds(events):
    return [(e.kind, e.timer_id) for e in events]


def version_of(s: State) -> int:
    return int.from_bytes(s.to_bytes()[8:10], "little")


def state(retention=None, default=DEFAULT_RETENTION_MS) -> State:
    s = State()
    s.retention = RetentionPolicy(retention or {}, default)
    return s


def test_purged_exactly_at_the_retention_deadline_not_before():
    s = state(default=5_000)
    s.create(T0, [TimerSpec("a", T0 + 100, idempotency_key="k")])
    s.tick(T0 + 100)                                  # fires and settles at T0 + 100
    assert s.get("default", "a").state is TimerState.SETTLED
    assert s.next_deadline() == T0 + 100 + 5_000
    r = s.tick(T0 + 100 + 4_999)
    assert r.events == () and r.purged == 0
    assert s.get("default", "a").state is TimerState.SETTLED
    r = s.tick(T0 + 100 + 5_000)
    assert kinds(r.events) == [(EventKind.PURGED, "a")] and r.purged == 1
    e = r.events[0]
    assert (e.state, e.at_ms, e.revision, e.fire_at) == (TimerState.SETTLED, T0 + 5_100, 5, T0 + 100)
    with pytest.raises(NotFound):
        s.get("default", "a")
    assert len(s) == 0 and s.next_deadline() is None and list(s) == []
    assert s.counts()[TimerState.SETTLED] == 0
    s.check_invariants()
    # The idempotency key went with the timer: the same create makes a new timer.
    item = s.create(T0 + 6_000, [TimerSpec("a", T0 + 7_000, idempotency_key="k")]).items[0]
    assert item.created and item.timer.created_at == T0 + 6_000
    s.check_invariants()


def test_default_retention_is_a_day_and_cancel_and_ack_start_it():
    s = State()
    s.create(T0, [TimerSpec("c", T0 + 10_000), TimerSpec("k", T0 + 10, ack_required=True)])
    s.cancel(T0 + 1, [("default", "c")])
    fid = s.tick(T0 + 10).fired[0].fire_id
    s.ack(T0 + 20, "default", "k", fid)
    assert s.next_deadline() == T0 + 1 + DAY
    assert s.tick(T0 + DAY).events == ()
    assert kinds(s.tick(T0 + 1 + DAY).events) == [(EventKind.PURGED, "c")]
    assert s.get("default", "k").state is TimerState.SETTLED
    assert kinds(s.tick(T0 + 20 + DAY).events) == [(EventKind.PURGED, "k")]
    assert len(s) == 0
    s.check_invariants()


def test_retention_zero_removes_in_the_command_that_ends_the_timer():
    s = state(default=0)
    s.create(T0, [TimerSpec("a", T0 + 5), TimerSpec("b", T0 + 5, ack_required=True), TimerSpec("c", T0 + 50)])
    r = s.tick(T0 + 5)
    assert kinds(r.events) == [(EventKind.FIRED, "a"), (EventKind.SETTLED, "a"), (EventKind.FIRED, "b"),
                               (EventKind.PURGED, "a")]
    assert [t.id for t in r.fired] == ["a", "b"] and r.fired[0].state is TimerState.SETTLED
    assert r.purged == 1
    with pytest.raises(NotFound):
        s.get("default", "a")
    ack = s.ack(T0 + 6, "default", "b", r.fired[1].fire_id)
    assert kinds(ack.events) == [(EventKind.SETTLED, "b"), (EventKind.PURGED, "b")]
    assert ack.timer.state is TimerState.SETTLED           # the answer still shows the timer
    cancel = s.cancel(T0 + 7, [("default", "c")])
    assert kinds(cancel.events) == [(EventKind.CANCELLED, "c"), (EventKind.PURGED, "c")]
    assert cancel.timers[0].state is TimerState.CANCELLED
    assert len(s) == 0 and s.next_deadline() is None
    assert [e.seq for e in cancel.events] == [s.seq - 1, s.seq]
    s.check_invariants()


def test_retention_is_per_tenant():
    s = state({"fast": 0, "slow": 60_000}, default=1_000)
    s.create(T0, [TimerSpec("x", T0 + 1, tenant=t) for t in ("fast", "slow", "other")])
    r = s.tick(T0 + 1)
    assert [(e.kind, e.tenant) for e in r.events if e.kind is EventKind.PURGED] == [(EventKind.PURGED, "fast")]
    assert kinds(s.tick(T0 + 1_001).events) == [(EventKind.PURGED, "x")]
    assert s.get("slow", "x").state is TimerState.SETTLED
    with pytest.raises(NotFound):
        s.get("other", "x")
    assert s.tick(T0 + 60_000).events == ()
    assert [e.tenant for e in s.tick(T0 + 60_001).events] == ["slow"]
    s.check_invariants()


def test_a_policy_change_applies_to_timers_that_end_after_it():
    s = state(default=10_000)
    s.create(T0, [TimerSpec("a", T0 + 1), TimerSpec("b", T0 + 2)])
    s.tick(T0 + 1)
    s.retention = RetentionPolicy({}, 100)
    s.tick(T0 + 2)
    assert kinds(s.tick(T0 + 102).events) == [(EventKind.PURGED, "b")]
    assert s.get("default", "a").state is TimerState.SETTLED
    assert kinds(s.tick(T0 + 10_001).events) == [(EventKind.PURGED, "a")]


def test_purge_deadline_is_capped_at_max_time():
    from minoots.kernel import MAX_TIME
    s = state(default=MAX_RETENTION_MS)
    s.create(MAX_TIME - 10, [TimerSpec("a", MAX_TIME - 5)])
    s.tick(MAX_TIME - 5)
    assert s.next_deadline() == MAX_TIME
    assert kinds(s.tick(MAX_TIME).events) == [(EventKind.PURGED, "a")]


def test_delete_removes_terminal_timers_only_and_all_or_nothing():
    s = State()
    s.create(T0, [TimerSpec("done", T0 + 1), TimerSpec("live", T0 + 100), TimerSpec("gone", T0 + 2)])
    s.tick(T0 + 2)
    before = s.to_bytes()
    for refs, err in (([("default", "done"), ("default", "live")], FailedPrecondition),
                      ([("default", "done"), ("default", "nope")], NotFound),
                      ([("default", "done"), ("default", "done")], InvalidArgument),
                      ([("default", "done", "x")], InvalidArgument)):
        with pytest.raises(err):
            s.delete(T0 + 3, refs)
        assert s.to_bytes() == before
    r = s.delete(T0 + 3, [("default", "gone"), ("default", "done")])
    assert kinds(r.events) == [(EventKind.DELETED, "gone"), (EventKind.DELETED, "done")]
    assert [t.id for t in r.timers] == ["gone", "done"] and r.timers[0].state is TimerState.SETTLED
    assert len(s) == 1 and s.next_deadline() == T0 + 100     # their purge deadlines left the wheel too
    with pytest.raises(NotFound):
        s.delete(T0 + 4, [("default", "done")])
    s.check_invariants()


def test_freed_ordinals_are_reused_smallest_first_and_the_table_stays_bounded():
    s = state(default=0)
    for round_ in range(50):
        now = T0 + round_ * 10
        s.create(now, [TimerSpec(f"r{round_}-{i}", now + 1 + i % 3) for i in range(20)])
        s.tick(now + 5)
    assert len(s) == 0 and s.positions == 20
    s.create(T0 + 1_000, [TimerSpec("x", T0 + 2_000)])
    assert s.cursor(0).__next__().id == "x"                 # position 0 again
    assert [t.id for t in s.scan(0, 10)[0]] == ["x"]
    s.check_invariants()


def test_snapshot_round_trip_with_pending_purges_and_free_rows():
    s = state({"t2": 3_000}, default=500)
    s.create(T0, [TimerSpec(f"a{i}", T0 + i, tenant="t2" if i % 2 else "default", payload=b"p" * i,
                            idempotency_key=f"k{i}" if i % 3 == 0 else None, labels={"n": str(i)})
                  for i in range(1, 40)])
    s.tick(T0 + 20)
    s.tick(T0 + 600)                       # purges the default tenant's settled ones: free rows
    s.create(T0 + 601, [TimerSpec("new", T0 + 700)])      # reuses one
    assert version_of(s) == VERSION_RETENTION
    r = State.from_bytes(s.to_bytes())
    r.retention = s.retention
    assert r.to_bytes() == s.to_bytes() and len(r) == len(s) and r.next_deadline() == s.next_deadline()
    r.check_invariants()
    for now in (T0 + 700, T0 + 3_019, T0 + 3_020, T0 + 10_000):
        assert r.tick(now) == s.tick(now)
        assert r.to_bytes() == s.to_bytes()
    spec = [TimerSpec(f"z{i}", T0 + 20_000) for i in range(5)]
    assert r.create(T0 + 10_001, spec).events == s.create(T0 + 10_001, spec).events
    assert r.to_bytes() == s.to_bytes()
    r.check_invariants()


def test_states_without_retention_history_still_write_format_1():
    """No row freed and only default deadlines: version 1 bytes, so the digests of
    everything recorded before retention (tests/data/log_v0) are unchanged."""
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 1), TimerSpec("b", T0 + 2)])
    s.cancel(T0 + 1, [("default", "b")])
    s.tick(T0 + 5)
    assert version_of(s) == VERSION
    r = State.from_bytes(s.to_bytes())
    assert r.next_deadline() == s.next_deadline() == T0 + 1 + DAY   # derived on restore
    assert r.tick(T0 + 5 + DAY) == s.tick(T0 + 5 + DAY)
    assert version_of(s) == VERSION_RETENTION and r.to_bytes() == s.to_bytes()
    s2 = state(default=1_000)
    s2.create(T0, [TimerSpec("a", T0 + 1)])
    s2.tick(T0 + 1)
    assert version_of(s2) == VERSION_RETENTION      # a deadline version 1 cannot say


def test_old_golden_snapshot_loads_and_gets_default_purge_deadlines():
    meta, kernel = snapshots.decode((DATA / "log_v0" / "v0_snapshot.bin").read_bytes())
    assert meta.retention == []
    s = State.from_bytes(kernel)
    s.check_invariants()
    ended = [t for t in s if t.state.terminal]
    assert ended
    first = min(t.settled_at for t in ended)
    assert s.next_deadline() == min([first + DAY] + [t.fire_at for t in s if t.state is TimerState.ARMED])
    last = max(t.settled_at for t in ended)
    r = s.tick(last + DAY)
    assert {e.timer_id for e in r.events if e.kind is EventKind.PURGED} == {t.id for t in ended}
    for t in ended:
        with pytest.raises(NotFound):
            s.get(t.tenant, t.id)
    s.check_invariants()


@pytest.mark.parametrize("bad", [-1, MAX_RETENTION_MS + 1, 1.5, "1", True, None])
def test_bad_retention_is_refused(bad):
    with pytest.raises(InvalidArgument):
        RetentionPolicy({"a": bad})
    with pytest.raises(InvalidArgument):
        RetentionPolicy({}, bad)
    with pytest.raises(InvalidArgument) as info:
        State().retention = {"a": 1}
    assert (info.value.field, info.value.rule) == ("retention", "must be a RetentionPolicy, not dict")


def _v2_body() -> tuple[bytes, State]:
    s = state(default=0)
    s.create(T0, [TimerSpec("aa", T0 + 1), TimerSpec("ab", T0 + 2, ack_required=True)])
    s.tick(T0 + 1)
    assert s.positions == 2 and len(s) == 1
    return s.to_bytes(), s


def _reseal(body: bytes) -> bytes:
    import zlib
    import struct
    return b"MNTSKRNL" + struct.pack("<HHQI", VERSION_RETENTION, 0, len(body), zlib.crc32(body)) + body


def test_version_2_snapshot_checks_free_rows_and_purge_deadlines():
    good, _ = _v2_body()
    body = good[24:]
    assert State.from_bytes(_reseal(body)).to_bytes() == good
    # A free row with an id: "\nab\n" -> "xxab\n"... the id block is "u64 len | \nab\n".
    at = body.find(b"\nab\n")
    assert at > 0
    bad = body[:at - 8] + (5).to_bytes(8, "little") + b"x\nab\n" + body[at + 4:]
    with pytest.raises(SnapshotError, match="free row"):
        State.from_bytes(_reseal(bad))
    # Then purge_at, then eight empty schedule blocks: give the (fired, not terminal) timer a deadline.
    assert body[-64:] == bytes(64)
    tail = body[-80:-64]
    assert tail == (-1).to_bytes(8, "little", signed=True) * 2
    bad = body[:-72] + (T0).to_bytes(8, "little") + body[-64:]
    with pytest.raises(SnapshotError, match="purge_at"):
        State.from_bytes(_reseal(bad))


def test_replicas_applying_the_same_retention_commands_have_identical_digests():
    from minoots.raft import commands as c
    from minoots.raft.fsm import TimerFSM
    log = [
        c.SetRetention("*", 2_000), c.SetRetention("t2", 0),
        c.CreateTimers(T0, ((TimerSpec("a", T0 + 10), TimerSpec("b", T0 + 20, ack_required=True),
                             TimerSpec("c", T0 + 10, tenant="t2")),)),
        c.Tick(T0 + 10), c.Tick(T0 + 20), c.CancelTimers(T0 + 21, ()),
        c.DeleteTimers(T0 + 22, (("default", "a"),)), c.DeleteTimers(T0 + 23, (("default", "b"),)),
        c.SetRetention("t2", None), c.Tick(T0 + 2_030),
    ]
    replicas = [TimerFSM({}) for _ in range(3)]
    results = [[repr(r.apply(c.encode(cmd))) for cmd in log] for r in replicas]
    assert results[0] == results[1] == results[2]
    assert "FailedPrecondition" in results[0][7]             # b is FIRED: not deletable
    digests = {hashlib.sha256(r.kernel.to_bytes()).hexdigest() for r in replicas}
    assert len(digests) == 1
    # A replica restored midway (kernel bytes + retention table) ends identical.
    fresh = TimerFSM({})
    for cmd in log[:5]:
        fresh.apply(c.encode(cmd))
    snap = fresh.snapshot()
    restored = TimerFSM({})
    restored.restore(snap.kernel.to_bytes(), {}, {}, snap.tokens, snap.quotas, retention=snap.retention)
    assert restored.retention.effective("t2") == (0, False)
    for cmd in log[5:]:
        restored.apply(c.encode(cmd))
    assert hashlib.sha256(restored.kernel.to_bytes()).hexdigest() in digests
    json.dumps(snap.retention)      # the snapshot metadata is JSON


def _busy_v2() -> bytes:
    s = state({"t2": 0}, default=700)
    s.create(T0, [TimerSpec(f"x{i}", T0 + i, tenant="t2" if i % 3 == 0 else "default", payload=b"q" * (i % 4),
                            idempotency_key=f"k{i}" if i % 5 == 0 else None, ack_required=i % 7 == 0)
                  for i in range(1, 30)])
    s.tick(T0 + 15)
    s.tick(T0 + 716)
    s.create(T0 + 717, [TimerSpec("y", T0 + 800)])
    assert version_of(s) == VERSION_RETENTION and s.positions > len(s)
    return s.to_bytes()


_V2 = _busy_v2()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_V2) - 25), st.integers(1, 255)), min_size=1, max_size=3))
def test_version_2_body_flips_never_escape_as_other_errors(flips):
    body = bytearray(_V2[24:])
    for pos, xor in flips:
        body[pos] ^= xor
    data = _reseal(bytes(body))
    try:
        r = State.from_bytes(data)
    except SnapshotError:
        return
    assert r.to_bytes() == data
    list(r)
    r.next_deadline()
    r.tick(T0 + 10**9)


def test_a_tick_that_fires_and_purges_reports_both():
    """A purge deadline and fires in the same tick: the tick's events hold the fires, then
    the purge."""
    s = state(default=100)
    s.create(T0, [TimerSpec("a", T0), TimerSpec("b", T0 + 100)])
    s.tick(T0)                                         # a settles: purged at T0 + 100
    r = s.tick(T0 + 100)
    assert [(e.kind.name, e.timer_id) for e in r.events] == [("FIRED", "b"), ("SETTLED", "b"), ("PURGED", "a")]
    assert r.purged == 1 and [t.id for t in r.fired] == ["b"]
