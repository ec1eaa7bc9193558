"""Event retention by disk budget and age (issue 18, "Retention that fits the load").

Unit tests on a real EventLog in a tmp dir, driven the way the tick thread drives it.
Semantics under test (api/events.py): the byte budget is the hard bound (oldest events
go first when a write would exceed it); min-age is what is kept when the budget allows
(nothing is trimmed for age below it, and a budget that trims younger events says so);
max-age, if set, trims older events even under the budget; the count bound is optional
and off by default. A watcher near the trim point while the budget trims is reported
(log line, metric, Cluster.Status `lagging`); one that falls behind it gets OUT_OF_RANGE.
"""
from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from minoots.api.events import (EVENT_BYTES, EVENTS_BUDGET, EVENTS_MIN_AGE_MS, EventLog, EventsUnavailable,
                                events_map_size, watch_batches)
from minoots.kernel import Event, EventKind, TimerState

from support import FakeMachine, NotifyingBridge

DAY_MS = 24 * 3600 * 1000
NOW = 1_790_000_000_000


def event(seq: int, kind: EventKind = EventKind.CREATED, timer: str | None = None, at: int = NOW) -> Event:
    return Event(seq, kind, "default", timer or uuid.uuid4().hex, at, 1, TimerState.ARMED, at + 5000,
                 seq if kind in (EventKind.FIRED, EventKind.SETTLED) else None)


class Feed:
    """An EventLog on a FakeMachine with a settable clock; `emit(n)` commits n events."""

    def __init__(self, path, **kw):
        self.now = NOW
        self.log = EventLog(path, clock=lambda: self.now, **kw)
        self.m = FakeMachine()
        self.log.attach(self.m)
        self.seq = 0

    def emit(self, n: int, batch: int = 100, at: int | None = None, kind: EventKind = EventKind.CREATED) -> None:
        while n > 0:
            k = min(batch, n)
            self.m.emit(tuple(event(self.seq + 1 + i, kind, at=self.now if at is None else at) for i in range(k)))
            self.seq += k
            n -= k

    def retained(self) -> list[int]:
        out, cursor = [], self.log.floor
        while True:
            got = self.log.read(cursor, 1000)
            if not got:
                return out
            out += [e[0] for e in got]
            cursor = got[-1][0] + 1


@pytest.fixture
def feed(tmp_path):
    made = []

    def make(**kw):
        f = Feed(tmp_path / f"events{len(made)}", **kw)
        made.append(f)
        return f
    yield make
    for f in made:
        f.log.close()


def test_defaults_fit_the_rated_load():
    # 1M timers x 8 events (created, armed, fired, settled, reschedules) at the measured
    # bytes/event fit the default budget with margin, and the map holds the budget.
    assert 1_000_000 * 8 * EVENT_BYTES * 4 < EVENTS_BUDGET
    assert EVENTS_MIN_AGE_MS == DAY_MS
    assert events_map_size(EVENTS_BUDGET) > EVENTS_BUDGET * 1.25
    with pytest.raises(ValueError, match="cannot hold the events budget"):
        EventLog("/nonexistent-not-created", budget=1 << 30, map_size=1 << 30)


def test_bytes_per_event_matches_the_documented_figure(feed):
    f = feed()
    f.emit(20_000, batch=1000)
    per_event = f.log.used_bytes() / 20_000
    assert EVENT_BYTES - 3 <= per_event <= EVENT_BYTES + 3, per_event
    assert not f.log.budget_full and f.log.floor == 1


def test_budget_trims_oldest_first_and_is_the_hard_bound(feed, caplog):
    budget = 128 << 10
    f = feed(budget=budget)
    caplog.set_level(logging.WARNING, logger="minoots.api.events")
    f.emit(6000)                                   # ~560 KB of events into a 128 KiB budget
    log = f.log
    assert log.used_bytes() <= budget + 3 * 4096    # at most a write's worth over, then trimmed back
    kept = f.retained()
    assert kept == list(range(log.floor, 6001))    # the newest, contiguous: the oldest went first
    assert 1000 < len(kept) < 1500                 # ~budget / 94 B
    with pytest.raises(EventsUnavailable, match="starts at"):
        log.read(log.floor - 1)
    assert log.budget_full and log.budget_trimmed == log.floor - 1
    # These events are all younger than min-age: the budget still wins, and says so (once per 30 s).
    assert log.trimmed_young == log.budget_trimmed
    short = [r for r in caplog.records if "younger than --events-min-age" in r.getMessage()]
    assert len(short) == 1
    st = log.stats()
    assert st["budget"] == budget and st["bytes"] == log.used_bytes() and st["stored"] <= len(kept) + 300


