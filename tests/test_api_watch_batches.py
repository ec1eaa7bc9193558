"""WatchEventBatches: the watch stream in runs of events (one gRPC message per run).

Why: gRPC Python costs ~50 us of server CPU and ~60 us of client CPU per streamed
message, so one message per event capped a watcher at ~10k events/s on an idle
2-core machine and at 2-6k/s while the cluster itself was busy with a burst: a
20k-timer burst reached the watcher seconds after it was committed. The server
now sends what one LMDB read found (up to READ_BATCH events) as one EventBatch;
the SDK (sync and asyncio) asks for it and falls back to WatchEvents, per node,
when a node answers UNIMPLEMENTED (older server).
"""
from __future__ import annotations

import asyncio

import grpc
import pytest

import minoots
from minoots.api import events as events_mod
from minoots.api.events import watch, watch_batches
from minoots.kernel import EventKind
from minoots.v1 import timers_pb2

import fake_grpc
from fake_grpc import FakeTimers, event_pb
from support import NotifyingBridge, evs


# ---------------------------------------------------------------- server side: events.watch_batches


def test_watch_batches_sends_what_one_read_found_in_order(event_store, monkeypatch):
    log, m = event_store
    monkeypatch.setattr(events_mod, "READ_BATCH", 4)
    m.emit(evs(1, 10))

    async def main():
        bridge = NotifyingBridge()
        log.on_new = lambda: asyncio.get_running_loop().call_soon(bridge.notify)
        gen = watch_batches(log, bridge, 1, None, frozenset())
        runs = [[e.sequence for e in await gen.__anext__()] for _ in range(3)]
        assert runs == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
        # live: a run is what is readable now, nothing waits to fill it
        nxt = asyncio.ensure_future(gen.__anext__())
        await asyncio.sleep(0.01)
        assert not nxt.done()
        m.emit(evs(11, 11))
        assert [e.sequence for e in await asyncio.wait_for(nxt, 5)] == [11]
        await gen.aclose()
        # filters apply inside a run; a run with nothing left is not sent
        m.emit(evs(12, 14, kind=EventKind.FIRED))
        gen = watch_batches(log, bridge, 1, None, frozenset({int(EventKind.FIRED)}))
        # reads 1-4 and 5-8 hold no FIRED event (no message); read 9-12 holds one
        assert [e.sequence for e in await asyncio.wait_for(gen.__anext__(), 5)] == [12]
        assert [e.sequence for e in await asyncio.wait_for(gen.__anext__(), 5)] == [13, 14]
        await gen.aclose()
        # the per-event stream is the same sequence
        got = []
        async for e in watch(log, bridge, 1, None, frozenset()):
            got.append(e.sequence)
            if e.sequence == 14:
                break
        assert got == list(range(1, 15))

    asyncio.run(main())


# ---------------------------------------------------------------- SDK side

class BatchingTimers(FakeTimers):
    """A fake node that also serves WatchEventBatches (runs of up to `run` events).
    Faults: 'cut:K' aborts with UNAVAILABLE once K events were sent (mid-stream)."""

    run = 3

    def WatchEventBatches(self, request, context):
        self.b.calls.append((self.addr, "WatchEventBatches"))
        fault = dict(f.partition(":")[::2] for f in (self.b.fault(self.addr) or "").split(",") if f)
        cut = int(fault["cut"]) if "cut" in fault else None
        with self.b.lock:
            pos = request.from_sequence - 1 if request.from_sequence else len(self.b.events)
        sent = 0
        while context.is_active():
            with self.b.lock:
                if pos >= len(self.b.events):
                    self.b.lock.wait(0.1)
                    continue
                avail = self.b.events[pos:pos + self.run]
            pos += len(avail)
            out = [event_pb(e) for e in avail if not request.kinds or int(e.kind) in request.kinds]
            if cut is not None and sent >= cut:
                context.abort(grpc.StatusCode.UNAVAILABLE, "node shutting down")
            if out:
                sent += len(out)
                yield timers_pb2.EventBatch(events=out)


@pytest.fixture
def mixed():
    """Three fake nodes on one backend: the first two serve batches, the third is an older
    server (WatchEvents only: WatchEventBatches answers UNIMPLEMENTED)."""
    with fake_grpc.running(BatchingTimers, BatchingTimers, FakeTimers) as backend:
        yield backend


def _client(backend, seeds):
    return minoots.Client(seeds, timeout=10, backoff_base=0.01, backoff_max=0.05)


def _methods(backend, addr):
    return [m for a, m in backend.calls if a == addr and m.startswith("Watch")]


def test_sync_watch_uses_batches_and_resumes_mid_run_without_gaps_or_duplicates(mixed):
    a, b, _ = mixed.nodes
    with _client(mixed, [a, b]) as c:
        c.create_many([{"delay": 60} for _ in range(10)])     # 20 events
        mixed.faults[a] = ["cut:4"]        # cut inside the second run of 3
        mixed.faults[b] = ["cut:5"]
        seqs = []
        with c.watch(from_sequence=1, stall_timeout=None) as w:
            for ev in w:
                seqs.append(ev.sequence)
                if len(seqs) == 20:
                    break
            assert w.reconnects >= 2
    assert seqs == list(range(1, 21))
    assert "WatchEvents" not in _methods(mixed, a) + _methods(mixed, b)


def test_sync_watch_falls_back_to_per_event_on_an_older_server(mixed):
    old = mixed.nodes[2]
    mixed.leader = old                 # the watch goes to the leader it discovers
    with _client(mixed, [old]) as c:
        c.create_many([{"delay": 60} for _ in range(5)])      # 10 events
        with c.watch(from_sequence=1, kinds=["created"], stall_timeout=None) as w:
            it = iter(w)
            got = [next(it).sequence for _ in range(5)]
            assert w.reconnects == 0          # UNIMPLEMENTED is not a failure
    assert got == [1, 3, 5, 7, 9]
    assert _methods(mixed, old) == ["WatchEvents"]      # after the generated UNIMPLEMENTED


def test_async_watch_uses_batches_and_falls_back_per_node(mixed):
    a, _, old = mixed.nodes
    with _client(mixed, [a]) as c:
        c.create_many([{"delay": 60} for _ in range(6)])      # 12 events

    async def main(seeds):
        async with minoots.AsyncClient(seeds, timeout=10, backoff_base=0.01, backoff_max=0.05) as c:
            got = []
            async with c.watch(from_sequence=1, stall_timeout=None) as w:
                async for ev in w:
                    got.append(ev.sequence)
                    if len(got) == 12:
                        break
                assert w.reconnects == 0
            return got

    assert asyncio.run(main([a])) == list(range(1, 13))
    assert _methods(mixed, a) == ["WatchEventBatches"]
    mixed.leader = old
    assert asyncio.run(main([old])) == list(range(1, 13))
    assert _methods(mixed, old) == ["WatchEvents"]      # after the generated UNIMPLEMENTED
