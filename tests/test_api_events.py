"""The API layer's parts that need no cluster: the event store and the create batcher.

The event store is driven the way the tick thread drives it (event batches, snapshot
loads); the batcher with a fake bridge whose proposals the test lands by hand.
"""
from __future__ import annotations

import asyncio

import pytest

from minoots.api.batcher import CreateBatcher
from minoots.api.events import EventLog, EventsLost, EventsUnavailable, pack_event, watch
from minoots.kernel import Event, EventKind, InvalidArgument, State, TimerSpec, TimerState
from minoots.raft.machine import CommandFailed

from support import FakeMachine, NotifyingBridge, ProposalBridge, ev, evs


def seqs(log: EventLog, start: int = None) -> list[int]:
    out, cursor = [], start or log.floor
    while True:
        batch = log.read(cursor, 100)
        if not batch:
            return out
        out += [e[0] for e in batch]
        cursor = batch[-1][0] + 1


def test_events_round_trip_and_visible_bound(event_store):
    log, m = event_store
    assert log.read(1) == []
    m.emit(evs(1, 5))
    m.emit(evs(6, 6, kind=EventKind.FIRED, tenant="acme"))
    assert seqs(log) == [1, 2, 3, 4, 5, 6]
    last = log.read(6)[0]
    assert last == (6, int(EventKind.FIRED), "acme", "t6", 1000, 6, int(TimerState.SCHEDULED), 5000, 0, 0, b"")
    assert log.read(7) == []          # beyond visible: nothing yet, no error


def test_reemitted_events_are_idempotent_and_divergence_replaces(tmp_path):
    path = tmp_path / "events"
    log = EventLog(path, keep=1000)
    m = FakeMachine()
    log.attach(m)
    m.emit(evs(1, 10))
    log.close()
    # Restart: the snapshot was at seq 4, the log re-applies 5..10 (same events), then 11..12.
    log = EventLog(path, keep=1000)
    m = FakeMachine()
    log.attach(m)
    assert log.visible == 0
    m.load_snapshot(4)
    assert seqs(log) == [1, 2, 3, 4]            # 5..10 not served until re-emitted
    m.emit(evs(5, 10))
    m.emit(evs(11, 12))
    assert seqs(log) == list(range(1, 13))
    # A rewound history (restore of an older snapshot): seq 8 comes back different.
    log.close()
    log = EventLog(path, keep=1000)
    m = FakeMachine()
    log.attach(m)
    m.load_snapshot(7)
    m.emit((ev(8, "other"),))
    assert seqs(log) == list(range(1, 9))
    assert log.read(8)[0][3] == "other"
    m.emit((ev(9, "next"),))
    assert [e[3] for e in log.read(8)] == ["other", "next"]
    log.close()


def test_snapshot_install_past_the_stored_events_moves_the_floor(event_store):
    log, m = event_store
    m.emit(evs(1, 5))
    m.load_snapshot(20)           # a follower installed the leader's snapshot at seq 20
    with pytest.raises(EventsUnavailable, match="starts at 21"):
        log.read(3)
    m.emit(evs(21, 22))
    assert seqs(log) == [21, 22]
    assert log.skipped_to == 20


def test_retention_by_count_and_age(tmp_path):
    now = [10_000]
    log = EventLog(tmp_path / "events", keep=50, max_age_ms=1000, clock=lambda: now[0])
    m = FakeMachine()
    log.attach(m)
    m.emit(tuple(ev(s, f"t{s}", at=9_500) for s in range(1, 121)))
    assert log.floor == 71 and seqs(log) == list(range(71, 121))
    assert log.stats()["stored"] == 50
    with pytest.raises(EventsUnavailable):
        log.read(70)
    now[0] = 20_000                               # everything so far is now older than 1 s
    m.emit((ev(121, at=19_900),))
    assert seqs(log) == [121]
    log.close()
    log = EventLog(tmp_path / "events", keep=50)   # the floor survives a restart
    assert log.floor == 121
    log.close()


