"""Durable subscriptions (issue 18): replicated cursors that hold retention back.

Unit tests: the replicated table (raft/subscriptions.py), its commands' golden bytes,
the event store's pin (api/events.py), and a filtered stream's progress reports. Cluster
tests: the SDK's `subscribe` against real node processes, a subscription that blocks
trimming and releases it when committed, the hard budget marking it overrun with an
exact count, resync from state, and a consumer that goes on after its node is killed
in the middle of a burst.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from minoots.api.events import EventLog, watch_batches
from minoots.kernel import EventKind, InvalidArgument
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM
from minoots.raft.subscriptions import (MAX_SUBSCRIPTIONS, SubscriptionExists, SubscriptionNotFound,
                                         SubscriptionTable)

from support import FakeMachine, NotifyingBridge, cluster_grpc, read_framed, wait_for

DATA = Path(__file__).parent / "data"
NOW = 1_790_000_000_000


# ---------------------------------------------------------------- the replicated table

def test_table_create_commit_forward_only_and_pin():
    t = SubscriptionTable()
    assert t.pin is None
    a = t.create(NOW, "default", "a", False, [4, 3, 3], 5, head=10)
    assert a.kinds == (3, 4) and a.cursor == 5 and t.pin == 5
    t.create(NOW, "default", "b", False, [], 8, head=10)
    assert t.pin == 5
    assert t.commit("default", "a", 9, head=10).cursor == 9 and t.pin == 8
    assert t.commit("default", "a", 7, head=10).cursor == 9          # never back
    with pytest.raises(InvalidArgument, match="past the newest event"):
        t.commit("default", "a", 12, head=10)
    with pytest.raises(InvalidArgument, match="past the newest event"):
        t.create(NOW, "default", "c", False, [], 12, head=10)
    with pytest.raises(SubscriptionExists):
        t.create(NOW, "default", "a", False, [], 1, head=10)
    assert t.create(NOW, "other", "a", False, [], 11, head=10).tenant == "other"   # names are per tenant
    t.delete("default", "b")
    assert t.pin == 9
    with pytest.raises(SubscriptionNotFound):
        t.get("default", "b")
    with pytest.raises(InvalidArgument):
        t.create(NOW, "default", "bad name", False, [], 1, head=10)
    with pytest.raises(InvalidArgument):
        t.create(NOW, "default", "k", False, [0], 1, head=10)


def test_overrun_is_counted_exactly_and_only_from_the_expected_cursor():
    t = SubscriptionTable()
    t.create(NOW, "default", "a", False, [], 5, head=100)
    # A commit landed after the proposer looked: its mark (expected 4) changes nothing.
    assert t.mark_overrun("default", "a", 4, 50).lost == 0
    s = t.mark_overrun("default", "a", 5, 50)
    assert (s.cursor, s.lost, s.overrun) == (50, 45, True) and t.pin == 50
    s = t.mark_overrun("default", "a", 50, 60)
    assert s.lost == 55
    assert t.mark_overrun("default", "a", 60, 60).lost == 55        # nothing skipped, nothing counted


def test_table_is_bounded_and_round_trips(monkeypatch):
    import minoots.raft.subscriptions as subs
    monkeypatch.setattr(subs, "MAX_SUBSCRIPTIONS", 3)
    t = SubscriptionTable()
    for i in range(3):
        t.create(NOW + i, "default", f"s{i}", i == 1, [3], 1 + i, head=10)
    with pytest.raises(subs.TooManySubscriptions):
        t.create(NOW, "default", "s9", False, [], 1, head=10)
    t.commit("default", "s0", 7, head=10)
    back = SubscriptionTable.from_json(t.to_json())
    assert back.list() == t.list() and back.pin == t.pin == 2
    assert MAX_SUBSCRIPTIONS == 10_000


def golden() -> list[bytes]:
    return read_framed(DATA / "commands_subscriptions_v1.bin")


GOLDEN = [c.CreateSubscription(NOW, "default", "billing", False, (3, 4), 1),
          c.CreateSubscription(NOW + 1, "acme", "all", True, (), 5),
          c.CommitSubscription("default", "billing", 3),
          c.MarkSubscriptionOverrun("default", "billing", 3, 5),
          c.DeleteSubscription("acme", "all")]


def test_golden_bytes_decode_and_encode_identically():
    data = golden()
    assert [c.decode(b) for b in data] == GOLDEN
    assert [c.encode(r) for r in GOLDEN] == data


def test_replicas_agree_and_snapshots_carry_subscriptions():
    fsms = [TimerFSM({}), TimerFSM({})]
    # Events exist (the kernel's seq bounds starts and commits): create some timers first.
    from minoots.kernel import TimerSpec
    create = c.encode(c.CreateTimers(NOW, ((TimerSpec(f"t{i}", NOW + 10), ) for i in range(3))))
    log = [create] + [c.encode(r) for r in GOLDEN[:2]]
    log[2] = c.encode(c.CreateSubscription(NOW + 1, "acme", "all", True, (), 5))   # refused: past the head (6 events)
    log += [c.encode(c.CommitSubscription("default", "billing", 4)), c.encode(c.CommitSubscription("default", "billing", 99))]
    results = [[f.apply(b) for b in log] for f in fsms]
    assert [type(r).__name__ for r in results[0]] == [type(r).__name__ for r in results[1]]
    assert isinstance(results[0][3], c.KernelError) is False and results[0][3].cursor == 4
    assert isinstance(results[0][4], InvalidArgument)
    snap = fsms[0].snapshot()
    fresh = TimerFSM({})
    fresh.restore(fsms[0].kernel.to_bytes(), snap.names, snap.grpc, snap.tokens, snap.quotas, snap.subscriptions)
    assert fresh.subscriptions.list() == fsms[1].subscriptions.list()
    assert fresh.subscriptions.pin == 4
    old = TimerFSM({})
    old.restore(fsms[0].kernel.to_bytes(), snap.names, snap.grpc, snap.tokens, snap.quotas)   # a snapshot from before
    assert old.subscriptions.list() == []


# ---------------------------------------------------------------- the event store's pin

def _events(first: int, n: int):
    from minoots.kernel import Event, TimerState
    return tuple(Event(s, EventKind.CREATED, "default", f"t{s}", NOW, 1, TimerState.ARMED, NOW + 5, None)
                 for s in range(first, first + n))


def test_count_retention_stops_at_the_pin_and_resumes_after_commit(tmp_path):
    log = EventLog(tmp_path / "ev", keep=50, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    try:
        m.pin = 1
        m.emit(_events(1, 200))
        assert log.floor == 1 and log.pinned == 150       # all 200 kept: the subscription has committed none
        m.pin = 120                                       # it committed up to 119
        m.emit(_events(201, 10))
        assert log.floor == 120
        m.pin = None                                      # deleted: the count bound alone
        m.emit(_events(211, 10))
        assert log.floor == 171 and log.pinned == 0
    finally:
        log.close()


def test_only_the_budget_passes_the_pin_and_says_so(tmp_path):
    log = EventLog(tmp_path / "ev", budget=64 << 10, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    seen = []
    log.on_overrun = seen.append
    try:
        m.pin = 1
        seq = 1
        while log.floor == 1:
            m.emit(_events(seq, 100))
            seq += 100
            assert seq < 100_000
        assert seen and seen[-1] == log.floor             # told the exact new floor
        n = len(seen)
        m.emit(_events(seq, 1))                           # the budget is full: every write trims
        assert len(seen) == n + 1 and seen[-1] == log.floor
        m.pin = seq                                       # a subscription that committed everything
        m.emit(_events(seq + 1, 1))
        assert len(seen) == n + 1                         # trimmed, but not past the pin: nothing to say
    finally:
        log.close()


def test_a_budget_floor_exactly_at_the_pin_is_no_overrun(tmp_path):
    # The pin is the lowest cursor a subscription has not committed: trimming up to it (not
    # past it) loses it nothing. Find where the budget puts the floor with no pin, then run the
    # same writes again with the pin exactly there.
    def run(pin, path):
        log = EventLog(path, budget=64 << 10, clock=lambda: NOW)
        m = FakeMachine()
        log.attach(m)
        seen, floors = [], []
        log.on_overrun = seen.append
        m.pin = pin
        seq = 1
        try:
            while log.floor == 1:
                m.emit(_events(seq, 100))
                seq += 100
                assert seq < 100_000
            floors.append(log.floor)
            m.emit(_events(seq, 100))                     # the budget trims again, past the pin
            floors.append(log.floor)
        finally:
            log.close()
        return floors, seen

    (first, second), seen = run(None, tmp_path / "a")
    assert seen == [] and second > first > 1
    assert run(first, tmp_path / "b") == ([first, second], [second])


def test_without_an_overrun_handler_the_budget_passing_the_pin_logs_no_error(tmp_path, caplog):
    # A store no subscription API listens to (on_overrun left as it is): nothing to report.
    log = EventLog(tmp_path / "ev", budget=64 << 10, clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    m.pin = 1
    try:
        seq = 1
        while log.floor == 1:
            m.emit(_events(seq, 100))
            seq += 100
            assert seq < 100_000
        assert "overrun failed" not in caplog.text
    finally:
        log.close()


def test_a_filtered_stream_reports_how_far_it_examined(tmp_path):
    log = EventLog(tmp_path / "ev", clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)

    async def main():
        import minoots.api.events as ev
        bridge = NotifyingBridge()
        m.emit(_events(1, 30))                          # CREATED only: the filter hides all of them
        stream = watch_batches(log, bridge, 1, None, frozenset({int(EventKind.FIRED)}))
        old = ev.PROGRESS_EVERY_S
        ev.PROGRESS_EVERY_S = 0.0
        try:
            batch = await asyncio.wait_for(stream.__anext__(), 5)
        finally:
            ev.PROGRESS_EVERY_S = old
            await stream.aclose()
        return batch

    try:
        batch = asyncio.run(main())
        assert list(batch) == [] and batch.through == 30
    finally:
        log.close()


# ---------------------------------------------------------------- real clusters

def _client(cluster, **kw):
    import minoots
    return minoots.Client(cluster_grpc(cluster), timeout=30, **kw)


def _fire(client, n: int, delay_ms: int = 200, tenant=None) -> list[str]:
    spec = {"delay": delay_ms / 1000, **({"tenant": tenant} if tenant else {})}
    timers = client.create_many([dict(spec) for _ in range(n)])
    return [t.id for t in timers]


@pytest.mark.cluster
def test_subscribe_commits_and_resumes_after_the_committed_cursor(real_cluster):
    from minoots import EventKind as K
    with _client(real_cluster) as client:
        sub = client.create_subscription("fired-a", kinds=["fired"])
        assert sub.cursor >= 1 and sub.kinds == (K.FIRED,)
        ids = _fire(client, 20)
        got = []
        with client.subscribe("fired-a", commit_every=5) as s:
            for ev in s:
                assert ev.kind == K.FIRED
                got.append(ev)
                if len({e.timer_id for e in got} & set(ids)) == len(ids):
                    break
        after = client.get_subscription("fired-a")
        # close() committed every event handed out: the next subscriber starts after the last.
        assert after.cursor == got[-1].sequence + 1 and after.commits >= 1
        more = _fire(client, 3)
        with client.subscribe("fired-a") as s:
            first = next(s)
        assert first.sequence > got[-1].sequence and first.timer_id in more
        listed = client.list_subscriptions()
        assert "fired-a" in [x.name for x in listed]
        client.delete_subscription("fired-a")
        with pytest.raises(Exception, match="no subscription"):
            client.get_subscription("fired-a")


@pytest.mark.cluster
def test_subscriptions_are_tenant_scoped(real_cluster):
    import minoots
    with _client(real_cluster) as admin:
        token, _ = admin.create_token("sub-reader", role="writer", tenants=["t-sub"])
        admin.create_subscription("mine", tenant="t-sub")
        admin.create_subscription("theirs", tenant="t-other")
        with minoots.Client(cluster_grpc(real_cluster), timeout=30, token=token) as c2:
            assert [s.name for s in c2.list_subscriptions(tenant="t-sub")] == ["mine"]
            with pytest.raises(minoots.PermissionDenied):
                c2.get_subscription("theirs", tenant="t-other")
            with pytest.raises(minoots.PermissionDenied):
                c2.create_subscription("everything", tenant="t-sub", all_tenants=True)


@pytest.mark.cluster
def test_list_timers_by_fired_at(real_cluster):
    with _client(real_cluster) as client:
        ids = set(_fire(client, 5, tenant="t-fired"))
        wait_for(lambda: all(t.fired_at is not None for t in client.list(tenant="t-fired")), "timers fired")
        fired = [t.fired_at for t in client.list(tenant="t-fired")]
        lo = min(fired)
        assert {t.id for t in client.list(tenant="t-fired", fired_at_from=lo)} == ids
        assert list(client.list(tenant="t-fired", fired_at_to=lo)) == []
        assert {t.id for t in client.list(tenant="t-fired", fired_at_from=max(fired))} <= ids
        assert list(client.list(tenant="t-fired", fired_at_from=max(fired) + __import__("datetime").timedelta(seconds=1))) == []


def _one_node(tmp_path, *args):
    from minoots.raft.testing import LocalCluster
    c = LocalCluster(tmp_path / "c", size=1, node_args=args)
    c.start()
    c.leader(timeout=30)
    return c


@pytest.mark.cluster
def test_a_subscription_blocks_trimming_until_committed(tmp_path):
    c = _one_node(tmp_path, "--events-keep", "50")
    try:
        with _client(c) as client:
            first = client.create_subscription("hold")
            _fire(client, 100, delay_ms=3_600_000)            # 200 events (created, armed), 4x the count bound
            info = wait_for(lambda: (s := client.get_subscription("hold")).node_event_head >= first.cursor + 199 and s,
                            "events applied")
            assert info.node_event_floor == first.cursor      # nothing it has not committed was trimmed
            client.commit_subscription("hold", first.cursor + 150)
            _fire(client, 1, delay_ms=3_600_000)              # the next write trims
            info = wait_for(lambda: (s := client.get_subscription("hold")).node_event_floor > first.cursor and s,
                            "trim after the commit")
            assert info.node_event_floor == first.cursor + 150 and not info.overrun and info.lost == 0
    finally:
        c.stop()


@pytest.mark.cluster
def test_the_hard_budget_marks_the_subscription_overrun_with_the_exact_count(tmp_path):
    c = _one_node(tmp_path, "--events-budget", "64KiB")
    try:
        with _client(c) as client:
            start = client.create_subscription("slow").cursor
            for _ in range(40):                               # ~80 KB of events: past the budget
                _fire(client, 100, delay_ms=3_600_000)
            # Marked by the leader after each trim that passed it (the last one too).
            info = wait_for(lambda: (s := client.get_subscription("slow")).overrun
                            and s.cursor >= s.node_event_floor and s, "overrun marked")
            # Counted exactly: everything between where it was and where it goes on from.
            assert info.lost == info.cursor - start and info.cursor >= start + 1
            assert info.cursor <= client.get_subscription("slow").node_event_head + 1
            # What it goes on from is served: a subscriber starts there without OutOfRange.
            with client.subscribe("slow") as s:
                ev = next(s)
            assert ev.sequence >= info.cursor
    finally:
        c.stop()


@pytest.mark.cluster
def test_a_consumer_that_lost_events_resyncs_from_state(tmp_path):
    """A slow consumer on a tiny budget: its stream's cursor is trimmed (OutOfRange on the
    only node); with on_loss="resync" it counts the loss, lists what fired since the last
    fire it saw and goes on live."""
    c = _one_node(tmp_path, "--events-budget", "64KiB")
    try:
        with _client(c) as client:
            client.create_subscription("resync", kinds=["fired"])
            early = set(_fire(client, 3, delay_ms=100))
            with client.subscribe("resync", on_loss="resync", commit_interval=3600, commit_every=10**9) as s:
                seen = {next(s).timer_id}
                s.watch._call.cancel()     # as if the network dropped: it reconnects on the next read
                # Meanwhile far more than the budget is committed and fires.
                burst = set()
                for _ in range(30):
                    burst |= set(_fire(client, 100, delay_ms=50))
                wait_for(lambda: client.get_subscription("resync").overrun, "overrun")
                late = set(_fire(client, 2, delay_ms=100))
                while not late <= seen | {t.id for t in s.resynced}:
                    seen.add(next(s).timer_id)
                assert s.lost > 0
                recovered = seen | {t.id for t in s.resynced}
                assert (early | burst | late) <= recovered        # nothing that fired is unaccounted for
    finally:
        c.stop()


@pytest.mark.cluster
def test_killing_the_node_a_subscriber_reads_from_mid_burst_loses_nothing(fresh_cluster):
    """The consumer goes on from another node with no gap; a second consumer started from the
    committed cursor sees again at most the events since the last commit."""
    c = fresh_cluster
    with _client(c) as client:
        client.create_subscription("burst", kinds=["fired"])
        ids = set(_fire(client, 300, delay_ms=1500))
        got: list = []
        with client.subscribe("burst", commit_every=50) as s:
            got.append(next(s))
            node = s.watch.node
            victim = next(n for n, x in c.nodes.items() if x.grpc == node)
            c.kill(victim)
            while {e.timer_id for e in got} != ids:
                got.append(next(s))
            assert s.watch.node != node
            committed = s.commit()
        seqs = [e.sequence for e in got]
        assert len(seqs) == len(set(seqs)) == len(ids)        # no duplicate, no gap
        assert committed == seqs[-1] + 1
        # A restarted consumer (same subscription) resumes after the committed cursor.
        more = set(_fire(client, 2, delay_ms=100))
        with client.subscribe("burst") as s2:
            again = [next(s2), next(s2)]
        assert {e.timer_id for e in again} == more


@pytest.mark.cluster
def test_cli_creates_consumes_and_shows_a_subscription(real_cluster):
    import json

    from click.testing import CliRunner

    from minoots.cli import main

    nodes = [a for n in cluster_grpc(real_cluster) for a in ("--node", n)]
    run = CliRunner().invoke
    res = run(main, ["subscription", "create", "cli-sub", "--kind", "fired", "--json", *nodes])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["kinds"] == ["fired"]
    with _client(real_cluster) as client:
        ids = set(_fire(client, 3, tenant=None))
    res = run(main, ["subscription", "consume", "cli-sub", "--limit", "3", *nodes])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.splitlines()]
    assert {x["timer_id"] for x in lines} == ids
    res = run(main, ["subscription", "get", "cli-sub", "--json", *nodes])
    info = json.loads(res.output)
    assert info["cursor"] == max(x["sequence"] for x in lines) + 1 and not info["overrun"]
    res = run(main, ["subscription", "get", "nope", *nodes])
    assert res.exit_code != 0 and "no subscription" in res.output and "Traceback" not in res.output
    res = run(main, ["subscription", "create", "bad name", *nodes])
    assert res.exit_code != 0 and "name" in res.output and "Traceback" not in res.output


class _FlakyCommitsClient:
    """What a Subscriber uses of a Client, with commits that fail (no leader) until healed."""

    def __init__(self, events):
        from types import SimpleNamespace

        from minoots.api.client.subscriptions import SubscriptionInfo
        self.info = SubscriptionInfo("default", "s", False, (), 1, None, False, 0, 0, 1, 0)
        self.events = events
        self.healed = False
        self.commits = []
        self._ns = SimpleNamespace

    def get_subscription(self, name, tenant=None):
        return self.info

    def watch(self, cursor, **kw):
        client = self

        class W:
            last_sequence = None
            _policy = client._ns(cursor=client._ns(next=cursor))

            def __iter__(self):
                return self

            def __next__(self):
                ev = next(client.events)
                self.last_sequence = ev.sequence
                self._policy.cursor.next = ev.sequence + 1
                return ev

            def close(self):
                pass
        return W()

    def commit_subscription(self, name, cursor, tenant=None):
        from dataclasses import replace

        from minoots.api.types import Unavailable
        if not self.healed:
            raise Unavailable("no Raft leader is reachable (simulated failover)")
        self.commits.append(cursor)
        self.info = replace(self.info, cursor=cursor)
        return self.info


def test_a_failed_automatic_commit_does_not_stop_the_stream():
    """The 1M run's observer died this way: an automatic commit during a failover raised out
    of the iterator. Now it is counted and the next commit covers it."""
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from minoots.api.client.subscriptions import Subscriber
    now = datetime.now(timezone.utc)
    evs = iter([SimpleNamespace(sequence=s, kind=EventKind.CREATED, at=now) for s in range(1, 11)])
    client = _FlakyCommitsClient(evs)
    sub = Subscriber(client, "s", "default", 2, 3600.0, "raise", 5.0, None)
    got = [next(sub).sequence for _ in range(6)]            # automatic commits fail along the way
    assert got == [1, 2, 3, 4, 5, 6] and sub.commit_errors >= 2 and client.commits == []
    client.healed = True
    next(sub)                                               # the next automatic commit goes through
    assert client.commits and client.commits[-1] == 7       # events 1..6 finished
    with pytest.raises(Exception, match="simulated"):
        client.healed = False
        sub.commit()                                        # an explicit commit still says it failed
    client.healed = True
    sub.close()
    assert client.commits[-1] == 8                          # close() commits everything handed out


def test_an_idle_filtered_stream_reports_progress_only_past_what_it_already_reported(tmp_path, monkeypatch):
    # The idle path's progress report: once the filter hid something and the stream has been
    # idle for PROGRESS_EVERY_S, an empty batch says how far it got (and not before: the
    # stream's clock is stepped only by its own waits, each a whole period); a stream that
    # has examined nothing yet reports nothing; an idle wait never outlasts the period.
    import types

    import minoots.api.events as ev
    clock = [100.0]
    monkeypatch.setattr(ev, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    log = EventLog(tmp_path / "ev", clock=lambda: NOW)
    m = FakeMachine()
    log.attach(m)
    m.emit(_events(1, 1))                                 # CREATED: the filter hides it
    fired = int(EventKind.FIRED)

    class Bridge:
        """Each wait steps the clock (a whole period unless `arrivals` says less) and may
        deliver events: arrivals = {wait number: (step, events)}."""

        def __init__(self, arrivals):
            self.arrivals, self.waits = arrivals, 0

        async def wait_events(self, timeout):
            assert timeout <= ev.PROGRESS_EVERY_S
            self.waits += 1
            step, events = self.arrivals.get(self.waits, (ev.PROGRESS_EVERY_S, ()))
            clock[0] += step
            if events:
                m.emit(events)
            await asyncio.sleep(0)

    async def batches(start, bridge, n):
        stream = watch_batches(log, bridge, start, None, frozenset({fired}))
        out = []
        try:
            for _ in range(n):
                batch = await asyncio.wait_for(stream.__anext__(), 30)
                out.append((bridge.waits, [e.sequence for e in batch], batch.through))
        finally:
            await stream.aclose()
        return out

    def created(seq):
        return _events(seq, 1)

    def fired_(seq):
        return (_events(seq, 1)[0]._replace(kind=EventKind.FIRED),)

    half = ev.PROGRESS_EVERY_S / 2
    try:
        # wait 1: idle a period after hiding 1: progress to 1 (idle path). wait 2: 2 arrives,
        # hidden, a period after that report: progress to 2 (read path). wait 3: idle, nothing
        # new: no report. wait 4: 3 arrives 1.5 periods after: progress to 3. waits 5, 6: 4
        # arrives half a period after that (no report yet), then a half period idle: progress to 4.
        arrivals = {2: (ev.PROGRESS_EVERY_S, created(2)), 4: (half, created(3)), 5: (half, created(4)),
                    6: (half, ()), 7: (half, fired_(5))}
        assert asyncio.run(batches(1, Bridge(arrivals), 4)) == [(1, [], 1), (2, [], 2), (4, [], 3), (6, [], 4)]
        # From 6, nothing examined: no progress; 6 (FIRED) arrives after two idle periods.
        assert asyncio.run(batches(6, Bridge({2: (ev.PROGRESS_EVERY_S, fired_(6))}), 1)) == [(2, [6], 6)]
    finally:
        log.close()
