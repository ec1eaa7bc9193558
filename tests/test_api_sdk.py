"""The Python SDK (minoots.Client / minoots.AsyncClient).

Two halves:

* Against the fake cluster of fake_grpc.py (fixture `fake`): a few in-process gRPC
  servers that share one kernel `State` and can be told to fail a call in the two
  ways that matter (refuse before applying = "safe", or apply and then lose the
  answer = "ambiguous"), to cut a watch stream, or to replay duplicates. These pin
  the retry, reconciliation and exactly-once watch logic deterministically.
* Against a real 3-node LocalCluster with the real gRPC server (marked `cluster`):
  the API end to end, a follower-only seed list, a leader SIGKILL during a loop of
  creates, and watch across a leader kill.

No test asserts on timing.
"""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest

import minoots
from minoots.api.client import Router, WatchCursor, duration_to_pb, spec_to_pb
from minoots.api.types import datetime_to_ms, ms_to_datetime
from minoots.v1 import timers_pb2

from support import cluster_grpc, collect_watch, free_addresses, start_cluster, wait_for


def _client(backend, seeds=None, **kw) -> minoots.Client:
    kw.setdefault("timeout", 10)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return minoots.Client(seeds or list(backend.nodes), **kw)


def _writes(backend, method):
    return [a for a, m in backend.calls if m == method]


# ============================================================== pure helpers


def test_public_names_are_reexported():
    for name in ("Client", "AsyncClient", "Timer", "TimerSpec", "TimerState", "Event", "EventKind",
                 "ClusterStatus", "Member", "MinootsError", "InvalidArgument", "NotFound", "AlreadyExists",
                 "FailedPrecondition", "OutOfRange", "Unavailable", "DeadlineExceeded"):
        assert hasattr(minoots, name), name
    assert issubclass(minoots.NotFound, minoots.MinootsError) and issubclass(minoots.NotFound, LookupError)
    assert issubclass(minoots.InvalidArgument, ValueError)
    assert issubclass(minoots.DeadlineExceeded, TimeoutError)


