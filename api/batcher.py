"""Group commit for creates: many requests, one replicated `create` command.

While a create command is in flight (proposed, not yet applied here), new create
requests wait in a queue; when it lands, everything queued (up to the bounds)
goes out as the next single command, each request its own group, so the kernel
applies each request all-or-nothing and independently of its neighbours. One
request alone goes out at once: batching adds no latency when there is no
concurrency, and under load a node proposes one create per Raft round instead
of one per request.

Bounds per command: 10,000 timers, 512 requests, ~8 MiB of spec data (a single
request may be bigger; gRPC caps it at 16 MiB). The byte bound keeps every
command far below raft.node.MAX_UNCHUNKED_ENTRY: PySyncObj chunks bigger log
entries, and its chunking is broken.

The queue itself is bounded (`max_queued_requests`, `max_queued_timers`): a
request that finds it full is refused at once with RESOURCE_EXHAUSTED
(api/quotas.py's Overloaded) instead of piling up memory behind a slow commit.
An empty queue takes any request.

A callback PySyncObj never delivers (possible when leadership changes with the
entry unreplicated) must not wedge the queue: after `stall_after` seconds the
gate reopens for the next batch, and the stuck requests keep waiting for their
own deadlines.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

from opentelemetry import trace
from opentelemetry.trace import Link

from minoots.raft import tracing
from minoots.raft import commands

from .quotas import DEFAULT_MAX_QUEUED_CREATES, DEFAULT_MAX_QUEUED_TIMERS, Overloaded

log = logging.getLogger("minoots.api.batcher")

__all__ = ["CreateBatcher"]


class _Request:
    __slots__ = ("wire", "future", "proposed", "nbytes", "trace")

    def __init__(self, wire: list, future: asyncio.Future, nbytes: int, trace_ctx=None) -> None:
        self.wire = wire
        self.future = future
        self.proposed = False
        self.nbytes = nbytes
        self.trace = trace_ctx          # the request's SpanContext when tracing is on


def _approx_bytes(specs) -> int:
    """Rough size of the specs in a replicated command (PySyncObj pickles with protocol 2,
    which can double binary fields; the bound below leaves room for that)."""
    n = 0
    for s in specs:
        n += 96 + len(s.id) + len(s.tenant) + len(s.name) + len(s.payload) + len(s.action)
        if s.labels:
            n += sum(len(k) + len(v) + 8 for k, v in s.labels.items())
        if s.idempotency_key:
            n += len(s.idempotency_key)
    return n


class CreateBatcher:
    def __init__(self, bridge, now_ms: Callable[[], int], *, max_timers: int = 10_000,
                 max_requests: int = 512, max_bytes: int = 8 << 20, stall_after: float = 5.0,
                 max_queued_requests: int = DEFAULT_MAX_QUEUED_CREATES,
                 max_queued_timers: int = DEFAULT_MAX_QUEUED_TIMERS) -> None:
        self._bridge = bridge
        self._now_ms = now_ms
        self.max_timers = max_timers
        self.max_requests = max_requests
        self.max_bytes = max_bytes      # a single request may exceed it (gRPC caps it at 16 MiB)
        self.stall_after = stall_after
        self.max_queued_requests = max_queued_requests
        self.max_queued_timers = max_queued_timers
        self._queue: deque[_Request] = deque()
        self._queued_timers = 0        # timers in the requests in _queue
        self._in_flight = 0            # generation of the batch in flight; 0 = none
        self._generation = 0
        self._stall_handle: asyncio.TimerHandle | None = None
        self.commands = 0              # proposed create commands (for tests and stats)
        self.requests = 0
        self.refused = 0               # requests refused because the queue was full

    @property
    def queued(self) -> tuple[int, int]:
        """(requests, timers) waiting for the next batch."""
        return len(self._queue), self._queued_timers

    async def create(self, specs: list) -> object:
        """Queue one request's kernel TimerSpecs; returns the kernel's CreateResult or the
        KernelError for this request's group. Raises CommandFailed when Raft did not
        commit. Cancelling the caller drops the request if it was not proposed yet."""
        q = self._queue
        if q and (len(q) >= self.max_queued_requests or self._queued_timers + len(specs) > self.max_queued_timers):
            self.refused += 1
            raise Overloaded(f"this node's create queue is full ({len(q)} requests, {self._queued_timers} timers "
                             f"waiting for the commit in flight; at most {self.max_queued_requests} requests and "
                             f"{self.max_queued_timers} timers); retry with backoff")
        loop = asyncio.get_running_loop()
        trace_ctx = None
        if tracing.enabled():
            sc = trace.get_current_span().get_span_context()
            trace_ctx = sc if sc.is_valid else None
        req = _Request(tuple(specs), loop.create_future(), _approx_bytes(specs), trace_ctx)
        self._queue.append(req)
        self._queued_timers += len(req.wire)
        if not self._in_flight:
            self._flush()
        try:
            return await req.future
        except asyncio.CancelledError:
            if not req.proposed:
                try:
                    self._queue.remove(req)
                except ValueError:
                    pass
                else:
                    self._queued_timers -= len(req.wire)
            raise

    def _flush(self) -> None:
        batch: list[_Request] = []
        timers = nbytes = 0
        q = self._queue
        while q and len(batch) < self.max_requests:
            req = q[0]
            if req.future.done():          # its caller gave up while queued
                q.popleft()
                self._queued_timers -= len(req.wire)
                continue
            if batch and (timers + len(req.wire) > self.max_timers or nbytes + req.nbytes > self.max_bytes):
                break
            q.popleft()
            self._queued_timers -= len(req.wire)
            req.proposed = True
            batch.append(req)
            timers += len(req.wire)
            nbytes += req.nbytes
        if not batch:
            return
        self._generation += 1
        gen = self._in_flight = self._generation
        self.commands += 1
        self.requests += len(batch)
        try:
            groups = tuple(r.wire for r in batch)
            traced = [r.trace for r in batch if r.trace is not None]
            if traced:
                # Telemetry only (raft/tracing.py): each group's creating trace travels with
                # the command, so the leader's fire span can link to it. Absent without tracing.
                command = commands.create_timers(self._now_ms(), groups, tuple(
                    tracing.traceparent_of(r.trace) if r.trace is not None else None for r in batch))
                fut = self._bridge.propose(command, trace_parent=tracing.context_of(traced[0]),
                                           trace_links=[Link(sc) for sc in traced[1:tracing.MAX_LINKS + 1]])
            else:
                fut = self._bridge.propose(commands.create_timers(self._now_ms(), groups))
        except Exception as exc:            # e.g. PySyncObj's queue is full
            self._in_flight = 0
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        sent = time.monotonic()
        fut.add_done_callback(lambda f: self._landed(gen, batch, f, sent))
        loop = asyncio.get_running_loop()
        self._stall_handle = loop.call_later(self.stall_after, self._stalled, gen)

    def _landed(self, gen: int, batch: list[_Request], fut: asyncio.Future, sent: float) -> None:
        if fut.cancelled():
            exc, results = asyncio.CancelledError(), None
        else:
            exc = fut.exception()
            results = None if exc is not None else fut.result()
        if exc is None and (not isinstance(results, list) or len(results) != len(batch)):
            exc = RuntimeError(f"create returned {type(results).__name__}, expected one result per group")
        for i, r in enumerate(batch):
            if r.future.done():
                continue
            if exc is not None:
                r.future.set_exception(exc)
            else:
                r.future.set_result(results[i])
        if gen == self._in_flight:
            self._reopen()

    def _stalled(self, gen: int) -> None:
        if gen == self._in_flight:
            log.warning("create command unanswered; proposing the next batch anyway",
                        extra={"after_s": self.stall_after})
            self._reopen()

    def _reopen(self) -> None:
        self._in_flight = 0
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if self._queue:
            self._flush()
