"""api/batcher.py's CreateBatcher, bound by bound, on a virtual clock.

The event loop here is an unmodified selector loop whose clock moves only when it
would sleep (nothing waits on the wall clock, nothing asserts on it), so the stall
timer is exact: not a moment before `stall_after`, and at it. The bridge is a fake
that records each proposed command and lets the test land it, fail it, or never
answer. Each test puts a bound exactly at its edge, so `>` vs `>=` mistakes fail.
(The queue-size bounds, max_queued_*, belong to the quotas work and its tests.)
"""
from __future__ import annotations

import asyncio

import pytest

from minoots.api.batcher import CreateBatcher, _approx_bytes
from minoots.bench.wheel import _VirtualClockLoop as VirtualClockLoop
from minoots.kernel import TimerSpec
from minoots.raft.commands import CreatePlainTimers, CreateTimers
from minoots.raft.machine import CommandFailed

from support import ProposalBridge

NOW_MS = 1_000


def run(coro):
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class FakeBridge(ProposalBridge):
    """Records proposals (support.ProposalBridge), with helpers to read and land them."""

    def groups(self, n: int) -> list[list[str]]:
        return [[s.id for s in g] for g in self.proposed[n][0].groups]

    def land(self, n: int, results=None) -> None:
        """Commit command n: one result per group (by default the group's ids)."""
        command, fut = self.proposed[n]
        fut.set_result([[s.id for s in g] for g in command.groups] if results is None else results)


def spec(name: str, payload: bytes = b"") -> TimerSpec:
    return TimerSpec(id=name, fire_at=10_000, payload=payload)


def request(prefix: str, n: int = 1, payload: bytes = b"") -> list[TimerSpec]:
    return [spec(f"{prefix}.{i}", payload) for i in range(n)]


async def settle():
    for _ in range(3):
        await asyncio.sleep(0)


async def start(b: CreateBatcher, *requests) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(b.create(r)) for r in requests]
    await settle()
    return tasks


async def queued_behind_one(b: CreateBatcher, *requests) -> list[asyncio.Task]:
    """Queue `requests` behind a create in flight and land that one: they are now command 1."""
    await start(b, request("a"))
    tasks = await start(b, *requests)
    b._bridge.land(0)
    await settle()
    return tasks


def test_one_request_alone_goes_out_at_once_stamped_with_the_clock():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        [t] = await start(b, request("a", 2))
        assert len(bridge.proposed) == 1
        command = bridge.proposed[0][0]
        assert isinstance(command, (CreateTimers, CreatePlainTimers)) and command.now_ms == NOW_MS
        assert bridge.groups(0) == [["a.0", "a.1"]]
        bridge.land(0)
        assert await t == ["a.0", "a.1"]
        assert (b.commands, b.requests) == (1, 1)

    run(main())


def test_requests_wait_while_one_is_in_flight_then_go_as_one_command_in_order():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        first = await start(b, request("a"))
        later = await start(b, request("b"), request("c", 3), request("d"))
        assert len(bridge.proposed) == 1
        bridge.land(0)
        await settle()
        assert bridge.groups(1) == [["b.0"], ["c.0", "c.1", "c.2"], ["d.0"]]   # one group per request
        bridge.land(1, results=["rb", "rc", "rd"])
        assert await asyncio.gather(*first, *later) == [["a.0"], "rb", "rc", "rd"]
        assert (b.commands, b.requests) == (2, 4)

    run(main())


def later_commands(b: CreateBatcher, *requests) -> list[list[list[str]]]:
    """Queue `requests` behind one create in flight, then land every command in turn;
    returns the groups (ids) of each command after the first. Every request gets its result."""
    async def main():
        bridge = b._bridge
        await start(b, request("first"))
        tasks = await start(b, *requests)
        n = 0
        while n < len(bridge.proposed):
            bridge.land(n)
            await settle()
            n += 1
        results = await asyncio.gather(*tasks)
        assert results == [[sp.id for sp in r] for r in requests]
        return [bridge.groups(i) for i in range(1, n)]

    return run(main())