def test_time_conversions_round_up_and_refuse_naive():
    dt = datetime(2026, 12, 1, 10, 0, 0, 250_001, tzinfo=timezone.utc)
    assert datetime_to_ms(dt) == datetime_to_ms(dt.replace(microsecond=250_000)) + 1
    assert ms_to_datetime(datetime_to_ms(dt.replace(microsecond=250_000))) == dt.replace(microsecond=250_000)
    assert ms_to_datetime(0) == datetime(1970, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(minoots.InvalidArgument):
        datetime_to_ms(datetime(2026, 1, 1))
    assert duration_to_pb(timedelta(seconds=1.5)).ToMilliseconds() == 1500
    assert duration_to_pb(0.0001).ToMilliseconds() == 1
    with pytest.raises(minoots.InvalidArgument):
        duration_to_pb(float("nan"))


def test_spec_gets_an_id_and_uses_it_as_idempotency_key():
    pb = spec_to_pb(minoots.TimerSpec(delay=5))
    assert len(pb.id) == 32 and pb.idempotency_key == pb.id and pb.delay.ToMilliseconds() == 5000
    pb = spec_to_pb(minoots.TimerSpec(fire_at=123, id="mine"))
    assert pb.id == "mine" and pb.idempotency_key == "mine" and pb.fire_at.ToMilliseconds() == 123
    pb = spec_to_pb(minoots.TimerSpec(fire_at=123, id="mine", idempotency_key="k"))
    assert pb.idempotency_key == "k"
    with pytest.raises(minoots.InvalidArgument):
        spec_to_pb(minoots.TimerSpec())
    with pytest.raises(minoots.InvalidArgument):
        spec_to_pb(minoots.TimerSpec(fire_at=1, delay=1))


def test_router_prefers_the_leader_and_rotates_after_failures():
    r = Router(["a:1", "b:1"])
    assert r.pick() in ("a:1", "b:1")
    r.learn(minoots.ClusterStatus("b", "c", "n3", "c:1", 1, 0, 0,
                                  (minoots.Member("n3", "", "c:1", "leader", True),), {}))
    assert r.addresses == ["a:1", "b:1", "c:1"] and r.pick() == "c:1"
    r.failed("c:1")
    assert r.leader is None and r.stale(1e9)
    assert r.pick(avoid="c:1") != "c:1"
    with pytest.raises(minoots.InvalidArgument):
        Router([])


def test_watch_cursor_drops_duplicates_and_refuses_gaps():
    cur = WatchCursor(timers_pb2.WatchEventsRequest(from_sequence=5))
    ev = lambda s: timers_pb2.Event(sequence=s, kind=1, tenant="t", timer_id="x")  # noqa: E731
    assert cur.accept(ev(4)) is None
    assert cur.accept(ev(5)).sequence == 5
    assert cur.accept(ev(5)) is None
    assert cur.resume_request().from_sequence == 6
    with pytest.raises(minoots.MinootsError, match="skipped"):
        cur.accept(ev(7))
    filtered = WatchCursor(timers_pb2.WatchEventsRequest(from_sequence=1, tenant="t"))
    assert filtered.accept(ev(3)).sequence == 3 and filtered.accept(ev(9)).sequence == 9


# ============================================================== against the fake cluster


def test_fake_basics_and_error_mapping(fake):
    with _client(fake) as c:
        t = c.create(delay=60, name="n", labels={"team": "ops"}, payload="hi")
        assert t.created is True and t.state == minoots.TimerState.ARMED and t.payload == b"hi"
        assert t.fire_at.tzinfo is not None and t.labels == {"team": "ops"}
        assert c.get(t.id).id == t.id
        with pytest.raises(minoots.NotFound):
            c.get("nope")
        with pytest.raises(minoots.InvalidArgument):
            c.create(delay=1, id="bad id with spaces")
        with pytest.raises(minoots.AlreadyExists):
            c.create(delay=1, id=t.id, idempotency_key="another-key")
        again = c.create(delay=1, id=t.id)          # same id, so same default key: the original timer
        assert again.created is False and again.fire_at == t.fire_at
        assert c.cancel(t.id).state == minoots.TimerState.CANCELLED
        with pytest.raises(minoots.FailedPrecondition):
            c.cancel(t.id)


def test_discovery_sends_calls_to_the_leader(fake):
    with _client(fake, seeds=[fake.nodes[2]]) as c:
        c.create(delay=60)
    assert _writes(fake, "CreateTimer") == [fake.nodes[0]]


def test_a_dead_seed_is_skipped(fake):
    (dead,) = free_addresses(1)
    fake.leader = None
    with _client(fake, seeds=[dead, fake.nodes[1]]) as c:
        for _ in range(3):
            c.create(delay=60)
    assert len(fake.state) == 3


def test_create_retried_after_a_lost_answer_is_not_duplicated(fake):
    fake.faults[fake.nodes[0]] = ["drop"]
    with _client(fake) as c:
        t = c.create(delay=60)
    assert len(_writes(fake, "CreateTimer")) == 2
    assert len(fake.state) == 1 and t.created is False


def test_create_many_retried_after_a_lost_answer(fake):
    fake.faults[fake.nodes[0]] = ["drop"]
    with _client(fake) as c:
        ts = c.create_many([{"delay": 60}, minoots.TimerSpec(delay=30, id="b")])
    assert [t.id for t in ts][1] == "b" and len(fake.state) == 2


def test_refusals_are_retried_until_the_deadline(fake):
    for a in fake.nodes:
        fake.faults[a] = ["refuse"] * 1000
    with _client(fake, timeout=0.5) as c:
        with pytest.raises(minoots.Unavailable):
            c.create(delay=60)
    assert len(fake.state) == 0


def test_cancel_and_ack_reconcile_after_a_lost_answer(fake):
    with _client(fake) as c:
        t = c.create(delay=1, ack_required=True)
        u = c.create(delay=60)
        fake.faults[fake.nodes[0]] = ["drop"]
        assert c.cancel(u.id).state == minoots.TimerState.CANCELLED
        fake.tick(t.fire_at_ms)
        fired = c.get(t.id)
        assert fired.state == minoots.TimerState.FIRED and fired.fire_id
        fake.faults[fake.nodes[0]] = ["drop"]
        assert c.ack(t.id, fired.fire_id).state == minoots.TimerState.SETTLED
        with pytest.raises(minoots.FailedPrecondition):
            c.ack(t.id, fired.fire_id)             # not after an ambiguous attempt: the real answer


def test_reschedule_is_retried_but_extend_is_not_after_a_lost_answer(fake):
    with _client(fake) as c:
        t = c.create(delay=60)
        target = t.fire_at + timedelta(seconds=10)
        fake.faults[fake.nodes[0]] = ["drop"]
        assert c.reschedule(t.id, target).fire_at == target
        fake.faults[fake.nodes[0]] = ["drop"]
        with pytest.raises(minoots.Unavailable) as info:
            c.extend(t.id, 5)
        assert info.value.ambiguous
        assert c.get(t.id).fire_at == target + timedelta(seconds=5)   # applied once, not twice
        fake.faults[fake.nodes[0]] = ["refuse"]
        assert c.extend(t.id, timedelta(seconds=1)).fire_at == target + timedelta(seconds=6)


def test_list_pages_and_filters(fake):
    with _client(fake) as c:
        c.create_many([{"delay": 60, "labels": {"k": "a" if i % 2 else "b"}} for i in range(25)])
        assert len(list(c.list(page_size=4))) == 25
        assert len(list(c.list(labels={"k": "a"}, page_size=5))) == 12
        assert len(list(c.list(limit=7, page_size=3))) == 7
        assert list(c.list(states=["cancelled"])) == []
        with pytest.raises(minoots.InvalidArgument):
            list(c.list(states=["nonsense"]))


def _take(w, n: int, into: list) -> list:
    """Append the sequences of `w`'s next events to `into` until it holds n; return it."""
    for ev in w:
        into.append(ev.sequence)
        if len(into) == n:
            break
    return into


async def _atake(w, n: int) -> list:
    """The sequences of the async watch `w`'s next n events."""
    out = []
    async for ev in w:
        out.append(ev.sequence)
        if len(out) == n:
            break
    return out


def test_watch_resumes_on_another_node_without_duplicates_or_gaps(fake):
    with _client(fake) as c:
        c.create_many([{"delay": 60} for _ in range(10)])     # 20 events
        fake.faults[fake.nodes[0]] = ["cut:3"]
        fake.faults[fake.nodes[1]] = ["replay:2,cut:4"]
        fake.faults[fake.nodes[2]] = ["replay:5"]
        with c.watch(from_sequence=1) as w:
            seqs = _take(w, 20, [])
            assert w.reconnects >= 2
    assert seqs == list(range(1, 21))


def test_watch_out_of_range_moves_on_then_is_typed(fake):
    with _client(fake) as c:
        c.create(delay=60)
        fake.faults[fake.nodes[0]] = ["out_of_range"]
        assert next(iter(c.watch(from_sequence=1))).sequence == 1     # another member has it
        for a in fake.nodes:
            fake.faults[a] = ["out_of_range"]
        with pytest.raises(minoots.OutOfRange, match="no reachable member"):
            next(iter(c.watch(from_sequence=1)))


def _watch_opens(backend) -> list[str]:
    return [a for a, m in backend.calls if m == "WatchEvents"]


def test_watch_data_loss_mid_stream_moves_on_from_the_cursor(fake):
    """The streaming node ends a live stream with DATA_LOSS (a snapshot install skipped the
    watcher's next events there): the watch resumes on another member from its cursor
    (the lacking member is avoided), every sequence once, in order. A member is lacking
    for one cursor only: after events arrived elsewhere it is a candidate again, so three
    DATA_LOSS from three members at three cursors do not end the watch."""
    with _client(fake) as c:
        c.create_many([{"delay": 60} for _ in range(10)])     # events 1..20
        lossy = fake.nodes[0]
        for a in fake.nodes:
            fake.faults[a] = ["data_loss:3"]
        with c.watch(from_sequence=1) as w:
            seqs = _take(w, 20, [])
            # Which member takes over is the router's choice: two or three of them sent DATA_LOSS.
            assert w.reconnects in (2, 3)
        opens = _watch_opens(fake)
        assert opens[0] == lossy and len(opens) == w.reconnects + 1
        assert all(a != b for a, b in zip(opens, opens[1:]))      # never straight back to the lacking one
    assert seqs == list(range(1, 21))


@pytest.mark.parametrize("other", ["data_loss", "out_of_range"])
def test_watch_data_loss_on_every_member_is_raised(fake, other):
    """DATA_LOSS is final only once every member said it cannot stream from the cursor:
    then the watch raises DATA_LOSS (OutOfRange when one of them said OUT_OF_RANGE),
    after yielding what it had, without a duplicate or a gap."""
    with _client(fake) as c:
        c.create_many([{"delay": 60} for _ in range(10)])
        fake.faults[fake.nodes[0]] = ["data_loss:2"]
        fake.faults[fake.nodes[1]] = ["data_loss:0"]
        fake.faults[fake.nodes[2]] = [other if other == "out_of_range" else "data_loss:0"]
        seqs = []
        with c.watch(from_sequence=1) as w:
            with pytest.raises(minoots.MinootsError, match="no reachable member") as err:
                _take(w, 20, seqs)     # (bounded: a wrong SDK fails here, it does not hang)
        assert seqs == [1, 2] and "sequence 3" in str(err.value)
        assert sorted(_watch_opens(fake)) == sorted(fake.nodes)
        if other == "out_of_range":
            assert isinstance(err.value, minoots.OutOfRange)
        else:
            assert err.value.code == "DATA_LOSS" and not isinstance(err.value, minoots.OutOfRange)


def test_async_watch_data_loss_moves_on_then_is_raised(fake):
    async def main():
        async with minoots.AsyncClient(list(fake.nodes), timeout=10, backoff_base=0.01, backoff_max=0.05) as c:
            await c.create_many([{"delay": 60} for _ in range(10)])     # events 1..20
            lossy = fake.nodes[0]
            fake.faults[lossy] = ["data_loss:3"]
            w = c.watch(from_sequence=1)
            seqs = await _atake(w, 20)
            assert w.reconnects == 1 and w.node != lossy
            await w.aclose()
            assert seqs == list(range(1, 21))
            opens = _watch_opens(fake)
            assert opens[0] == lossy and len(opens) == 2 and opens[1] != lossy
            for a in fake.nodes:
                fake.faults[a] = ["data_loss:0"]
            w = c.watch(from_sequence=5)
            with pytest.raises(minoots.MinootsError, match="no reachable member can stream from sequence 5") as err:
                await w.__anext__()
            await w.aclose()
            assert err.value.code == "DATA_LOSS" and not isinstance(err.value, minoots.OutOfRange)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["no_leader", "lone_leader", "behind"])