def test_watch_replays_then_goes_live_without_gap_or_duplicate(event_store):
    log, m = event_store
    m.emit(evs(1, 3))

    async def main():
        bridge = NotifyingBridge()
        log.on_new = lambda: asyncio.get_running_loop().call_soon(bridge.notify)
        got = []

        async def consume():
            async for e in watch(log, bridge, 2, None, frozenset()):
                got.append(e.sequence)
                if e.sequence == 6:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.01)
        m.emit(evs(4, 6))
        await asyncio.wait_for(task, 5)
        assert got == [2, 3, 4, 5, 6]
        # filters hide events but the cursor still moves
        got2 = []
        async for e in watch(log, bridge, 1, "default", frozenset({int(EventKind.CREATED)})):
            got2.append(e.sequence)
            if e.sequence == 6:
                break
        assert got2 == [1, 2, 3, 4, 5, 6]
        # from_sequence 0: only what comes next
        live = watch(log, bridge, 0, None, frozenset())
        nxt = asyncio.ensure_future(live.__anext__())
        await asyncio.sleep(0.01)
        m.emit(evs(7, 7))
        assert (await asyncio.wait_for(nxt, 5)).sequence == 7

    asyncio.run(main())


def test_live_stream_across_a_snapshot_install_reports_data_loss(event_store):
    log, m = event_store
    m.emit(evs(1, 2))

    class Bridge:
        async def wait_events(self, timeout):
            m.load_snapshot(10)
            await asyncio.sleep(0)

    async def main():
        with pytest.raises(EventsLost, match="events 3..10"):
            async for _ in watch(log, Bridge(), 3, None, frozenset()):
                pass

    asyncio.run(main())


def test_an_older_snapshot_loaded_while_running_lowers_visible(event_store):
    """A snapshot older than the events already served (a restore of an older snapshot
    while the node runs): events above its seq are not served until re-emitted (`visible`
    is lowered to the snapshot's seq), then come back one re-emitted batch at a time."""
    log, m = event_store
    m.emit(evs(1, 10))
    assert log.visible == 10
    m.load_snapshot(4)
    assert log.visible == 4
    assert seqs(log) == [1, 2, 3, 4]
    assert log.read(5) == []                  # stored, but not valid until re-emitted
    m.emit(evs(5, 6))                         # re-emitted unchanged
    assert seqs(log) == list(range(1, 7))
    assert log.read(7) == []
    m.emit((ev(7, "other"),))                 # re-emitted different: replaces 7.. (8..10 gone)
    assert seqs(log) == list(range(1, 8)) and log.read(7)[0][3] == "other"
    assert log.stats()["stored"] == 7


@pytest.mark.parametrize("before", ["fresh", "after_install"])
def test_a_gap_in_written_events_restarts_the_history_after_it(tmp_path, caplog, before):
    """Events that never reached the store (6..7 here) are a gap: the history restarts
    after it (floor moves, persisted, older events dropped); a read below it is
    EventsUnavailable naming the floor and how far events were skipped."""
    path = tmp_path / "events"
    log = EventLog(path, keep=1000)
    m = FakeMachine()
    log.attach(m)
    if before == "fresh":
        m.emit(evs(1, 5))
    else:                                      # one event retained above an install's floor
        m.load_snapshot(4)
        m.emit(evs(5, 5))
        assert log.floor == 5
    m.emit(evs(8, 9))
    assert "event gap" in caplog.text
    assert (log.floor, log.skipped_to, log.visible) == (8, 7, 9)
    assert seqs(log) == [8, 9] and log.stats()["stored"] == 2
    for cursor in (5, 6):
        with pytest.raises(EventsUnavailable, match="starts at 8") as err:
            log.read(cursor)
        assert (err.value.cursor, err.value.floor, err.value.skipped_to) == (cursor, 8, 7)
    log.close()
    log = EventLog(path, keep=1000)
    assert log.floor == 8
    log.close()


