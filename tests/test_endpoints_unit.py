"""Managed endpoints, delivery defaults, queue stats and secret-free snapshot exports,
without a cluster: the replicated tables, the kernel's snapshot of endpoint timers, the
API's requested-policy rule and the export's metadata rewrite."""
from __future__ import annotations

import pytest

from minoots.api import validation
from minoots.kernel import State, TimerSpec
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.queue_stats import queue_stats
from minoots.raft import snapshots
from minoots.raft.delivery_defaults import DeliveryDefaults, resolve_policy
from minoots.raft.endpoints import MAX_PER_TENANT, EndpointNotFound, EndpointTable, TooManyEndpoints
from minoots.raft.webhook_secrets import ROTATION_GRACE_MS
from minoots.v1 import timers_pb2 as pb

S1 = "whsec_" + "QUJD" * 8
S2 = "whsec_" + "REVG" * 8


def test_an_endpoint_table_bounds_each_tenant_and_refuses_without_changing_anything():
    table = EndpointTable()
    for i in range(MAX_PER_TENANT):
        table.create("a", f"ep_{i}", "http://h.example/x", (), 0, S1, 1)
    with pytest.raises(TooManyEndpoints):
        table.create("a", "ep_more", "http://h.example/x", (), 0, S1, 1)
    assert table.count("a") == MAX_PER_TENANT and table.find("a", "ep_more") is None
    table.create("b", "ep_0", "http://h.example/x", (), 0, S1, 1)      # another tenant has room
    with pytest.raises(Exception, match="exists already"):
        table.create("b", "ep_0", "http://h.example/y", (), 0, S1, 1)
    with pytest.raises(EndpointNotFound):
        table.get("c", "ep_0")
    assert [e.id for e in table.list("b")] == ["ep_0"]


def test_reads_and_exports_never_carry_a_secret_and_rotation_signs_with_both_for_the_grace():
    table = EndpointTable()
    ep = table.create("a", "ep_1", "http://h.example/x", (("X-K", "v"),), 500, S1, 10)
    assert ep.secret is None and ep.previous is None and ep.headers == (("x-k", "v"),)
    assert table.signing("a", "ep_1", 11) == [S1]
    rotated = table.rotate("a", "ep_1", S2, 100)
    assert rotated.secret is None and rotated.rotated_at_ms == 100
    assert table.signing("a", "ep_1", 100 + ROTATION_GRACE_MS - 1) == [S2, S1]
    assert table.signing("a", "ep_1", 100 + ROTATION_GRACE_MS) == [S2]
    assert all(e.secret is None for e in table.list("a"))
    full, bare = table.to_json(), table.to_json(secrets=False)
    assert S1 in str(full) and S2 in str(full) and S1 not in str(bare) and S2 not in str(bare)
    assert EndpointTable.from_json(full).signing("a", "ep_1", 101) == [S2, S1]
    restored = EndpointTable.from_json(bare)        # restores, but cannot sign until rotated
    assert restored.find("a", "ep_1").url == "http://h.example/x" and restored.signing("a", "ep_1", 101) == []
    table.delete("a", "ep_1")
    assert table.count("a") == 0 and table.signing("a", "ep_1", 101) == []


def test_snapshot_metadata_without_secrets_keeps_everything_else():
    table = EndpointTable()
    table.create("a", "ep_1", "http://h.example/x", (), 0, S1, 1)
    table.rotate("a", "ep_1", S2, 5)
    meta = snapshots.SnapshotMeta(last_index=3, last_term=1, webhook_secrets=[["a", S1, 1, None]],
                                  endpoints=table.to_json())
    assert snapshots.has_secrets(meta)
    bare = snapshots.without_secrets(meta)
    assert not snapshots.has_secrets(bare) and bare.webhook_secrets == []
    assert bare.endpoints == table.to_json(secrets=False) and bare.last_index == 3
    assert S1 not in snapshots.head_bytes(bare).decode() and S2 not in snapshots.head_bytes(bare).decode()
    # An old snapshot's metadata, without the new keys, still reads.
    old = snapshots.SnapshotMeta.from_json({"last_index": 1, "last_term": 1})
    assert old.endpoints == [] and old.delivery_defaults == [] and not snapshots.has_secrets(old)


