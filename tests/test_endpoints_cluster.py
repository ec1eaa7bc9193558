"""Managed endpoints, tenant delivery defaults, dead letters and secret-free snapshot
exports end to end: a real 3-node cluster (node processes on loopback, run with
--webhook-allow-hosts 127.0.0.1), real aiohttp receivers in this test process, the CLI
and the SDK. Signatures are checked with the independent `standardwebhooks` package.
No wall-clock assertions: the tests wait for states and compare counts."""
from __future__ import annotations

import json

import pytest
import standardwebhooks
from click.testing import CliRunner

import minoots
from minoots import TimerState
from minoots.raft import snapshots
from minoots.raft.endpoints import MAX_PER_TENANT
from minoots.raft.fsm import TimerFSM
from minoots.cli import main
from support import cluster_grpc, start_cluster, wait_for
from webhook_receiver import ALLOW, Receiver
from test_http_gateway import call

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("endpoints"), node_args=ALLOW, http=True)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def client(cluster):
    with minoots.Client(cluster_grpc(cluster), timeout=30, tenant="eps") as c:
        yield c


def cli(cluster, *args, tenant="eps", code=0):
    extra = ["--tenant", tenant] if tenant else []      # `tenant …` commands name it as an argument
    res = CliRunner().invoke(main, [*args, "--node", cluster_grpc(cluster)[0], *extra])
    assert res.exit_code == code, res.output
    return res.output


def state_of(client, timer_id, state, tenant=None):
    return wait_for(lambda: (t := client.get(timer_id, tenant=tenant)).state == state and t,
                    f"{timer_id} {state.name}")


def test_an_endpoint_added_on_the_cli_receives_webhooks_signed_with_its_own_secret(cluster, client, receiver):
    out = json.loads(cli(cluster, "endpoint", "add", receiver.url("/ok/ep1"), "--header", "X-Src=minoots",
                         "--attempt-timeout", "5s", "--json"))
    eid, secret = out["id"], out["secret"]
    assert eid.startswith("ep_") and secret.startswith("whsec_") and out["timeout_ms"] == 5000
    # Reads never show the secret.
    listed = cli(cluster, "endpoint", "list", "--json")
    assert eid in listed and "whsec_" not in listed and secret not in listed
    shown = cli(cluster, "endpoint", "get", eid)
    assert eid in shown and "whsec_" not in shown
    # Tenant "eps" has no tenant secret at all: the endpoint's own signs.
    created = json.loads(cli(cluster, "timer", "create", "--in", "200ms", "--endpoint", eid, "--json"))
    assert created["endpoint"] == eid and created["webhook"] == receiver.url("/ok/ep1")
    done = state_of(client, created["id"], TimerState.SETTLED)
    hits = receiver.of("/ok/ep1")
    assert len(hits) == 1 and hits[0].headers["x-src"] == "minoots"
    envelope = standardwebhooks.Webhook(secret).verify(hits[0].body, hits[0].headers)
    assert envelope["data"]["timer_id"] == done.id and hits[0].headers["webhook-id"] == f"msg_{done.fire_id}"
    assert len(hits[0].headers["webhook-signature"].split()) == 1
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + "QUJD" * 8).verify(hits[0].body, hits[0].headers)
    # The SDK does the same.
    t = client.create(delay=0.1, endpoint=eid)
    assert t.endpoint == eid
    state_of(client, t.id, TimerState.SETTLED)
    assert len(receiver.of("/ok/ep1")) == 2


def test_rotating_an_endpoints_secret_sends_both_signatures(cluster, client, receiver):
    ep = client.create_endpoint(receiver.url("/ok/rot"))
    new = json.loads(cli(cluster, "endpoint", "rotate-secret", ep.id, "--json"))["secret"]
    assert new.startswith("whsec_") and new != ep.secret
    t = client.create(delay=0.1, endpoint=ep.id)
    state_of(client, t.id, TimerState.SETTLED)
    hit = receiver.of("/ok/rot")[0]
    assert len(hit.headers["webhook-signature"].split()) == 2
    for secret in (ep.secret, new):
        standardwebhooks.Webhook(secret).verify(hit.body, hit.headers)
    assert client.get_endpoint(ep.id).secret is None and client.get_endpoint(ep.id).secret_rotated_at is not None