def test_watch_leaves_a_stalled_node_without_duplicates_or_gaps(fake, how):
    """The node streaming to the watch stops sending (cut off from the majority, or its log
    cannot grow) but keeps the stream open: the liveness check of the idle stream moves
    the watch to a healthy member, from the cursor."""
    with _client(fake) as c:
        c.create_many([{"delay": 60} for _ in range(10)])     # events 1..20
        if how == "behind":
            fake.faults[fake.nodes[0]] = ["out_of_range"]     # start on a follower
        seqs = []
        with c.watch(from_sequence=1, stall_timeout=0.3) as w:
            it = iter(w)
            while len(seqs) < 20:
                seqs.append(next(it).sequence)
            stalled = w.node
            assert (stalled == fake.nodes[0]) == (how != "behind")
            fake.stall_node(stalled, how)
            if stalled == fake.leader:
                fake.leader = next(a for a in fake.nodes if a != stalled)
            c.create_many([{"delay": 60} for _ in range(10)])     # events 21..40
            while len(seqs) < 40:
                seqs.append(next(it).sequence)
            assert w.node != stalled and w.stall_switches == 1
            # It was the liveness check that left the node, for the reason this stall gives
            # (not a stream error or a timeout: those count as reconnects, not switches).
            reason = "applied index" if how == "behind" else "sees no reachable Raft leader"
            assert w._policy.last_stall.startswith(f"{stalled}: ") and reason in w._policy.last_stall
        assert seqs == list(range(1, 41))


