"""Limits (issue 12): tenant quotas in the kernel and the FSM, the create rate at the API,
caps on watchers and the batcher's queue, and ExportSnapshot streamed in chunks.

Kernel and FSM tests are pure; the API pieces run in-process; the tests marked
`cluster` start real nodes and go through the SDK and the CLI.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minoots.kernel import QuotaExceeded, State, TenantLimit, TenantUsage, TimerSpec
from minoots.raft import commands as c
from minoots.raft import snapshots
from minoots.raft.fsm import TimerFSM
from minoots.raft.quotas import Quota, QuotaNotFound, QuotaTable

from support import T0, busy_state

# ---------------------------------------------------------------- kernel: usage counters


def test_usage_counts_outstanding_timers_and_their_payload_bytes():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 10, payload=b"x" * 5),
                  TimerSpec("b", T0 + 10, payload=b"y" * 7, ack_required=True),
                  TimerSpec("c", T0 + 50, payload=b"z" * 11, name="named"),      # payload inside an Extra
                  TimerSpec("d", T0 + 60),
                  TimerSpec("e", T0 + 70, tenant="other", payload=b"q" * 3)])
    assert s.usage("default") == TenantUsage(4, 23)
    assert s.usage("other") == TenantUsage(1, 3)
    assert s.usage("never-seen") == TenantUsage(0, 0)
    s.reschedule(T0 + 1, "default", "d", extend_by=5)                          # changes nothing held
    assert s.usage("default") == TenantUsage(4, 23)
    s.tick(T0 + 10)                           # a settles (terminal), b fires and stays outstanding
    assert s.usage("default") == TenantUsage(3, 18)
    s.ack(T0 + 11, "default", "b", s.get("default", "b").fire_id)
    assert s.usage("default") == TenantUsage(2, 11)
    s.cancel(T0 + 12, [("default", "c"), ("other", "e")])
    assert s.usage("default") == TenantUsage(1, 0)
    assert s.usage("other") == TenantUsage(0, 0)
    s.check_invariants()


def test_a_fired_timer_cancelled_before_its_ack_is_released_once():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 1, payload=b"abc", ack_required=True)])
    s.tick(T0 + 1)
    assert s.usage("default") == TenantUsage(1, 3)
    s.cancel(T0 + 2, [("default", "a")])
    assert s.usage("default") == TenantUsage(0, 0)
    s.check_invariants()


def test_idempotent_repeats_add_nothing():
    s = State()
    spec = TimerSpec("a", T0 + 10, payload=b"12345", idempotency_key="k")
    s.create(T0, [spec])
    res = s.create(T0, [TimerSpec("b", T0 + 10, payload=b"12345", idempotency_key="k")])
    assert not res.items[0].created
    assert s.usage("default") == TenantUsage(1, 5)
    s.check_invariants()


def test_usage_survives_a_snapshot_round_trip():
    s = busy_state()
    s.create(T0 + 30, [TimerSpec(f"p{i}", T0 + 100 + i, tenant=f"t{i % 3}", payload=b"p" * i) for i in range(30)])
    again = State.from_bytes(s.to_bytes())
    for tenant in ("default", "acme", "t0", "t1", "t2"):
        assert again.usage(tenant) == s.usage(tenant), tenant
    again.check_invariants()
    # and the counters keep working on the restored state exactly as on the original
    for st in (s, again):
        st.tick(T0 + 10_000)
    for tenant in ("default", "acme", "t0", "t1", "t2"):
        assert again.usage(tenant) == s.usage(tenant), tenant
    again.check_invariants()


def test_usage_after_restore_of_many_tenants_and_all_open():
    s = State()
    s.create(T0, [TimerSpec(f"x{i}", T0 + 10 + i, tenant=f"t{i % 20}", payload=b"." * (i % 4)) for i in range(400)])
    again = State.from_bytes(s.to_bytes())
    assert [again.usage(f"t{k}") for k in range(20)] == [s.usage(f"t{k}") for k in range(20)]
    again.check_invariants()


OPS = st.lists(st.tuples(st.sampled_from(["create", "tick", "cancel", "ack"]), st.integers(0, 10**6)),
               max_size=40)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_usage_matches_a_recount_after_any_sequence_of_commands(ops):
    rng = random.Random(0)
    s = State()
    now = T0
    made = 0
    for op, r in ops:
        now += 1
        try:
            if op == "create":
                specs = [TimerSpec(f"t{made + i}", now + rng.randrange(0, 20), tenant=rng.choice("abc"),
                                   payload=b"p" * rng.randrange(0, 4), ack_required=rng.random() < 0.4,
                                   name=rng.choice(["", "n"])) for i in range(1 + r % 3)]
                made += len(specs)
                s.create(now, specs, {"a": TenantLimit(6, 9)}, TenantLimit(8, 0))
            elif op == "tick":
                s.tick(now + r % 15)
            elif op == "cancel" and made:
                t = s.get(*next(((x.tenant, x.id) for x in s if x.id == f"t{r % made}")))
                s.cancel(now, [(t.tenant, t.id)])
            elif op == "ack" and made:
                t = next((x for x in s if x.id == f"t{r % made}"))
                s.ack(now, t.tenant, t.id, t.fire_id or 0)
        except Exception as exc:   # refusals are part of the game; they must change nothing
            assert getattr(exc, "code", None) is not None, exc
        s.check_invariants()
        assert s.usage("a").timers <= 6 and s.usage("a").payload_bytes <= 9
        for tenant in "bc":
            assert s.usage(tenant).timers <= 8
    State.from_bytes(s.to_bytes()).check_invariants()


# ---------------------------------------------------------------- kernel: refusals


def test_the_n_plus_first_timer_is_refused_and_nothing_is_half_applied():
    s = State()
    limits = {"acme": TenantLimit(max_timers=3)}
    s.create(T0, [TimerSpec(f"a{i}", T0 + 10, tenant="acme") for i in range(3)], limits)
    before, seq = s.to_bytes(), s.seq
    with pytest.raises(QuotaExceeded) as info:
        s.create(T0, [TimerSpec("a3", T0 + 10, tenant="acme")], limits)
    err = info.value
    assert err.code == "RESOURCE_EXHAUSTED"
    assert (err.tenant, err.limit, err.quota, err.held, err.adding) == ("acme", "max_timers", 3, 3, 1)
    assert "max_timers is 3" in str(err) and "holds 3 outstanding timers" in str(err) and "adds 1" in str(err)
    assert s.to_bytes() == before and s.seq == seq and len(s) == 3
    s.check_invariants()
    # other tenants are not limited by acme's quota
    s.create(T0, [TimerSpec("b", T0 + 10)], limits)
    # a terminal transition frees room
    s.cancel(T0 + 1, [("acme", "a0")])
    s.create(T0 + 1, [TimerSpec("a3", T0 + 10, tenant="acme")], limits)
    assert s.usage("acme") == TenantUsage(3, 0)


def test_a_group_that_would_exceed_is_refused_as_a_whole():
    s = State()
    limits = {"acme": TenantLimit(max_timers=4)}
    s.create(T0, [TimerSpec("a0", T0 + 10, tenant="acme"), TimerSpec("a1", T0 + 10, tenant="acme")], limits)
    before = s.to_bytes()
    batch = [TimerSpec("x", T0 + 10, tenant="other")] + [TimerSpec(f"a{i}", T0 + 10, tenant="acme")
                                                           for i in range(2, 5)]
    with pytest.raises(QuotaExceeded, match="holds 2 outstanding timers and this request adds 3"):
        s.create(T0, batch, limits)
    assert s.to_bytes() == before
    assert s.usage("other") == TenantUsage(0, 0)
    s.check_invariants()


def test_payload_bytes_quota():
    s = State()
    limits = {"acme": TenantLimit(max_payload_bytes=100)}
    s.create(T0, [TimerSpec("a", T0 + 10, tenant="acme", payload=b"x" * 60)], limits)
    before = s.to_bytes()
    with pytest.raises(QuotaExceeded) as info:
        s.create(T0, [TimerSpec("b", T0 + 10, tenant="acme", payload=b"x" * 41)], limits)
    assert (info.value.limit, info.value.quota, info.value.held, info.value.adding) == \
        ("max_payload_bytes", 100, 60, 41)
    assert s.to_bytes() == before
    s.create(T0, [TimerSpec("b", T0 + 10, tenant="acme", payload=b"x" * 40),    # exactly at the limit
                  TimerSpec("c", T0 + 10, tenant="acme")], limits)              # no payload: no bytes
    assert s.usage("acme") == TenantUsage(3, 100)
    s.tick(T0 + 10)                                                             # all settle
    s.create(T0 + 11, [TimerSpec("d", T0 + 20, tenant="acme", payload=b"x" * 100)], limits)
    s.check_invariants()


def test_the_default_limit_and_a_tenant_of_its_own():
    s = State()
    limits = {"free": TenantLimit(0, 0)}             # its own quota: unlimited, whatever the default
    default = TenantLimit(max_timers=1)
    s.create(T0, [TimerSpec("a", T0 + 10, tenant="t1")], limits, default)
    with pytest.raises(QuotaExceeded, match="'t1'"):
        s.create(T0, [TimerSpec("b", T0 + 10, tenant="t1")], limits, default)
    s.create(T0, [TimerSpec("a", T0 + 10, tenant="t2")], limits, default)     # each tenant its own count
    s.create(T0, [TimerSpec(f"f{i}", T0 + 10, tenant="free") for i in range(5)], limits, default)
    with pytest.raises(QuotaExceeded, match="'t3'"):
        s.create(T0, [TimerSpec("a", T0 + 10, tenant="t3"), TimerSpec("b", T0 + 10, tenant="t3")], limits, default)
    assert s.usage("t3") == TenantUsage(0, 0)
    s.check_invariants()


def test_a_bad_limit_is_an_invalid_argument_and_changes_nothing():
    s = State()
    before = s.to_bytes()
    with pytest.raises(Exception) as info:
        s.create(T0, [TimerSpec("a", T0 + 10)], {"default": (1, 2)})
    assert info.value.code == "INVALID_ARGUMENT"
    assert s.to_bytes() == before


# ---------------------------------------------------------------- the FSM: replicated quotas


def apply(fsm: TimerFSM, command):
    return fsm.apply(c.encode(command))


def test_quota_records_round_trip():
    for rec in (c.SetQuota("acme", 10, None, 5, None), c.SetQuota("*"), c.ClearQuota("acme")):
        assert c.decode(c.encode(rec)) == rec


def test_fsm_enforces_quotas_per_group_and_keeps_unset_fields():
    fsm = TimerFSM({})
    tenant, q = apply(fsm, c.SetQuota("acme", max_timers=2, max_payload_bytes=0, create_rate=50))
    assert (tenant, q) == ("acme", Quota(2, 0, 50, 0))
    _, q = apply(fsm, c.SetQuota("acme", max_payload_bytes=64))          # others kept
    assert q == Quota(2, 64, 50, 0)
    res = apply(fsm, c.CreateTimers(T0, (
        (TimerSpec("a", T0 + 10, tenant="acme"),),
        (TimerSpec("b", T0 + 10, tenant="acme"), TimerSpec("c", T0 + 10, tenant="acme")),   # one too many
        (TimerSpec("d", T0 + 10, tenant="acme", payload=b"x" * 65),),                       # bytes
        (TimerSpec("e", T0 + 10, tenant="acme", payload=b"x" * 64),),
    )))
    assert not isinstance(res[0], Exception)
    assert isinstance(res[1], QuotaExceeded) and res[1].limit == "max_timers"
    assert isinstance(res[2], QuotaExceeded) and res[2].limit == "max_payload_bytes"
    assert not isinstance(res[3], Exception)
    assert sorted(t.id for t in fsm.kernel.timers("acme")) == ["a", "e"]
    fsm.kernel.check_invariants()


def test_fsm_default_quota_and_clearing():
    fsm = TimerFSM({})
    apply(fsm, c.SetQuota("*", max_timers=1))
    apply(fsm, c.SetQuota("big", max_timers=3))
    res = apply(fsm, c.CreateTimers(T0, (
        tuple(TimerSpec(f"x{i}", T0 + 10, tenant="small") for i in range(2)),
        tuple(TimerSpec(f"x{i}", T0 + 10, tenant="big") for i in range(3)),
    )))
    assert isinstance(res[0], QuotaExceeded) and not isinstance(res[1], Exception)
    assert fsm.quotas.effective("small") == (Quota(1), True)
    assert fsm.quotas.effective("big") == (Quota(3), False)
    apply(fsm, c.ClearQuota("big"))                       # back to the default: holds 3 > 1
    res = apply(fsm, c.CreateTimers(T0, ((TimerSpec("y", T0 + 10, tenant="big"),),)))
    assert isinstance(res[0], QuotaExceeded) and res[0].held == 3
    assert isinstance(apply(fsm, c.ClearQuota("big")), QuotaNotFound)
    apply(fsm, c.ClearQuota("*"))
    assert fsm.quotas.kernel_default is None and fsm.quotas.kernel_limits == {}
    res = apply(fsm, c.CreateTimers(T0, ((TimerSpec("y", T0 + 10, tenant="big"),),)))
    assert not isinstance(res[0], Exception)


@pytest.mark.parametrize("command, text", [
    (c.SetQuota("no spaces", 1), "quota.tenant"),
    (c.SetQuota("acme", -1), "quota.max_timers"),
    (c.SetQuota("acme", 1, create_rate=1 << 63), "quota.create_rate"),
    (c.SetQuota("acme", True), "quota.max_timers"),
    (c.SetQuota("acme", 1.5), "quota.max_timers"),
])
def test_bad_quota_commands_are_refused_and_change_nothing(command, text):
    fsm = TimerFSM({})
    apply(fsm, c.SetQuota("acme", 7))
    res = apply(fsm, command)
    assert isinstance(res, Exception) and res.code == "INVALID_ARGUMENT" and text in str(res)
    assert fsm.quotas.all() == [("acme", Quota(7))]


def test_quotas_survive_snapshot_and_restore():
    fsm = TimerFSM({"n1": "127.0.0.1:1"})
    apply(fsm, c.SetQuota("*", max_timers=5, create_rate=10, create_burst=20))
    apply(fsm, c.SetQuota("acme", max_timers=2, max_payload_bytes=10))
    apply(fsm, c.CreateTimers(T0, ((TimerSpec("a", T0 + 10, tenant="acme", payload=b"12345"),
                                    TimerSpec("b", T0 + 10, tenant="acme")),)))
    snap = fsm.snapshot()
    kernel = snap.kernel.to_bytes()
    meta = snapshots.SnapshotMeta(last_index=9, last_term=1, names=snap.names, grpc=snap.grpc, tokens=snap.tokens,
                                  quotas=list(snap.quotas), kernel_size=len(kernel))
    meta2, kernel2 = snapshots.decode(snapshots.encode(meta, kernel))
    other = TimerFSM({})
    other.restore(kernel2, meta2.names, meta2.grpc, meta2.tokens, meta2.quotas)
    assert other.quotas.all() == fsm.quotas.all()
    assert other.quotas.kernel_default == TenantLimit(5, 0)
    assert other.kernel.usage("acme") == TenantUsage(2, 5)
    # enforcement continues from the restored counters
    res = apply(other, c.CreateTimers(T0, ((TimerSpec("c", T0 + 10, tenant="acme"),),)))
    assert isinstance(res[0], QuotaExceeded) and res[0].held == 2
    # a snapshot written before quotas existed restores with none
    old = snapshots.SnapshotMeta.from_json({k: v for k, v in meta.to_json().items() if k != "quotas"})
    assert old.quotas == []
    assert len(QuotaTable.from_json(old.quotas)) == 0