def test_a_live_stream_across_a_gap_reports_data_loss(event_store):
    """The watcher's next events fell into a gap (not retention): EventsLost (DATA_LOSS),
    not EventsUnavailable, so the SDK resumes on a node that has them."""
    log, m = event_store
    m.emit(evs(1, 5))

    class Bridge:
        async def wait_events(self, timeout):
            m.emit(evs(8, 9))
            await asyncio.sleep(0)

    async def main():
        got = []
        with pytest.raises(EventsLost, match="events 6..7") as err:
            async for e in watch(log, Bridge(), 4, None, frozenset()):
                got.append(e.sequence)
        assert got == [4, 5] and (err.value.cursor, err.value.floor) == (6, 8)
        assert log.watchers == 0 and log.watchers_dropped == 1

    asyncio.run(main())


def test_a_failed_write_opens_a_gap_and_later_writes_go_on(event_store, monkeypatch):
    """An LMDB write that fails loses those events on this node: counted, the history
    restarts after them, the listener does not raise into the apply path."""
    log, m = event_store
    m.emit(evs(1, 3))
    real = log._write

    def broken(events):
        raise OSError("disk full")

    monkeypatch.setattr(log, "_write", broken)
    m.emit(evs(4, 6))                         # must not raise
    monkeypatch.setattr(log, "_write", real)
    assert (log.write_errors, log.floor, log.skipped_to, log.visible) == (1, 7, 6, 6)
    with pytest.raises(EventsUnavailable, match="starts at 7"):
        log.read(4)
    m.emit(evs(7, 8))
    assert seqs(log) == [7, 8]


def test_a_missing_key_in_the_stored_range_is_reported(event_store):
    """A key below `visible` and above the floor that is not in LMDB (a damaged store) is
    EventsLost at that seq, never a silent skip; the events before it are still served
    (in an earlier call), those after it too."""
    from minoots.api.events import _KEY

    log, m = event_store
    m.emit(evs(1, 6))
    with log._env.begin(write=True) as txn:
        assert txn.delete(_KEY.pack(3), db=log._db)
    assert [e[0] for e in log.read(1, 2)] == [1, 2]
    for cursor in (1, 2, 3):
        with pytest.raises(EventsLost, match="events 3..3") as err:
            log.read(cursor)
        assert (err.value.cursor, err.value.floor) == (3, 4)
    assert [e[0] for e in log.read(4)] == [4, 5, 6]


def test_keys_trimmed_under_a_reader_are_events_unavailable(event_store, monkeypatch):
    """Retention moves the floor between a reader's floor check and its read transaction:
    the missing keys are below the new floor, so the reader gets EventsUnavailable (OUT_OF_RANGE),
    not EventsLost."""
    from minoots.api.events import _KEY

    log, m = event_store
    m.emit(evs(1, 6))
    env = log._env

    class TrimFirst:
        def begin(self, **kw):
            with env.begin(write=True) as txn:
                for s in (1, 2, 3):
                    txn.delete(_KEY.pack(s), db=log._db)
            log.floor = 4
            monkeypatch.setattr(log, "_env", env)
            return env.begin(**kw)

    monkeypatch.setattr(log, "_env", TrimFirst())
    with pytest.raises(EventsUnavailable, match="starts at 4") as err:
        log.read(2)
    assert (err.value.cursor, err.value.floor) == (2, 4)
    assert [e[0] for e in log.read(4)] == [4, 5, 6]


def test_pack_is_deterministic():
    e = ev(7, "x")
    assert pack_event(e) == pack_event(Event(*e))


# ---- the create batcher ------------------------------------------------------------

FakeBridge = ProposalBridge


def spec(i, **kw):
    return TimerSpec(id=f"t{i}", fire_at=10_000, **kw)


def test_batcher_coalesces_requests_while_one_is_in_flight():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: 1000, max_timers=5)
        first = asyncio.create_task(b.create([spec(0)]))
        await asyncio.sleep(0)
        assert len(bridge.proposed) == 1
        later = [asyncio.create_task(b.create([spec(i), spec(i + 100)])) for i in range(1, 5)]
        await asyncio.sleep(0)
        assert len(bridge.proposed) == 1          # waiting for the one in flight
        state = State()

        def land(n):
            command, fut = bridge.proposed[n]
            now, groups = command.now_ms, command.groups
            out = []
            for g in groups:
                try:
                    out.append(state.create(now, list(g)))
                except InvalidArgument as exc:
                    out.append(exc)
            fut.set_result(out)
            return groups

        assert len(land(0)) == 1
        await asyncio.sleep(0)
        assert (await first).items[0].timer.id == "t0"
        # next command: as many queued requests as fit in max_timers=5 (2 requests of 2)
        assert [len(g) for g in land(1)] == [2, 2]
        await asyncio.sleep(0)
        assert [len(g) for g in land(2)] == [2, 2]
        results = await asyncio.gather(*later)
        assert [r.items[0].timer.id for r in results] == ["t1", "t2", "t3", "t4"]
        assert b.commands == 3 and b.requests == 5

    asyncio.run(main())