def test_min_age_is_kept_when_the_budget_allows(feed):
    # Old events (3 days) and no max-age: nothing is trimmed while the budget has room.
    f = feed(budget=4 << 20)
    f.emit(3000, at=NOW - 3 * DAY_MS)
    f.emit(10)
    assert f.log.floor == 1 and len(f.retained()) == 3010 and not f.log.budget_full
    # With a max-age, what is older than it goes even under the budget; younger stays.
    g = feed(budget=4 << 20, min_age_ms=3600_000, max_age_ms=2 * 3600_000)
    g.emit(500, at=NOW - 3 * 3600_000)
    g.emit(500, at=NOW - 3600_000)
    g.emit(1)
    assert g.retained() == list(range(501, 1002))


def test_budget_trimming_old_events_does_not_warn(feed, caplog):
    f = feed(budget=64 << 10)
    caplog.set_level(logging.WARNING, logger="minoots.api.events")
    f.emit(3000, at=NOW - 2 * DAY_MS)              # older than min-age: trimming them keeps the promise
    assert f.log.budget_trimmed > 0 and f.log.trimmed_young == 0
    assert not [r for r in caplog.records if "min-age" in r.getMessage()]


def test_a_lower_budget_after_restart_trims_in_chunks(feed, tmp_path):
    f = feed()
    f.emit(20_000, batch=1000)
    f.log.close()
    log = EventLog(tmp_path / "events0", budget=64 << 10, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    try:
        m.emit(tuple(event(s) for s in range(20_001, 20_011)))
        assert log.floor > 19_000                          # the floor moves at once ...
        assert log.stats()["stored"] > 10_000              # ... the keys go in bounded chunks
        for first in range(20_011, 20_211, 10):
            m.emit(tuple(event(s) for s in range(first, first + 10)))
        assert log.stats()["stored"] < 1000 and log.used_bytes() <= (64 << 10) + 3 * 4096
    finally:
        log.close()
        f.log = EventLog(tmp_path / "events0")    # reopen so the fixture's close has something to close
    assert f.log.floor > 19_000                          # the floor is persisted


def _collect_metrics(log) -> dict:
    from minoots.api.telemetry import EventsCollector

    return {s.name: s.value for fam in EventsCollector(log).collect() for s in fam.samples}


def test_watcher_near_trim_is_reported_then_out_of_range(feed, caplog):
    f = feed(budget=256 << 10)
    log = f.log
    caplog.set_level(logging.WARNING, logger="minoots.api.events")
    f.emit(6000)
    assert log.budget_full
    retained = log.visible - log.floor + 1                # ~2800

    async def main():
        bridge = NotifyingBridge()
        slow = watch_batches(log, bridge, log.floor, None, frozenset())
        first = await slow.__anext__()                    # reads one batch (512 events), then pauses
        cursor = first[-1].sequence + 1
        live = watch_batches(log, bridge, log.visible - 10, None, frozenset())
        await live.__anext__()                            # caught up: never near trim
        assert log.watchers == 2 and not log.lagging
        assert _collect_metrics(log)["minoots_watchers_near_trim"] == 0
        # Commit until the floor is within 10 % of the retained range below the slow cursor.
        while cursor - log.floor >= retained * 0.10:
            f.emit(50)
        assert log.lagging and [w.cursor for w in log.near_trim()] == [cursor]
        m = _collect_metrics(log)
        assert m["minoots_watchers_near_trim"] == 1 and m["minoots_events_budget_full"] == 1
        assert m["minoots_events_budget_bytes"] == 256 << 10 and m["minoots_watchers_near_trim_warnings_total"] == 1
        f.emit(50)                                        # still near: no second line within 30 s
        near = [r for r in caplog.records if "close to being trimmed" in r.getMessage()]
        assert len(near) == 1 and near[0].cursor == cursor and near[0].floor <= cursor
        # Falls behind the trim point: OUT_OF_RANGE, semantics unchanged.
        while log.floor <= cursor:
            f.emit(50)
        with pytest.raises(EventsUnavailable, match="starts at"):
            await slow.__anext__()
        assert log.watchers_dropped == 1
        await slow.aclose()
        await live.aclose()
        assert log.watchers == 0 and not log.lagging

    asyncio.run(main())


def test_cluster_status_reports_lagging(feed):
    from minoots.api.client.wire import status_from_pb
    from minoots.api.service import ClusterService
    from minoots.cli.cluster import status_json

    f = feed(budget=64 << 10)
    f.emit(2000)
    w = f.log.register_watch(f.log.floor + 1)

    class Node:
        def status(self):
            return {"node": "n1", "cluster": "c", "leader": "n1", "leader_grpc_address": "a:1",
                    "leader_address": "a:2", "term": 1, "commit_index": 5, "applied_index": 5, "members": [],
                    "timers": {}, "role": "leader", "log_len": 1, "has_quorum": True, "fired_total": 0,
                    "ticks_proposed": 0, "next_deadline": None}

    class Bridge:
        async def call(self, fn, *a):
            return fn(*a)

    class Context:
        def __getattr__(self, name):
            return lambda *a, **k: None

    async def status(events):
        return await ClusterService(Node(), Bridge(), events).Status(None, Context())

    resp = asyncio.run(status(f.log))
    assert resp.lagging and status_json(status_from_pb(resp))["lagging"] is True
    f.log.unregister_watch(w)
    resp = asyncio.run(status(f.log))
    assert not resp.lagging and status_json(status_from_pb(resp))["lagging"] is False


def _timers_lifecycle(f: Feed, timers: int, batch: int = 500) -> list[str]:
    """Commit created+armed for every timer (the load phase), then fired+settled: 4 per timer."""
    ids = [uuid.uuid4().hex for _ in range(timers)]
    for kind in (EventKind.CREATED, EventKind.ARMED, EventKind.FIRED, EventKind.SETTLED):
        for i in range(0, timers, batch):
            chunk = ids[i:i + batch]
            f.m.emit(tuple(event(f.seq + 1 + j, kind, timer=t) for j, t in enumerate(chunk)))
            f.seq += len(chunk)
    return ids


@pytest.mark.parametrize("retention", ["old-default", "new-default-scaled", "new-default"])
def test_slow_consumer_resumes_without_losing_a_fired_event(feed, retention):
    """The issue's test, scaled by 1/200: 5,000 timers stand for 1M. The old default kept
    1,000,000 events (5,000 scaled), fewer than one load's created+armed alone; the new
    default budget (4 GiB, 20 MiB scaled) holds every event of the load. A consumer reads
    one batch, pauses while the whole lifecycle is committed, then resumes."""
    timers, scale = 5000, 1 / 200
    kw = {"old-default": {"keep": int(1_000_000 * scale), "budget": EVENTS_BUDGET},
          "new-default-scaled": {"budget": int(EVENTS_BUDGET * scale)},
          "new-default": {}}[retention]
    f = feed(**kw)

    async def main():
        bridge = NotifyingBridge()
        fired: set[str] = set()
        consumer = watch_batches(f.log, bridge, 1, None, frozenset({int(EventKind.FIRED)}))
        task = asyncio.ensure_future(consumer.__anext__())
        await asyncio.sleep(0)                           # registered, waiting for events: then paused
        ids = _timers_lifecycle(f, timers)               # 20,000 events committed while it waits
        bridge.notify()
        try:
            batch = await asyncio.wait_for(task, 5)
            while True:
                fired.update(e.timer_id for e in batch)
                if len(fired) == timers:
                    break
                batch = await asyncio.wait_for(consumer.__anext__(), 5)
        finally:
            await consumer.aclose()
        return ids, fired

    if retention == "old-default":
        with pytest.raises(EventsUnavailable, match="starts at"):
            asyncio.run(main())
        return
    ids, fired = asyncio.run(main())
    assert fired == set(ids) and f.log.floor == 1 and not f.log.budget_full


def test_node_config_checks_retention_flags():
    from minoots.api.process import ApiConfig

    ApiConfig(grpc="127.0.0.1:1").validate()                           # defaults: budget, 24 h, no count
    ApiConfig(grpc="127.0.0.1:1", events_keep=100, events_max_age_s=86400).validate()
    with pytest.raises(ValueError, match="below --events-min-age"):
        ApiConfig(grpc="127.0.0.1:1", events_max_age_s=60).validate()
    ApiConfig(grpc="127.0.0.1:1", events_min_age_s=10, events_max_age_s=60).validate()
    with pytest.raises(ValueError, match="--events-budget"):
        ApiConfig(grpc="127.0.0.1:1", events_budget=1000).validate()


def test_node_run_help_documents_the_budget():
    from click.testing import CliRunner

    from minoots.cli import main

    out = CliRunner().invoke(main, ["node", "run", "--help"], terminal_width=200).output
    assert "--events-budget" in out and "4GiB" in out and "94 bytes" in out
    assert "--events-min-age" in out and "--events-keep" in out


@pytest.mark.cluster
def test_node_reports_a_paused_watcher_near_trim(tmp_path):
    """One real node with a 64 KiB events budget: a WatchEvents client that stops reading
    (the server's cursor stops where gRPC flow control blocks it) shows up in Cluster.Status
    `lagging`, `minoots cluster status --json` and the metric, then gets OUT_OF_RANGE."""
    import json
    import time
    import urllib.request

    import grpc
    from click.testing import CliRunner
    from google.protobuf.duration_pb2 import Duration

    from minoots.cli import main
    from minoots.raft.testing import Bearer, LocalCluster
    from minoots.v1 import cluster_pb2 as cpb
    from minoots.v1 import cluster_pb2_grpc, timers_pb2_grpc
    from minoots.v1 import timers_pb2 as pb

    c = LocalCluster(tmp_path / "c", size=1, node_args=("--events-budget", "64KiB"))
    ch = None
    try:
        c.start()
        node = c.nodes[c.leader(timeout=30)]
        # Small HTTP/2 windows, so that the server's writes block soon after the client stops reading.
        ch = grpc.intercept_channel(grpc.insecure_channel(node.grpc, options=[
            ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 4096)]), Bearer())
        tstub, cstub = timers_pb2_grpc.TimersStub(ch), cluster_pb2_grpc.ClusterStub(ch)

        def create(n: int) -> None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    tstub.CreateTimers(pb.CreateTimersRequest(timers=[
                        pb.TimerSpec(delay=Duration(seconds=3600)) for _ in range(n)]), timeout=10)
                    return
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

        create(10)
        stream = tstub.WatchEvents(pb.WatchEventsRequest(from_sequence=1), timeout=120)
        assert next(stream).sequence == 1                   # then this client stops reading
        assert not cstub.Status(cpb.StatusRequest(), timeout=10).lagging
        deadline = time.monotonic() + 30
        while not cstub.Status(cpb.StatusRequest(), timeout=10).lagging:
            assert time.monotonic() < deadline, "the paused watcher never showed up as lagging"
            create(20)                                      # 40 events, ~3.7 KB, a step of ~6 % of the budget
        res = CliRunner().invoke(main, ["cluster", "status", "--json", "--node", node.grpc, "--timeout", "10"])
        assert res.exit_code == 0 and json.loads(res.output)["lagging"] is True, res.output
        metrics = urllib.request.urlopen(node.metrics_url, timeout=10).read().decode()
        assert "minoots_watchers_near_trim 1.0" in metrics
        for _ in range(100):                                # the trim overtakes it
            create(50)
            if not cstub.Status(cpb.StatusRequest(), timeout=10).lagging:
                break
        with pytest.raises(grpc.RpcError) as info:
            for _ in stream:
                pass
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE, info.value.details()
    finally:
        if ch is not None:
            ch.close()
        c.stop()