def test_bad_input_is_a_typed_error_and_creates_nothing(cluster, client, receiver):
    timers_before = len(list(client.list()))
    endpoints_before = len(client.list_endpoints())
    with pytest.raises(minoots.NotFound, match="ep_nope"):
        client.create(delay=60, endpoint="ep_nope")
    with pytest.raises(minoots.InvalidArgument, match="endpoint.id"):
        client.create(delay=60, endpoint="ep nope")
    out = cli(cluster, "timer", "create", "--in", "60s", "--endpoint", "ep_nope", code=1)
    assert "does not exist" in out
    for url, why in (("ftp://h.example/x", "http"), ("http://10.1.2.3/x", "refused"),
                     ("http://169.254.169.254/latest/meta-data", "refused"), ("http://user:pw@127.0.0.1/x",
                                                                               "credentials")):
        with pytest.raises(minoots.InvalidArgument, match=why):
            client.create_endpoint(url)
    with pytest.raises(minoots.InvalidArgument, match="whsec_"):
        client.create_endpoint(receiver.url("/ok/x"), secret="not-a-secret")
    with pytest.raises(minoots.InvalidArgument, match="set by MINOOTS"):
        client.create_endpoint(receiver.url("/ok/x"), headers={"webhook-id": "x"})
    with pytest.raises(minoots.InvalidArgument, match="timeout_ms"):
        client.create_endpoint(receiver.url("/ok/x"), timeout_ms=120_001)
    assert len(list(client.list())) == timers_before and len(client.list_endpoints()) == endpoints_before
    # Too many endpoints: RESOURCE_EXHAUSTED, and the count stays at the bound.
    for i in range(MAX_PER_TENANT):
        client.create_endpoint(receiver.url(f"/ok/many/{i}"), tenant="many")
    with pytest.raises(minoots.ResourceExhausted, match="most it may hold"):
        client.create_endpoint(receiver.url("/ok/many/more"), tenant="many")
    assert len(client.list_endpoints(tenant="many")) == MAX_PER_TENANT


def test_an_endpoint_in_use_cannot_be_removed_until_its_timers_end(cluster, client, receiver):
    ep = client.create_endpoint(receiver.url("/ok/inuse"))
    t = client.create(delay=3600, endpoint=ep.id)
    with pytest.raises(minoots.FailedPrecondition, match="not ended"):
        client.delete_endpoint(ep.id)
    out = cli(cluster, "endpoint", "remove", ep.id, code=1)
    assert "not ended" in out
    # A timer with dependencies may use a managed endpoint too (record 43, CreateFullTimers).
    parent = client.create(delay=3600)
    child = client.create(delay=60, endpoint=ep.id, after=parent.id)
    assert child.state == TimerState.SCHEDULED and child.endpoint == ep.id
    with pytest.raises(minoots.FailedPrecondition, match="not ended"):
        client.delete_endpoint(ep.id)
    client.cancel(t.id)
    client.cancel(parent.id)          # cancels the child too (its default policy)
    state_of(client, child.id, TimerState.CANCELLED)
    assert "removed" in cli(cluster, "endpoint", "remove", ep.id)
    with pytest.raises(minoots.NotFound):
        client.get_endpoint(ep.id)
    with pytest.raises(minoots.NotFound):
        client.create(delay=60, endpoint=ep.id)