def test_batcher_failure_and_cancellation():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: 1000)
        a = asyncio.create_task(b.create([spec(1)]))
        await asyncio.sleep(0)
        queued = asyncio.create_task(b.create([spec(2)]))
        await asyncio.sleep(0)
        queued.cancel()                            # gave up before being proposed: never proposed
        await asyncio.sleep(0)
        bridge.proposed[0][1].set_exception(CommandFailed(3))
        with pytest.raises(CommandFailed):
            await a
        await asyncio.sleep(0)
        assert len(bridge.proposed) == 1

    asyncio.run(main())


def test_the_events_store_layout_is_the_documented_one(tmp_path):
    # A node's events/ directory outlives a restart and an upgrade (module docstring):
    # key = seq as big-endian u64, value = kind u8, state u8, revision u64, at_ms i64,
    # fire_at i64, fire_id u64, len(tenant) u8, tenant, id; the floor in meta "floor".
    import lmdb

    log = EventLog(tmp_path / "events", keep=2)
    m = FakeMachine()
    log.attach(m)
    m.emit((Event(1, EventKind.CREATED, "acme", "t1", 1000, 1, TimerState.ARMED, 5000, None),
            Event(2, EventKind.FIRED, "acme", "t1", 5000, 2, TimerState.FIRED, 5000, 7),
            Event(3, EventKind.SETTLED, "b", "x", 5001, 3, TimerState.SETTLED, 5000, 7)))
    log.close()
    env = lmdb.open(str(tmp_path / "events"), max_dbs=2, readonly=True, subdir=True)
    try:
        with env.begin() as txn:
            events = dict(txn.cursor(db=env.open_db(b"events", txn=txn, create=False)))
            meta = dict(txn.cursor(db=env.open_db(b"meta", txn=txn, create=False)))
    finally:
        env.close()
    be = lambda n, width=8: n.to_bytes(width, "big", signed=True)  # noqa: E731
    assert events == {
        be(2): bytes([int(EventKind.FIRED), int(TimerState.FIRED)]) + be(2) + be(5000) + be(5000) + be(7)
        + b"\x04acme" + b"t1",
        be(3): bytes([int(EventKind.SETTLED), int(TimerState.SETTLED)]) + be(3) + be(5001) + be(5000) + be(7)
        + b"\x01b" + b"x",
    }
    assert meta == {b"floor": be(2)}                  # keep=2 trimmed event 1
    reopened = EventLog(tmp_path / "events")
    try:
        assert reopened.floor == 2
    finally:
        reopened.close()


def _reopen(path, **kw):
    log = EventLog(path, **kw)
    m = FakeMachine()
    log.attach(m)
    return log, m


def test_a_snapshot_exactly_at_the_stored_end_skips_nothing_and_a_skip_survives_a_restart(tmp_path):
    log, m = _reopen(tmp_path / "events", keep=1000)
    m.emit(evs(1, 5))
    m.load_snapshot(5)                     # a restart's snapshot at our last event: no gap
    assert (log.floor, log.skipped_to, log.visible) == (1, 0, 5) and seqs(log) == [1, 2, 3, 4, 5]
    m.load_snapshot(9)                     # an install past our events: history restarts at 10
    assert (log.floor, log.skipped_to) == (10, 9)
    log.close()
    log, m = _reopen(tmp_path / "events", keep=1000)
    assert log.floor == 10                 # the floor was persisted, not re-derived from keys
    m.load_snapshot(9)
    m.emit(evs(10, 11))
    assert seqs(log) == [10, 11]
    log.close()