def test_the_smallest_budget_is_32_kib_and_each_bound_is_checked(tmp_path):
    # --events-budget's floor (a few pages); anything below, and a bad keep / min-age /
    # map size, is refused before an LMDB environment is created.
    log = EventLog(tmp_path / "ok", budget=32 << 10)
    log.close()
    for kw, error in [({"budget": (32 << 10) - 1}, "budget must be at least 32768 bytes"),
                      ({"keep": 0}, "keep must be at least 1"),
                      ({"min_age_ms": -1}, "min-age must not be negative"),
                      ({"budget": 1 << 20, "map_size": (2 << 20) - 1}, "cannot hold the events budget")]:
        with pytest.raises(ValueError, match=error):
            EventLog(tmp_path / "refused", **kw)
    assert not (tmp_path / "refused").exists()
    EventLog(tmp_path / "edge", budget=1 << 20, map_size=2 << 20, keep=1, min_age_ms=0).close()


def test_without_a_map_size_the_map_is_sized_for_the_budget(tmp_path):
    # LMDB's own default map (10 MiB) would fill long before a real budget does.
    budget = 256 << 20
    log = EventLog(tmp_path / "events", budget=budget)
    try:
        assert log._env.info()["map_size"] == events_map_size(budget) > budget
    finally:
        log.close()


