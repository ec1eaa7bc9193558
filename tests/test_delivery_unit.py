"""Delivery pieces without a cluster: Standard Webhooks signing against the independent
`standardwebhooks` package, the SSRF address policy, the leader's backoff draw, the
envelope, rotation of tenant secrets, the wire validation and the metrics collector."""
from __future__ import annotations

import asyncio
import base64
import json
import random
import time

import pytest
import standardwebhooks

from minoots.api import validation
from minoots.api.client.webhooks import WebhookVerificationError, new_webhook_secret, sign, verify_webhook
from minoots.api.dispatcher import backoff_ms, envelope, webhook_id
from minoots.api.ssrf import AddressPolicy
from minoots.api.telemetry import DeliveryCollector
from minoots.kernel import InvalidArgument, State, TimerSpec
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.raft.webhook_secrets import ROTATION_GRACE_MS, WebhookSecrets, check_secret
from minoots.v1 import timers_pb2 as pb

SECRET = new_webhook_secret()


def signed(body=b'{"x":1}', msg_id="msg_7", stamp=None, secret=SECRET) -> dict:
    stamp = int(time.time()) if stamp is None else stamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, msg_id, stamp, body)}


def test_our_signature_is_what_the_independent_library_expects():
    body = b'{"type":"timer.fired"}'
    headers = signed(body)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == {"type": "timer.fired"}
    assert verify_webhook(SECRET, headers, body) == "msg_7"
    # and the library's signature is what verify_webhook accepts
    stamp = int(time.time())
    from datetime import datetime, timezone
    theirs = standardwebhooks.Webhook(SECRET).sign("msg_9", datetime.fromtimestamp(stamp, timezone.utc),
                                                   body.decode())
    assert verify_webhook(SECRET, {"Webhook-Id": "msg_9", "Webhook-Timestamp": str(stamp),
                                   "Webhook-Signature": theirs}, body) == "msg_9"


@pytest.mark.parametrize("mutate, text", [
    (lambda h, b: (h, b + b" "), "no matching signature"),
    (lambda h, b: ({**h, "webhook-id": "msg_8"}, b), "no matching signature"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing"),
    (lambda h, b: ({**h, "webhook-timestamp": "soon"}, b), "not an integer"),
    (lambda h, b: (signed(b, stamp=int(time.time()) - 3600), b), "away from now"),
    (lambda h, b: (signed(b, secret=new_webhook_secret()), b), "no matching signature"),
])
def test_verify_refuses_tampering_replays_and_other_secrets(mutate, text):
    body = b'{"x":1}'
    headers, body = mutate(signed(body), body)
    with pytest.raises(WebhookVerificationError, match=text):
        verify_webhook(SECRET, headers, body)


def test_any_one_of_several_signatures_is_enough():
    body = b"{}"
    stamp = int(time.time())
    other = new_webhook_secret()
    headers = {"webhook-id": "m", "webhook-timestamp": str(stamp),
               "webhook-signature": f"{sign(other, 'm', stamp, body)} {sign(SECRET, 'm', stamp, body)}"}
    assert verify_webhook(SECRET, headers, body) == "m" and verify_webhook(other, headers, body) == "m"


def check(policy: AddressPolicy, url: str) -> None:
    asyncio.run(policy.check_url("url", url))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]/x", "http://10.0.0.5/x",
    "http://192.168.1.1/x", "http://172.16.0.1/x", "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/x", "http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x", "http://[fd00:ec2::254]/x",
    "http://224.0.0.1/x",
])
def test_by_default_non_public_addresses_are_refused(url):
    with pytest.raises(InvalidArgument, match="refused"):
        check(AddressPolicy(), url)


def test_the_operator_can_allow_hosts_addresses_and_networks():
    check(AddressPolicy(["127.0.0.1"]), "http://127.0.0.1:9/x")
    check(AddressPolicy(["10.0.0.0/8"]), "http://10.1.2.3/x")
    check(AddressPolicy(["internal.example"]), "http://internal.example/x")   # by name: not even resolved
    with pytest.raises(InvalidArgument):
        check(AddressPolicy(["127.0.0.1"]), "http://10.1.2.3/x")
    check(AddressPolicy(), "http://8.8.8.8/x")                                 # public: allowed


