"""Recurring webhook timers end to end (kernel/occurrences.py): a real 3-node cluster calling a
real aiohttp receiver in this process. Each occurrence is an occurrence timer "<id>@<fire id>"
delivered with its own Standard Webhooks webhook-id (checked with the independent
`standardwebhooks` package); a dead-lettered occurrence does not stop the schedule; overlap
skip skips while one is in delivery; across a leader kill no occurrence is missed or doubled
(receivers deduplicate on webhook-id). No wall-clock assertions: tests wait for states."""
from __future__ import annotations

import json

import pytest
import standardwebhooks
from click.testing import CliRunner

import minoots
from minoots import EventKind, TimerState
from minoots.api.types import datetime_to_ms
from minoots.cli import main
from support import cluster_grpc, start_cluster, wait_for
from webhook_receiver import ALLOW, Receiver

pytestmark = pytest.mark.cluster

TENANT = "occ"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("occ"), node_args=ALLOW)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def client(cluster):
    with minoots.Client(cluster_grpc(cluster), timeout=30, tenant=TENANT) as c:
        yield c


@pytest.fixture(scope="module")
def secret(client):
    return client.rotate_webhook_secret()


def fires_of(client, timer_id: str, n: int) -> list:
    """The first `n` fired events of `timer_id` (tenant TENANT) from the start of the log."""
    out = []
    w = client.watch(from_sequence=1, tenant=TENANT, kinds=[EventKind.FIRED])
    try:
        for e in w:
            if e.timer_id == timer_id:
                out.append(e)
                if len(out) == n:
                    return out
    finally:
        w.close()
    return out


def test_every_occurrence_is_delivered_with_its_own_webhook_id(client, receiver, secret):
    t = client.create(delay=1, id="beat", every=1, webhook=receiver.url("/ok/beat"), payload=b'{"n": 1}')
    assert t.state == TimerState.ARMED and t.webhook == receiver.url("/ok/beat")
    wait_for(lambda: len({h.headers["webhook-id"] for h in receiver.of("/ok/beat")}) >= 4, "four occurrences delivered")
    client.cancel("beat")
    hits = receiver.of("/ok/beat")
    envelopes = [standardwebhooks.Webhook(secret).verify(h.body, h.headers) for h in hits]
    ids = [h.headers["webhook-id"] for h in hits]
    assert len(set(ids)) >= 4
    for h, env in zip(hits, envelopes):
        headers = h.headers
        fid = env["data"]["fire_id"]
        assert headers["webhook-id"] == f"msg_{fid}"
        assert env["data"]["timer_id"] == f"beat@{fid}" and env["data"]["recurring_timer_id"] == "beat"
        assert env["data"]["payload_base64"] == "eyJuIjogMX0="
        occ = client.get(f"beat@{fid}")                     # the occurrence timer, readable by id
        assert occ.fire_id == fid
    fired = fires_of(client, "beat", len(set(ids)))
    assert {f"msg_{e.fire_id}" for e in fired} >= set(ids)
    settled = wait_for(lambda: all(client.get(f"beat@{e.fire_id}").state == TimerState.SETTLED for e in fired[:4]),
                       "the delivered occurrences settled")
    assert settled


def test_a_dead_lettered_occurrence_does_not_stop_the_schedule(client, receiver, secret):
    client.create(delay=1, id="dl", every=1, webhook=receiver.url("/fail-first/dl"), max_attempts=2,
                  backoff_base=0.05, backoff_cap=0.1, overlap="allow_all")
    wait_for(lambda: client.get("dl").attempts >= 3, "three occurrences")
    client.cancel("dl")
    fired = fires_of(client, "dl", 3)
    first = wait_for(lambda: (x := client.get(f"dl@{fired[0].fire_id}")).state.terminal and x, "the first ended")
    assert first.state == TimerState.DEAD_LETTERED
    assert [a.status_code for a in first.delivery_attempts] == [503, 503]
    later = [wait_for(lambda e=e: (x := client.get(f"dl@{e.fire_id}")).state.terminal and x, "settled")
             for e in fired[1:]]
    assert [x.state for x in later] == [TimerState.SETTLED, TimerState.SETTLED]


