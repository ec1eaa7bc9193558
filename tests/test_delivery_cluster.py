"""Webhook delivery end to end: a real 3-node cluster (node processes on loopback, run with
--webhook-allow-hosts 127.0.0.1) calling real aiohttp receivers in this test process.

Signatures are checked twice: with the SDK's `verify_webhook` and with the independent
`standardwebhooks` package (the product's signing does not use it). No wall-clock
assertions: the tests wait for states and compare counts and orderings.
"""
from __future__ import annotations

import threading
from collections import Counter

import pytest
import standardwebhooks
from click.testing import CliRunner

import minoots
from minoots import EventKind, TimerState
from minoots.api.client.webhooks import verify_webhook
from minoots.api.dispatcher import PER_ENDPOINT
from minoots.cli import main
from support import cluster_grpc, collect_watch, start_cluster, wait_for
from webhook_receiver import ALLOW, Hit, Receiver

pytestmark = pytest.mark.cluster

TENANT = "hooks"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("delivery"), node_args=ALLOW)
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


def settled(client, timer_id, state=TimerState.SETTLED):
    return wait_for(lambda: (t := client.get(timer_id)).state == state and t, f"{timer_id} {state.name}")


def check_signature(secret: str, hit: Hit) -> dict:
    assert verify_webhook(secret, hit.headers, hit.body) == hit.headers["webhook-id"]
    return standardwebhooks.Webhook(secret).verify(hit.body, hit.headers)


def test_a_signed_webhook_arrives_and_both_verifiers_accept_it(client, receiver, secret):
    t = client.create(delay=0.2, webhook=receiver.url("/ok/signed"), webhook_headers={"X-Team": "ops"},
                      payload=b'{"task": 1}', labels={"k": "v"})
    assert t.webhook == receiver.url("/ok/signed") and t.state == TimerState.ARMED
    done = settled(client, t.id)
    hits = receiver.of("/ok/signed")
    assert len(hits) == 1
    envelope = check_signature(secret, hits[0])
    assert hits[0].headers["webhook-id"] == f"msg_{done.fire_id}" and hits[0].headers["x-team"] == "ops"
    assert envelope["type"] == "timer.fired"
    data = envelope["data"]
    assert (data["timer_id"], data["tenant"], data["fire_id"], data["attempt"], data["labels"]) == \
        (t.id, TENANT, done.fire_id, 1, {"k": "v"})
    assert [(a.attempt, a.status_code, a.error_class, a.response_body) for a in done.delivery_attempts] == \
        [(1, 200, "", b"thanks")]
    with pytest.raises(standardwebhooks.WebhookVerificationError):     # another secret: refused
        standardwebhooks.Webhook("whsec_" + "QUJD" * 8).verify(hits[0].body, hits[0].headers)


def test_a_receiver_failing_twice_gets_retries_then_the_timer_settles(client, receiver, secret):
    t = client.create(delay=0.1, webhook=receiver.url(f"/flaky/2/{id(client)}"), max_attempts=5,
                      backoff_base=0.05, backoff_cap=0.2)
    done = settled(client, t.id)
    hits = receiver.of("/flaky/2/")
    hits = [h for h in hits if h.headers["webhook-id"] == f"msg_{done.fire_id}"]
    assert len(hits) == 3
    assert {h.headers["webhook-id"] for h in hits} == {f"msg_{done.fire_id}"}
    for h in hits:
        check_signature(secret, h)
    attempts = done.delivery_attempts
    assert [(a.attempt, a.status_code, a.error_class) for a in attempts] == \
        [(1, 500, "http_status"), (2, 500, "http_status"), (3, 200, "")]
    assert all(a.next_attempt_at is not None for a in attempts[:2]) and attempts[2].next_attempt_at is None
    assert attempts[0].response_body == b"not yet"
    # Every attempt is also an event on the stream.
    seen: list = []
    stop, errors = threading.Event(), []
    watch = client.watch(from_sequence=1, tenant=TENANT, kinds=[EventKind.DELIVERY_ATTEMPTED, EventKind.SETTLED])
    th = threading.Thread(target=collect_watch, args=(watch, seen, stop, errors), daemon=True)
    th.start()
    try:
        wait_for(lambda: [e.kind for e in list(seen) if e.timer_id == t.id] ==
                 [EventKind.DELIVERY_ATTEMPTED] * 3 + [EventKind.SETTLED] or errors, "the attempts as events")
    finally:
        stop.set()
        watch.close()
    assert not errors


