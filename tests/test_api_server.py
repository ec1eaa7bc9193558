"""The gRPC server against real node processes, through the raw generated stubs.

One 3-node cluster serves most tests (module fixture); the failover and the
retention/restart tests start their own. Nothing asserts on speed: waits are
bounded by generous timeouts only (the machine is small and shared). Timers
that are not meant to fire are an hour out (FAR), so the kernel changes only
through the tests' own requests (which the digest checks rely on).
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from minoots.api.wirebase import ms_timestamp as ts
from minoots.api.wirebase import timestamp_ms as ms
from minoots.raft.clock import now_ms
from minoots.raft.testing import Bearer, LocalCluster, LocalNode
from minoots.v1 import cluster_pb2 as cpb
from minoots.v1 import cluster_pb2_grpc
from minoots.v1 import timers_pb2 as pb
from minoots.v1 import timers_pb2_grpc
from support import require_tool

pytestmark = pytest.mark.cluster     # every test here talks to node processes

WAIT = 30.0
FAR_S = 3600
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
S = pb.TimerState
K = pb.EventKind


# ---------------------------------------------------------------- helpers

_channels: dict[str, grpc.Channel] = {}


def channel(node: LocalNode) -> grpc.Channel:
    ch = _channels.get(node.grpc)
    if ch is None:
        ch = _channels[node.grpc] = grpc.intercept_channel(grpc.insecure_channel(
            node.grpc, options=[("grpc.max_receive_message_length", 64 << 20)]), Bearer())
    return ch


def timers(node: LocalNode) -> timers_pb2_grpc.TimersStub:
    return timers_pb2_grpc.TimersStub(channel(node))


def clusters(node: LocalNode) -> cluster_pb2_grpc.ClusterStub:
    return cluster_pb2_grpc.ClusterStub(channel(node))


def with_idempotency_keys(request):
    """`request` with an idempotency key on every create spec that has none (a fresh key
    per spec, fixed for all attempts); other requests unchanged. A create retried after
    an ambiguous failure (the first attempt may have committed) then returns the timer it
    made instead of ALREADY_EXISTS or, for a server-made id, a second timer."""
    if isinstance(request, pb.CreateTimerRequest):
        specs = [request.timer]
    elif isinstance(request, pb.CreateTimersRequest):
        specs = list(request.timers)
    else:
        return request
    if all(sp.idempotency_key for sp in specs):
        return request
    keyed = type(request)()
    keyed.CopyFrom(request)
    for sp in [keyed.timer] if isinstance(keyed, pb.CreateTimerRequest) else keyed.timers:
        if not sp.idempotency_key:
            sp.idempotency_key = f"test-retry-{uuid.uuid4().hex}"
    return keyed


def retry(fn, request, timeout: float = WAIT, per_call: float = 10.0):
    """Call fn(request), retrying UNAVAILABLE / DEADLINE_EXCEEDED (e.g. during an election).
    Creates are sent with idempotency keys (`with_idempotency_keys`), so a retry is safe."""
    request = with_idempotency_keys(request)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(request, timeout=per_call)
        except grpc.RpcError as exc:
            if exc.code() not in RETRY_CODES or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_retry_helper_keys_every_create_and_keeps_given_keys():
    one = with_idempotency_keys(pb.CreateTimerRequest(timer=pb.TimerSpec(id="a")))
    assert one.timer.idempotency_key.startswith("test-retry-") and one.timer.id == "a"
    mixed = pb.CreateTimersRequest(timers=[pb.TimerSpec(id="b", idempotency_key="mine"), pb.TimerSpec(id="c")])
    out = with_idempotency_keys(mixed)
    keys = [sp.idempotency_key for sp in out.timers]
    assert keys[0] == "mine" and keys[1].startswith("test-retry-")
    assert not mixed.timers[1].idempotency_key                 # the caller's request is not mutated
    keyed = pb.CreateTimerRequest(timer=pb.TimerSpec(idempotency_key="k"))
    assert with_idempotency_keys(keyed) is keyed
    cancel = pb.CancelTimerRequest(id="x")
    assert with_idempotency_keys(cancel) is cancel


def expect_error(code: grpc.StatusCode, fn, request, *needles: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(request, timeout=WAIT)
    err = info.value
    assert err.code() == code, (err.code(), err.details())
    for needle in needles:
        assert needle in err.details(), (needle, err.details())
    return err


def delay(ms: int) -> Duration:
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def far(**kw) -> pb.TimerSpec:
    return pb.TimerSpec(delay=Duration(seconds=FAR_S), **kw)


def digest(node: LocalNode) -> str:
    return clusters(node).GetDigest(cpb.GetDigestRequest(), timeout=WAIT).sha256


def leader_and_followers(cluster: LocalCluster) -> tuple[LocalNode, list[LocalNode]]:
    lid = cluster.leader(timeout=WAIT)
    return cluster.nodes[lid], [n for nid, n in cluster.nodes.items() if nid != lid and n.alive()]


def wait_serving(cluster: LocalCluster) -> None:
    deadline = time.monotonic() + WAIT
    for node in cluster.nodes.values():
        stub = health_pb2_grpc.HealthStub(channel(node))
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"{node.node_id} never became SERVING"
            time.sleep(0.1)


def get_eventually(node: LocalNode, tenant: str, tid: str, pred, timeout: float = WAIT) -> pb.Timer:
    deadline = time.monotonic() + timeout
    while True:
        try:
            t = timers(node).GetTimer(pb.GetTimerRequest(tenant=tenant, id=tid), timeout=5)
            if pred(t):
                return t
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, *RETRY_CODES):
                raise
        assert time.monotonic() < deadline, f"timer {tenant}/{tid} never reached the expected state"
        time.sleep(0.05)


def list_all(node: LocalNode, **kw) -> list[pb.Timer]:
    out, token = [], ""
    while True:
        res = timers(node).ListTimers(pb.ListTimersRequest(page_token=token, **kw), timeout=WAIT)
        out += res.timers
        token = res.next_page_token
        if not token:
            return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("api") / "cluster")
    try:
        c.start()
        c.leader(timeout=WAIT)
        wait_serving(c)
        yield c
    finally:
        c.stop()
        for node in c.nodes.values():
            assert not node.alive()
        for node in c.nodes.values():
            _channels.pop(node.grpc, None)


# ---------------------------------------------------------------- creates

def test_create_through_a_follower_is_visible_there_at_once(cluster):
    leader, followers = leader_and_followers(cluster)
    f = followers[0]
    res = retry(timers(f).CreateTimer, pb.CreateTimerRequest(timer=far(name="hello", payload=b"p",
                                                                        labels={"team": "a"})))
    t = res.timer
    assert res.created and len(t.id) == 32 and t.tenant == "default"      # server-generated uuid4 hex
    assert t.state == S.TIMER_STATE_ARMED and t.revision == 2 and t.labels["team"] == "a"
    assert ms(t.fire_at) - ms(t.created_at) >= FAR_S * 1000 - 5_000
    # the follower answered after applying it itself: a read there sees it immediately
    assert timers(f).GetTimer(pb.GetTimerRequest(id=t.id), timeout=5) == t
    got = get_eventually(leader, "default", t.id, lambda x: True)
    assert got == t


def test_create_timers_10000_through_a_follower_and_all_or_nothing(cluster):
    leader, followers = leader_and_followers(cluster)
    f = followers[-1]
    specs = [far(id=f"bulk-{i}", payload=bytes([i % 256]) * 64) for i in range(10_000)]
    res = retry(timers(f).CreateTimers, pb.CreateTimersRequest(timers=specs), per_call=60)
    assert len(res.results) == 10_000 and all(r.created for r in res.results)
    assert [r.timer.id for r in res.results[:3]] == ["bulk-0", "bulk-1", "bulk-2"]
    assert res.results[9999].timer.payload == bytes([9999 % 256]) * 64

    before = digest(leader)
    # one bad spec (checked before proposing) -> nothing at all
    bad = [far(id=f"none-{i}") for i in range(10_000)]
    bad[7777].labels["bad key"] = "x"
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, timers(f).CreateTimers, pb.CreateTimersRequest(timers=bad),
                 "timers[7777].labels['bad key']")
    # one id repeated inside the batch (found by the kernel at apply) -> nothing
    dup = [far(id=f"none-{i}") for i in range(100)] + [far(id="none-5")]
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, timers(f).CreateTimers, pb.CreateTimersRequest(timers=dup),
                 "timers[100].id", "timers[5]")
    # one id already taken -> ALREADY_EXISTS naming it, nothing
    taken = [far(id=f"none-{i}") for i in range(100)] + [far(id="bulk-3")]
    expect_error(grpc.StatusCode.ALREADY_EXISTS, timers(f).CreateTimers, pb.CreateTimersRequest(timers=taken),
                 "timers[100].id", "bulk-3")
    cluster.wait_applied(cluster.status(leader.node_id)["commit_index"])
    assert digest(leader) == before
    expect_error(grpc.StatusCode.NOT_FOUND, timers(f).GetTimer, pb.GetTimerRequest(id="none-0"))


def test_idempotent_retry_returns_the_same_timer(cluster):
    leader, followers = leader_and_followers(cluster)
    spec = far(idempotency_key="order-42", tenant="shop")
    first = retry(timers(followers[0]).CreateTimer, pb.CreateTimerRequest(timer=spec))
    assert first.created
    # the retry goes to another node, without the (server-generated) id: same timer, created=false
    again = retry(timers(leader).CreateTimer, pb.CreateTimerRequest(timer=spec))
    assert not again.created and again.timer == first.timer
    # a client-chosen id without a key: ALREADY_EXISTS on a second create
    retry(timers(leader).CreateTimer, pb.CreateTimerRequest(timer=far(id="mine", tenant="shop")))
    expect_error(grpc.StatusCode.ALREADY_EXISTS, timers(leader).CreateTimer,
                 pb.CreateTimerRequest(timer=far(id="mine", tenant="shop")), "timer.id", "mine")


def test_invalid_requests_get_their_code_and_touch_nothing(cluster):
    leader, followers = leader_and_followers(cluster)
    node = followers[0]
    t, c = timers(node), pb.CreateTimerRequest
    existing = retry(t.CreateTimer, c(timer=far(id="victim"))).timer
    cluster.wait_applied(cluster.status(leader.node_id)["commit_index"])
    before = digest(leader)
    IA, NF, FP = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION
    cases = [
        (IA, t.CreateTimer, c(timer=pb.TimerSpec(delay=Duration(seconds=-1))), ["timer.delay", "negative"]),
        (IA, t.CreateTimer, c(timer=pb.TimerSpec(id="x")), ["timer.deadline"]),
        (IA, t.CreateTimer, c(), ["timer.deadline"]),
        (IA, t.CreateTimer, c(timer=pb.TimerSpec(fire_at=Timestamp(seconds=-5))), ["timer.fire_at", "within"]),
        (IA, t.CreateTimer, c(timer=pb.TimerSpec(fire_at=Timestamp(seconds=253402300800))), ["timer.fire_at"]),
        (IA, t.CreateTimer, c(timer=pb.TimerSpec(fire_at=Timestamp(seconds=5, nanos=-1))), ["timer.fire_at"]),
        (IA, t.CreateTimer, c(timer=far(payload=b"x" * 65537)), ["timer.payload", "65536"]),
        (IA, t.CreateTimer, c(timer=far(action=b"x" * 65537)), ["timer.action"]),
        (IA, t.CreateTimer, c(timer=far(labels={f"k{i}": "v" for i in range(65)})), ["timer.labels", "64"]),
        (IA, t.CreateTimer, c(timer=far(labels={"bad key": "v"})), ["timer.labels['bad key']"]),
        (IA, t.CreateTimer, c(timer=far(labels={"k": "v" * 257})), ["timer.labels['k']"]),
        (IA, t.CreateTimer, c(timer=far(id="has space")), ["timer.id"]),
        (IA, t.CreateTimer, c(timer=far(id="x" * 129)), ["timer.id"]),
        (IA, t.CreateTimer, c(timer=far(tenant="t" * 65)), ["timer.tenant"]),
        (IA, t.CreateTimer, c(timer=far(tenant="a/b")), ["timer.tenant"]),
        (IA, t.CreateTimer, c(timer=far(name="n" * 257)), ["timer.name"]),
        (IA, t.CreateTimer, c(timer=far(idempotency_key="k" * 129)), ["timer.idempotency_key"]),
        (IA, t.CreateTimers, pb.CreateTimersRequest(), ["timers", "none"]),
        (IA, t.CreateTimers, pb.CreateTimersRequest(timers=[far()] * 10_001), ["timers", "10000"]),
        (IA, t.CreateTimers, pb.CreateTimersRequest(timers=[far(), pb.TimerSpec()]), ["timers[1].deadline"]),
        (IA, t.ListTimers, pb.ListTimersRequest(states=[99]), ["states[0]"]),
        (IA, t.ListTimers, pb.ListTimersRequest(states=[0]), ["states[0]"]),
        (IA, t.ListTimers, pb.ListTimersRequest(page_token="garbage!"), ["page_token"]),
        (IA, t.ListTimers, pb.ListTimersRequest(label_selector="novalue"), ["label_selector"]),
        (IA, t.ListTimers, pb.ListTimersRequest(label_selector="bad key=v"), ["label_selector"]),
        (IA, t.AckTimer, pb.AckTimerRequest(id="victim", fire_id=0), ["fire_id"]),
        (IA, t.AckTimer, pb.AckTimerRequest(id="bad id", fire_id=1), ["id"]),
        (IA, t.RescheduleTimer, pb.RescheduleTimerRequest(id="victim"), ["change"]),
        (IA, t.RescheduleTimer, pb.RescheduleTimerRequest(id="victim", fire_at=Timestamp(seconds=-1)), ["fire_at"]),
        (IA, t.RescheduleTimer, pb.RescheduleTimerRequest(id="victim", extend_by=Duration(seconds=-10**12)),
         ["extend_by"]),
        (IA, t.CancelTimer, pb.CancelTimerRequest(id=""), ["id"]),
        (IA, t.GetTimer, pb.GetTimerRequest(id="victim", tenant="bad tenant"), ["tenant"]),
        (NF, t.GetTimer, pb.GetTimerRequest(id="nope"), ["nope"]),
        (NF, t.CancelTimer, pb.CancelTimerRequest(id="nope"), ["nope"]),
        (NF, t.RescheduleTimer, pb.RescheduleTimerRequest(id="nope", extend_by=Duration(seconds=1)), ["nope"]),
        (NF, t.AckTimer, pb.AckTimerRequest(id="nope", fire_id=1), ["nope"]),
        (NF, t.GetTimer, pb.GetTimerRequest(id="victim", tenant="other"), ["victim"]),
        (FP, t.AckTimer, pb.AckTimerRequest(id="victim", fire_id=1), ["ARMED"]),
    ]
    for code, fn, request, needles in cases:
        expect_error(code, fn, request, *needles)
    # enum values unknown to this server in WatchEvents: an error on the first read
    stream = t.WatchEvents(pb.WatchEventsRequest(kinds=[42]), timeout=WAIT)
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == IA and "kinds[0]" in info.value.details()
    assert digest(leader) == before
    assert t.GetTimer(pb.GetTimerRequest(id="victim"), timeout=5) == existing


# ---------------------------------------------------------------- reads

def test_get_and_list_with_filters_and_pagination(cluster):
    leader, followers = leader_and_followers(cluster)
    base = now_ms() + FAR_S * 1000
    specs = [pb.TimerSpec(id=f"l{i:02d}", tenant="lst", fire_at=ts(base + i * 1000),
                          labels={"team": "a" if i % 2 else "b", "n": str(i)}) for i in range(25)]
    retry(timers(leader).CreateTimers, pb.CreateTimersRequest(timers=specs))
    retry(timers(leader).CancelTimer, pb.CancelTimerRequest(tenant="lst", id="l03"))
    cluster.wait_applied(cluster.status(leader.node_id)["commit_index"])
    f = followers[0]                        # reads are local: any caught-up node answers
    t = timers(f)
    page = t.ListTimers(pb.ListTimersRequest(tenant="lst", page_size=10), timeout=WAIT)
    assert [x.id for x in page.timers] == [f"l{i:02d}" for i in range(10)] and page.next_page_token
    everything = list_all(f, tenant="lst", page_size=10)
    assert [x.id for x in everything] == [f"l{i:02d}" for i in range(25)]
    # a token issued by one node works on another (positions are replicated)
    other = timers(leader).ListTimers(pb.ListTimersRequest(tenant="lst", page_size=10,
                                                           page_token=page.next_page_token), timeout=WAIT)
    assert [x.id for x in other.timers] == [f"l{i:02d}" for i in range(10, 20)]
    assert [x.id for x in list_all(f, tenant="lst", label_selector="team=a")] == \
        [f"l{i:02d}" for i in range(1, 25, 2)]
    assert [x.id for x in list_all(f, tenant="lst", label_selector="team=a, n=7")] == ["l07"]
    assert list_all(f, tenant="lst", label_selector="team=c") == []
    ranged = list_all(f, tenant="lst", fire_at_from=ts(base + 5000), fire_at_to=ts(base + 8000))
    assert [x.id for x in ranged] == ["l05", "l06", "l07"]
    assert [x.id for x in list_all(f, tenant="lst", states=[S.TIMER_STATE_CANCELLED])] == ["l03"]
    assert len(list_all(f, tenant="lst", states=[S.TIMER_STATE_ARMED, S.TIMER_STATE_CANCELLED])) == 25
    assert list_all(f, tenant="nobody") == []
    big = t.ListTimers(pb.ListTimersRequest(tenant="lst", page_size=5000), timeout=WAIT)
    assert len(big.timers) == 25 and not big.next_page_token          # page_size is capped, not refused
    got = t.GetTimer(pb.GetTimerRequest(tenant="lst", id="l03"), timeout=5)
    assert got.state == S.TIMER_STATE_CANCELLED and got.HasField("settled_at") and not got.HasField("fired_at")


# ---------------------------------------------------------------- lifecycle

def test_cancel_reschedule_and_ack_flows(cluster):
    leader, followers = leader_and_followers(cluster)
    t = timers(followers[0])
    created = retry(t.CreateTimer, pb.CreateTimerRequest(timer=far(id="r1", tenant="flow"))).timer
    moved = t.RescheduleTimer(pb.RescheduleTimerRequest(tenant="flow", id="r1",
                                                        fire_at=ts(ms(created.fire_at) + 60_000)), timeout=WAIT)
    assert ms(moved.fire_at) == ms(created.fire_at) + 60_000 and moved.revision == created.revision + 1
    extended = t.RescheduleTimer(pb.RescheduleTimerRequest(tenant="flow", id="r1", extend_by=delay(1500)),
                                 timeout=WAIT)
    assert ms(extended.fire_at) == ms(moved.fire_at) + 1500
    pulled = t.RescheduleTimer(pb.RescheduleTimerRequest(tenant="flow", id="r1", extend_by=Duration(seconds=-30)),
                               timeout=WAIT)
    assert ms(pulled.fire_at) == ms(extended.fire_at) - 30_000
    cancelled = t.CancelTimer(pb.CancelTimerRequest(tenant="flow", id="r1"), timeout=WAIT)
    assert cancelled.state == S.TIMER_STATE_CANCELLED
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, t.CancelTimer, pb.CancelTimerRequest(tenant="flow", id="r1"),
                 "CANCELLED")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, t.RescheduleTimer,
                 pb.RescheduleTimerRequest(tenant="flow", id="r1", extend_by=delay(1)), "CANCELLED")

    # ack_required: fires, waits in FIRED for the ack naming its fire
    retry(t.CreateTimer, pb.CreateTimerRequest(timer=pb.TimerSpec(id="a1", tenant="flow", delay=delay(300),
                                                                  ack_required=True)))
    fired = get_eventually(followers[0], "flow", "a1", lambda x: x.state == S.TIMER_STATE_FIRED)
    assert fired.fire_id > 0 and fired.attempts == 1 and ms(fired.fired_at) >= ms(fired.fire_at)
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, t.AckTimer,
                 pb.AckTimerRequest(tenant="flow", id="a1", fire_id=fired.fire_id + 1000), "not the current fire")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, t.RescheduleTimer,
                 pb.RescheduleTimerRequest(tenant="flow", id="a1", extend_by=delay(1)), "FIRED")
    acked = timers(leader).AckTimer(pb.AckTimerRequest(tenant="flow", id="a1", fire_id=fired.fire_id), timeout=WAIT)
    assert acked.state == S.TIMER_STATE_SETTLED and acked.fire_id == fired.fire_id
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, t.AckTimer,
                 pb.AckTimerRequest(tenant="flow", id="a1", fire_id=fired.fire_id), "SETTLED")
    # a fired timer can still be cancelled
    retry(t.CreateTimer, pb.CreateTimerRequest(timer=pb.TimerSpec(id="a2", tenant="flow", delay=delay(100),
                                                                  ack_required=True)))
    get_eventually(followers[0], "flow", "a2", lambda x: x.state == S.TIMER_STATE_FIRED)
    assert t.CancelTimer(pb.CancelTimerRequest(tenant="flow", id="a2"), timeout=WAIT).state == \
        S.TIMER_STATE_CANCELLED


# ---------------------------------------------------------------- events

def collect(stream, done, timeout: float = WAIT) -> list[pb.Event]:
    """Read events until done(event) says so (called once per event, in order)."""
    out = []
    deadline = time.monotonic() + timeout
    for e in stream:
        out.append(e)
        if done(e):
            return out
        assert time.monotonic() < deadline, "expected events did not arrive"
    raise AssertionError("stream ended early")


def settled_all(ids, tenant: str):
    """A done() for collect: true once every id has a SETTLED event in `tenant`."""
    missing = set(ids)

    def done(e: pb.Event) -> bool:
        if e.kind == K.EVENT_KIND_SETTLED and e.tenant == tenant:
            missing.discard(e.timer_id)
        return not missing
    return done


def counted(n: int):
    seen = [0]

    def done(e: pb.Event) -> bool:
        seen[0] += 1
        return seen[0] >= n
    return done


def test_watch_from_1_sees_every_sequence_in_order(cluster):
    leader, followers = leader_and_followers(cluster)
    ids = [f"w{i}" for i in range(50)]
    retry(timers(leader).CreateTimers, pb.CreateTimersRequest(
        timers=[pb.TimerSpec(id=i, tenant="watch", delay=delay(200)) for i in ids]))
    for node in (followers[0], leader):
        stream = timers(node).WatchEvents(pb.WatchEventsRequest(from_sequence=1), timeout=WAIT)
        got = collect(stream, settled_all(ids, "watch"))
        stream.cancel()
        assert [e.sequence for e in got] == list(range(1, len(got) + 1))
        kinds = {}
        for e in got:
            if e.tenant == "watch":
                kinds.setdefault(e.timer_id, []).append(e.kind)
        assert all(k == [K.EVENT_KIND_CREATED, K.EVENT_KIND_ARMED, K.EVENT_KIND_FIRED, K.EVENT_KIND_SETTLED]
                   for k in kinds.values())
        fired = [e for e in got if e.kind == K.EVENT_KIND_FIRED and e.tenant == "watch"]
        assert all(e.fire_id == e.sequence and ms(e.at) >= ms(e.fire_at) for e in fired)
    # filters: one tenant, one kind; sequences still increase
    stream = timers(followers[-1]).WatchEvents(pb.WatchEventsRequest(
        from_sequence=1, tenant="watch", kinds=[K.EVENT_KIND_FIRED]), timeout=WAIT)
    got = collect(stream, counted(len(ids)))
    stream.cancel()
    assert {e.timer_id for e in got} == set(ids) and all(e.kind == K.EVENT_KIND_FIRED for e in got)
    assert [e.sequence for e in got] == sorted(e.sequence for e in got)


def test_slow_watcher_does_not_delay_fires_for_others(cluster):
    leader, followers = leader_and_followers(cluster)
    node = followers[0]
    # Its own connection, with HTTP/2 flow control left at the initial 64 KiB window (no BDP
    # probing): once that fills, the server's writes to this stream wait.
    slow_channel = grpc.intercept_channel(grpc.insecure_channel(node.grpc, options=[("grpc.http2.bdp_probe", 0)]),
                                          Bearer())
    slow = timers_pb2_grpc.TimersStub(slow_channel).WatchEvents(pb.WatchEventsRequest(from_sequence=1))
    first = next(slow)                   # connected; from now on nobody reads it
    fast = timers(node).WatchEvents(pb.WatchEventsRequest(tenant="slow", kinds=[K.EVENT_KIND_SETTLED]),
                                    timeout=WAIT * 4)
    n = 6000                             # ~24k events: far more than the slow stream's flow-control window
    for b in range(3):
        retry(timers(leader).CreateTimers, pb.CreateTimersRequest(
            timers=[pb.TimerSpec(id=f"s{b}-{i}", tenant="slow", delay=delay(500), payload=b"x" * 64)
                    for i in range(n // 3)]), per_call=60)
    got = collect(fast, counted(n), timeout=WAIT * 4)
    fast.cancel()
    assert len({e.timer_id for e in got}) == n
    assert len(list_all(node, tenant="slow", states=[S.TIMER_STATE_SETTLED], page_size=1000)) == n
    # the slow watcher was never dropped: it resumes where it stopped, in order
    more = [next(slow) for _ in range(1000)]
    slow.cancel()
    slow_channel.close()
    assert [e.sequence for e in more] == list(range(first.sequence + 1, first.sequence + 1001))


def test_watcher_reconnects_across_a_leader_sigkill_and_sees_every_sequence_once(tmp_path):
    c = LocalCluster(tmp_path / "failover")
    try:
        c.start()
        leader_id = c.leader(timeout=WAIT)
        wait_serving(c)
        leader = c.nodes[leader_id]
        others = [n for nid, n in c.nodes.items() if nid != leader_id]
        seen: list[int] = []
        settled: set[str] = set()
        stop = threading.Event()
        errors: list = []

        def watcher():
            node, cursor = leader, 1
            order = [leader, *others]
            while not stop.is_set():
                try:
                    for e in timers(node).WatchEvents(pb.WatchEventsRequest(from_sequence=cursor)):
                        seen.append(e.sequence)
                        cursor = e.sequence + 1
                        if e.kind == K.EVENT_KIND_SETTLED:
                            settled.add(e.timer_id)
                        if stop.is_set():
                            return
                except grpc.RpcError as exc:
                    if exc.code() not in RETRY_CODES + (grpc.StatusCode.CANCELLED,):
                        errors.append(exc)
                        return
                    order = order[1:] + order[:1]
                    node = next(n for n in order if n.alive())
                    time.sleep(0.1)

        th = threading.Thread(target=watcher, daemon=True)
        th.start()
        writer = others[0]

        def create_round(r: int) -> None:
            for i in range(10):
                tid = f"r{r}-{i}"
                retry(timers(writer).CreateTimers, pb.CreateTimersRequest(timers=[
                    pb.TimerSpec(id=f"{tid}-{j}", idempotency_key=f"{tid}-{j}", delay=delay(300))
                    for j in range(5)]), timeout=60)

        create_round(1)
        c.kill(leader_id)                       # SIGKILL: the watcher's node is gone
        create_round(2)
        want = {f"r{r}-{i}-{j}" for r in (1, 2) for i in range(10) for j in range(5)}
        deadline = time.monotonic() + 60
        while not want <= settled and not errors and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        assert not errors, errors
        assert want <= settled
        assert seen == list(range(1, len(seen) + 1))     # every sequence, once, in order

        # Without a quorum the survivor has no leader: writes are refused at once, health drops.
        c.kill(others[1].node_id)
        survivor = others[0]
        health = health_pb2_grpc.HealthStub(channel(survivor))
        deadline = time.monotonic() + WAIT
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the survivor stayed SERVING without a quorum"
            time.sleep(0.1)
        # If the survivor was the leader it steps down after leaderFallbackTimeout; a write
        # sent before that is appended but can never commit (DEADLINE_EXCEEDED, outcome
        # unknown). Once it follows nobody, writes are refused at once.
        while (c.status(survivor.node_id) or {}).get("role") == "leader":
            assert time.monotonic() < deadline, "the survivor kept leading without a quorum"
            time.sleep(0.1)
        expect_error(grpc.StatusCode.UNAVAILABLE, timers(survivor).CreateTimer,
                     pb.CreateTimerRequest(timer=far(id="lonely")), "no Raft leader is reachable")
        assert timers(survivor).GetTimer(pb.GetTimerRequest(id="r1-0-0"), timeout=5).id == "r1-0-0"  # reads: local
    finally:
        c.stop()
        for node in c.nodes.values():
            _channels.pop(node.grpc, None)


def test_event_retention_out_of_range_and_restart_keeps_history(tmp_path):
    c = LocalCluster(tmp_path / "retention", node_args=("--events-keep", "100"))
    try:
        c.start()
        leader_id = c.leader(timeout=WAIT)
        wait_serving(c)
        node = c.nodes[leader_id]
        retry(timers(node).CreateTimers, pb.CreateTimersRequest(
            timers=[far(id=f"e{i}") for i in range(200)]))            # events 1..400
        c.wait_applied(c.status(leader_id)["commit_index"])
        for n in c.nodes.values():
            expect_error(grpc.StatusCode.OUT_OF_RANGE, lambda r, timeout: next(iter(
                timers(n).WatchEvents(r, timeout=timeout))), pb.WatchEventsRequest(from_sequence=1), "starts at")
            got = collect(timers(n).WatchEvents(pb.WatchEventsRequest(from_sequence=301), timeout=WAIT),
                          lambda e: e.sequence == 400)
            assert [e.sequence for e in got] == list(range(301, 401))
        # restart a follower: its log is re-applied (same events, same seqs): history unchanged
        fid = next(nid for nid in c.nodes if nid != leader_id)
        before = collect(timers(c.nodes[fid]).WatchEvents(pb.WatchEventsRequest(from_sequence=350), timeout=WAIT),
                         lambda e: e.sequence == 400)
        assert c.terminate(fid) == 0
        _channels.pop(c.nodes[fid].grpc, None)
        c.start_node(fid)
        wait_serving(c)
        retry(timers(node).CreateTimer, pb.CreateTimerRequest(timer=far(id="after")))   # events 401, 402
        after = collect(timers(c.nodes[fid]).WatchEvents(pb.WatchEventsRequest(from_sequence=350), timeout=WAIT),
                        lambda e: e.sequence == 402)
        assert after[:len(before)] == before and [e.sequence for e in after] == list(range(350, 403))

        # A wiped follower catches up by snapshot (the leader compacted its log): the snapshot
        # carries state, not events, so that node's history starts after the snapshot.
        snap = retry(clusters(node).TakeSnapshot, cpb.TakeSnapshotRequest(), per_call=60)
        assert snap.timers == 201
        victim = next(nid for nid in c.nodes if nid not in (leader_id, fid))
        assert c.terminate(victim) == 0
        _channels.pop(c.nodes[victim].grpc, None)
        shutil.rmtree(c.nodes[victim].data_dir)
        c.start_node(victim)
        wait_serving(c)
        retry(timers(node).CreateTimer, pb.CreateTimerRequest(timer=far(id="post-snapshot")))  # events 403, 404
        wiped = timers(c.nodes[victim])
        get_eventually(c.nodes[victim], "default", "post-snapshot", lambda t: True)
        expect_error(grpc.StatusCode.OUT_OF_RANGE, lambda r, timeout: next(iter(wiped.WatchEvents(r, timeout=timeout))),
                     pb.WatchEventsRequest(from_sequence=400), "starts at 403", "snapshot")
        got = collect(wiped.WatchEvents(pb.WatchEventsRequest(from_sequence=403), timeout=WAIT),
                      lambda e: e.sequence == 404)
        assert [e.sequence for e in got] == [403, 404]
        # ...while the other nodes still serve the older ones
        got = collect(timers(node).WatchEvents(pb.WatchEventsRequest(from_sequence=400), timeout=WAIT),
                      lambda e: e.sequence == 404)
        assert [e.sequence for e in got] == [400, 401, 402, 403, 404]
    finally:
        c.stop()
        for n in c.nodes.values():
            _channels.pop(n.grpc, None)


# ---------------------------------------------------------------- cluster, health, limits

def test_cluster_status_snapshots_and_leadership_transfer(cluster):
    leader, followers = leader_and_followers(cluster)
    st = retry(clusters(followers[0]).Status, cpb.StatusRequest())
    assert st.node == followers[0].node_id and st.leader == leader.node_id
    assert st.leader_grpc_address == leader.grpc
    assert {m.id: m.grpc_address for m in st.members} == {n.node_id: n.grpc for n in cluster.nodes.values()}
    assert {m.id: m.role for m in st.members}[leader.node_id] == "leader"
    assert st.applied_index <= st.commit_index and st.timers["armed"] > 0
    assert st.role == "follower" and st.has_quorum and st.log_len > 0 and st.leader_raft_address == leader.raft
    d = clusters(followers[0]).GetDigest(cpb.GetDigestRequest(), timeout=WAIT)     # answered by the node asked
    assert d.node == followers[0].node_id and d.applied_index > 0 and len(d.sha256) == 64 and d.size > 0
    snap = clusters(followers[0]).TakeSnapshot(cpb.TakeSnapshotRequest(), timeout=60)
    assert snap.last_index > 0 and len(snap.sha256) == 64 and snap.timers > 0
    listed = clusters(followers[0]).ListSnapshots(cpb.ListSnapshotsRequest(), timeout=WAIT).snapshots
    assert snap in listed
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, clusters(followers[0]).TransferLeadership,
                 cpb.TransferLeadershipRequest(), "not the leader")
    expect_error(grpc.StatusCode.NOT_FOUND, clusters(leader).TransferLeadership,
                 cpb.TransferLeadershipRequest(to="n9"), "n9")
    target = followers[1].node_id
    res = clusters(leader).TransferLeadership(cpb.TransferLeadershipRequest(to=target), timeout=60)
    assert res.leader == target
    assert cluster.leader(timeout=WAIT) == target
    wait_serving(cluster)


def test_health_serving_and_reflection_lists_the_services(cluster):
    leader, _ = leader_and_followers(cluster)
    health = health_pb2_grpc.HealthStub(channel(leader))
    for service in ("", "minoots.v1.Timers", "minoots.v1.Cluster"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel(leader))
    replies = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                             timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"minoots.v1.Timers", "minoots.v1.Cluster", "grpc.health.v1.Health"} <= names
    replies = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="minoots.v1.Timers")]), timeout=5))
    assert replies[0].file_descriptor_response.file_descriptor_proto


def test_oversize_and_malformed_messages_do_not_hurt_the_node(cluster):
    leader, followers = leader_and_followers(cluster)
    node = followers[0]
    huge = pb.CreateTimersRequest(timers=[far(payload=b"x" * 65536) for _ in range(300)])   # ~19.7 MB
    err = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, timers(node).CreateTimers, huge)
    raw = channel(node).unary_unary("/minoots.v1.Timers/CreateTimer")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)          # a length prefix running off the end
    assert info.value.code() != grpc.StatusCode.OK
    assert "larger than max" in err.details(), err.details()   # refused by the size cap, before decoding
    assert node.alive()
    assert retry(clusters(node).Status, cpb.StatusRequest()).node == node.node_id
    retry(timers(node).CreateTimer, pb.CreateTimerRequest(timer=far()))


def test_tls_single_node(tmp_path):
    require_tool("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    c = LocalCluster(tmp_path / "tls", size=1, node_args=("--tls-cert", str(cert), "--tls-key", str(key)),
                     tls_ca=cert)
    try:
        c.start()
        c.leader(timeout=WAIT)
        node = c.nodes["n1"]
        creds = grpc.ssl_channel_credentials(root_certificates=Path(cert).read_bytes())
        with grpc.secure_channel(node.grpc, creds) as ch:
            stub = timers_pb2_grpc.TimersStub(grpc.intercept_channel(ch, Bearer()))
            res = retry(stub.CreateTimer, pb.CreateTimerRequest(timer=far(id="tls")))
            assert res.created and res.timer.id == "tls"
        with grpc.insecure_channel(node.grpc) as ch:                 # plaintext is refused
            with pytest.raises(grpc.RpcError):
                timers_pb2_grpc.TimersStub(grpc.intercept_channel(ch, Bearer())).GetTimer(pb.GetTimerRequest(id="tls"), timeout=3)
    finally:
        c.stop()


def test_add_and_remove_a_member_through_the_cluster_service(tmp_path):
    c = LocalCluster(tmp_path / "members")
    try:
        c.start()
        leader_id = c.leader(timeout=WAIT)
        wait_serving(c)
        follower = next(n for nid, n in c.nodes.items() if nid != leader_id)
        n4 = c.new_node("n4")
        c.start_node("n4", members=list(c.nodes.values()))
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, clusters(follower).AddNode,
                     cpb.AddNodeRequest(id="n4", raft_address="nowhere"), "HOST:PORT")
        res = retry(clusters(follower).AddNode, cpb.AddNodeRequest(id="n4", raft_address=n4.raft,
                                                                    grpc_address=n4.grpc), per_call=60)
        assert res.member.id == "n4" and res.member.grpc_address == n4.grpc
        expect_error(grpc.StatusCode.ALREADY_EXISTS, clusters(follower).AddNode,
                     cpb.AddNodeRequest(id="n4", raft_address=n4.raft), "n4")
        deadline = time.monotonic() + WAIT
        while True:           # n4 catches up, serves, and every member lists it with its gRPC address
            try:
                st = clusters(n4).Status(cpb.StatusRequest(), timeout=5)
                if {m.id: m.grpc_address for m in st.members}.get("n4") == n4.grpc and st.leader:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "n4 never joined"
            time.sleep(0.2)
        retry(timers(n4).CreateTimer, pb.CreateTimerRequest(timer=far(id="via-n4")))
        removed = retry(clusters(follower).RemoveNode, cpb.RemoveNodeRequest(id="n4"), per_call=60)
        assert removed.member.id == "n4" and removed.member.grpc_address == n4.grpc
        st = retry(clusters(follower).Status, cpb.StatusRequest())
        assert "n4" not in {m.id for m in st.members}
        expect_error(grpc.StatusCode.NOT_FOUND, clusters(follower).RemoveNode, cpb.RemoveNodeRequest(id="n4"), "n4")
    finally:
        c.stop()
        for n in c.nodes.values():
            _channels.pop(n.grpc, None)