def test_a_healthy_idle_watch_stays_and_checks_at_most_once_per_interval(fake):
    def statuses():
        return len([1 for _, m in fake.calls if m == "Status"])

    with _client(fake) as c:
        c.create(delay=60)
        with c.watch(from_sequence=1, stall_timeout=0.2) as w:
            assert next(iter(w)).sequence == 1
            before = statuses()
            t0 = time.monotonic()
            wait_for(lambda: statuses() - before >= 3, what="three liveness checks")
            checks, window = statuses() - before, time.monotonic() - t0
            assert w.stall_switches == 0 and w.reconnects == 0 and w.node == fake.nodes[0]
        # At most one check (one Status of the leading node) per 0.2 s interval. One-sided:
        # a loaded machine makes fewer checks, never more, so this cannot flake.
        assert checks <= window / 0.2 + 2, (checks, window)
    # The interval itself, on explicit times: due exactly stall_timeout after the later of
    # the last event and the last check, not before.
    p = w._policy
    p.active_at, p.checked_at = 10.0, 12.0
    assert p.check_in(now=12.1) == pytest.approx(0.1)
    assert p.check_in(now=12.2) == pytest.approx(0.0)
    p.active_at = 12.5                                  # an event resets the interval
    assert p.check_in(now=12.6) == pytest.approx(0.1)


