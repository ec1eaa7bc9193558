"""Recurring timers on a real 3-node cluster, through the SDK and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

pytestmark = pytest.mark.cluster


def test_every_fires_each_occurrence_with_its_own_fire_id_on_every_node(real_cluster):
    import minoots
    from minoots.api.types import EventKind, TimerState, datetime_to_ms
    from support import cluster_grpc, wait_for

    with minoots.Client(cluster_grpc(real_cluster), timeout=60) as c:
        t = c.create(delay=0.3, id="rec", tenant="sched", every=1, max_count=3)
        assert (t.every, t.max_count, t.until, t.state) == (timedelta(seconds=1), 3, None, TimerState.ARMED)
        first = t.fire_at_ms
        wait_for(lambda: c.get("rec", tenant="sched").state == TimerState.SETTLED, "three occurrences")
        fired = []
        w = c.watch(from_sequence=1, tenant="sched")
        try:
            for e in w:
                if e.kind == EventKind.FIRED:
                    fired.append((e.fire_id, datetime_to_ms(e.fire_at)))
                if e.kind == EventKind.SETTLED:
                    break
        finally:
            w.close()
        assert len(fired) == 3 and len({f for f, _ in fired}) == 3
        assert [at for _, at in fired] == [first, first + 1000, first + 2000]   # on the grid
        for n in real_cluster.nodes.values():
            with minoots.Client([n.grpc], timeout=60) as one:
                got = wait_for(lambda: (lambda x: x if x.state == TimerState.SETTLED else None)(
                    one.get("rec", tenant="sched")), "every node to settle it")
                assert got.attempts == 3 and got.every == timedelta(seconds=1)
        with pytest.raises(minoots.InvalidArgument, match="every"):
            c.create(delay=1, tenant="sched", every=0.5)
        acked = c.create(delay=3600, tenant="sched", every=5, ack_required=True)     # allowed now (overlap)
        assert acked.ack_required and acked.overlap == "skip"


def test_cli_timer_create_every(real_cluster):
    from support import cluster_grpc

    env = dict(os.environ, MINOOTS_NODES=",".join(cluster_grpc(real_cluster)))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "minoots", "timer", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    r = run("create", "--in", "1h", "--every", "90s", "--max-count", "5", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["every_ms"], got["max_count"], got["until"]) == (90_000, 5, None)
    r = run("get", got["id"])
    assert r.returncode == 0 and "90s, 5 occurrences" in r.stdout
    r = run("create", "--in", "1h", "--every", "10ms")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "Traceback" not in r.stderr
    r = run("create", "--in", "1h", "--max-count", "3")
    assert r.returncode == 2 and "need --every or --cron" in r.stderr


def test_cron_timer_through_the_sdk_and_the_cli(real_cluster):
    import minoots
    from minoots.api.types import TimerState
    from support import cluster_grpc, wait_for

    with minoots.Client(cluster_grpc(real_cluster), timeout=60) as c:
        t = c.create(delay=0, id="cron1", tenant="sched", cron="* * * * * *", tz="UTC", max_count=2)
        assert (t.cron, t.tz, t.max_count) == ("* * * * * *", "UTC", 2) and t.fire_at_ms % 1000 == 0
        wait_for(lambda: c.get("cron1", tenant="sched").state == TimerState.SETTLED, "two occurrences")
        assert c.get("cron1", tenant="sched").attempts == 2
        with pytest.raises(minoots.InvalidArgument, match="time zone"):
            c.create(delay=0, tenant="sched", cron="0 9 * * *", tz="Nowhere/Special")
    env = dict(os.environ, MINOOTS_NODES=",".join(cluster_grpc(real_cluster)))
    r = subprocess.run([sys.executable, "-m", "minoots", "timer", "create", "--cron", "0 9 * * 1-5", "--tz",
                        "Europe/Paris", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert (got["cron"], got["tz"], got["state"]) == ("0 9 * * 1-5", "Europe/Paris", "armed")
    r = subprocess.run([sys.executable, "-m", "minoots", "timer", "create", "--cron", "0 9 * * *"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "--cron and --tz go together" in r.stderr


# ---- pause / resume / trigger / preview / catch-up (kernel/recurrence.py) ------------------


def _events_of(client, tenant: str, timer_id: str, until_kind, count: int = 1) -> list:
    """This tenant's events of one timer from the start, up to its `count`-th `until_kind` event."""
    out, seen = [], 0
    w = client.watch(from_sequence=1, tenant=tenant)
    try:
        for e in w:
            if e.timer_id != timer_id:
                continue
            out.append(e)
            if e.kind == until_kind:
                seen += 1
                if seen == count:
                    return out
    finally:
        w.close()
    return out