def test_reemission_straddling_the_stored_end_and_the_floor(tmp_path):
    path = tmp_path / "events"
    log, m = _reopen(path, keep=6)
    m.emit(evs(1, 10))                     # keep=6: floor 5
    assert log.floor == 5
    log.close()
    log, m = _reopen(path, keep=6)
    m.load_snapshot(2)                     # older than the floor: events 3.. re-emitted
    m.emit(evs(3, 12))                     # 3, 4 are below the floor; 5..10 identical; 11, 12 new
    assert seqs(log) == list(range(7, 13)) and log.floor == 7
    log.close()
    # Diverging exactly at the last stored event replaces just that one.
    log, m = _reopen(path, keep=6)
    m.load_snapshot(10)
    m.emit((ev(11, "t11"), ev(12, "changed"), ev(13, "t13")))
    assert [e[3] for e in log.read(10)] == ["t10", "t11", "changed", "t13"]
    log.close()


def test_empty_batches_and_writes_after_close_are_no_ops(tmp_path):
    log, m = _reopen(tmp_path / "events", keep=1000)
    m.emit(evs(1, 2))
    m.emit(())
    assert (log.visible, log.write_errors, seqs(log)) == (2, 0, [1, 2])
    log.close()
    m.emit(evs(3, 3))                      # the tick thread may still call in while stopping
    m.load_snapshot(3)
    log.flush()                            # so may the once-a-second flush
    log.close()
    assert log.write_errors == 0


def test_every_failed_write_is_counted(event_store, monkeypatch):
    log, m = event_store

    def broken(events):
        raise OSError("disk full")

    monkeypatch.setattr(log, "_write", broken)
    m.emit(evs(1, 2))
    m.emit(evs(3, 4))
    assert (log.write_errors, log.floor) == (2, 5)


def test_age_trimming_goes_in_bounded_chunks_and_catches_up(tmp_path):
    # Events older than max_age are trimmed TRIM_CHUNK + 2 x written per write at most,
    # oldest first, so one write never deletes an unbounded backlog; later writes go on.
    from minoots.api.events import TRIM_CHUNK

    now = [1_000_000]
    log, m = _reopen(tmp_path / "events", max_age_ms=1000, clock=lambda: now[0])
    n = 2 * TRIM_CHUNK + 500
    for first in range(1, n + 1, 1000):
        m.emit(tuple(ev(s, f"t{s}", at=now[0]) for s in range(first, min(first + 1000, n + 1))))
    assert log.floor == 1
    now[0] += 5000                         # all of them are now older than max_age
    m.emit((ev(n + 1, at=now[0]),))
    assert log.floor == 1 + TRIM_CHUNK + 2
    m.emit((ev(n + 2, at=now[0]),))
    assert log.floor == 1 + 2 * (TRIM_CHUNK + 2)
    m.emit((ev(n + 3, at=now[0]),))
    assert log.floor == n + 1              # caught up: only the young ones are left
    assert seqs(log) == [n + 1, n + 2, n + 3]
    log.close()


# ---- the write path's edges (each found by a surviving mutant, docs/mutation.md) ----------

def test_a_reemission_entirely_below_the_floor_only_advances_visible(tmp_path):
    path = tmp_path / "events"
    log, m = _reopen(path, keep=6)
    m.emit(evs(1, 10))                     # keep=6: floor 5
    log.close()
    log, m = _reopen(path, keep=6)
    m.load_snapshot(2)
    m.emit(evs(3, 4))                      # re-emitted, already trimmed
    assert (log.floor, log.visible, log.stats()["stored"]) == (5, 4, 6)
    assert log.read(5) == []               # 5.. not served until re-emitted
    m.emit(evs(5, 10))
    assert seqs(log) == list(range(5, 11))
    log.close()


def test_a_reemission_reaching_further_below_the_floor_than_the_floor_is_high(tmp_path):
    # The cut drops exactly the events below the floor (floor - first of them), not more:
    # here 9 events from 4, floor 5: one dropped, 5..10 compared, 11 and 12 written.
    path = tmp_path / "events"
    log, m = _reopen(path, keep=6)
    m.emit(evs(1, 10))
    log.close()
    log, m = _reopen(path, keep=6)
    m.load_snapshot(3)
    m.emit(evs(4, 12))
    assert seqs(log) == list(range(7, 13)) and log.floor == 7
    log.close()