def test_a_watch_stays_when_no_member_sees_a_leader(fake):
    with _client(fake) as c:
        c.create(delay=60)
        with c.watch(from_sequence=1, stall_timeout=0.2) as w:
            assert next(iter(w)).sequence == 1
            for a in fake.nodes:
                fake.stall_node(a, "no_leader")
            mark = len(fake.calls)

            def asked():   # Status calls per node since the stall
                return {a: sum(1 for n, m in fake.calls[mark:] if n == a and m == "Status") for a in fake.nodes}
            # The check ran (asked the streaming node twice, and every other member) and stayed.
            wait_for(lambda: asked()[w.node] >= 2 and all(asked().values()), what="liveness checks of every member")
            assert w.stall_switches == 0 and w.reconnects == 0 and w.node == fake.nodes[0]


def test_watch_gives_up_when_no_node_answers():
    (dead,) = free_addresses(1)
    with minoots.Client([dead], timeout=0.3, backoff_base=0.01, backoff_max=0.05) as c:
        with pytest.raises(minoots.Unavailable):
            next(iter(c.watch(from_sequence=1)))


def test_tls_with_a_root_certificate_file(tls_fake):
    backend, cert = tls_fake
    with minoots.Client(backend.nodes, tls=str(cert), timeout=10) as c:
        assert c.get(c.create(delay=60).id).state == minoots.TimerState.ARMED
    with minoots.Client(backend.nodes, tls=False, timeout=0.5, backoff_base=0.01) as c:
        with pytest.raises(minoots.Unavailable):
            c.create(delay=60)
    with pytest.raises(minoots.InvalidArgument, match="cannot read"):
        minoots.Client(backend.nodes, tls="/nonexistent/ca.pem")


def test_async_client_against_the_fake(fake):
    async def main():
        async with minoots.AsyncClient(list(fake.nodes), timeout=10, backoff_base=0.01, backoff_max=0.05) as c:
            fake.faults[fake.nodes[0]] = ["drop"]
            t = await c.create(delay=60, name="a")
            assert t.created is False and len(fake.state) == 1
            assert (await c.get(t.id)).name == "a"
            with pytest.raises(minoots.NotFound):
                await c.get("nope")
            await c.create_many([{"delay": 60} for _ in range(5)])
            assert len([x async for x in c.list(page_size=2)]) == 6
            assert (await c.extend(t.id, 1)).fire_at == t.fire_at + timedelta(seconds=1)
            assert (await c.cancel(t.id)).state == minoots.TimerState.CANCELLED
            fake.faults[fake.nodes[0]] = ["cut:2"]
            w = c.watch(from_sequence=1)
            seqs = await _atake(w, 14)
            await w.aclose()
            assert seqs == list(range(1, 15))
            # the leader stalls (isolated, stream open): the watch moves on from the cursor
            seqs = []
            w = c.watch(from_sequence=1, stall_timeout=0.3)
            async for ev in w:
                seqs.append(ev.sequence)
                if len(seqs) == 14:
                    fake.stall_node(w.node, "no_leader")
                    fake.leader = fake.nodes[1]
                    await c.create_many([{"delay": 60} for _ in range(3)])
                if len(seqs) == 20:
                    break
            assert w.stall_switches == 1 and w.node != fake.nodes[0]
            await w.aclose()
            assert seqs == list(range(1, 21))
            fake.stall.clear()
            fake.frozen.clear()
            fake.leader = fake.nodes[0]
            st = await c.status()
            assert st.leader_grpc_address == fake.nodes[0] and len(st.members) == 3

    asyncio.run(main())