def test_an_always_failing_receiver_dead_letters_then_redrive_delivers(client, receiver, secret):
    t = client.create(delay=0.1, webhook=receiver.url("/switch/dlq"), max_attempts=3, backoff_base=0.05,
                      backoff_cap=0.1)
    dead = settled(client, t.id, TimerState.DEAD_LETTERED)
    assert [a.status_code for a in dead.delivery_attempts] == [503, 503, 503]
    assert len(receiver.of("/switch/dlq")) == 3
    dlq = [x.id for x in client.list(states=[TimerState.DEAD_LETTERED])]
    assert t.id in dlq
    receiver.healthy.add("dlq")
    again = client.redrive(t.id)
    assert again.state in (TimerState.DELIVERING, TimerState.SETTLED)
    done = settled(client, t.id)
    hits = receiver.of("/switch/dlq")
    assert len(hits) == 4 and len({h.headers["webhook-id"] for h in hits}) == 1   # same webhook-id
    assert [a.attempt for a in done.delivery_attempts] == [1, 2, 3, 1]
    assert t.id not in [x.id for x in client.list(states=[TimerState.DEAD_LETTERED])]
    with pytest.raises(minoots.FailedPrecondition):
        client.redrive(t.id)


def test_a_dead_endpoint_does_not_hold_up_another_endpoints_timers(client, receiver, secret):
    dead = Receiver().start()       # its own port: another endpoint
    try:
        hung = [client.create(delay=0.1, webhook=dead.url(f"/hang/{i}"), max_attempts=1, attempt_timeout=60)
                for i in range(8)]
        wait_for(lambda: len(dead.of("/hang/")) >= PER_ENDPOINT, "the dead endpoint holding its requests")
        good = client.create(delay=0.1, webhook=receiver.url("/ok/isolated"))
        settled(client, good.id)
        # The good endpoint's timer settled while every timer of the dead one is still in
        # its first attempt: no outcome recorded, at most PER_ENDPOINT requests open there.
        states = [client.get(h.id) for h in hung]
        assert all(s.state == TimerState.DELIVERING and not s.delivery_attempts for s in states)
        assert len(dead.of("/hang/")) == PER_ENDPOINT
        for h in hung:
            client.cancel(h.id)
    finally:
        dead.stop()


@pytest.mark.parametrize("kwargs, field", [
    ({"webhook": "ftp://127.0.0.1/x"}, "webhook.url"),
    ({"webhook": "http://10.1.2.3/x"}, "webhook.url"),                       # private: SSRF refused
    ({"webhook": "http://169.254.169.254/latest/meta-data"}, "webhook.url"),  # cloud metadata
    ({"webhook": "http://[::1]:9/x"}, "webhook.url"),                        # loopback not allowed (v6)
    ({"webhook": "http://user:pw@127.0.0.1/x"}, "webhook.url"),
    ({"webhook": "http://127.0.0.1/x", "max_attempts": 51}, "max_attempts"),
    ({"webhook": "http://127.0.0.1/x", "backoff_base": 10, "backoff_cap": 1}, "backoff_cap"),
    ({"webhook": "http://127.0.0.1/x", "webhook_headers": {"webhook-id": "x"}}, "headers"),
    ({"webhook": "http://127.0.0.1/x", "webhook_headers": {"x": "a" * 5000}}, "headers"),
    ({"webhook": "http://127.0.0.1/x", "ack_required": True}, "ack_required"),
])
def test_bad_webhooks_are_refused_with_a_typed_error_and_nothing_is_created(client, secret, kwargs, field):
    before = len(list(client.list()))
    with pytest.raises(minoots.InvalidArgument) as info:
        client.create(delay=60, **kwargs)
    assert field in str(info.value)
    assert len(list(client.list())) == before


def test_a_tenant_without_a_secret_cannot_create_webhooks(client, receiver):
    with pytest.raises(minoots.FailedPrecondition, match="no webhook signing secret"):
        client.create(delay=60, tenant="nosecret", webhook=receiver.url("/ok/x"))
    assert list(client.list(tenant="nosecret")) == []
    with pytest.raises(minoots.InvalidArgument, match="whsec_"):
        client.rotate_webhook_secret(tenant="nosecret", secret="plain-text")