@pytest.mark.parametrize("url, text", [
    ("ftp://example.com/x", "http"), ("http:///x", "host"), ("http://u:p@8.8.8.8/", "credentials"),
    ("http://8.8.8.8:99999/", "port"), ("http://no-such-host.invalid/", "does not resolve"),
])
def test_malformed_or_unresolvable_urls_are_refused(url, text):
    with pytest.raises(InvalidArgument, match=text):
        check(AddressPolicy(), url)


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    policy = DeliveryPolicy(backoff_base_ms=100, backoff_cap_ms=1000)
    rng = random.Random(7)
    for attempt, ceiling in ((1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (30, 1000)):
        draws = [backoff_ms(policy, attempt, rng) for _ in range(200)]
        assert 0 <= min(draws) and max(draws) <= ceiling
        assert max(draws) > ceiling * 0.8 and min(draws) < ceiling * 0.2     # spread over the range


def test_the_envelope_names_the_fire_and_carries_the_timer():
    s = State()
    s.create(1_700_000_000_000, [TimerSpec("t1", 1_700_000_000_500, tenant="acme", name="n", payload=b"\x00\x01",
                                           labels={"k": "v"}, delivery=Delivery(Webhook("http://h/x")))])
    s.tick(1_700_000_000_600)
    t = s.get("acme", "t1")
    env = json.loads(envelope(t, 2))
    assert env["type"] == "timer.fired" and env["timestamp"] == "2023-11-14T22:13:20.600Z"
    d = env["data"]
    assert (d["schema"], d["tenant"], d["timer_id"], d["name"], d["fire_id"], d["attempt"], d["labels"]) == \
        ("minoots.webhook.v1", "acme", "t1", "n", t.fire_id, 2, {"k": "v"})
    assert d["scheduled_at"] == "2023-11-14T22:13:20.500Z" and base64.b64decode(d["payload_base64"]) == b"\x00\x01"
    assert webhook_id(t.fire_id) == f"msg_{t.fire_id}"


def test_a_rotation_keeps_the_previous_secret_for_the_grace_only():
    table = WebhookSecrets()
    a, b = new_webhook_secret(), new_webhook_secret()
    table.put("acme", a, 1000)
    assert table.signing("acme", 2000) == [a]
    table.put("acme", b, 5000)
    assert table.get("acme") == b
    assert table.signing("acme", 5000 + ROTATION_GRACE_MS - 1) == [b, a]
    assert table.signing("acme", 5000 + ROTATION_GRACE_MS) == [b]
    assert table.signing("nobody", 0) == []
    back = WebhookSecrets.from_json(json.loads(json.dumps(table.to_json())))
    assert back.to_json() == table.to_json()
    with pytest.raises(InvalidArgument):
        check_secret("secret", "whsec_" + base64.b64encode(b"short").decode())
    with pytest.raises(InvalidArgument):
        check_secret("secret", "whsec_not base64!")


def wire_spec(**kw) -> pb.TimerSpec:
    spec = pb.TimerSpec(id="w", delay={"seconds": 5})
    for k, v in kw.items():
        if k == "url":
            spec.webhook.url = v
        elif k == "queue":
            spec.queue.queue = v
        elif k == "max_attempts":
            spec.delivery_policy.max_attempts = v
        elif k == "base_ms":
            spec.delivery_policy.backoff_base.FromMilliseconds(v)
        elif k == "cap_ms":
            spec.delivery_policy.backoff_cap.FromMilliseconds(v)
        elif k == "headers":
            spec.webhook.headers.update(v)
    return spec


def test_wire_specs_with_a_webhook_become_kernel_deliveries_with_defaults():
    spec = validation.create_spec("timer", wire_spec(url="https://h.example/x", max_attempts=7, base_ms=3000,
                                                     headers={"X-A": "1"}), 1000)
    assert spec.delivery == Delivery(Webhook("https://h.example/x", (("x-a", "1"),)),
                                     DeliveryPolicy(max_attempts=7, backoff_base_ms=3000, backoff_cap_ms=60_000))
    assert validation.create_spec("timer", wire_spec(), 1000).delivery is None
    # a base above the default cap without a cap of its own: the cap follows the base
    spec = validation.create_spec("timer", wire_spec(url="http://h/x", base_ms=90_000), 1000)
    assert spec.delivery.policy.backoff_cap_ms == 90_000


@pytest.mark.parametrize("kw, field", [
    ({"queue": "bad queue"}, "timer.queue"),
    ({"max_attempts": 3}, "timer.delivery_policy"),                 # a policy without an action
    ({"url": "gopher://x"}, "timer.webhook.url"),
    ({"url": "http://x/", "max_attempts": 99}, "timer.delivery_policy.max_attempts"),
    ({"url": "http://x/", "base_ms": 90_000, "cap_ms": 10_000}, "timer.delivery_policy.backoff_cap"),
    ({"url": "http://x/", "headers": {"Content-Type": "text/plain"}}, "timer.webhook.headers[0].name"),
])
def test_bad_wire_deliveries_name_the_field(kw, field):
    with pytest.raises(InvalidArgument) as info:
        validation.create_spec("timer", wire_spec(**kw), 1000)
    assert info.value.field == field


def test_the_metrics_collector_reports_attempts_and_open_circuits():
    class FakeDispatcher:
        def stats(self):
            return {"pending": 3, "attempts_ok": 5, "attempts_failed": 2,
                    "endpoints": {"http://a:80": {"state": "open", "queued": 4, "sent": 9, "failed": 9},
                                  "http://b:80": {"state": "closed", "queued": 0, "sent": 1, "failed": 0}}}

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in DeliveryCollector(FakeDispatcher()).collect() for s in fam.samples}
    assert samples[("minoots_webhook_attempts_total", (("outcome", "ok"),))] == 5
    assert samples[("minoots_webhook_attempts_total", (("outcome", "failed"),))] == 2
    assert samples[("minoots_webhook_pending", ())] == 3
    assert samples[("minoots_webhook_circuit_open", (("endpoint", "http://a:80"),))] == 1
    assert samples[("minoots_webhook_circuit_open", (("endpoint", "http://b:80"),))] == 0
    assert samples[("minoots_webhook_endpoint_queued", (("endpoint", "http://a:80"),))] == 4