# ============================================================== against a real 3-node cluster


@pytest.mark.cluster
def test_real_timer_api_end_to_end(real_cluster):
    run = uuid.uuid4().hex[:8]
    with minoots.Client(cluster_grpc(real_cluster), timeout=60) as c:
        st = c.status()
        assert len(st.members) == 3 and st.leader_grpc_address in cluster_grpc(real_cluster)
        assert sorted(m.grpc_address for m in st.members) == sorted(cluster_grpc(real_cluster))

        t = c.create(delay=3600, name="e2e", labels={"run": run}, payload=b"\x00\x01", action="noop")
        assert t.created and t.state == minoots.TimerState.ARMED and t.tenant == "default"
        assert t.payload == b"\x00\x01" and t.action == b"noop" and t.idempotency_key == t.id
        assert timedelta(minutes=59) < t.fire_at - t.created_at <= timedelta(hours=1, seconds=1)
        got = c.get(t.id)
        assert (got.id, got.fire_at, got.revision) == (t.id, t.fire_at, t.revision)
        assert c.create(delay=5, id=t.id).created is False     # same id -> same key -> the original

        extended = c.extend(t.id, timedelta(minutes=10))
        assert extended.fire_at == t.fire_at + timedelta(minutes=10) and extended.revision > t.revision
        target = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=2)
        assert c.reschedule(t.id, target).fire_at == target

        other = c.create(fire_at=target + timedelta(days=1), labels={"run": run, "k": "v"}, tenant="t2")
        assert other.tenant == "t2"
        assert [x.id for x in c.list(labels={"run": run})] == [t.id]
        assert [x.id for x in c.list(tenant="t2", labels=f"run={run},k=v")] == [other.id]
        assert c.cancel(t.id).state == minoots.TimerState.CANCELLED
        assert [x.id for x in c.list(labels={"run": run}, states=["cancelled"])] == [t.id]
        with pytest.raises(minoots.FailedPrecondition):
            c.cancel(t.id)
        with pytest.raises(minoots.NotFound):
            c.get("no-such-timer-" + run)
        with pytest.raises(minoots.InvalidArgument):
            c.create(delay=1, id="not a valid id")
        with pytest.raises(minoots.AlreadyExists):
            c.create(delay=1, id=t.id, idempotency_key="different-" + run)

        a = c.create(delay=0.2, ack_required=True)
        fired = wait_for(lambda: (x := c.get(a.id)).state == minoots.TimerState.FIRED and x, what="fire")
        assert fired.fire_id and fired.fired_at >= fired.fire_at and fired.attempts == 1
        with pytest.raises(minoots.FailedPrecondition):
            c.ack(a.id, fired.fire_id + 1)
        settled = c.ack(a.id, fired.fire_id)
        assert settled.state == minoots.TimerState.SETTLED and settled.settled_at is not None

        many = c.create_many([{"delay": 3600, "labels": {"run": run, "batch": "1"}} for _ in range(250)])
        assert len(many) == 250 and all(x.created for x in many)
        listed = list(c.list(labels={"batch": "1", "run": run}, page_size=100))
        assert sorted(x.id for x in listed) == sorted(x.id for x in many)
        assert len(list(c.list(labels={"batch": "1", "run": run}, limit=7))) == 7


@pytest.mark.cluster
def test_real_create_through_a_follower_only_seed_list(real_cluster):
    leader = real_cluster.leader()
    followers = [n for n in real_cluster.nodes if n != leader]
    with minoots.Client(cluster_grpc(real_cluster, followers), timeout=60) as c:
        t = c.create(delay=3600)
    with minoots.Client(cluster_grpc(real_cluster, [leader]), timeout=60) as c:
        assert c.get(t.id).id == t.id