def test_overlap_skip_skips_while_an_occurrence_is_in_delivery(cluster, client, receiver, secret):
    client.create(delay=1, id="slow", every=1, webhook=receiver.url("/hold/slow"), attempt_timeout=60)
    wait_for(lambda: client.get("slow").skipped >= 2, "two occurrences skipped")
    t = client.get("slow")
    assert len(t.pending_fire_ids) == 1 and t.attempts == 1
    held = client.get(f"slow@{t.pending_fire_ids[0]}")
    assert held.state == TimerState.DELIVERING
    shown = CliRunner().invoke(main, ["timer", "get", "slow", "--node", cluster_grpc(cluster)[0], "--tenant", TENANT])
    assert f"in delivery: slow@{t.pending_fire_ids[0]}" in shown.output, shown.output
    assert len(receiver.of("/hold/slow")) == 1
    receiver.release("slow")
    wait_for(lambda: client.get(f"slow@{t.pending_fire_ids[0]}").state == TimerState.SETTLED, "the held one settled")
    wait_for(lambda: client.get("slow").attempts >= 2, "the next occurrence fired")
    client.cancel("slow")


def test_cli_creates_a_recurring_webhook_timer_and_an_endpoint_one(cluster, client, receiver, secret):
    def cli(*args):
        res = CliRunner().invoke(main, [*args, "--node", cluster_grpc(cluster)[0], "--tenant", TENANT])
        assert res.exit_code == 0, res.output
        return res.output

    out = json.loads(cli("timer", "create", "--id", "cli-every", "--in", "1h", "--every", "90s",
                         "--webhook", receiver.url("/ok/cli"), "--json"))
    assert out["id"] == "cli-every" and out["webhook"] == receiver.url("/ok/cli")
    ep = client.create_endpoint(receiver.url("/ok/ep"))
    cli("timer", "create", "--id", "cli-ep", "--in", "1s", "--every", "1s", "--endpoint", ep.id, "--max-count", "2",
        "--overlap", "allow_all")
    done = wait_for(lambda: (t := client.get("cli-ep")).state == TimerState.SETTLED and t, "two occurrences")
    assert done.attempts == 2
    wait_for(lambda: len({h.headers["webhook-id"] for h in receiver.of("/ok/ep")}) == 2, "both delivered")
    for h in receiver.of("/ok/ep"):
        assert standardwebhooks.Webhook(ep.secret).verify(h.body, h.headers)["data"]["recurring_timer_id"] == "cli-ep"
    shown = cli("timer", "get", f"cli-ep@{done.fire_id}")
    assert f"cli-ep@{done.fire_id}" in shown
    client.cancel("cli-every")


def test_no_occurrence_is_missed_or_doubled_across_a_leader_kill(tmp_path):
    rec = Receiver().start()
    c = start_cluster(tmp_path / "cluster", node_args=ALLOW)
    try:
        with minoots.Client(cluster_grpc(c), timeout=60, tenant=TENANT) as cl:
            secret = cl.rotate_webhook_secret()
            t = cl.create(delay=1, id="k", every=1, catch_up="all", overlap="allow_all", webhook=rec.url("/ok/k"))
            first = t.fire_at_ms
            wait_for(lambda: cl.get("k").attempts >= 3, "three occurrences")
            killed = c.leader()
            c.kill(killed)
            c.leader(exclude={killed}, timeout=60)
            n = cl.get("k").attempts
            wait_for(lambda: cl.get("k").attempts >= n + 3, "occurrences from the new leader", timeout=90)
            cl.cancel("k")
            total = cl.get("k").attempts
            fired = fires_of(cl, "k", total)
            wait_for(lambda: not cl.get("k").pending_fire_ids, "every occurrence delivered", timeout=90)
        grid = [datetime_to_ms(e.fire_at) for e in fired]
        assert grid == [first + 1000 * i for i in range(total)]          # none missed, none doubled
        delivered = {h.headers["webhook-id"] for h in rec.of("/ok/k")}        # at least once: dedupe by id
        assert delivered == {f"msg_{e.fire_id}" for e in fired}
        for h in rec.of("/ok/k"):
            standardwebhooks.Webhook(secret).verify(h.body, h.headers)
    finally:
        c.stop()
        rec.stop()