def test_policies_resolve_field_by_field_from_the_defaults():
    d = DeliveryPolicy(4, 200, 800, 5000, 60000)
    assert resolve_policy((None,) * 5, d) == d
    assert resolve_policy((None,) * 5, d, timeout_ms=1500) == d._replace(attempt_timeout_ms=1500)
    assert resolve_policy((1, None, None, 900, None), d, timeout_ms=1500) == DeliveryPolicy(1, 200, 800, 900, 60000)
    # an explicit base above the inherited cap raises the cap; an explicit cap is kept as given
    assert resolve_policy((None, 5000, None, None, None), d).backoff_cap_ms == 5000
    table = DeliveryDefaults()
    assert table.effective("t") == (DeliveryPolicy(), True)
    table.set("t", tuple(d))
    assert table.effective("t") == (d, False)
    with pytest.raises(Exception, match="backoff_cap_ms"):
        table.set("t", (4, 900, 800, 5000, 60000))
    assert DeliveryDefaults.from_json(table.to_json()).effective("t") == (d, False)


def test_the_api_sends_only_the_policy_fields_a_client_gave():
    spec = pb.TimerSpec(id="x", tenant="t", webhook=pb.WebhookAction(url="http://h.example/x"))
    spec.delay.FromMilliseconds(10)
    spec.delivery_policy.max_attempts = 3
    spec.delivery_policy.backoff_cap.FromMilliseconds(700)
    checked = validation.create_spec("timer", spec, 1000)
    assert checked.delivery.policy.max_attempts == 3       # checked with the built-in defaults filled in
    asked = validation.requested_delivery(spec, checked.delivery)
    assert tuple(asked.policy) == (3, None, 700, None, None)
    ep = pb.TimerSpec(id="y", tenant="t", endpoint=pb.EndpointAction(id="ep_1"))
    ep.delay.FromMilliseconds(10)
    got = validation.create_spec("timer", ep, 1000).delivery
    assert (got.webhook, got.queue, got.endpoint) == (None, None, "ep_1")
    assert tuple(validation.requested_delivery(ep, got).policy) == (None,) * 5
    bad = pb.TimerSpec(id="z", tenant="t", endpoint=pb.EndpointAction(id="ep 1"))
    bad.delay.FromMilliseconds(10)
    with pytest.raises(Exception, match="timer.endpoint.id"):
        validation.create_spec("timer", bad, 1000)


def test_endpoint_timers_survive_the_kernel_snapshot_and_old_rows_still_read():
    s = State()
    hook = Delivery(Webhook("http://h.example/x", ()), DeliveryPolicy(), None, "ep_1")
    plain = Delivery(Webhook("http://h.example/y", ()), DeliveryPolicy())
    s.create(1, [TimerSpec("a", 10, tenant="t", delivery=hook), TimerSpec("b", 10, tenant="t", delivery=plain)])
    back = State.from_bytes(s.to_bytes())
    assert back == s and back.get("t", "a").delivery.endpoint == "ep_1" and back.get("t", "b").delivery.endpoint \
        is None
    # Without an endpoint the rows are the 11 fields they always were.
    s2 = State()
    s2.create(1, [TimerSpec("b", 10, tenant="t", delivery=plain)])
    assert b'"ep_1"' not in s2.to_bytes() and b'"ep_1"' in s.to_bytes()


def test_queue_stats_count_visible_leased_waiting_and_dead():
    s = State()
    q = Delivery(None, DeliveryPolicy(max_attempts=1), "jobs")
    s.create(1, [TimerSpec(f"q{i}", 10, tenant="t", delivery=q) for i in range(4)]
             + [TimerSpec("o", 10, tenant="t", delivery=Delivery(None, DeliveryPolicy(), "other"))])
    s.tick(10)
    assert queue_stats(s, "t") == {"jobs": [4, 0, 0, 0], "other": [1, 0, 0, 0]}
    leases = s.lease(20, "t", "jobs", 2, 1000).leases
    s.nack_lease(30, "t", leases[0].timer.id, leases[0].lease_id, None)      # last attempt: dead
    assert queue_stats(s, "t", "jobs") == {"jobs": [2, 1, 0, 1]}
    assert queue_stats(s, "nobody") == {}


def test_an_endpoint_removed_before_the_create_applied_is_named_as_on_the_wire():
    from minoots.api.service import endpoint_not_found

    exc = EndpointNotFound("specs[3].endpoint: endpoint 'ep_x' of tenant 't' does not exist")
    assert str(endpoint_not_found(exc, "timers")).startswith("timers[3].endpoint.id: endpoint 'ep_x'")
    one = endpoint_not_found(EndpointNotFound("specs[0].endpoint: gone"), "timer")
    assert str(one) == "timer.endpoint.id: gone" and one.code == "NOT_FOUND"