def test_a_fresh_store_creates_its_directories_and_reports_no_watcher_near_trim(tmp_path):
    log = EventLog(tmp_path / "data" / "n1" / "events")
    try:
        w = log.register_watch(1)
        assert log.near_trim() == [] and not log.lagging and not log.budget_full
        assert (log.pinned, log.budget_trimmed, log.trimmed_young) == (0, 0, 0)
        log.unregister_watch(w)
    finally:
        log.close()


# ---- the budget's arithmetic at its edges (each found by a surviving mutant, docs/mutation.md) ----

def big_event(seq: int, id_len: int) -> Event:
    """An event whose value spills into LMDB overflow pages (a long timer id)."""
    return Event(seq, EventKind.CREATED, "default", f"{seq}-".ljust(id_len, "x"), NOW, 1, TimerState.ARMED,
                 NOW + 5000, None)


def test_overflow_pages_count_against_the_budget(tmp_path):
    # Each of these events takes 6 overflow pages and almost nothing in the leaf pages: a
    # budget that counted only branch and leaf pages would never trim them.
    log = EventLog(tmp_path / "events", budget=32 << 10, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    try:
        for seq in range(1, 11):
            m.emit((big_event(seq, 24_000),))
        assert log.floor > 5 and log.budget_trimmed == log.floor - 1
        assert log.used_bytes() <= (32 << 10) + 7 * 4096
    finally:
        log.close()


def test_a_budget_smaller_than_one_event_still_keeps_the_newest(tmp_path):
    # Two events of ~40 KiB each against the smallest budget (32 KiB): the budget holds
    # "0" of them at this density, but the newest event always stays.
    log = EventLog(tmp_path / "events", budget=32 << 10, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    try:
        m.emit((big_event(1, 40_000), big_event(2, 40_000)))
        assert (log.floor, log.visible) == (2, 2)
        assert [e[0] for e in log.read(2)] == [2]
    finally:
        log.close()


def test_the_budget_is_full_only_above_95_percent(tmp_path):
    # budget 80 KiB: 95 % is exactly 19 pages. Three 24 kB events fill exactly 19 pages
    # (1 leaf + 3 x 6 overflow): not full. A fourth goes over the budget: trimmed, full.
    budget = 20 * 4096
    assert budget * 0.95 == 19 * 4096
    log = EventLog(tmp_path / "events", budget=budget, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    try:
        for seq in (1, 2, 3):
            m.emit((big_event(seq, 24_000),))
        assert log.used_bytes() == 19 * 4096 and log.floor == 1
        assert log.budget_full is False
        m.emit((big_event(4, 24_000),))
        assert log.budget_full is True and log.floor > 1
    finally:
        log.close()


def test_young_trimming_is_judged_by_the_newest_trimmed_events_age(tmp_path):
    # Three ~40 KiB events against 32 KiB: only the newest (3) stays, so 1 and 2 are
    # trimmed, and the newest of them (2) decides whether min-age was cut short. Event 2
    # happened exactly min-age ago (still young: "kept when the budget allows" is at least
    # min-age); its fire_at is long past, which must not count; event 1 is old.
    day = DAY_MS
    old, young = big_event(1, 40_000), big_event(2, 40_000)
    old = old._replace(at_ms=NOW - 2 * day)
    young = young._replace(at_ms=NOW - day, fire_at=0)
    log = EventLog(tmp_path / "events", budget=32 << 10, min_age_ms=day, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    try:
        m.emit((old, young, big_event(3, 40_000)))
        assert log.floor == 3 and (log.budget_trimmed, log.trimmed_young) == (2, 2)
    finally:
        log.close()


def test_each_near_trim_watcher_is_warned_and_counted(feed, caplog):
    f = feed(budget=256 << 10)
    log = f.log
    f.emit(6000)
    assert log.budget_full
    a, b = log.register_watch(log.floor), log.register_watch(log.floor + 1)
    far = log.register_watch(log.visible + 1)          # caught up
    f.emit(1)
    assert log.near_trim_warnings == 2
    assert sorted(r.watcher for r in caplog.records if "close to being trimmed" in r.getMessage()) == [a.id, b.id]
    for w in (a, b, far):
        log.unregister_watch(w)


@pytest.mark.parametrize("retained, margin", [(9, 1), (19, 1), (20, 2), (29, 2), (30, 3)])
def test_near_trim_is_the_lowest_tenth_of_the_retained_range(tmp_path, retained, margin):
    # The margin arithmetic alone, on a store whose budget is full with `retained` events
    # above the floor: cursors floor .. floor + margin - 1 are near trim, the next is not;
    # a cursor at the newest event (not read yet) counts, one past it (caught up) not.
    log = EventLog(tmp_path / "events")
    try:
        log.budget_full, log.floor, log.visible = True, 1000, 1000 + retained - 1
        near = [log.register_watch(c) for c in range(1000, 1000 + margin)]
        not_near = log.register_watch(1000 + margin)
        assert log.near_trim() == near
        for w in near + [not_near]:
            log.unregister_watch(w)
        log.floor = log.visible = 1000 + retained            # the whole range is one event: at newest
        at_newest, caught_up = log.register_watch(log.visible), log.register_watch(log.visible + 1)
        assert log.near_trim() == [at_newest]
    finally:
        log.close()