def test_a_reemitted_event_diverging_exactly_at_the_stored_end_replaces_it(tmp_path):
    # One re-emitted event at the last stored seq is compared, not appended (LMDB silently
    # refuses an append of an existing key: the old event would stay).
    path = tmp_path / "events"
    log, m = _reopen(path, keep=1000)
    m.emit(evs(1, 10))
    log.close()
    log, m = _reopen(path, keep=1000)
    m.load_snapshot(9)
    m.emit((ev(10, "changed"),))
    assert [e[3] for e in log.read(9)] == ["t9", "changed"]
    log.close()


def test_a_reemission_running_past_the_stored_end_is_no_divergence(tmp_path, caplog):
    path = tmp_path / "events"
    log, m = _reopen(path, keep=1000)
    m.emit(evs(1, 5))
    log.close()
    log, m = _reopen(path, keep=1000)
    m.load_snapshot(3)
    m.emit(evs(4, 8))                      # 4, 5 identical, 6..8 new
    assert seqs(log) == list(range(1, 9))
    assert "differs" not in caplog.text
    m.load_snapshot(6)                     # a rewind: 7 comes back different
    m.emit((ev(7, "other"),))
    assert "differs" in caplog.text and [e[3] for e in log.read(7)] == ["other"]
    log.close()


def test_a_divergence_at_the_batchs_last_event_ends_the_stored_history_there(tmp_path):
    # After 6 diverges (and 7..10 are deleted), the store ends at 6: a snapshot installed at 7
    # is past this node's events, so its history restarts at 8.
    path = tmp_path / "events"
    log, m = _reopen(path, keep=1000)
    m.emit(evs(1, 10))
    log.close()
    log, m = _reopen(path, keep=1000)
    m.load_snapshot(4)
    m.emit((ev(5, "t5"), ev(6, "changed")))
    assert log.stats()["stored"] == 6 and [e[3] for e in log.read(5)] == ["t5", "changed"]
    m.load_snapshot(7)
    assert (log.floor, log.skipped_to) == (8, 7)
    log.close()


def test_a_gap_of_a_single_event_restarts_the_history(event_store):
    log, m = event_store
    m.emit(evs(1, 5))
    m.emit(evs(7, 8))                      # 6 never came
    assert (log.floor, log.skipped_to) == (7, 6) and seqs(log) == [7, 8]


def test_a_snapshot_at_what_was_served_is_not_reported_as_older(event_store, caplog):
    log, m = event_store
    m.emit(evs(1, 5))
    m.load_snapshot(5)
    assert "older than the events already served" not in caplog.text
    m.load_snapshot(4)
    assert "older than the events already served" in caplog.text and log.visible == 4


def test_keys_below_a_raised_floor_go_trim_chunk_plus_twice_the_batch_per_write(tmp_path):
    from minoots.api.events import TRIM_CHUNK

    path = tmp_path / "events"
    log, m = _reopen(path)
    n = 2 * TRIM_CHUNK
    for first in range(1, n + 1, 1000):
        m.emit(evs(first, min(first + 999, n)))
    log.close()
    log, m = _reopen(path, keep=10)        # the floor jumps; the keys below go in chunks
    m.emit(evs(n + 1, n + 3))
    assert log.floor == n - 6
    assert log.stats()["stored"] == n + 3 - (TRIM_CHUNK + 2 * 3)
    m.emit(evs(n + 4, n + 4))              # the rest (fewer than a chunk) goes at once
    assert log.stats()["stored"] == 10 and seqs(log) == list(range(n - 5, n + 5))
    log.close()


def test_age_trimming_per_write_is_bounded_by_twice_the_batch_written(tmp_path):
    from minoots.api.events import TRIM_CHUNK

    now = [1_000_000]
    log, m = _reopen(tmp_path / "events", max_age_ms=1000, clock=lambda: now[0])
    n = TRIM_CHUNK + 100
    m.emit(tuple(ev(s, f"t{s}", at=now[0]) for s in range(1, n + 1)))
    now[0] += 5000
    m.emit(tuple(ev(s, f"t{s}", at=now[0]) for s in (n + 1, n + 2, n + 3)))
    assert log.floor == 1 + TRIM_CHUNK + 2 * 3
    log.close()


