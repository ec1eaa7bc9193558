"""`AsyncClient`: the asyncio twin of `minoots.Client` (grpc.aio underneath).

Same methods, same routing, retries and exactly-once watch semantics as the
blocking client (read `minoots.api.client`'s docstring; the policy both share is
`.policy`, `.watch`, `.wire` and `.snapshot`); every call is a coroutine,
`list()` and `watch()` return async iterators:

    async with minoots.AsyncClient(["127.0.0.1:7201"]) as c:
        t = await c.create(delay=5)
        async for ev in c.watch(from_sequence=1):
            ...

Channels are made lazily on the running event loop, so construct the client
anywhere but use it from one loop.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import IO, Any, Awaitable, Callable, Optional, Union

import grpc
import grpc.aio

from minoots.v1 import cluster_pb2, cluster_pb2_grpc, timers_pb2, timers_pb2_grpc

from ..types import (
    ClusterStatus,
    Event,
    FailedPrecondition,
    InvalidArgument,
    Lease,
    Member,
    MinootsError,
    SnapshotInfo,
    Timer,
    TimerSpec,
    TimerState,
)
from . import policy, wire
from .endpoints import AsyncEndpointMethods
from .policy import DEFAULT_STALL_TIMEOUT, DISCOVERY_ATTEMPT_TIMEOUT
from .snapshot import SnapshotReceiver, SnapshotSink
from .watch import WatchPolicy, WatchProgress, sees_leader
from .webhooks import new_webhook_secret

__all__ = ["AsyncClient", "AsyncWatch"]


class AsyncClient(AsyncEndpointMethods, policy.ClientSettings):
    """asyncio MINOOTS client; arguments as for `minoots.Client`."""

    # ---- plumbing --------------------------------------------------------------

    def _channel(self, addr: str) -> grpc.aio.Channel:
        if self._closed:
            raise MinootsError("the client is closed", code="CANCELLED")
        ch = self._channels.get(addr)
        if ch is None:
            # The interceptor carries the caller's OpenTelemetry context (W3C traceparent).
            from ..telemetry import AioTraceContextClientInterceptor
            tracing = [AioTraceContextClientInterceptor()]
            ch = (grpc.aio.secure_channel(addr, self._creds, options=self._options, interceptors=tracing)
                  if self._creds else grpc.aio.insecure_channel(addr, options=self._options, interceptors=tracing))
            self._channels[addr] = ch
        return ch

    def _timers(self, addr: str) -> timers_pb2_grpc.TimersStub:
        return policy.AuthedStub(timers_pb2_grpc.TimersStub(self._channel(addr)), self._token)

    def _cluster(self, addr: str) -> cluster_pb2_grpc.ClusterStub:
        return policy.AuthedStub(cluster_pb2_grpc.ClusterStub(self._channel(addr)), self._token)

    async def _refresh(self, deadline: float, avoid: Optional[str] = None) -> Optional[ClusterStatus]:
        for addr in self.router.discovery_order(avoid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                pb = await self._cluster(addr).Status(cluster_pb2.StatusRequest(),
                                                      timeout=min(DISCOVERY_ATTEMPT_TIMEOUT, remaining))
            except grpc.RpcError:
                continue
            status = wire.status_from_pb(pb)
            self.router.learn(status)
            return status
        return None

    async def _call(self, what: str, fn: Callable[[str, float], Awaitable[Any]], *, safe_only: bool = False,
                    timeout: Optional[float] = None, long: bool = False) -> Any:
        total = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + total
        last: Optional[BaseException] = None
        ambiguous = False
        failed_at: Optional[str] = None
        n = 0
        while True:
            if self.router.stale(self.refresh_interval):
                await self._refresh(min(deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT), avoid=failed_at)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise policy.give_up(last, what, total, n)
            addr = self.router.pick(avoid=failed_at)
            n += 1
            try:
                return await fn(addr, remaining if long else min(self.attempt_timeout, remaining))
            except grpc.RpcError as exc:
                ambiguous = policy.retryable(exc, what, ambiguous, safe_only)
                last = exc
                failed_at = addr
                self.router.failed(addr)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise policy.give_up(last, what, total, n)
            await asyncio.sleep(min(remaining, policy.backoff(n - 1, self.backoff_base, self.backoff_max, self._rng)))

    # ---- timers ----------------------------------------------------------------

    async def create(self, fire_at: Union[datetime, int, None] = None, *,
                     delay: Union[timedelta, int, float, None] = None, id: Optional[str] = None,
                     tenant: Optional[str] = None, name: str = "", payload: Union[bytes, str] = b"",
                     labels: Optional[Mapping[str, str]] = None, action: Union[bytes, str] = b"",
                     idempotency_key: Optional[str] = None, ack_required: bool = False,
                     webhook: Optional[str] = None, webhook_headers: Optional[Mapping[str, str]] = None,
                     queue: Optional[str] = None, endpoint: Optional[str] = None,
                     max_attempts: Optional[int] = None,
                     backoff_base: Union[timedelta, int, float, None] = None,
                     backoff_cap: Union[timedelta, int, float, None] = None,
                     attempt_timeout: Union[timedelta, int, float, None] = None,
                     every: Union[timedelta, int, float, None] = None, until: Union[datetime, int, None] = None,
                     max_count: int = 0, cron: str = "", tz: str = "",
                     after: Union[str, Iterable[str], None] = None, on: str = "", mode: str = "",
                     on_parent_cancel: str = "", escalate: Optional[Iterable] = None,
                     catch_up: str = "", overlap: str = "", flex: Union[timedelta, int, float, None] = None,
                     timeout: Optional[float] = None) -> Timer:
        """See `Client.create` (ids and idempotency keys are filled in the same way)."""
        spec = TimerSpec(fire_at=fire_at, delay=delay, id=id, tenant=self._tenant(tenant), name=name,
                         payload=payload, labels=labels, action=action, idempotency_key=idempotency_key,
                         ack_required=ack_required, webhook=webhook, webhook_headers=webhook_headers, queue=queue,
                         endpoint=endpoint,
                         max_attempts=max_attempts, backoff_base=backoff_base, backoff_cap=backoff_cap,
                         attempt_timeout=attempt_timeout, every=every, until=until, max_count=max_count, cron=cron,
                         tz=tz, after=after, on=on, mode=mode, on_parent_cancel=on_parent_cancel,
                         escalate=tuple(escalate) if escalate is not None else None,
                         catch_up=catch_up, overlap=overlap, flex=flex)
        req = timers_pb2.CreateTimerRequest(timer=wire.spec_to_pb(spec))
        resp = await self._call("create", lambda a, t: self._timers(a).CreateTimer(req, timeout=t), timeout=timeout)
        return wire.timer_from_pb(resp.timer, resp.created)

    async def create_many(self, specs: Iterable[Union[TimerSpec, Mapping]], *,
                          timeout: Optional[float] = None) -> list[Timer]:
        req = wire.create_many_request(specs, self.tenant)
        resp = await self._call("create_many", lambda a, t: self._timers(a).CreateTimers(req, timeout=t),
                                timeout=timeout)
        return [wire.timer_from_pb(r.timer, r.created) for r in resp.results]

    async def create_many_ids(self, specs: Iterable[Union[TimerSpec, Mapping]], *,
                              timeout: Optional[float] = None) -> list[tuple[str, bool]]:
        """create_many answered briefly: (id, created) per spec instead of the full records."""
        req = wire.create_many_request(specs, self.tenant, brief=True)
        resp = await self._call("create_many", lambda a, t: self._timers(a).CreateTimers(req, timeout=t),
                                timeout=timeout)
        return wire.brief_results(resp, len(req.timers))

    async def get(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        req = timers_pb2.GetTimerRequest(tenant=self._tenant(tenant), id=id)
        return wire.timer_from_pb(await self._call("get", lambda a, t: self._timers(a).GetTimer(req, timeout=t),
                                                   timeout=timeout))

    def list(self, *, tenant: Optional[str] = None, states=None,
             labels: Union[Mapping[str, str], str, None] = None,
             fire_at_from: Union[datetime, int, None] = None, fire_at_to: Union[datetime, int, None] = None,
             page_size: Optional[int] = None, limit: Optional[int] = None,
             timeout: Optional[float] = None) -> AsyncIterator[Timer]:
        """An async iterator over matching timers (see `Client.list`)."""
        req = wire.list_request(self._tenant(tenant), states, labels, fire_at_from, fire_at_to,
                                wire.page_size_for(page_size, limit))
        return self._list_iter(req, limit, timeout)

    async def _list_iter(self, req, limit, timeout) -> AsyncIterator[Timer]:
        n = 0
        if limit == 0:
            return
        while True:
            resp = await self._call("list", lambda a, t: self._timers(a).ListTimers(req, timeout=t), timeout=timeout)
            for pb in resp.timers:
                if limit is not None and n >= limit:
                    return
                n += 1
                yield wire.timer_from_pb(pb)
            if not resp.next_page_token or (limit is not None and n >= limit):
                return
            req.page_token = resp.next_page_token

    async def cancel(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        req = timers_pb2.CancelTimerRequest(tenant=self._tenant(tenant), id=id)
        return await self._settle_call("cancel", lambda a, t: self._timers(a).CancelTimer(req, timeout=t),
                                       id, tenant, timeout, lambda tm: tm.state == TimerState.CANCELLED)

    async def reschedule(self, id: str, fire_at: Union[datetime, int], *, tenant: Optional[str] = None,
                         timeout: Optional[float] = None) -> Timer:
        ms = wire.time_to_ms(fire_at)
        req = timers_pb2.RescheduleTimerRequest(tenant=self._tenant(tenant), id=id, fire_at=wire.ms_to_timestamp(ms))
        return await self._settle_call("reschedule", lambda a, t: self._timers(a).RescheduleTimer(req, timeout=t),
                                       id, tenant, timeout, lambda tm: tm.fire_at_ms == ms)

    async def extend(self, id: str, by: Union[timedelta, int, float], *, tenant: Optional[str] = None,
                     timeout: Optional[float] = None) -> Timer:
        """See `Client.extend`: not idempotent, may raise Unavailable(ambiguous=True)."""
        req = timers_pb2.RescheduleTimerRequest(tenant=self._tenant(tenant), id=id,
                                                extend_by=wire.duration_to_pb(by, "by"))
        return wire.timer_from_pb(await self._call(
            "extend", lambda a, t: self._timers(a).RescheduleTimer(req, timeout=t), safe_only=True, timeout=timeout))

    async def cancel_many(self, ids: Union[str, Iterable[str], None] = None, *,
                          selector: Union[Mapping[str, str], str, None] = None, tenant: Optional[str] = None,
                          timeout: Optional[float] = None) -> list:
        """See `Client.cancel_many`: a BulkResult per timer, every page."""
        req = wire.bulk_request(timers_pb2.CancelTimersRequest, self._tenant(tenant), ids, selector)
        return await self._bulk_pages("cancel_many", lambda a, t: self._timers(a).CancelTimers(req, timeout=t),
                                      req, timeout, False)

    async def reschedule_many(self, ids: Union[str, Iterable[str], None] = None, *,
                              selector: Union[Mapping[str, str], str, None] = None,
                              fire_at: Union[datetime, int, None] = None,
                              delay: Union[timedelta, int, float, None] = None,
                              extend_by: Union[timedelta, int, float, None] = None, tenant: Optional[str] = None,
                              timeout: Optional[float] = None) -> list:
        """See `Client.reschedule_many`."""
        if sum(x is not None for x in (fire_at, delay, extend_by)) != 1:
            raise InvalidArgument("give exactly one of fire_at, delay and extend_by")
        req = wire.bulk_request(timers_pb2.RescheduleTimersRequest, self._tenant(tenant), ids, selector,
                                fire_at=fire_at, delay=delay, extend_by=extend_by)
        return await self._bulk_pages("reschedule_many",
                                      lambda a, t: self._timers(a).RescheduleTimers(req, timeout=t), req, timeout,
                                      extend_by is not None)

    async def _bulk_pages(self, what, fn, req, timeout, safe_only) -> list:
        out: list = []
        while True:
            resp = await self._call(what, fn, safe_only=safe_only, timeout=timeout)
            out += wire.bulk_from_pb(resp)
            if not resp.next_page_token:
                return out
            req.page_token = resp.next_page_token

    async def ack(self, id: str, fire_id: int, *, tenant: Optional[str] = None,
                  timeout: Optional[float] = None) -> Timer:
        req = timers_pb2.AckTimerRequest(tenant=self._tenant(tenant), id=id, fire_id=fire_id)
        return await self._settle_call("ack", lambda a, t: self._timers(a).AckTimer(req, timeout=t), id, tenant,
                                       timeout, lambda tm: tm.state == TimerState.SETTLED and tm.fire_id == fire_id)

    async def redrive(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """See `Client.redrive`."""
        req = timers_pb2.RedriveTimerRequest(tenant=self._tenant(tenant), id=id)
        return await self._settle_call("redrive", lambda a, t: self._timers(a).RedriveTimer(req, timeout=t), id,
                                       tenant, timeout, lambda tm: tm.state != TimerState.DEAD_LETTERED)

    async def rotate_webhook_secret(self, *, tenant: Optional[str] = None, secret: Optional[str] = None,
                                    timeout: Optional[float] = None) -> str:
        """See `Client.rotate_webhook_secret`."""
        req = timers_pb2.RotateWebhookSecretRequest(tenant=self._tenant(tenant) or "",
                                                    secret=secret or new_webhook_secret())
        resp = await self._call("rotate_webhook_secret",
                                lambda a, t: self._timers(a).RotateWebhookSecret(req, timeout=t), timeout=timeout)
        return resp.secret

    async def lease(self, queue: str, *, max_timers: int = 1, visibility: Union[timedelta, int, float] = 30,
                    wait: Union[timedelta, int, float] = 0, tenant: Optional[str] = None,
                    timeout: Optional[float] = None) -> list[Lease]:
        """See `Client.lease`."""
        req, extra = wire.lease_request(queue, self._tenant(tenant), max_timers, visibility, wait)
        resp = await self._call("lease", lambda a, t: self._timers(a).LeaseTimers(req, timeout=t + extra),
                                safe_only=True, timeout=(timeout or self.timeout) + extra)
        return [wire.lease_from_pb(x) for x in resp.leases]

    async def stream_leases(self, queue: str, *, max_outstanding: int = 1,
                            visibility: Union[timedelta, int, float] = 30, tenant: Optional[str] = None,
                            reconnect_timeout: Optional[float] = None) -> AsyncIterator[Lease]:
        """See `Client.stream_leases`: `async for lease in client.stream_leases(...)`."""
        req = wire.stream_leases_request(queue, self._tenant(tenant), max_outstanding, visibility)
        budget = self.timeout if reconnect_timeout is None else float(reconnect_timeout)
        failed_at: Optional[str] = None
        last: Optional[BaseException] = None
        n = 0
        down_since = time.monotonic()
        while True:
            if self.router.stale(self.refresh_interval) or failed_at is not None:
                await self._refresh(time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT, avoid=failed_at)
            addr = self.router.pick(avoid=failed_at)
            call = self._timers(addr).StreamLeases(req)
            try:
                async for pb in call:
                    n, failed_at, down_since = 0, None, time.monotonic()
                    yield wire.lease_from_pb(pb)
            except grpc.RpcError as exc:
                if policy.classify(exc) == policy.FINAL:
                    raise policy.error_from_rpc(exc) from None
                last = exc
                failed_at = addr
                self.router.failed(addr)
            finally:
                call.cancel()
            n += 1
            if time.monotonic() - down_since > budget:
                raise policy.give_up(last, "stream_leases", budget, n)
            await asyncio.sleep(policy.backoff(n - 1, self.backoff_base, self.backoff_max, self._rng))

    async def ack_lease(self, lease: Lease, *, timeout: Optional[float] = None) -> Timer:
        req = wire.lease_ref(lease)
        return await self._settle_call("ack_lease", lambda a, t: self._timers(a).AckLease(req, timeout=t),
                                       lease.timer.id, lease.timer.tenant, timeout,
                                       lambda tm: tm.state == TimerState.SETTLED)

    async def nack_lease(self, lease: Lease, *, timeout: Optional[float] = None) -> Timer:
        req = wire.lease_ref(lease)
        return wire.timer_from_pb(await self._call(
            "nack_lease", lambda a, t: self._timers(a).NackLease(req, timeout=t), safe_only=True, timeout=timeout))

    async def extend_lease(self, lease: Lease, visibility: Union[timedelta, int, float] = 30, *,
                           timeout: Optional[float] = None) -> Lease:
        req = wire.extend_request(lease, visibility)
        return wire.lease_from_pb(await self._call(
            "extend_lease", lambda a, t: self._timers(a).ExtendLease(req, timeout=t), timeout=timeout))
    async def delete(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Remove a terminal timer now; as `Client.delete`."""
        req = timers_pb2.DeleteTimerRequest(tenant=self._tenant(tenant), id=id)
        resp = await self._call("delete", lambda a, t: self._timers(a).DeleteTimer(req, timeout=t), timeout=timeout)
        return wire.timer_from_pb(resp)

    async def pause(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """See `Client.pause`."""
        req = timers_pb2.RecurringTimerRequest(tenant=self._tenant(tenant), id=id)
        return await self._settle_call("pause", lambda a, t: self._timers(a).PauseTimer(req, timeout=t), id,
                                       tenant, timeout, lambda tm: tm.paused)

    async def resume(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """See `Client.resume`."""
        req = timers_pb2.RecurringTimerRequest(tenant=self._tenant(tenant), id=id)
        return await self._settle_call("resume", lambda a, t: self._timers(a).ResumeTimer(req, timeout=t), id,
                                       tenant, timeout, lambda tm: not tm.paused)

    async def trigger(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """See `Client.trigger` (not retried after an ambiguous failure)."""
        req = timers_pb2.RecurringTimerRequest(tenant=self._tenant(tenant), id=id)
        resp = await self._call("trigger", lambda a, t: self._timers(a).TriggerTimer(req, timeout=t),
                                safe_only=True, timeout=timeout)
        return wire.timer_from_pb(resp)

    async def next_occurrences(self, id: str, count: int = 5, *, tenant: Optional[str] = None,
                               timeout: Optional[float] = None) -> list:
        """See `Client.next_occurrences`."""
        req = wire.next_request(id, self._tenant(tenant), count)
        resp = await self._call("next_occurrences", lambda a, t: self._timers(a).NextOccurrences(req, timeout=t),
                                timeout=timeout)
        return [wire.ts_to_datetime(ts) for ts in resp.occurrences]

    async def _settle_call(self, what, fn, id, tenant, timeout, reached: Callable[[Timer], bool]) -> Timer:
        try:
            resp = await self._call(what, fn, timeout=timeout)
        except FailedPrecondition as exc:
            if getattr(exc, "after_ambiguous", False):
                tm = await self.get(id, tenant=tenant, timeout=timeout)
                if reached(tm):
                    return tm
            raise
        return wire.timer_from_pb(resp)

    # ---- cluster ---------------------------------------------------------------

    async def status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        resp = await self._call(
            "status", lambda a, t: self._cluster(a).Status(cluster_pb2.StatusRequest(), timeout=t), timeout=timeout)
        status = wire.status_from_pb(resp)
        self.router.learn(status)
        return status

    async def add_node(self, id: str, raft_address: str, grpc_address: str = "", *,
                       timeout: Optional[float] = None) -> Member:
        """See `Client.add_node`."""
        req = cluster_pb2.AddNodeRequest(id=id, raft_address=raft_address, grpc_address=grpc_address)
        resp = await self._leader_call("add_node", lambda a, t: self._cluster(a).AddNode(req, timeout=t), timeout,
                                       **policy.add_checks(id, raft_address))
        return resp if isinstance(resp, Member) else wire.member_from_pb(resp.member)

    async def remove_node(self, id: str, *, timeout: Optional[float] = None) -> Member:
        """See `Client.remove_node`."""
        req = cluster_pb2.RemoveNodeRequest(id=id)
        resp = await self._leader_call("remove_node", lambda a, t: self._cluster(a).RemoveNode(req, timeout=t),
                                       timeout, **policy.remove_checks(id))
        return resp if isinstance(resp, Member) else wire.member_from_pb(resp.member)

    async def transfer_leadership(self, to: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """See `Client.transfer_leadership`."""
        req = cluster_pb2.TransferLeadershipRequest(to=to or "")
        resp = await self._leader_call("transfer_leadership",
                                       lambda a, t: self._cluster(a).TransferLeadership(req, timeout=t), timeout,
                                       **policy.transfer_checks(to))
        return resp if isinstance(resp, str) else resp.leader

    async def take_snapshot(self, *, timeout: Optional[float] = None) -> SnapshotInfo:
        """See `Client.take_snapshot`."""
        resp = await self._call(
            "take_snapshot",
            lambda a, t: self._cluster(a).TakeSnapshot(cluster_pb2.TakeSnapshotRequest(), timeout=t),
            timeout=timeout, long=True)
        return wire.snapshot_from_pb(resp)

    async def list_snapshots(self, *, timeout: Optional[float] = None) -> list[SnapshotInfo]:
        """See `Client.list_snapshots`."""
        resp = await self._call(
            "list_snapshots",
            lambda a, t: self._cluster(a).ListSnapshots(cluster_pb2.ListSnapshotsRequest(), timeout=t),
            timeout=timeout)
        return [wire.snapshot_from_pb(s) for s in resp.snapshots]

    async def export_snapshot(self, dest: Union[str, os.PathLike, IO[bytes]], *, last_index: Optional[int] = None,
                              include_secrets: bool = False,
                              timeout: Optional[float] = None) -> SnapshotInfo:
        """See `Client.export_snapshot` (the file is written from the event loop, a chunk at a time)."""
        req = wire.export_request(last_index, include_secrets)
        sink = SnapshotSink(dest)

        async def attempt(addr: str, t: float) -> SnapshotInfo:
            rx = SnapshotReceiver()
            out = sink.open()
            try:
                async for chunk in self._cluster(addr).ExportSnapshot(req, timeout=t):
                    out.write(rx.accept(chunk))
                return rx.finish()
            finally:
                sink.close_attempt()

        try:
            info = await self._call("export_snapshot", attempt, timeout=timeout, long=True)
        except BaseException:
            sink.discard()
            raise
        sink.commit()
        return info

    async def _leader_call(self, what: str, fn: Callable[[str, float], Awaitable[Any]], timeout: Optional[float],
                           **checks) -> Any:
        """See `Client._leader_call` and `LeaderCall`."""
        plan = policy.LeaderCall(what, self.timeout if timeout is None else float(timeout), **checks)
        while True:
            plan.learn(await self._refresh(min(plan.deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT)))
            step = plan.next()
            if step is not None and step[0] == "done":
                return step[1]
            if step is not None:
                addr = step[1]
                try:
                    return await fn(addr, plan.remaining())
                except grpc.RpcError as exc:
                    if plan.failed(exc):
                        verdict = plan.recheck(
                            await self._refresh(min(plan.deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT)),
                            addr)
                        if verdict is not None:
                            return verdict[1]
                    self.router.failed(addr)
            await asyncio.sleep(plan.pause(self.backoff_base, self.backoff_max, self._rng))

    # ---- events ----------------------------------------------------------------

    def watch(self, from_sequence: int = 0, *, tenant: Optional[str] = None, kinds=None,
              reconnect_timeout: Optional[float] = None,
              stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> "AsyncWatch":
        """See `Client.watch`; returns an async iterator."""
        return AsyncWatch(self, wire.watch_request(from_sequence, self._tenant(tenant), kinds),
                          self.timeout if reconnect_timeout is None else reconnect_timeout, stall_timeout)

    # ---- lifecycle -------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            await ch.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class _Stalled(Exception):
    """The open watch stream's node failed its liveness check; resume elsewhere."""


class AsyncWatch(WatchProgress, AsyncIterator[Event]):
    """Self-resuming async event iterator (see Client.watch).

    The liveness check of an idle stream (see `WatchPolicy`) runs inside
    `__anext__` while it waits for the next event: no background task."""

    def __init__(self, client: AsyncClient, request: timers_pb2.WatchEventsRequest,
                 reconnect_timeout: float, stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> None:
        self._client = client
        self._policy = WatchPolicy(request, reconnect_timeout, client.router, client.backoff_base,
                                   client.backoff_max, client._rng, stall_timeout)
        self._call = None
        self._pending: Optional[asyncio.Future] = None   # the read in flight across liveness checks
        self._closed = False
        self._batch: Iterator = iter(())   # the rest of the last EventBatch received
        self._through = 0                  # and how far it said the server examined
        self._batched = False              # the open call is WatchEventBatches
        self._reopen: Optional[str] = None   # reopen here at once (it lacks WatchEventBatches)

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            pb = next(self._batch, None)
            if pb is not None:
                ev = self._policy.received(pb)
                if ev is not None:
                    return ev
                continue
            self._policy.cursor.examined(self._through)
            if self._call is None:
                await self._open()
            try:
                pb = await self._read()
            except _Stalled:
                self._drop_call()
                self._policy.failed(None)
                continue
            except grpc.RpcError as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                self._drop_call()
                self._reopen = self._policy.stream_failed(exc, self._batched) or self._reopen
                continue
            except asyncio.CancelledError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            if pb is grpc.aio.EOF:
                self._drop_call()
                self._policy.failed(None)
                continue
            if self._batched:
                self._batch = iter(pb.events)
                self._through = pb.through
                continue
            ev = self._policy.received(pb)
            if ev is not None:
                return ev

    async def _read(self):
        """The next message of the open stream, checking the node's liveness while it is idle."""
        p, call = self._policy, self._call
        if p.stall_timeout is None:
            return await call.read()
        if self._pending is None:
            self._pending = asyncio.ensure_future(call.read())
        while True:
            due = p.check_in()
            if due is None or due > 0:
                done, _ = await asyncio.wait({self._pending}, timeout=due)
            else:
                done = self._pending.done()
                if not done and await self._check(call):
                    raise _Stalled(p.last_stall)
            if done:
                fut, self._pending = self._pending, None
                return fut.result()

    async def _status(self, addr: Optional[str], timeout: float) -> Optional[ClusterStatus]:
        if not addr:
            return None
        try:
            return wire.status_from_pb(await self._client._cluster(addr).Status(cluster_pb2.StatusRequest(),
                                                                                timeout=timeout))
        except (grpc.RpcError, MinootsError):
            return None

    async def _check(self, call) -> bool:
        """One liveness check of the open stream's node: True when it is unfit and another
        member sees a leader (the router learned that member's view)."""
        p, router = self._policy, self._client.router
        addr = p.addr
        t = p.probe_timeout()
        own = await self._status(addr, t)
        reason = p.unfit(own)
        if reason is None:
            p.mark(own if own.leader == own.node else await self._status(own.leader_grpc_address, t))
            return False
        for other in router.rotation():
            if other == addr:
                continue
            if self._closed or self._call is not call:
                return False
            ref = await self._status(other, t)
            if ref is not None and sees_leader(ref):
                router.learn(ref)
                p.stalled(reason)
                return True
        return False

    async def _open(self) -> None:
        c = self._client
        addr, self._reopen = self._reopen, None
        if addr is None:
            pause = self._policy.delay()
            if pause > 0:
                await asyncio.sleep(pause)
            if c.router.stale(c.refresh_interval):
                await c._refresh(time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT, avoid=self._policy.addr)
            addr = self._policy.choose()
        if self._closed:
            raise StopAsyncIteration
        stub = c._timers(addr)
        self._batched = addr not in self._policy.unbatched
        rpc = stub.WatchEventBatches if self._batched else stub.WatchEvents
        self._call = rpc(self._policy.cursor.resume_request())
        self._policy.opened(addr)

    def _drop_call(self) -> None:
        call, self._call = self._call, None
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
        if call is not None:
            call.cancel()

    async def aclose(self) -> None:
        self._closed = True
        self._drop_call()

    close = aclose

    async def __aenter__(self) -> "AsyncWatch":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