def test_timers_without_a_policy_take_their_tenants_delivery_defaults(cluster, client, receiver):
    out = json.loads(cli(cluster, "tenant", "set-delivery-defaults", "defaults", "--max-attempts", "2",
                         "--backoff-base", "50ms", "--backoff-cap", "100ms", "--json", tenant=None))
    assert (out["max_attempts"], out["backoff_base_ms"], out["backoff_cap_ms"], out["built_in"]) == (2, 50, 100, False)
    got = client.get_delivery_defaults(tenant="defaults")
    assert got.max_attempts == 2 and not got.built_in
    ep = client.create_endpoint(receiver.url("/switch/defaults"), tenant="defaults")
    plain = client.create(delay=0.1, endpoint=ep.id, tenant="defaults")
    own = client.create(delay=0.1, endpoint=ep.id, tenant="defaults", max_attempts=3)
    assert plain.max_attempts == 2 and own.max_attempts == 3
    for t, n in ((plain, 2), (own, 3)):
        dead = state_of(client, t.id, TimerState.DEAD_LETTERED, tenant="defaults")
        assert [a.status_code for a in dead.delivery_attempts] == [503] * n
    cleared = json.loads(cli(cluster, "tenant", "set-delivery-defaults", "defaults", "--clear", "--json",
                             tenant=None))
    assert cleared["built_in"] and cleared["max_attempts"] == 5
    assert client.create(delay=3600, endpoint=ep.id, tenant="defaults").max_attempts == 5


def test_dead_letters_are_listed_replayed_in_bulk_and_purged(cluster, client, receiver):
    tenant = "dlq"
    ep = client.create_endpoint(receiver.url("/switch/dlqe"), tenant=tenant)
    hooks = [client.create(delay=0.1, endpoint=ep.id, tenant=tenant, max_attempts=1, labels={"batch": "1"})
             for _ in range(3)]
    job = client.create(delay=0.1, queue="jobsq", tenant=tenant, max_attempts=1)
    for t in hooks:
        state_of(client, t.id, TimerState.DEAD_LETTERED, tenant=tenant)
    lease = wait_for(lambda: client.lease("jobsq", tenant=tenant), "the queue timer leased")[0]
    client.nack_lease(lease)
    state_of(client, job.id, TimerState.DEAD_LETTERED, tenant=tenant)
    listed = json.loads(cli(cluster, "dlq", "list", "--endpoint", ep.id, "--json", tenant=tenant))
    assert sorted(t["id"] for t in listed["timers"]) == sorted(t.id for t in hooks) and not listed["truncated"]
    human = cli(cluster, "dlq", "list", tenant=tenant)
    assert f"{hooks[0].id}  endpoint {ep.id}  attempts 1  last http_status 503" in human
    assert f"{job.id}  queue jobsq  attempts 1  last nack" in human
    queued = json.loads(cli(cluster, "dlq", "list", "--queue", "jobsq", "--json", tenant=tenant))
    assert [t["id"] for t in queued["timers"]] == [job.id]
    stats = json.loads(cli(cluster, "queue", "stats", "jobsq", "--json", tenant=tenant))
    assert stats == [{"queue": "jobsq", "visible": 0, "leased": 0, "waiting": 0, "dead": 1}]
    # Replay by selector: one command, a result per timer; attempts reset, history kept.
    receiver.healthy.add("dlqe")
    replayed = json.loads(cli(cluster, "dlq", "replay", "--selector", "batch=1", "--json", tenant=tenant))
    assert sorted(r["id"] for r in replayed["results"] if r["ok"]) == sorted(t.id for t in hooks)
    for t in hooks:
        done = state_of(client, t.id, TimerState.SETTLED, tenant=tenant)
        assert [(a.attempt, a.status_code) for a in done.delivery_attempts] == [(1, 503), (1, 200)]
    # Replaying a timer that is not dead-lettered is refused for that timer alone.
    res = client.replay_dead_letters([hooks[0].id, job.id], tenant=tenant)
    assert [(i, ok) for i, ok, _ in res.results] == [(hooks[0].id, False), (job.id, True)]
    lease = wait_for(lambda: client.lease("jobsq", tenant=tenant), "the replayed queue timer")[0]
    client.nack_lease(lease)
    state_of(client, job.id, TimerState.DEAD_LETTERED, tenant=tenant)
    # Purge: the dead letter goes; a settled timer named with it is reported, not deleted.
    out = cli(cluster, "dlq", "purge", job.id, hooks[1].id, tenant=tenant, code=1)
    assert f"{job.id}  purged" in out and f"{hooks[1].id}  refused" in out
    with pytest.raises(minoots.NotFound):
        client.get(job.id, tenant=tenant)
    assert client.get(hooks[1].id, tenant=tenant).state == TimerState.SETTLED
    assert client.dead_letters(tenant=tenant) == ([], False)
    out = cli(cluster, "dlq", "replay", tenant=tenant, code=2)
    assert "give IDs" in out