@pytest.mark.cluster
def test_real_sdk_rides_through_a_leader_sigkill(fresh_cluster):
    cl = fresh_cluster
    leader = cl.leader()
    run = uuid.uuid4().hex[:8]
    created: list[str] = []
    after_kill: list[str] = []
    ambiguous: list[str] = []     # ids of creates that succeeded only after an ambiguous attempt
    killed = threading.Event()

    def killer():
        # Freeze the leader first, so that a create is certainly in flight to it when it
        # dies: that attempt times out (ambiguous: it may have committed) and the SDK
        # retries it elsewhere with the same idempotency key. A bare SIGKILL can land
        # between two creates, and then no retry is ambiguous.
        try:
            wait_for(lambda: len(created) >= 20, timeout=120, what="20 creates")
            os.kill(cl.nodes[leader].pid, signal.SIGSTOP)
            wait_for(lambda: (cl.nodes[leader].grpc, grpc.StatusCode.DEADLINE_EXCEEDED) in failed_attempts,
                     timeout=120, what="a create timing out at the frozen leader")
        finally:
            cl.kill(leader)
            killed.set()

    failed_attempts: list[tuple[str, grpc.StatusCode]] = []
    th = threading.Thread(target=killer, daemon=True)
    with minoots.Client(cluster_grpc(cl), timeout=60, attempt_timeout=2.0) as c:
        real_call = c._call

        def counting_call(what, fn, **kw):
            def attempt(addr, t):
                try:
                    return fn(addr, t)
                except grpc.RpcError as exc:
                    failed_attempts.append((addr, exc.code()))
                    raise

            res, was_ambiguous = real_call(what, attempt, **kw)
            if what == "create" and was_ambiguous:
                ambiguous.append(res.timer.id)
            return res, was_ambiguous

        c._call = counting_call
        th.start()
        for i in range(5000):
            t = c.create(delay=3600, name=f"n{i}", labels={"run": run})   # any error fails the test
            created.append(t.id)
            if killed.is_set():
                after_kill.append(t.id)
                if len(after_kill) >= 30:
                    break
        th.join()
        assert len(after_kill) >= 30
        assert cl.leader(exclude={leader}) != leader
        ids = [t.id for t in c.list(labels={"run": run}, page_size=1000)]
    assert ambiguous, "no create was retried after an ambiguous failure: the test proved nothing"
    assert len(ids) == len(set(ids)) == len(created)
    assert set(ids) == set(created)
    assert all(ids.count(a) == 1 for a in ambiguous)     # the ambiguous retries made one timer each


@pytest.mark.cluster
def test_real_watch_across_a_leader_kill_yields_every_sequence_once(fresh_cluster):
    cl = fresh_cluster
    leader = cl.leader()
    with minoots.Client(cluster_grpc(cl, [leader]), timeout=60) as c:   # the watch starts on the leader
        for _ in range(10):
            c.create(delay=0.3)
        events, errors, stop = [], [], threading.Event()
        w = c.watch(from_sequence=1)
        th = threading.Thread(target=collect_watch, args=(w, events, stop, errors), daemon=True)
        th.start()
        wait_for(lambda: len(events) >= 5 or errors, what="first events")
        first_node = w.node
        cl.kill(leader)
        for _ in range(10):
            c.create(delay=0.3)
        total = 4 * 20          # created, armed, fired, settled per timer
        wait_for(lambda: len(events) >= total or errors, timeout=120, what=f"{total} events")
        stop.set()
        w.close()
        th.join(timeout=30)
    assert not errors, errors
    assert [e.sequence for e in events[:total]] == list(range(1, total + 1))
    assert first_node == cl.nodes[leader].grpc and w.reconnects >= 1
    kinds = [e.kind for e in events[:total]]
    assert kinds.count(minoots.EventKind.FIRED) == kinds.count(minoots.EventKind.SETTLED) == 20


