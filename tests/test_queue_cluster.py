"""Pull queues on a real 3-node cluster: workers (role `worker`) lease fired timers,
never two live leases on one timer; ack settles, nack retries, an expired lease
redelivers with attempt + 1, extend keeps a lease; leases are replicated and survive
a leader kill. No wall-clock assertions: the tests wait for states."""
from __future__ import annotations

import threading
import time

import pytest
from click.testing import CliRunner

import minoots
from minoots import TimerState
from minoots.cli import main
from support import cluster_grpc, start_cluster, wait_for

pytestmark = pytest.mark.cluster

TENANT = "agents"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("queues"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def admin(cluster):
    with minoots.Client(cluster_grpc(cluster), timeout=30, tenant=TENANT) as c:
        yield c


@pytest.fixture(scope="module")
def worker_token(admin):
    token, info = admin.create_token("pool-x", "worker", [TENANT])
    assert info.role == "worker"
    return token


def worker(cluster, token):
    return minoots.Client(cluster_grpc(cluster), timeout=30, tenant=TENANT, token=token)


def all_fired(client, ids):
    return wait_for(lambda: all(client.get(i).state == TimerState.DELIVERING for i in ids), "fired onto the queue")


def test_two_workers_never_hold_the_same_timer_and_acks_settle(cluster, admin, worker_token):
    ids = [admin.create(delay=0.05, queue="build").id for _ in range(12)]
    all_fired(admin, ids)
    got: dict[str, list] = {"a": [], "b": []}
    errors: list = []

    def run(name):
        try:
            with worker(cluster, worker_token) as w:
                while sum(len(v) for v in got.values()) < len(ids):
                    leases = w.lease("build", max_timers=3, visibility=60, wait=1)
                    got[name].extend(leases)
                    for lease in leases:
                        assert w.ack_lease(lease).state == TimerState.SETTLED
        except BaseException as exc:   # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    leased = [x.timer.id for v in got.values() for x in v]
    assert sorted(leased) == sorted(ids)                  # each timer exactly once: no double lease
    assert all(x.attempt == 1 for v in got.values() for x in v)
    assert all(admin.get(i).state == TimerState.SETTLED for i in ids)


def test_an_expired_lease_redelivers_with_the_next_attempt_and_extend_keeps_one(cluster, admin, worker_token):
    kept = admin.create(delay=0.05, queue="expiry", max_attempts=3).id
    lost = admin.create(delay=0.05, queue="expiry", max_attempts=3).id
    all_fired(admin, [kept, lost])
    with worker(cluster, worker_token) as w:
        leases = {x.timer.id: x for x in w.lease("expiry", max_timers=5, visibility=1)}
        assert set(leases) == {kept, lost}
        for _ in range(3):                             # heartbeat past the first expiry
            extended = w.extend_lease(leases[kept], visibility=2)
            time.sleep(0.5)
        assert extended.expires_at > leases[kept].expires_at
        again = wait_for(lambda: w.lease("expiry", max_timers=5, visibility=30, wait=2), "the expired lease back")
        assert [(x.timer.id, x.attempt) for x in again] == [(lost, 2)]   # only the unextended one
        t = admin.get(lost)
        assert [a.error_class for a in t.delivery_attempts] == ["lease_expired"]
        with pytest.raises(minoots.FailedPrecondition):
            w.ack_lease(leases[lost])                  # the old lease is dead
        assert w.ack_lease(again[0]).state == TimerState.SETTLED
        assert w.ack_lease(extended).state == TimerState.SETTLED


def test_nacks_retry_then_dead_letter_and_redrive_requeues(cluster, admin, worker_token):
    tid = admin.create(delay=0.05, queue="flaky", max_attempts=2, backoff_base=0.05, backoff_cap=0.1).id
    all_fired(admin, [tid])
    with worker(cluster, worker_token) as w:
        (first,) = w.lease("flaky", visibility=30, wait=5)
        assert w.nack_lease(first).state == TimerState.DELIVERING
        (second,) = wait_for(lambda: w.lease("flaky", visibility=30, wait=2), "the retry after the nack")
        assert second.attempt == 2
        assert w.nack_lease(second).state == TimerState.DEAD_LETTERED
        assert tid in [t.id for t in admin.list(states=[TimerState.DEAD_LETTERED])]
        admin.redrive(tid)
        (third,) = w.lease("flaky", visibility=30, wait=5)
        assert third.attempt == 1 and w.ack_lease(third).state == TimerState.SETTLED


def test_a_worker_token_can_lease_but_not_create_or_read_other_tenants(cluster, admin, worker_token):
    with worker(cluster, worker_token) as w:
        with pytest.raises(minoots.PermissionDenied):
            w.create(delay=60, queue="build")
        with pytest.raises(minoots.PermissionDenied):
            w.lease("build", tenant="someone-else")
        assert w.lease("nothing-here") == []
        with pytest.raises(minoots.InvalidArgument):
            w.lease("bad queue name")


def test_the_cli_leases_and_acks(cluster, admin):
    tid = admin.create(delay=0.05, queue="cli").id
    all_fired(admin, [tid])
    node = ["--node", cluster_grpc(cluster)[0], "--tenant", TENANT]
    runner = CliRunner()
    res = runner.invoke(main, ["queue", "lease", "cli", "--wait", "5s", *node])
    assert res.exit_code == 0, res.output
    timer_id, lease_id, attempt, _ = res.output.split()
    assert (timer_id, attempt) == (tid, "1")
    res = runner.invoke(main, ["queue", "ack", timer_id, lease_id, *node])
    assert res.exit_code == 0 and "settled" in res.output, res.output


def test_leases_survive_a_leader_kill(tmp_path):
    c = start_cluster(tmp_path / "failover")
    try:
        with minoots.Client(cluster_grpc(c), timeout=60, tenant=TENANT) as cl:
            ids = [cl.create(delay=0.05, queue="q").id for _ in range(3)]
            all_fired(cl, ids)
            held = cl.lease("q", max_timers=2, visibility=120)
            assert len(held) == 2
            c.kill(c.leader())
            # The new leader hands out only the timer nobody holds; the held leases still ack.
            rest = wait_for(lambda: cl.lease("q", max_timers=5, visibility=120, wait=2), "a lease after failover",
                            timeout=90, retry_on=(minoots.Unavailable,))
            assert [x.timer.id for x in rest] == sorted(set(ids) - {x.timer.id for x in held})
            for lease in held + rest:
                assert cl.ack_lease(lease).state == TimerState.SETTLED
    finally:
        c.stop()


def test_a_lease_stream_goes_on_after_a_leader_kill(tmp_path):
    """The stream's node dies (the leader, where the SDK opened it): the SDK reopens it on
    a survivor and the timers that fire after the failover still come, each leased once."""
    import queue as q
    c = start_cluster(tmp_path / "stream-failover")
    got: q.Queue = q.Queue()
    stop = threading.Event()
    try:
        with minoots.Client(cluster_grpc(c), timeout=60, tenant=TENANT) as cl, \
                minoots.Client(cluster_grpc(c), timeout=60, tenant=TENANT) as w:
            before = cl.create(delay=0.05, queue="s").id
            _pump(w.stream_leases("s", max_outstanding=5, visibility=120, reconnect_timeout=90), got, stop)
            first = got.get(timeout=60)
            assert not isinstance(first, Exception), first
            assert first.timer.id == before
            c.kill(c.leader())
            after = wait_for(lambda: cl.create(delay=0.05, queue="s").id, "a create after failover", timeout=90,
                             retry_on=(minoots.Unavailable,))
            second = got.get(timeout=90)
            assert not isinstance(second, Exception), second
            assert second.timer.id == after and second.attempt == 1
            for lease in (first, second):
                assert wait_for(lambda: w.ack_lease(lease), "ack after failover", timeout=60,
                                retry_on=(minoots.Unavailable,)).state == TimerState.SETTLED
            stop.set()
    finally:
        c.stop()


def test_run_worker_acks_what_it_handles_and_nacks_what_fails(cluster, admin, worker_token):
    ids = [admin.create(delay=0.05, queue="loop", max_attempts=3, backoff_base=0.05, backoff_cap=0.1).id
           for _ in range(3)]
    all_fired(admin, ids)
    seen: list = []
    stop = threading.Event()

    def handle(timer):
        seen.append(timer.id)
        if seen.count(timer.id) == 1 and timer.id == ids[0]:
            raise RuntimeError("first try fails")
        if len(set(seen)) == 3 and seen.count(ids[0]) == 2:
            stop.set()

    with worker(cluster, worker_token) as w:
        acked = minoots.run_worker(w, "loop", handle, visibility=30, wait=1, stop=stop)
    assert acked == 3 and sorted(set(seen)) == sorted(ids) and seen.count(ids[0]) == 2
    assert all(admin.get(i).state == TimerState.SETTLED for i in ids)
    assert [a.error_class for a in admin.get(ids[0]).delivery_attempts] == ["nack", ""]


def test_the_async_client_creates_leases_and_acks(cluster, admin, worker_token):
    import asyncio

    async def main():
        async with minoots.AsyncClient(cluster_grpc(cluster), timeout=30, tenant=TENANT) as ac:
            t = await ac.create(delay=0.05, queue="async", max_attempts=2)
            assert t.queue == "async" and t.max_attempts == 2
        async with minoots.AsyncClient(cluster_grpc(cluster), timeout=30, tenant=TENANT, token=worker_token) as w:
            (lease,) = await w.lease("async", visibility=30, wait=5)
            assert lease.timer.id == t.id
            lease = await w.extend_lease(lease, 60)
            assert (await w.ack_lease(lease)).state == TimerState.SETTLED

    asyncio.run(main())


def _pump(gen, out, stop):
    """Consume a lease stream into a queue.Queue on a thread (the stream blocks)."""
    def run():
        try:
            for lease in gen:
                out.put(lease)
                if stop.is_set():
                    break
        except Exception as exc:       # handed to the test, which fails on it
            out.put(exc)
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_a_lease_stream_keeps_at_most_max_outstanding_live_and_the_next_comes_after_an_ack(cluster, admin,
                                                                                          worker_token):
    import queue as q
    ids = [admin.create(delay=0.05, queue="stream-a").id for _ in range(3)]
    all_fired(admin, ids)
    got: q.Queue = q.Queue()
    stop = threading.Event()
    with worker(cluster, worker_token) as w, worker(cluster, worker_token) as other:
        gen = w.stream_leases("stream-a", max_outstanding=1, visibility=60)
        th = _pump(gen, got, stop)
        first = got.get(timeout=30)
        assert not isinstance(first, Exception), first
        assert first.timer.id in ids and first.attempt == 1
        # The stream holds one live lease: the other two are still there for anyone else.
        rest = other.lease("stream-a", max_timers=3, visibility=60, wait=5)
        assert sorted(x.timer.id for x in rest) == sorted(set(ids) - {first.timer.id})
        assert got.empty()
        for x in rest:
            other.ack_lease(x)
        w.ack_lease(first)
        # After the ack the stream may hold one again: a timer created now comes to it.
        late = admin.create(delay=0.05, queue="stream-a").id
        nxt = got.get(timeout=30)
        assert not isinstance(nxt, Exception), nxt
        assert nxt.timer.id == late
        w.ack_lease(nxt)
        stop.set()
        th.join(timeout=0)
    assert all(admin.get(i).state == TimerState.SETTLED for i in ids + [late])


def test_two_lease_streams_share_a_queue_without_ever_sharing_a_timer(cluster, admin, worker_token):
    import queue as q
    ids = [admin.create(delay=0.05, queue="stream-b").id for _ in range(10)]
    got: q.Queue = q.Queue()
    stop = threading.Event()
    with worker(cluster, worker_token) as w1, worker(cluster, worker_token) as w2:
        clients = {}
        for w in (w1, w2):
            gen = w.stream_leases("stream-b", max_outstanding=2, visibility=60)
            clients[id(gen)] = w
            _pump(((w, lease) for lease in gen), got, stop)
        seen: list[str] = []
        while len(seen) < len(ids):
            item = got.get(timeout=60)
            assert not isinstance(item, Exception), item
            w, lease = item
            seen.append(lease.timer.id)
            w.ack_lease(lease)
        stop.set()
    assert sorted(seen) == sorted(ids)           # each exactly once
    wait_for(lambda: all(admin.get(i).state == TimerState.SETTLED for i in ids), "all settled")


@pytest.mark.parametrize("kwargs, field", [({"max_outstanding": 101}, "max_outstanding"),
                                           ({"visibility": 0.2}, "visibility_timeout")])
def test_a_lease_stream_with_bad_arguments_is_refused(cluster, worker_token, kwargs, field):
    with worker(cluster, worker_token) as w:
        with pytest.raises(minoots.InvalidArgument, match=field):
            next(iter(w.stream_leases("stream-c", **kwargs)))
    with worker(cluster, worker_token) as w:
        with pytest.raises(minoots.InvalidArgument):
            next(iter(w.stream_leases("bad queue name!")))


def test_the_async_client_streams_leases_too(cluster, admin, worker_token):
    import asyncio
    ids = [admin.create(delay=0.05, queue="stream-d").id for _ in range(4)]

    async def consume():
        got = []
        async with minoots.AsyncClient(cluster_grpc(cluster), timeout=30, tenant=TENANT, token=worker_token) as w:
            stream = w.stream_leases("stream-d", max_outstanding=2, visibility=60)
            async for lease in stream:
                got.append(lease.timer.id)
                await w.ack_lease(lease)
                if len(got) == len(ids):
                    break
            await stream.aclose()
        return got

    got = asyncio.run(asyncio.wait_for(consume(), 60))
    assert sorted(got) == sorted(ids)
    wait_for(lambda: all(admin.get(i).state == TimerState.SETTLED for i in ids), "all settled")