def test_age_trimming_stops_at_the_first_young_event_and_keeps_one_exactly_at_the_cutoff(tmp_path):
    now = [10_000]
    log, m = _reopen(tmp_path / "events", max_age_ms=1000, clock=lambda: now[0])
    # at_ms: old, exactly at the cutoff (kept), old again (kept: oldest first stops at 2).
    m.emit((ev(1, at=8_999), ev(2, at=9_000), ev(3, at=8_000)))
    assert log.floor == 2 and seqs(log) == [2, 3]
    log.close()


def test_events_older_than_max_age_when_written_are_trimmed_at_once(tmp_path):
    log, m = _reopen(tmp_path / "events", max_age_ms=1000, clock=lambda: 10_000)
    m.emit(evs(1, 3, at=8_000))            # e.g. re-emitted long after they happened
    assert (log.floor, log.visible) == (4, 3) and log.read(4) == []
    log.close()


def test_a_missing_key_at_either_end_of_a_read_is_events_lost(event_store):
    # A damaged store (keys gone above the floor, not trimmed): the last key of the range and
    # the key at the floor itself are reported like any other, never silently shortened.
    from minoots.api.events import _KEY

    log, m = event_store
    m.emit(evs(1, 6))
    with log._env.begin(write=True) as txn:
        assert txn.delete(_KEY.pack(6), db=log._db) and txn.delete(_KEY.pack(1), db=log._db)
    with pytest.raises(EventsLost, match="events 6..6"):
        log.read(2)
    with pytest.raises(EventsLost, match="events 1..1") as err:
        log.read(1)
    assert (err.value.cursor, err.value.floor) == (1, 2) and log.floor == 1


def test_stats_report_every_figure_of_the_store(event_store):
    from minoots.api.events import EVENTS_BUDGET

    log, m = event_store
    m.emit(evs(1, 3))
    assert log.stats() == {"floor": 1, "visible": 3, "stored": 3, "skipped_to": 0, "write_errors": 0,
                           "bytes": 4096, "budget": EVENTS_BUDGET, "budget_full": False,
                           "budget_trimmed": 0, "trimmed_young": 0}


def test_a_live_stream_at_the_single_skipped_event_reports_data_loss(event_store):
    log, m = event_store
    m.emit(evs(1, 5))

    class Bridge:
        async def wait_events(self, timeout):
            m.emit(evs(7, 8))              # 6 never came: skipped_to = 6 = the stream's cursor
            await asyncio.sleep(0)

    async def main():
        with pytest.raises(EventsLost, match="events 6..6"):
            async for _ in watch(log, Bridge(), 6, None, frozenset()):
                pass

    asyncio.run(main())
    assert log.watchers_dropped == 1


def test_every_dropped_stream_is_counted(event_store):
    # Overtaken by retention (OUT_OF_RANGE) or reading a damaged store (DATA_LOSS): each counts.
    from minoots.api.events import _KEY

    log, m = event_store
    m.emit(evs(1, 6))
    with log._env.begin(write=True) as txn:
        assert txn.delete(_KEY.pack(3), db=log._db)

    class Idle:
        async def wait_events(self, timeout):
            await asyncio.sleep(0)

    async def drain(start):
        async for _ in watch(log, Idle(), start, None, frozenset()):
            pass

    for expected in (1, 2):
        with pytest.raises(EventsLost, match="events 3..3"):
            asyncio.run(drain(3))
        assert log.watchers_dropped == expected

    async def overtaken():
        stream = watch(log, Idle(), 4, None, frozenset())
        assert (await stream.__anext__()).sequence == 4
        log.floor = 100                    # what retention does between two reads
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()

    for expected in (3, 4):
        log.floor = 1
        with pytest.raises(EventsUnavailable):
            asyncio.run(overtaken())
        assert log.watchers_dropped == expected