def ids(*requests) -> list[list[str]]:
    return [[sp.id for sp in r] for r in requests]


def test_timer_bound_per_command_is_inclusive():
    b, c, d = request("b", 2), request("c", 2), request("d", 2)
    # 2+2 = 4 fits exactly; the third request of 2 would make 6.
    assert later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS, max_timers=4), b, c, d) == \
        [ids(b, c), ids(d)]


def test_a_request_above_the_timer_bound_goes_alone_and_does_not_block_the_rest():
    big, b = request("big", 5), request("b")
    assert later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS, max_timers=3), big, b) == \
        [ids(big), ids(b)]


def test_byte_bound_per_command_is_inclusive():
    b, c, d = (request(x, payload=b"x" * 1000) for x in "bcd")
    one = _approx_bytes(b)
    assert one > 1000                                  # the payload is counted
    # exactly 2 * one fits
    assert later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS, max_bytes=2 * one), b, c, d) == \
        [ids(b, c), ids(d)]


def test_a_request_above_the_byte_bound_goes_alone():
    big, b = request("big", payload=b"y" * 2000), request("b")
    assert later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS, max_bytes=500), big, b) == \
        [ids(big), ids(b)]


def test_request_count_bound_per_command_is_inclusive():
    rs = [request(f"r{i}") for i in range(7)]
    b = CreateBatcher(FakeBridge(), lambda: NOW_MS, max_requests=3)
    assert later_commands(b, *rs) == [ids(*rs[:3]), ids(*rs[3:6]), ids(rs[6])]
    assert (b.commands, b.requests) == (4, 8)


def test_stall_reopens_the_gate_at_stall_after_and_not_before():
    async def main():
        loop = asyncio.get_running_loop()
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS, stall_after=5.0)
        stuck = await start(b, request("a"))
        t0 = loop.time()
        waiting = await start(b, request("b"))
        await asyncio.sleep(4.999)
        assert len(bridge.proposed) == 1, "reopened before stall_after"
        await asyncio.sleep(0.002)
        assert loop.time() - t0 >= 5.0                  # virtual time: exact, not measured
        assert bridge.groups(1) == [["b.0"]], "not reopened at stall_after"
        assert not stuck[0].done()                     # the stuck request keeps waiting
        # While the second is in flight, the stale first landing must not reopen the gate.
        third = await start(b, request("c"))
        bridge.land(0)
        await settle()
        assert await stuck[0] == ["a.0"]
        assert len(bridge.proposed) == 2
        bridge.land(1)
        await settle()
        assert bridge.groups(2) == [["c.0"]]
        bridge.land(2)
        assert await waiting[0] == ["b.0"] and await third[0] == ["c.0"]

    run(main())


def test_landing_cancels_the_stall_timer():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS, stall_after=5.0)
        await start(b, request("a"))                   # proposed at t=0: stall due at t=5
        await asyncio.sleep(3.0)
        second = await start(b, request("b"))
        bridge.land(0)                                 # t=3: b goes out, its stall due at t=8
        await settle()
        assert bridge.groups(1) == [["b.0"]]
        await start(b, request("c"))
        await asyncio.sleep(3.0)                       # t=6: a's stall (t=5) must not fire
        assert len(bridge.proposed) == 2
        bridge.land(1)
        await settle()
        assert bridge.groups(2) == [["c.0"]]
        assert await second[0] == ["b.0"]

    run(main())


@pytest.mark.parametrize("results", [["only one"], ["one", "two", "three"], None, "not a list"])
def test_result_count_must_match_the_groups(results):
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        tasks = await queued_behind_one(b, request("b"), request("c"))
        _, fut = bridge.proposed[1]
        fut.set_result(results)
        for t in tasks:
            with pytest.raises(RuntimeError, match="one result per group"):
                await t
        nxt = await start(b, request("d"))             # the gate reopened
        assert bridge.groups(2) == [["d.0"]]
        bridge.land(2)
        assert await nxt[0] == ["d.0"]

    run(main())