def test_pause_resume_trigger_and_next_through_the_sdk_and_the_cli(real_cluster):
    import grpc

    import minoots
    from minoots.api.types import TimerState, datetime_to_ms
    from minoots.v1 import timers_pb2
    from support import cluster_grpc

    hour = 3_600_000
    with minoots.Client(cluster_grpc(real_cluster), timeout=60, tenant="ctl") as c:
        t = c.create(delay=3600, id="hourly", every=3600, catch_up="skip", overlap="buffer_one", max_count=4)
        assert (t.catch_up, t.overlap, t.paused) == ("skip", "buffer_one", False)
        first = t.fire_at_ms
        assert [datetime_to_ms(x) for x in c.next_occurrences("hourly", 10)] == [first + k * hour for k in range(4)]
        p = c.pause("hourly")
        assert (p.paused, p.state) == (True, TimerState.SCHEDULED)
        with pytest.raises(minoots.FailedPrecondition, match="already paused"):
            c.pause("hourly")
        tr = c.trigger("hourly")
        assert (tr.triggered, tr.attempts, tr.paused, tr.fire_at_ms) == (1, 1, True, first)
        r = c.resume("hourly")
        assert (r.paused, r.state, r.fire_at_ms) == (False, TimerState.ARMED, first)    # still in the future
        assert len(c.next_occurrences("hourly", 10)) == 4          # the trigger does not count against max_count
        # bad input: typed errors, nothing changed
        one = c.create(delay=3600, id="once")
        for call in (c.pause, c.resume, c.trigger):
            with pytest.raises(minoots.FailedPrecondition, match="does not recur"):
                call("once")
        with pytest.raises(minoots.NotFound):
            c.pause("missing")
        with pytest.raises(minoots.InvalidArgument, match="catch_up"):
            c.create(delay=1, every=5, catch_up="sometimes")
        with pytest.raises(minoots.InvalidArgument, match="count"):
            c.next_occurrences("hourly", 0)
        assert c.get("once").revision == one.revision and c.get("hourly").revision == r.revision
        node = real_cluster.nodes[next(iter(real_cluster.nodes))]
        for count in (0, 101):          # the server's own check, past the SDK's
            with pytest.raises(grpc.RpcError) as info:
                node.timers().NextOccurrences(timers_pb2.NextOccurrencesRequest(tenant="ctl", id="hourly",
                                                                                count=count), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad = timers_pb2.TimerSpec(id="badpol", tenant="ctl", cron="0 9 * * *", time_zone="UTC", catch_up=9)
        bad.delay.FromSeconds(1)
        with pytest.raises(grpc.RpcError) as info:
            node.timers().CreateTimer(timers_pb2.CreateTimerRequest(timer=bad), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "catch_up" in info.value.details()
        with pytest.raises(minoots.NotFound):
            c.get("badpol")

    env = dict(os.environ, MINOOTS_NODES=",".join(cluster_grpc(real_cluster)))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "minoots", "timer", *args, "--tenant", "ctl"],
                              capture_output=True, text=True, timeout=120, env=env)

    r = run("create", "--cron", "0 9 * * 1-5", "--tz", "Europe/Paris", "--catch-up", "all", "--id", "cr", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["catch_up"] == "all"
    r = run("next", "cr", "--count", "5", "--json")
    assert r.returncode == 0, r.stderr
    times = json.loads(r.stdout)["occurrences"]
    assert len(times) == 5 and times == sorted(times)
    r = run("pause", "cr")
    assert r.returncode == 0 and "paused" in r.stdout and "PAUSED" in r.stdout
    r = run("trigger", "cr", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["triggered"] == 1
    r = run("resume", "cr", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["paused"] is False
    r = run("pause", "once")
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr and "Traceback" not in r.stderr
    r = run("next", "cr", "--count", "0")
    assert r.returncode == 2 and "--count" in r.stderr
    r = run("create", "--in", "1h", "--catch-up", "all")
    assert r.returncode == 2 and "need --every or --cron" in r.stderr


def test_a_recurring_timer_keeps_its_grid_across_leader_kills_with_pause_trigger_resume(tmp_path):
    """catch_up="all": every occurrence fires exactly once, with its own fire_id, though the
    leader is killed while it fires (the new leader fires what came due meanwhile); a pause
    taken before a second kill holds on the new leader; trigger and resume there work."""
    import minoots
    from minoots.api.types import EventKind, TimerState, datetime_to_ms
    from support import cluster_grpc, start_cluster, wait_for

    c = start_cluster(tmp_path / "cluster")
    try:
        with minoots.Client(cluster_grpc(c), timeout=60, tenant="beat") as cl:
            t = cl.create(delay=1, id="b", every=1, catch_up="all")
            first = t.fire_at_ms
            wait_for(lambda: cl.get("b").attempts >= 3, "three occurrences")
            killed = c.leader()
            c.kill(killed)
            c.leader(exclude={killed}, timeout=60)
            n = cl.get("b").attempts
            wait_for(lambda: cl.get("b").attempts >= n + 3, "occurrences from the new leader", timeout=90)
            c.start_node(killed)                       # back to three members before the next kill
            wait_for(lambda: c.status(killed) and c.status(killed)["applied_index"] >= c.status(c.leader())[
                "applied_index"], "the restarted node to catch up", timeout=90, retry_on=(Exception,))
            p = cl.pause("b")
            assert p.paused and p.state == TimerState.SCHEDULED
            killed2 = c.leader()
            c.kill(killed2)
            c.leader(exclude={killed2}, timeout=60)
            assert cl.get("b").paused                  # the pause is a replicated fact
            tr = cl.trigger("b")
            r = cl.resume("b")
            assert r.state == TimerState.ARMED and tr.triggered == 1
            wait_for(lambda: cl.get("b").attempts >= tr.attempts + 3, "occurrences after the resume", timeout=90)
            cl.cancel("b")
            events = _events_of(cl, "beat", "b", EventKind.CANCELLED)
        kinds = [e.kind for e in events]
        pause_at, resume_at = kinds.index(EventKind.PAUSED), kinds.index(EventKind.RESUMED)
        fires = [(i, e) for i, e in enumerate(events) if e.kind == EventKind.FIRED]
        before = [datetime_to_ms(e.fire_at) for i, e in fires if i < pause_at]
        during = [e for i, e in fires if pause_at < i < resume_at]
        after = [datetime_to_ms(e.fire_at) for i, e in fires if i > resume_at]
        step = 1000
        assert before == [first + k * step for k in range(len(before))]       # no gap, no double, in order
        assert len(before) >= 6
        assert len(during) == 1 and during[0].fire_id == tr.fire_id          # the trigger alone
        resumed_at = datetime_to_ms(events[resume_at].fire_at)
        assert (resumed_at - first) % step == 0 and resumed_at > before[-1]
        assert after == [resumed_at + k * step for k in range(len(after))] and len(after) >= 3
        ids = [e.fire_id for _, e in fires]
        assert len(ids) == len(set(ids))
    finally:
        c.stop()


def test_a_flexible_window_fires_at_the_previewed_times_on_every_node(real_cluster):
    import minoots
    from minoots.api.types import EventKind, TimerState, datetime_to_ms
    from support import cluster_grpc, wait_for

    with minoots.Client(cluster_grpc(real_cluster), timeout=60, tenant="flex") as c:
        import time
        start = (time.time_ns() // 1_000_000 // 1000 + 2) * 1000          # a whole second, ~2 s ahead
        t = c.create(start, id="fw", every=2, flex=1.5, max_count=3)
        assert t.flex == timedelta(seconds=1.5)
        preview = [datetime_to_ms(x) for x in c.next_occurrences("fw", 5)]
        assert len(preview) == 3 and preview[0] == t.fire_at_ms
        wait_for(lambda: c.get("fw").state == TimerState.SETTLED, "three occurrences")
        fires = [datetime_to_ms(e.fire_at) for e in _events_of(c, "flex", "fw", EventKind.SETTLED)
                 if e.kind == EventKind.FIRED]
        assert fires == preview
        for k, f in enumerate(fires):
            assert start + 2000 * k <= f <= start + 2000 * k + 1500           # on the grid, within the window
        for n in real_cluster.nodes.values():
            with minoots.Client([n.grpc], timeout=60, tenant="flex") as one:
                got = wait_for(lambda: (lambda x: x if x.state == TimerState.SETTLED else None)(one.get("fw")),
                               "every node to settle it")
                assert got.fire_at_ms == fires[-1] and got.flex == timedelta(seconds=1.5)
        with pytest.raises(minoots.InvalidArgument, match="flex"):
            c.create(delay=1, every=2, flex=2)
        with pytest.raises(minoots.InvalidArgument, match="flex"):
            c.create(delay=1, flex=2)


def test_ack_required_recurring_timer_with_buffer_one_through_the_sdk(real_cluster):
    import minoots
    from minoots.api.types import TimerState
    from support import cluster_grpc, wait_for

    with minoots.Client(cluster_grpc(real_cluster), timeout=60, tenant="acks") as c:
        c.create(delay=0.5, id="ak", every=1, ack_required=True, overlap="buffer_one")
        t = wait_for(lambda: (lambda x: x if x.buffered and x.skipped >= 1 else None)(c.get("ak")),
                     "a pending fire, one buffered occurrence and a skipped one")
        assert t.state == TimerState.ARMED and len(t.pending_fire_ids) == 1 and t.attempts == 1
        after = c.ack("ak", t.pending_fire_ids[0])
        assert after.attempts == 2 and not after.buffered
        assert after.pending_fire_ids == (after.fire_id,) and after.fire_id != t.pending_fire_ids[0]
        with pytest.raises(minoots.FailedPrecondition, match="not awaiting an ack"):
            c.ack("ak", t.pending_fire_ids[0])
        assert c.cancel("ak").state == TimerState.CANCELLED