def test_a_snapshot_export_leaves_secrets_out_unless_asked(cluster, client, receiver, tmp_path):
    tenant_secret = client.rotate_webhook_secret(tenant="snap")
    ep = client.create_endpoint(receiver.url("/ok/snap"), tenant="snap")
    client.create(delay=3600, endpoint=ep.id, tenant="snap")
    client.take_snapshot()
    bare, full = tmp_path / "bare.snap", tmp_path / "full.snap"
    cli(cluster, "snapshot", "export", str(bare), tenant=None)
    cli(cluster, "snapshot", "export", str(full), "--include-secrets", tenant=None)
    for secret in (tenant_secret, ep.secret):
        assert secret.encode() not in bare.read_bytes() and secret.encode() in full.read_bytes()
    meta, kernel = snapshots.decode(bare.read_bytes())      # a valid container of its own
    full_meta, full_kernel = snapshots.decode(full.read_bytes())
    assert kernel == full_kernel and meta.webhook_secrets == [] and full_meta.webhook_secrets
    assert [r[1] for r in meta.endpoints] == [r[1] for r in full_meta.endpoints] and ep.id in str(meta.endpoints)
    # Both restore; the bare one keeps the endpoints and their timers, without secrets to sign with.
    for m, k, signs in ((meta, kernel, []), (full_meta, full_kernel, [ep.secret])):
        fsm = TimerFSM({})
        fsm.restore(k, m.names, m.grpc, m.tokens, m.quotas, m.subscriptions, m.webhook_secrets, m.retention,
                    m.endpoints, m.delivery_defaults)
        assert fsm.endpoints.find("snap", ep.id).url == receiver.url("/ok/snap")
        assert fsm.endpoints.signing("snap", ep.id, 0) == signs


def test_a_tenants_token_sees_and_changes_only_its_own_endpoints(cluster, client, receiver):
    theirs = client.create_endpoint(receiver.url("/ok/theirs"), tenant="other")
    token, _ = client.create_token("iso-writer", "writer", ["mine"])
    with minoots.Client(cluster_grpc(cluster), timeout=30, tenant="mine", token=token) as mine:
        own = mine.create_endpoint(receiver.url("/ok/mine"))
        assert own.tenant == "mine" and [e.id for e in mine.list_endpoints()] == [own.id]
        with pytest.raises(minoots.PermissionDenied):
            mine.list_endpoints(tenant="other")
        with pytest.raises(minoots.PermissionDenied):
            mine.delete_endpoint(theirs.id, tenant="other")
        with pytest.raises(minoots.PermissionDenied):
            mine.dead_letters(tenant="other")
        # Ids are per tenant: another tenant's endpoint id names nothing here.
        with pytest.raises(minoots.NotFound):
            mine.get_endpoint(theirs.id)
        with pytest.raises(minoots.NotFound):
            mine.create(delay=60, endpoint=theirs.id)
    assert client.get_endpoint(theirs.id, tenant="other").url == receiver.url("/ok/theirs")