def test_a_recurring_webhook_child_starts_its_schedule_after_its_parent(cluster, client, receiver, secret):
    res = CliRunner().invoke(main, ["timer", "create", "--id", "kid", "--after", "mom", "--on", "fired", "--every",
                                    "1s", "--max-count", "2", "--webhook", receiver.url("/ok/kid"),
                                    "--overlap", "allow_all", "--node", cluster_grpc(cluster)[0],
                                    "--tenant", TENANT], catch_exceptions=False)
    assert res.exit_code == 1 and "mom" in res.output           # no such parent: NOT_FOUND, nothing created
    mom = client.create(delay=1, id="mom")
    res = CliRunner().invoke(main, ["timer", "create", "--id", "kid", "--after", "mom", "--on", "fired", "--every",
                                    "1s", "--max-count", "2", "--webhook", receiver.url("/ok/kid"),
                                    "--overlap", "allow_all", "--node", cluster_grpc(cluster)[0],
                                    "--tenant", TENANT])
    assert res.exit_code == 0, res.output
    kid = client.get("kid")
    assert kid.state == TimerState.SCHEDULED and kid.overlap == "allow_all"
    done = wait_for(lambda: (t := client.get("kid")).state == TimerState.SETTLED and t, "both occurrences")
    mom = client.get("mom")
    assert done.attempts == 2 and datetime_to_ms(done.fire_at) >= datetime_to_ms(mom.fired_at)
    wait_for(lambda: len({h.headers["webhook-id"] for h in receiver.of("/ok/kid")}) == 2, "both delivered")


def test_escalation_steps_are_delivered_to_the_timers_webhook(cluster, client, receiver, secret):
    t = client.create(delay=0.5, id="pager", ack_required=True, webhook=receiver.url("/ok/pager"),
                      escalate=[(1, "page-oncall"), (2, "call-manager"), (3600, "never")])
    assert t.webhook == receiver.url("/ok/pager")
    wait_for(lambda: len({h.headers["webhook-id"] for h in receiver.of("/ok/pager")}) >= 2, "two steps delivered")
    fired = client.get("pager")
    assert fired.state == TimerState.FIRED and fired.escalated == 2
    client.ack("pager", fired.fire_id)
    steps = {}
    for h in receiver.of("/ok/pager"):
        headers = h.headers
        env = standardwebhooks.Webhook(secret).verify(h.body, headers)
        assert env["type"] == "timer.escalated" and env["data"]["escalated_timer_id"] == "pager"
        steps[env["data"]["escalation_step"]] = (env["data"]["action_base64"], headers["webhook-id"],
                                                 env["data"]["timer_id"])
    assert sorted(steps) == [1, 2]
    assert [steps[k][0] for k in (1, 2)] == ["cGFnZS1vbmNhbGw=", "Y2FsbC1tYW5hZ2Vy"]
    for _, msg_id, timer_id in steps.values():
        assert msg_id == f"msg_{timer_id.rpartition('@')[2]}"
        assert wait_for(lambda i=timer_id: client.get(i).state == TimerState.SETTLED, "the step settled")
    assert client.get("pager").state == TimerState.SETTLED


def test_cli_creates_a_ladder_whose_steps_go_to_a_webhook(cluster, client, receiver, secret):
    res = CliRunner().invoke(main, ["timer", "create", "--id", "cli-pager", "--in", "200ms", "--ack-required",
                                    "--escalate", "1s:wake-up", "--webhook", receiver.url("/ok/cli-pager"),
                                    "--node", cluster_grpc(cluster)[0], "--tenant", TENANT])
    assert res.exit_code == 0, res.output
    wait_for(lambda: receiver.of("/ok/cli-pager"), "the step delivered")
    h = receiver.of("/ok/cli-pager")[0]
    headers, body = h.headers, h.body
    env = standardwebhooks.Webhook(secret).verify(body, headers)
    assert (env["type"], env["data"]["escalation_step"], env["data"]["action_base64"]) == (
        "timer.escalated", 1, "d2FrZS11cA==")
    res = CliRunner().invoke(main, ["timer", "create", "--in", "1h", "--ack-required", "--webhook",
                                    receiver.url("/ok/no-ladder"), "--node", cluster_grpc(cluster)[0],
                                    "--tenant", TENANT])
    assert res.exit_code != 0 and "ack" in res.output            # no ladder: still INVALID_ARGUMENT
    client.cancel("cli-pager")