def test_raft_failure_reaches_every_request_of_the_command():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        tasks = await queued_behind_one(b, request("b"), request("c"))
        bridge.proposed[1][1].set_exception(CommandFailed(3))
        for t in tasks:
            with pytest.raises(CommandFailed):
                await t

    run(main())


def test_a_proposal_that_raises_fails_its_batch_and_reopens():
    async def main():
        bridge = FakeBridge(fail_with=OverflowError("queue full"))
        b = CreateBatcher(bridge, lambda: NOW_MS)
        [t] = await start(b, request("a"))
        with pytest.raises(OverflowError):
            await t
        bridge.fail_with = None
        [t] = await start(b, request("b"))
        assert bridge.groups(0) == [["b.0"]]
        bridge.land(0)
        assert await t == ["b.0"]

    run(main())


def test_cancelled_before_proposal_is_never_proposed():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        await start(b, request("a"))
        keep1, gone, keep2 = await start(b, request("b"), request("gone"), request("c"))
        gone.cancel()
        await settle()
        assert gone.cancelled()
        bridge.land(0)
        await settle()
        assert bridge.groups(1) == [["b.0"], ["c.0"]]
        assert b.requests == 3
        bridge.land(1)
        assert await keep1 == ["b.0"] and await keep2 == ["c.0"]

    run(main())


def test_cancelled_after_proposal_stays_in_the_command_and_the_rest_get_results():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        left, right = await queued_behind_one(b, request("b"), request("c"))
        assert bridge.groups(1) == [["b.0"], ["c.0"]]
        left.cancel()                                  # too late to take it back
        await settle()
        bridge.land(1)
        assert await right == ["c.0"]
        assert left.cancelled()

    run(main())


def test_approx_bytes_counts_every_variable_field():
    # The byte bound is only as good as this estimate: each variable-size field of a
    # spec must add at least its own length (PySyncObj pickles them all).
    base = TimerSpec(id="x", fire_at=10_000)
    size = _approx_bytes([base])
    grown = {
        "id": TimerSpec(id="x" * 1001, fire_at=10_000),
        "tenant": TimerSpec(id="x", fire_at=10_000, tenant="t" * 1000),
        "name": TimerSpec(id="x", fire_at=10_000, name="n" * 1000),
        "payload": TimerSpec(id="x", fire_at=10_000, payload=b"p" * 1000),
        "action": TimerSpec(id="x", fire_at=10_000, action=b"a" * 1000),
        "labels": TimerSpec(id="x", fire_at=10_000, labels={"k" * 500: "v" * 500}),
        "idempotency_key": TimerSpec(id="x", fire_at=10_000, idempotency_key="i" * 1000),
    }
    for field, s in grown.items():
        added = 1000 - len(getattr(base, field) or "")             # the field's extra length
        assert _approx_bytes([s]) >= size + added, field
    assert _approx_bytes([base, base]) == 2 * size            # per spec, summed
    assert _approx_bytes([]) == 0


def test_default_bounds_are_the_documented_ones():
    # Module docstring: 10,000 timers, 512 requests, ~8 MiB of spec data per command.
    rs = [request(f"r{i}") for i in range(513)]
    assert [len(c) for c in later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS), *rs)] == [512, 1]
    a, b, c = request("a", 6_000), request("b", 4_000), request("c")
    assert later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS), a, b, c) == [ids(a, b), ids(c)]
    # Two requests of exactly 4 MiB each fill the 8 MiB; one byte more goes next.
    pad = (4 << 20) - _approx_bytes([spec("p.0")])
    p, q, r = (request(x, payload=b"z" * pad) for x in "pqr")
    assert _approx_bytes(p) == 4 << 20
    assert later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS), p, q, request("s")) == \
        [ids(p, q), [["s.0"]]]
    assert later_commands(CreateBatcher(FakeBridge(), lambda: NOW_MS), p, q, r) == [ids(p, q), ids(r)]