def test_the_cli_creates_a_webhook_timer_and_verifies_what_arrived(cluster, client, receiver, secret, tmp_path):
    runner = CliRunner()
    node = ["--node", cluster_grpc(cluster)[0], "--tenant", TENANT]
    res = runner.invoke(main, ["timer", "create", "--in", "200ms", "--webhook", receiver.url("/ok/cli"),
                               "--max-attempts", "2", "--json", *node])
    assert res.exit_code == 0, res.output
    import json
    tid = json.loads(res.output)["id"]
    settled(client, tid)
    hit = receiver.of("/ok/cli")[0]
    (tmp_path / "body").write_bytes(hit.body)
    args = ["webhook", "verify", "--secret", secret, "--body", str(tmp_path / "body")]
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        args += ["--header", f"{name}: {hit.headers[name]}"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0 and res.output.strip() == hit.headers["webhook-id"], res.output
    tampered = tmp_path / "tampered"
    tampered.write_bytes(hit.body + b" ")
    res = runner.invoke(main, args[:5] + [str(tampered)] + args[6:])
    assert res.exit_code == 1 and "not a valid webhook" in res.output
    res = runner.invoke(main, ["timer", "get", tid, *node])
    assert "webhook" in res.output and "attempt 1" in res.output


def test_killing_the_leader_mid_delivery_loses_nothing_and_keeps_the_webhook_id(tmp_path, receiver):
    c = start_cluster(tmp_path / "failover", node_args=ALLOW)
    try:
        with minoots.Client(cluster_grpc(c), timeout=60, tenant=TENANT) as cl:
            secret = cl.rotate_webhook_secret()
            old_leader = c.leader()
            t = cl.create(delay=0.1, webhook=receiver.url("/hold/failover"), attempt_timeout=30)
            wait_for(lambda: receiver.of("/hold/failover"), "the leader's first attempt in flight")
            assert cl.get(t.id).state == TimerState.DELIVERING
            c.kill(old_leader)
            # The new leader finds attempt 1 due and unresolved, and makes it again.
            wait_for(lambda: len(receiver.of("/hold/failover")) >= 2, "the new leader's attempt", timeout=90)
            receiver.release("failover")
            done = wait_for(lambda: (x := cl.get(t.id)).state == TimerState.SETTLED and x, "settled", timeout=90)
            hits = receiver.of("/hold/failover")
            ids = Counter(h.headers["webhook-id"] for h in hits)
            assert ids == Counter({f"msg_{done.fire_id}": len(hits)})      # duplicates, one id
            for h in hits:
                check_signature(secret, h)
            assert done.delivery_attempts[-1].status_code == 200
            assert c.leader(exclude={old_leader}) != old_leader
    finally:
        c.stop()


def test_during_a_rotation_both_secrets_verify(client, receiver):
    old = client.rotate_webhook_secret(tenant="rotating")
    new = client.rotate_webhook_secret(tenant="rotating")
    assert old != new and old.startswith("whsec_") and new.startswith("whsec_")
    t = client.create(delay=0.1, tenant="rotating", webhook=receiver.url("/ok/rotating"))
    wait_for(
        lambda: client.get(t.id, tenant="rotating").state == TimerState.SETTLED, "settled")
    hit = receiver.of("/ok/rotating")[0]
    assert len(hit.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        check_signature(secret, hit)


def test_repeated_failures_trip_the_endpoints_circuit_breaker_shown_in_status(client, secret):
    from minoots.api.dispatcher import BREAKER_FAILURES

    broken = Receiver().start()     # its own endpoint, failing every request
    try:
        endpoint = f"http://127.0.0.1:{broken.port}"
        timers = [client.create(delay=0.1, webhook=broken.url(f"/switch/never/{i}"), max_attempts=1)
                  for i in range(BREAKER_FAILURES)]
        for t in timers:
            settled(client, t.id, TimerState.DEAD_LETTERED)
        st = wait_for(lambda: (s := client.status()).webhook_circuits.get(endpoint, "closed") != "closed" and s,
                      "the breaker of the failing endpoint")
        assert st.webhook_circuits[endpoint] in ("open", "half_open")
        assert st.node == st.leader       # the leader's dispatcher answered
    finally:
        broken.stop()


def test_the_leader_reuses_its_connection_to_an_endpoint(client, receiver, secret):
    for i in range(4):                      # one after the other: each can take the pooled connection
        t = client.create(delay=0.05, webhook=receiver.url(f"/ok/reuse/{i}"))
        settled(client, t.id)
    peers = {h.peer for h in receiver.of("/ok/reuse/")}
    assert len(receiver.of("/ok/reuse/")) == 4 and len(peers) < 4