def test_the_async_client_manages_endpoints_too(cluster, client, receiver):
    import asyncio

    async def go():
        async with minoots.AsyncClient(cluster_grpc(cluster), timeout=30, tenant="async") as ac:
            ep = await ac.create_endpoint(receiver.url("/ok/async"), headers={"X-Via": "aio"})
            assert ep.secret.startswith("whsec_")
            assert [e.id for e in await ac.list_endpoints()] == [ep.id]
            t = await ac.create(delay=0.1, endpoint=ep.id)
            d = await ac.get_delivery_defaults()
            return ep, t, d, await ac.queue_stats()

    ep, t, defaults, stats = asyncio.run(go())
    assert defaults.built_in and stats == []
    state_of(client, t.id, TimerState.SETTLED, tenant="async")
    hit = receiver.of("/ok/async")[0]
    assert hit.headers["x-via"] == "aio"
    standardwebhooks.Webhook(ep.secret).verify(hit.body, hit.headers)


def test_endpoints_and_dead_letters_over_the_http_gateway(cluster, client, receiver):
    node = cluster.nodes[cluster.leader()]
    admin = cluster.admin_token()
    status, ep, _ = call(node, "POST", "/v1/endpoints", {"tenant": "web", "url": receiver.url("/ok/web"),
                                                         "timeoutMs": 2000}, token=admin)
    assert status == 200 and ep["secret"].startswith("whsec_") and ep["id"].startswith("ep_")
    status, listed, _ = call(node, "GET", "/v1/endpoints?tenant=web", token=admin)
    assert status == 200 and [e["id"] for e in listed["endpoints"]] == [ep["id"]]
    assert listed["endpoints"][0].get("secret", "") == "" and ep["secret"] not in json.dumps(listed)
    status, got, _ = call(node, "GET", f"/v1/endpoints/{ep['id']}?tenant=web", token=admin)
    assert status == 200 and got["url"] == receiver.url("/ok/web") and got.get("secret", "") == ""
    status, dead, _ = call(node, "GET", "/v1/deadLetters?tenant=web", token=admin)
    assert status == 200 and dead.get("timers", []) == []
    status, err, _ = call(node, "POST", "/v1/endpoints", {"tenant": "web", "url": "http://10.9.8.7/x"}, token=admin)
    assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT"
    status, gone, _ = call(node, "DELETE", f"/v1/endpoints/{ep['id']}?tenant=web", token=admin)
    assert status == 200 and gone["id"] == ep["id"]
    status, err, _ = call(node, "GET", f"/v1/endpoints/{ep['id']}?tenant=web", token=admin)
    assert status == 404 and err["error"]["status"] == "NOT_FOUND"


def test_after_a_leader_kill_the_new_leader_signs_with_the_endpoints_replicated_secret(tmp_path, receiver):
    from collections import Counter

    c = start_cluster(tmp_path / "failover", node_args=ALLOW)
    try:
        with minoots.Client(cluster_grpc(c), timeout=60, tenant="fo") as cl:
            ep = cl.create_endpoint(receiver.url("/hold/ep-failover"), timeout_ms=30_000)
            old_leader = c.leader()
            t = cl.create(delay=0.1, endpoint=ep.id)
            wait_for(lambda: receiver.of("/hold/ep-failover"), "the first attempt in flight")
            c.kill(old_leader)
            wait_for(lambda: len(receiver.of("/hold/ep-failover")) >= 2, "the new leader's attempt", timeout=90)
            receiver.release("ep-failover")
            done = wait_for(lambda: (x := cl.get(t.id)).state == TimerState.SETTLED and x, "settled", timeout=90)
            hits = receiver.of("/hold/ep-failover")
            assert Counter(h.headers["webhook-id"] for h in hits) == Counter({f"msg_{done.fire_id}": len(hits)})
            for h in hits:                      # the old leader's and the new one's: the endpoint's secret
                standardwebhooks.Webhook(ep.secret).verify(h.body, h.headers)
            assert c.leader(exclude={old_leader}) != old_leader
    finally:
        c.stop()