def test_a_request_cancelled_in_the_same_step_as_the_landing_is_skipped_and_unaccounted():
    # The caller gives up and the command in flight lands before the caller's task runs
    # again: the next batch must skip that request, take the ones behind it, and the
    # queue's accounting (what the RESOURCE_EXHAUSTED bound reads) must end at zero.
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        await start(b, request("a"))
        keep1, gone, keep2 = await start(b, request("b"), request("gone", 3), request("c", 2))
        assert b.queued == (3, 6)
        bridge.land(0)                                 # its landing callback is scheduled first,
        gone.cancel()                                  # then the cancelled caller's wake-up
        await settle()
        assert bridge.groups(1) == [["b.0"], ["c.0", "c.1"]]
        assert gone.cancelled() and b.queued == (0, 0)
        bridge.land(1)
        assert await keep1 == ["b.0"] and await keep2 == ["c.0", "c.1"]

    run(main())


def test_a_cancelled_proposal_fails_its_requests_and_reopens_the_gate():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        tasks = await queued_behind_one(b, request("b"), request("c"))
        bridge.proposed[1][1].cancel()                 # e.g. the bridge shut down
        for t in tasks:
            with pytest.raises(asyncio.CancelledError):
                await t
        nxt = await start(b, request("d"))
        assert bridge.groups(2) == [["d.0"]]
        bridge.land(2)
        assert await nxt[0] == ["d.0"]

    run(main())


class TracingBridge(FakeBridge):
    """Also records the trace arguments of each proposal."""

    def __init__(self):
        super().__init__()
        self.trace_kw = []

    def propose(self, command, **kw):
        self.trace_kw.append(kw)
        return super().propose(command)


def test_traced_requests_travel_with_the_command_first_as_parent_rest_as_links(monkeypatch):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from minoots.raft import tracing

    monkeypatch.setattr(tracing, "MAX_LINKS", 3)
    provider = TracerProvider()
    tracing.use_provider(provider)
    try:
        tracer = provider.get_tracer("test")

        async def main():
            bridge = TracingBridge()
            b = CreateBatcher(bridge, lambda: NOW_MS)
            await start(b, request("first"))
            spans, tasks = [], []
            for i in range(7):
                if i == 1:                             # one untraced request among them
                    tasks.append(asyncio.create_task(b.create(request(f"r{i}"))))
                    spans.append(None)
                    continue
                with tracer.start_as_current_span(f"req{i}") as span:
                    tasks.append(asyncio.create_task(b.create(request(f"r{i}"))))
                spans.append(span.get_span_context())
            await settle()
            bridge.land(0)
            await settle()
            command, kw = bridge.proposed[1][0], bridge.trace_kw[1]
            assert command.traceparents == tuple(None if sc is None else tracing.traceparent_of(sc)
                                                 for sc in spans)
            traced = [sc for sc in spans if sc is not None]
            assert trace.get_current_span(kw["trace_parent"]).get_span_context().span_id == traced[0].span_id
            # the others as links, at most MAX_LINKS of them
            assert [link.context.span_id for link in kw["trace_links"]] == [sc.span_id for sc in traced[1:4]]
            bridge.land(1)
            await asyncio.gather(*tasks)

        run(main())
    finally:
        tracing.use_provider(None)
        provider.shutdown()


def test_cancelling_one_queued_request_gives_back_exactly_its_timers():
    async def main():
        bridge = FakeBridge()
        b = CreateBatcher(bridge, lambda: NOW_MS)
        await start(b, request("a"))
        _, middle, _ = await start(b, request("b", 2), request("c", 3), request("d", 4))
        assert b.queued == (3, 9)
        middle.cancel()
        await settle()
        assert b.queued == (2, 6)
        bridge.land(0)
        await settle()
        assert bridge.groups(1) == [["b.0", "b.1"], ["d.0", "d.1", "d.2", "d.3"]]
        bridge.land(1)

    run(main())