@pytest.mark.cluster
def test_real_watch_leaves_a_partitioned_leader_without_duplicates_or_gaps(tmp_path):
    """The watched leader is cut off from the majority (its Raft links black-holed by
    chaos/netproxy; process and gRPC API keep running, so its stream stays open and
    silent): the liveness check moves the watch to the new majority, every sequence once."""
    from minoots.chaos.netproxy import proxy_cluster

    proxied = []
    cl = start_cluster(tmp_path / "cluster", prepare=lambda c: proxied.append(proxy_cluster(c)))
    net = proxied[0]
    try:
        leader = cl.leader()
        with minoots.Client(cluster_grpc(cl), timeout=60) as c:
            for _ in range(10):
                c.create(delay=0.3)
            events, errors, stop = [], [], threading.Event()
            w = c.watch(from_sequence=1, stall_timeout=0.5)
            th = threading.Thread(target=collect_watch, args=(w, events, stop, errors), daemon=True)
            th.start()
            wait_for(lambda: len(events) >= 5 or errors, what="first events")
            first_node = w.node
            net.isolate(leader)
            for _ in range(10):
                c.create(delay=0.3)     # acknowledged by the new majority
            total = 4 * 20
            wait_for(lambda: len(events) >= total or errors, timeout=60, what=f"{total} events")
            stop.set()
            w.close()
            th.join(timeout=30)
    finally:
        net.heal()
        cl.stop()
        net.close()
    assert not errors, errors
    assert [e.sequence for e in events[:total]] == list(range(1, total + 1))
    assert first_node == cl.nodes[leader].grpc
    assert w.stall_switches >= 1 and w.node != first_node


@pytest.mark.cluster
def test_real_async_client_basics(real_cluster):
    async def main():
        async with minoots.AsyncClient(cluster_grpc(real_cluster), timeout=60) as c:
            run = uuid.uuid4().hex[:8]
            t = await c.create(delay=3600, labels={"run": run})
            assert t.created and (await c.get(t.id)).id == t.id
            assert (await c.extend(t.id, 60)).fire_at == t.fire_at + timedelta(minutes=1)
            target = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3)
            assert (await c.reschedule(t.id, target)).fire_at == target
            assert [x.id async for x in c.list(labels={"run": run})] == [t.id]
            assert (await c.cancel(t.id)).state == minoots.TimerState.CANCELLED
            with pytest.raises(minoots.NotFound):
                await c.get("missing-" + run)
            ts = await c.create_many([{"delay": 3600, "labels": {"run": run}} for _ in range(3)])
            assert len(ts) == 3
            a = await c.create(delay=0.2, ack_required=True)
            w = c.watch(from_sequence=1, kinds=["fired"])
            async for ev in w:
                if ev.timer_id == a.id:
                    break
            await w.aclose()
            assert ev.kind == minoots.EventKind.FIRED and ev.fire_id
            assert (await c.ack(a.id, ev.fire_id)).state == minoots.TimerState.SETTLED
            assert len((await c.status()).members) == 3

    asyncio.run(asyncio.wait_for(main(), 120))


def test_watch_asks_for_the_membership_before_calling_every_member_lacking():
    """A watch seeded with one node, whose membership answer was incomplete (the others had
    not announced their gRPC address yet), is told DATA_LOSS there: it refreshes the
    membership once before deciding that no member can stream, and raises only when the
    (now complete) membership lacks the cursor everywhere."""
    import grpc as _grpc

    from minoots.api.client.policy import Router
    from minoots.api.client.watch import WatchPolicy
    from minoots.api.types import ClusterStatus, Member
    from minoots.v1 import timers_pb2

    class Loss(_grpc.RpcError):
        def code(self):
            return _grpc.StatusCode.DATA_LOSS

        def details(self):
            return "snapshot installed past the cursor"

    import random as _random

    router = Router(["a:1"])
    router.learn(ClusterStatus(node="a", cluster="c", leader=None, leader_grpc_address="", term=1,
                               commit_index=0, applied_index=0, timers={},
                               members=(Member("a", "ra", "a:1", "follower", True),
                                        Member("b", "rb", "", "follower", True))))
    assert router.incomplete
    policy = WatchPolicy(timers_pb2.WatchEventsRequest(from_sequence=5), 30.0, router, 0.01, 0.05,
                         _random.Random(1))
    policy.opened("a:1")
    policy.failed(Loss())                        # only member known lacks it: not final yet
    assert router.stale(3600)                    # the next open asks the cluster first
    router.learn(ClusterStatus(node="a", cluster="c", leader="b", leader_grpc_address="b:1", term=1,
                               commit_index=0, applied_index=0, timers={},
                               members=(Member("a", "ra", "a:1", "follower", True),
                                        Member("b", "rb", "b:1", "leader", True))))
    assert policy.choose() == "b:1"              # the member it did not know
    policy.opened("b:1")
    with pytest.raises(minoots.MinootsError, match="no reachable member"):
        policy.failed(Loss())                    # complete membership, all lacking: final
