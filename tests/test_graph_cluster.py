"""Timer graphs and bulk operations on a real 3-node cluster, through the SDK and the CLI:
a chain across a leader kill, an escalation ladder across a leader kill between its steps,
bulk cancel by label selector, bad input as typed errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cluster


def _events(c, tenant, until_kind, until_id):
    from minoots.api.types import EventKind  # noqa: F401

    out = []
    w = c.watch(from_sequence=1, tenant=tenant)
    try:
        for e in w:
            out.append(e)
            if e.kind == until_kind and e.timer_id == until_id:
                break
    finally:
        w.close()
    return out


def test_chain_arms_and_fires_across_a_leader_kill(fresh_cluster):
    import minoots
    from minoots.api.types import EventKind, TimerState, datetime_to_ms
    from support import cluster_grpc, wait_for

    c = fresh_cluster
    with minoots.Client(cluster_grpc(c), timeout=60) as cl:
        a = cl.create(delay=1.0, id="a", tenant="g", ack_required=True)
        b = cl.create(id="b", tenant="g", after="a", on="settled", delay=1.5)
        assert b.state == TimerState.SCHEDULED and b.after == ("a",) and b.waiting_on == ("a",)
        assert cl.get("a", tenant="g").children == ("b",)
        fired = wait_for(lambda: (t := cl.get("a", tenant="g")).state == TimerState.FIRED and t, "a fires")
        acked = cl.ack("a", fired.fire_id, tenant="g")
        b = wait_for(lambda: (t := cl.get("b", tenant="g")).state == TimerState.ARMED and t, "b arms")
        assert b.fire_at_ms == datetime_to_ms(acked.settled_at) + 1500 and b.dependency == "met"
        old = c.leader()
        c.kill(old)                         # b is armed in the wheel of every node; a new leader fires it
        assert c.leader(exclude={old}) != old
        wait_for(lambda: cl.get("b", tenant="g").state == TimerState.SETTLED, "b fires after the failover",
                 retry_on=(minoots.Unavailable,))
        evs = _events(cl, "g", EventKind.SETTLED, "b")
        b_events = [(e.kind, e.at_ms) for e in evs if e.timer_id == "b"]
        assert [k for k, _ in b_events] == [EventKind.CREATED, EventKind.ARMED, EventKind.FIRED, EventKind.SETTLED]
        assert b_events[2][1] >= b.fire_at_ms                      # never before its deadline
        assert len([e for e in evs if e.kind == EventKind.FIRED and e.timer_id == "b"]) == 1


def test_escalation_ladder_survives_a_leader_kill_between_steps(fresh_cluster):
    import minoots
    from minoots.api.types import EventKind, TimerState, datetime_to_ms
    from support import cluster_grpc, wait_for

    c = fresh_cluster
    with minoots.Client(cluster_grpc(c), timeout=60) as cl:
        cl.create(delay=0.5, id="x", tenant="e", ack_required=True,
                  escalate=[(1.0, "page-oncall"), (4.0, "call-manager"), (600, "never")])
        wait_for(lambda: cl.get("x", tenant="e").escalated == 1, "step 1", retry_on=(minoots.Unavailable,))
        old = c.leader()
        c.kill(old)
        c.leader(exclude={old})
        t = wait_for(lambda: (t := cl.get("x", tenant="e")).escalated == 2 and t, "step 2 after the failover",
                     retry_on=(minoots.Unavailable,))
        assert t.state == TimerState.FIRED and t.escalate[1][1] == b"call-manager"
        done = cl.ack("x", t.fire_id, tenant="e")                # stops the ladder: step 3 never comes
        assert done.state == TimerState.SETTLED and done.escalated == 2
        evs = _events(cl, "e", EventKind.SETTLED, "x")
        esc = [e for e in evs if e.kind == EventKind.ESCALATED]
        fired_at = datetime_to_ms(t.fired_at)
        assert [datetime_to_ms(e.fire_at) for e in esc] == [fired_at + 1000, fired_at + 4000]
        assert all(e.at_ms >= datetime_to_ms(e.fire_at) and e.fire_id == t.fire_id for e in esc)
        assert [(e.escalation_step, e.action) for e in esc] == [(1, b"page-oncall"), (2, b"call-manager")]


def test_bulk_cancel_by_selector_and_bad_input(real_cluster):
    import minoots
    from minoots.api.types import TimerState
    from support import cluster_grpc

    with minoots.Client(cluster_grpc(real_cluster), timeout=60) as cl:
        cl.create_many([{"delay": 3600, "id": f"i{i}", "tenant": "bulk", "labels": {"team": "infra"}}
                        for i in range(5)] + [{"delay": 3600, "id": "w", "tenant": "bulk", "labels": {"team": "web"}}])
        dep = cl.create(id="d", tenant="bulk", after=["i0"], on="settled")         # cancelled with its parent
        assert dep.state == TimerState.SCHEDULED
        res = cl.cancel_many(selector="team=infra", tenant="bulk")
        assert sorted(r.id for r in res) == [f"i{i}" for i in range(5)] and all(r.ok for r in res)
        assert cl.get("w", tenant="bulk").state == TimerState.ARMED
        d = cl.get("d", tenant="bulk")
        assert d.state == TimerState.CANCELLED and d.dependency == "cancelled"
        again = cl.cancel_many(["i0", "nope"], tenant="bulk")
        assert [(r.id, r.code) for r in again] == [("i0", "FAILED_PRECONDITION"), ("nope", "NOT_FOUND")]
        moved = cl.reschedule_many(selector={"team": "web"}, delay=7200, tenant="bulk")
        assert [r.code for r in moved] == ["OK"] and moved[0].timer.fire_at_ms > cl.get("w", tenant="bulk").created_at_ms + 7_000_000

        before = len(list(cl.list(tenant="bulk")))
        with pytest.raises(minoots.InvalidArgument, match="cycle"):
            cl.create_many([{"id": "c1", "tenant": "bulk", "after": "c2"}, {"id": "c2", "tenant": "bulk", "after": "c1"}])
        with pytest.raises(minoots.NotFound):
            cl.create(id="m", tenant="bulk", after="missing")
        with pytest.raises(minoots.InvalidArgument, match="at most 16"):
            cl.create(id="m", tenant="bulk", after=[f"p{i}" for i in range(17)])
        with pytest.raises(minoots.InvalidArgument, match="label_selector"):
            cl.cancel_many(selector="no-equals-sign", tenant="bulk")
        with pytest.raises(minoots.InvalidArgument, match="ack_required"):
            cl.create(delay=5, tenant="bulk", escalate=[(1, "x")])
        assert len(list(cl.list(tenant="bulk"))) == before           # nothing created

    import asyncio

    async def through_async():
        async with minoots.AsyncClient(cluster_grpc(real_cluster), timeout=60) as ac:
            await ac.create(delay=3600, id="as1", tenant="bulk", labels={"team": "async"})
            await ac.create(id="as2", tenant="bulk", after="as1", on="cancelled", delay=3600)
            res = await ac.cancel_many(selector="team=async", tenant="bulk")
            return res, await ac.get("as2", tenant="bulk")
    res, child = asyncio.run(through_async())
    assert [(r.id, r.code) for r in res] == [("as1", "OK")]
    assert child.state == TimerState.ARMED and child.dependency == "met"       # on=cancelled: met


def test_cli_chain_graph_escalate_and_bulk(real_cluster):
    from support import cluster_grpc

    env = dict(os.environ, MINOOTS_NODES=",".join(cluster_grpc(real_cluster)))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "minoots", "timer", *args, "--tenant", "cli"],
                              capture_output=True, text=True, timeout=120, env=env)

    r = run("create", "--id", "A", "--in", "1h", "--label", "team=infra")
    assert r.returncode == 0, r.stderr
    r = run("create", "--id", "B", "--after", "A", "--on", "settled", "--delay", "10s", "--json")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert (b["state"], b["after"], b["on"], b["after_delay_ms"], b["dependency"]) == (
        "scheduled", ["A"], "settled", 10_000, "waiting")
    r = run("create", "--id", "C", "--after", "B", "--on", "fired", "--ack-required", "--escalate", "30s:page",
            "--escalate", "5m:call")
    assert r.returncode == 0, r.stderr
    assert "escalate 2" in r.stdout and "5m" not in r.stdout and "300s  call  pending" in r.stdout
    r = run("graph", "A")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("A  armed") and lines[1].startswith("└── B  scheduled") and "[waiting: on settled +10s]" in lines[1]
    assert lines[2].startswith("    └── C  scheduled") and "escalated 0/2" in lines[2]
    r = run("create", "--id", "X", "--after", "nope")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "Traceback" not in r.stderr
    r = run("cancel", "--selector", "team=infra")
    assert r.returncode == 0, r.stderr
    assert "1 cancelled, 0 not" in r.stdout
    r = run("get", "C")
    assert "cancelled" in r.stdout and "dependency" in r.stdout
