"""The gRPC servicers: `minoots.v1.Timers` and `minoots.v1.Cluster`.

Each handler checks its request (api/validation.py), then either proposes a
replicated command through the bridge (writes) or reads the local applied state
(reads), and maps the outcome onto a gRPC status:

| outcome                                             | status                |
| --------------------------------------------------- | --------------------- |
| a rule broken (field named)                         | INVALID_ARGUMENT      |
| no such timer                                       | NOT_FOUND             |
| id taken (without a matching idempotency key)       | ALREADY_EXISTS        |
| lifecycle state forbids it (cancel settled, ...)    | FAILED_PRECONDITION   |
| Raft did not commit: no leader, leader changed      | UNAVAILABLE           |
| not answered within the deadline (outcome unknown)  | DEADLINE_EXCEEDED     |
| WatchEvents cursor older than this node retains     | OUT_OF_RANGE          |
| a live stream's events skipped by a snapshot install| DATA_LOSS             |
| request over the receive limit (16 MiB)             | RESOURCE_EXHAUSTED    |
| tenant quota, create rate, a node cap (api/quotas.py)| RESOURCE_EXHAUSTED    |

Writes may go to any node: a follower forwards them to the leader (PySyncObj
does) and answers after applying them itself. Reads are local (a follower may
trail the leader by a few entries; a write it acknowledged is visible on it).
Retrying is safe for creates that carry an id or an idempotency key, for
cancels and acks (a repeated cancel/ack of the same timer answers
FAILED_PRECONDITION once the first one landed: the client can read the timer),
and for deletes (a repeated delete answers NOT_FOUND). A create retried after
its timer ended and was purged (retention) creates a new timer: keys are
forgotten with their timer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import re
from typing import Callable

import grpc

from minoots.kernel import FailedPrecondition, InvalidArgument, KernelError, TimerState
from minoots.kernel.plain import PlainCreateResult
from minoots.raft import commands
from minoots.raft.machine import CommandFailed
from minoots.raft.net import split_address
from minoots.raft.node import NodeError
from minoots.raft.endpoints import EndpointNotFound
from minoots.raft.webhook_secrets import check_secret, new_secret
from minoots.v1 import cluster_pb2 as cpb
from minoots.v1 import cluster_pb2_grpc
from minoots.v1 import timers_pb2 as pb
from minoots.v1 import timers_pb2_grpc

from . import graphs, listing, validation
from .auth import current_principal
from .bridge import leader_reachable
from .plain_answer import brief_response, plain_response
from .convert import fill_timer_pb, lease_to_pb, ms_timestamp, timer_to_pb
from .dispatcher import backoff_ms
from .events import EventsLost, EventsUnavailable, start_cursor, watch, watch_batches
from .quotas import CreateRateLimiter, WatcherCap
from .snapshot_export import export_chunks
from .ssrf import AddressPolicy

log = logging.getLogger("minoots.api")

__all__ = ["TimersService", "ClusterService", "MAX_WAIT"]

MAX_WAIT = 15.0     # seconds a write waits for its commit when the client set no deadline
EXPORT_CHUNK = 1 << 20   # bytes per ExportSnapshot message
BIG_BATCH = 1000    # CreateTimers above this size are checked and converted off the loop
SECRET_CATCH_UP_S = 1.0   # how long a webhook create waits for a just-set secret to reach this node


class ServerUnavailable(Exception):
    """This node cannot take the request now (no leader known, shutting down); answered as
    UNAVAILABLE, which the SDK raises as its own `minoots.Unavailable`."""


class OutcomeUnknown(Exception):
    """The commit was not confirmed in time: the command may or may not apply."""


_FAIL_HINT = ("the outcome is unknown; retrying is safe for creates with an id or idempotency key, "
              "cancels and acks")


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, KernelError):
        return getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL), str(exc)
    if isinstance(exc, CommandFailed):
        return grpc.StatusCode.UNAVAILABLE, f"Raft did not commit the request ({exc}); {_FAIL_HINT}"
    if isinstance(exc, ServerUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, OutcomeUnknown):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, EventsUnavailable):
        return grpc.StatusCode.OUT_OF_RANGE, str(exc)
    if isinstance(exc, EventsLost):
        return grpc.StatusCode.DATA_LOSS, str(exc)
    if isinstance(exc, NodeError):
        return getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL), str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"{exc}; retry"
    log.error("request failed unexpectedly", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {exc!r}"


def _unary(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def handler(self, request, context):
        try:
            return await fn(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await context.abort(*status_of(exc))
    return handler


def _stream(fn: Callable) -> Callable:
    @functools.wraps(fn)
    async def handler(self, request, context):
        try:
            async for item in fn(self, request, context):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await context.abort(*status_of(exc))
    return handler


class Writes:
    """Proposing one command and waiting for its commit, for every service that writes."""

    _node = _bridge = _machine = None

    def _require_leader(self) -> None:
        # PySyncObj holds commands while no leader is known (they would wait, not fail):
        # answer at once instead, so the client can retry elsewhere or later.
        if not leader_reachable(self._machine):
            raise ServerUnavailable("no Raft leader is reachable from this node (election under way, or no quorum); "
                                    "retry, here or on another node")

    async def _commit(self, awaitable, context):
        remaining = context.time_remaining()
        timeout = MAX_WAIT if remaining is None else max(0.0, min(remaining, MAX_WAIT))
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:
            raise OutcomeUnknown(f"not committed within {timeout:.1f} s; {_FAIL_HINT}") from None

    async def _write(self, command: commands.Command, context):
        self._require_leader()
        result = await self._commit(self._bridge.propose(command), context)
        if isinstance(result, Exception):
            raise result
        return result


class TimersService(Writes, timers_pb2_grpc.TimersServicer):
    def __init__(self, node, bridge, batcher, events, *, limiter: CreateRateLimiter | None = None,
                 watchers: WatcherCap | None = None, addresses: AddressPolicy | None = None) -> None:
        self._node = node
        self._addresses = addresses if addresses is not None else AddressPolicy()
        self._bridge = bridge
        self._batcher = batcher
        self._events = events
        self._machine = node.machine
        self._limiter = limiter if limiter is not None else CreateRateLimiter(node.machine)
        self._watchers = watchers if watchers is not None else WatcherCap()

    async def _create(self, specs, prefix: str, context, raw=None):
        self._require_leader()
        self._limiter.check(specs)     # the tenant's create rate, before anything is proposed
        if any((s.delivery is not None and (s.every_ms or s.cron or s.graph is not None))
               or (s.graph is not None and (s.catch_up or s.overlap or s.flex_ms)) for s in specs):
            # schedules with deliveries (kernel/occurrences.py), graph timers with webhooks or
            # endpoints: one record that says everything, deliveries resolved when applied
            result = await self._create_deliveries(specs, prefix, context, raw, record=commands.CreateFullTimers)
        elif any(s.graph is not None for s in specs):     # dependencies / ladders: their own record
            result = await self._create_deliveries(specs, prefix, context, record=commands.CreateGraphTimers)
        elif any(s.delivery is not None for s in specs):
            if any(s.every_ms or s.cron for s in specs):
                result = await self._create_deliveries(specs, prefix, context, raw,
                                                       record=commands.CreateFullTimers)
            else:
                result = await self._create_deliveries(specs, prefix, context, raw)
        else:
            result = await self._commit(self._batcher.create(specs), context)
        if isinstance(result, KernelError):
            raise validation.rename_kernel_error(result, prefix)
        if isinstance(result, Exception):
            raise result
        return result

    async def _create_deliveries(self, specs, prefix: str, context, raw=None, record=None):
        """Timers with webhooks: their tenant must hold a signing secret and every URL must
        pass the address policy (api/ssrf.py); a timer for a managed endpoint needs that
        endpoint (its URL was checked when it was added). Then one CreateDeliveryTimersV3,
        outside the create batcher, carrying each delivery as requested: policy fields not
        given take the tenant's defaults when it applies (`raw`: the wire specs). Graph
        timers go as `record` (CreateGraphTimers) with complete deliveries instead."""
        checked: set = set()
        for i, spec in enumerate(specs):
            if spec.delivery is not None and spec.delivery.endpoint is not None:
                field = f"{prefix}.endpoint.id" if prefix == "timer" else f"{prefix}[{i}].endpoint.id"
                if not await self._endpoint_known(spec.tenant, spec.delivery.endpoint):
                    raise EndpointNotFound(f"{field}: endpoint {spec.delivery.endpoint!r} of tenant "
                                           f"{spec.tenant!r} does not exist (minoots endpoint list)")
                continue
            if spec.delivery is None or spec.delivery.webhook is None:
                continue
            field = f"{prefix}.webhook.url" if prefix == "timer" else f"{prefix}[{i}].webhook.url"
            if spec.tenant not in checked:
                if not await self._secret_known(spec.tenant):
                    raise FailedPrecondition(
                        f"tenant {spec.tenant!r} has no webhook signing secret yet: create one first "
                        f"(minoots webhook rotate-secret --tenant {spec.tenant}, or Client.rotate_webhook_secret)")
                checked.add(spec.tenant)
            await self._addresses.check_url(field, spec.delivery.webhook.url)
        if raw is not None and record is not commands.CreateGraphTimers:
            specs = [s if s.delivery is None else dataclasses.replace(
                s, delivery=validation.requested_delivery(r, s.delivery)) for s, r in zip(specs, raw)]
        result = await self._commit(
            self._bridge.propose((record or commands.CreateDeliveryTimersV3)(self._node.clock.now_ms(),
                                                                             (tuple(specs),))), context)
        if isinstance(result, list) and isinstance(result[0], EndpointNotFound):
            return endpoint_not_found(result[0], prefix)      # removed since the check above
        return result[0] if isinstance(result, list) else result

    async def _endpoint_known(self, tenant: str, endpoint: str) -> bool:
        """Whether the tenant has this endpoint (waiting, like _secret_known, for one just added)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + SECRET_CATCH_UP_S
        while True:
            try:
                self._machine.endpoint(tenant, endpoint)
                return True
            except EndpointNotFound:
                if loop.time() >= end:
                    return False
                await asyncio.sleep(0.05)

    async def _secret_known(self, tenant: str) -> bool:
        """Whether the tenant has a webhook secret. This node's applied state may trail a
        secret just set through another node by a few entries: wait up to a second for it."""
        loop = asyncio.get_running_loop()
        end = loop.time() + SECRET_CATCH_UP_S
        while self._machine.webhook_secret(tenant) is None:
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.05)
        return True

    # ---- writes ------------------------------------------------------------------

    @_unary
    async def CreateTimer(self, request, context):
        now = self._node.clock.now_ms()
        spec = validation.create_spec("timer", request.timer, now)
        res = await self._create([spec], "timer", context, [request.timer])
        item = res.items[0]
        return pb.CreateTimerResponse(timer=timer_to_pb(item.timer), created=item.created)

    @_unary
    async def CreateTimers(self, request, context):
        now = self._node.clock.now_ms()
        loop = asyncio.get_running_loop()
        # Checking and converting cost ~10 µs per timer: a big batch does it off the loop,
        # so other requests interleave (the GIL still serialises the work itself).
        big = len(request.timers) > BIG_BATCH
        if big:
            specs = await loop.run_in_executor(None, validation.create_batch, request.timers, now)
        else:
            specs = validation.create_batch(request.timers, now)
        res = await self._create(specs, "timers", context, request.timers)
        if request.brief:
            return brief_response(res)
        if big:
            return await loop.run_in_executor(None, _create_response, res)
        return _create_response(res)

    @_unary
    async def CancelTimer(self, request, context):
        ref = validation.timer_ref(request.tenant, request.id)
        try:
            res = await self._write(commands.CancelTimers(self._node.clock.now_ms(), (tuple(ref),)), context)
        except FailedPrecondition as exc:
            msg = str(exc)
            raise FailedPrecondition(msg[len("refs[0]: "):] if msg.startswith("refs[0]: ") else msg) from None
        return timer_to_pb(res.timers[0])

    @_unary
    async def RescheduleTimer(self, request, context):
        tenant, timer_id, fire_at, extend_by = validation.reschedule_args(request)
        res = await self._write(
            commands.RescheduleTimer(self._node.clock.now_ms(), tenant, timer_id, fire_at, extend_by), context)
        return timer_to_pb(res.timer)

    @_unary
    async def AckTimer(self, request, context):
        tenant, timer_id, fire_id = validation.ack_args(request)
        res = await self._write(commands.AckTimer(self._node.clock.now_ms(), tenant, timer_id, fire_id), context)
        return timer_to_pb(res.timer)

    @_unary
    async def RedriveTimer(self, request, context):
        tenant, timer_id = validation.timer_ref(request.tenant, request.id)
        res = await self._write(commands.RedriveTimer(self._node.clock.now_ms(), tenant, timer_id), context)
        return timer_to_pb(res.timer)

    @_unary
    async def RotateWebhookSecret(self, request, context):
        tenant = validation.timer_ref(request.tenant, "x")[0]
        secret = check_secret("secret", request.secret) if request.secret else new_secret()
        now = self._node.clock.now_ms()
        await self._write(commands.PutWebhookSecret(tenant, secret, now), context)
        return pb.WebhookSecret(tenant=tenant, secret=secret, created_at=ms_timestamp(now))

    # ---- pull queues -------------------------------------------------------------

    @_unary
    async def LeaseTimers(self, request, context):
        tenant, queue, n, vis, wait = validation.lease_args(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            # Propose only when something is available here (no empty lease commands in the log).
            if await self._bridge.read(lambda k: k.queue_depth(tenant, queue)):
                res = await self._write(commands.LeaseTimers(self._node.clock.now_ms(), tenant, queue, n, vis),
                                        context)
                if res.leases:
                    return pb.LeaseTimersResponse(leases=[lease_to_pb(x) for x in res.leases])
            remaining = deadline - loop.time()
            if remaining <= 0:
                return pb.LeaseTimersResponse()
            await self._bridge.wait_events(min(remaining, 1.0))

    @_stream
    async def StreamLeases(self, request, context):
        """Lease as timers become available, keeping at most `max_outstanding` of this
        stream's leases live; between rounds it waits for applied events (or 1 s)."""
        tenant, queue, most, vis = validation.stream_lease_args(request)
        held: list[tuple[str, str]] = []          # (timer id, lease id) handed out, maybe still live
        with self._watchers.hold(_principal_name()):
            while True:
                if held:                       # keep only the leases not yet acked, nacked or expired
                    held = await self._bridge.read(lambda k, refs=tuple(held): k.live_leases(tenant, refs))
                room = most - len(held)
                if room > 0 and await self._bridge.read(lambda k: k.queue_depth(tenant, queue)):
                    res = await self._write(commands.LeaseTimers(self._node.clock.now_ms(), tenant, queue, room,
                                                                 vis), context)
                    for lease in res.leases:
                        held.append((lease.timer.id, lease.lease_id))
                        yield lease_to_pb(lease)
                    if res.leases:
                        continue
                await self._bridge.wait_events(1.0)

    @_unary
    async def AckLease(self, request, context):
        tenant, timer_id, lease_id = validation.lease_ref(request)
        res = await self._write(commands.AckLease(self._node.clock.now_ms(), tenant, timer_id, lease_id), context)
        return timer_to_pb(res.timer)

    @_unary
    async def NackLease(self, request, context):
        tenant, timer_id, lease_id = validation.lease_ref(request)
        timer = await self._bridge.read(lambda k: k.get(tenant, timer_id))
        now = self._node.clock.now_ms()
        next_at = None
        if timer.delivery is not None:
            policy = timer.delivery.policy
            attempt = timer.delivery_attempt
            if attempt < policy.max_attempts:       # the retry time is drawn here, never by replicas
                next_at = now + backoff_ms(policy, max(attempt, 1), _RNG)
        res = await self._write(commands.NackLease(now, tenant, timer_id, lease_id, next_at), context)
        return timer_to_pb(res.timer)

    @_unary
    async def ExtendLease(self, request, context):
        tenant, timer_id, lease_id, vis = validation.extend_args(request)
        res = await self._write(commands.ExtendLease(self._node.clock.now_ms(), tenant, timer_id, lease_id, vis),
                                context)
        return lease_to_pb(res.leases[0])

    @_unary
    async def DeleteTimer(self, request, context):
        ref = validation.timer_ref(request.tenant, request.id)
        try:
            res = await self._write(commands.DeleteTimers(self._node.clock.now_ms(), (tuple(ref),)), context)
        except FailedPrecondition as exc:
            msg = str(exc)
            raise FailedPrecondition(msg[len("refs[0]: "):] if msg.startswith("refs[0]: ") else msg) from None
        return timer_to_pb(res.timers[0])

    # ---- bulk (api/graphs.py, kernel/bulk.py) ---------------------------------------

    async def _bulk(self, request, context, make):
        """One page: the named ids, or the selector's next matches (read here, checked again at
        apply), as one replicated command; a result per timer and the token of the next page."""
        q = graphs.bulk_query(request, validation._tenant, validation._label_selector,
                              validation._decode_page_token)
        ids, token = q.ids, ""
        if q.labels:
            found: list = []
            pos, scanned = q.start, 0
            while pos is not None and len(found) < q.page_size and scanned < listing.SCAN_BUDGET:
                start = pos
                chunk, pos = await self._bridge.read(   # one bounded chunk per lock hold, like ListTimers
                    lambda k, start=start, want=q.page_size - len(found):
                    k.scan(start, want, tenant=q.tenant, states=make.states, labels=dict(q.labels),
                           max_positions=listing.CHUNK))
                found.extend(chunk)
                scanned += listing.CHUNK
            ids = tuple(t.id for t in found)
            token = "" if pos is None else validation.encode_page_token(pos)
            if not ids:
                return pb.BulkResponse(next_page_token=token)
        res = await self._write(make(self._node.clock.now_ms(), q.tenant, ids, q.labels), context)
        return pb.BulkResponse(results=[graphs.bulk_item_pb(i, fill_timer_pb) for i in res.items],
                               next_page_token=token)

    @_unary
    async def CancelTimers(self, request, context):
        def make(now, tenant, ids, labels):
            return commands.BulkCancelTimers(now, tenant, ids, labels)
        make.states = (TimerState.SCHEDULED, TimerState.ARMED, TimerState.FIRED, TimerState.DELIVERING)
        return await self._bulk(request, context, make)

    @_unary
    async def RescheduleTimers(self, request, context):
        fire_at, extend_by = graphs.bulk_change(request, self._node.clock.now_ms())

        def make(now, tenant, ids, labels):
            return commands.BulkRescheduleTimers(now, tenant, ids, labels, fire_at, extend_by)
        make.states = (TimerState.SCHEDULED, TimerState.ARMED)
        return await self._bulk(request, context, make)
    # ---- recurring timers: pause, resume, trigger (kernel/recurrence.py) -------------

    @_unary
    async def PauseTimer(self, request, context):
        tenant, timer_id = validation.timer_ref(request.tenant, request.id)
        res = await self._write(commands.PauseTimer(self._node.clock.now_ms(), tenant, timer_id), context)
        return timer_to_pb(res.timer)

    @_unary
    async def ResumeTimer(self, request, context):
        tenant, timer_id = validation.timer_ref(request.tenant, request.id)
        res = await self._write(commands.ResumeTimer(self._node.clock.now_ms(), tenant, timer_id), context)
        return timer_to_pb(res.timer)

    @_unary
    async def TriggerTimer(self, request, context):
        tenant, timer_id = validation.timer_ref(request.tenant, request.id)
        res = await self._write(commands.TriggerTimer(self._node.clock.now_ms(), tenant, timer_id), context)
        return timer_to_pb(res.timer)

    # ---- reads (local) -------------------------------------------------------------

    @_unary
    async def NextOccurrences(self, request, context):
        tenant, timer_id, count = validation.next_args(request)
        times = await self._bridge.read(lambda k: k.next_occurrences(tenant, timer_id, count))
        return pb.NextOccurrencesResponse(occurrences=[ms_timestamp(ms) for ms in times])

    @_unary
    async def GetTimer(self, request, context):
        tenant, timer_id = validation.timer_ref(request.tenant, request.id)
        timer = await self._bridge.read(lambda k: k.get(tenant, timer_id))
        return timer_to_pb(timer)

    @_unary
    async def ListTimers(self, request, context):
        q = validation.list_query(request)
        found: list = []
        pos = q.start
        scanned = 0
        budget = listing.PAGE_BYTES
        at_end = False
        while len(found) < q.page_size and budget > 0 and scanned < listing.SCAN_BUDGET:
            start = pos
            chunk, pos, at_end, used = await self._bridge.read(
                lambda k, start=start, want=q.page_size - len(found), budget=budget:
                listing.scan(k, q, start, want, budget))
            found.extend(chunk)
            budget -= used
            scanned += pos - start
            if at_end:
                break
        return pb.ListTimersResponse(
            timers=[timer_to_pb(t) for t in found],
            next_page_token="" if at_end else validation.encode_page_token(pos))

    async def _subscribe(self, request, context) -> int:
        """The watch's first sequence (OUT_OF_RANGE when this node lacks it); then the response
        headers go out: a client (the HTTP gateway's SSE) knows the subscription stands
        before the first event arrives."""
        cursor = start_cursor(self._events, request.from_sequence)
        await context.send_initial_metadata(())
        return cursor

    @_stream
    async def WatchEvents(self, request, context):
        tenant, kinds = validation.watch_filter(request)
        with self._watchers.hold(_principal_name()):
            cursor = await self._subscribe(request, context)
            async for event in watch(self._events, self._bridge, cursor, tenant, kinds):
                yield event

    @_stream
    async def WatchEventBatches(self, request, context):
        tenant, kinds = validation.watch_filter(request)
        with self._watchers.hold(_principal_name()):
            cursor = await self._subscribe(request, context)
            async for events in watch_batches(self._events, self._bridge, cursor, tenant, kinds):
                yield pb.EventBatch(events=events, through=events.through)


_RNG = random.SystemRandom()


def endpoint_not_found(exc: EndpointNotFound, prefix: str) -> EndpointNotFound:
    """The apply-time refusal with the field named as on the wire: specs[i].endpoint ->
    timer.endpoint.id (one create) or timers[i].endpoint.id (a batch)."""
    where = "timer" if prefix == "timer" else rf"{prefix}[\1]"
    return EndpointNotFound(re.sub(r"^specs\[(\d+)\]\.endpoint", where + ".endpoint.id", str(exc), count=1))


def _principal_name() -> str | None:
    p = current_principal()
    return p.name if p is not None else None


def _create_response(res) -> pb.CreateTimersResponse:
    if type(res) is PlainCreateResult:          # written from the columns (api/plain_answer.py)
        return plain_response(res)
    resp = pb.CreateTimersResponse()
    add = resp.results.add
    for i in res.items:
        fill_timer_pb(add(created=i.created).timer, i.timer)
    return resp


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    MAX_ENDPOINTS_SHOWN = 100

    def __init__(self, node, bridge, events=None, dispatcher=None) -> None:
        self._node = node
        self._bridge = bridge
        self._events = events     # the node's EventLog: Status reports `lagging` from it
        self._dispatcher = dispatcher   # the webhook dispatcher: Status reports its circuit breakers

    @_unary
    async def Status(self, request, context):
        s = await self._bridge.call(self._node.status)
        members = []
        for m in s["members"]:
            members.append(cpb.Member(
                id=m["id"], raft_address=m["address"], grpc_address=m["grpc_address"] or "",
                role=m["role"], connected=m.get("connected", True),
                match_index=m.get("match_index") or 0, lag=m.get("lag") or 0))
        resp = cpb.StatusResponse(
            node=s["node"], cluster=s["cluster"], leader=s["leader"] or "",
            leader_grpc_address=s["leader_grpc_address"] or "", leader_raft_address=s["leader_address"] or "",
            term=s["term"], commit_index=s["commit_index"], applied_index=s["applied_index"],
            members=members, timers={k: int(v) for k, v in s["timers"].items()},
            role=s["role"], log_len=s["log_len"], has_quorum=s["has_quorum"], fired_total=s["fired_total"],
            ticks_proposed=s["ticks_proposed"],
            lagging=self._events is not None and self._events.lagging)
        if s["next_deadline"] is not None:
            resp.next_deadline.CopyFrom(ms_timestamp(s["next_deadline"]))
        if self._dispatcher is not None:
            endpoints = self._dispatcher.stats()["endpoints"]
            for key, e in list(endpoints.items())[:self.MAX_ENDPOINTS_SHOWN]:
                resp.webhook_endpoints.add(endpoint=key, circuit=e["state"], queued=e["queued"], sent=e["sent"],
                                           failed=e["failed"])
        return resp

    @_unary
    async def AddNode(self, request, context):
        nid, raft, grpc_addr = request.id, request.raft_address, request.grpc_address
        if grpc_addr:
            try:
                split_address(grpc_addr)
            except ValueError as exc:
                raise NodeError("INVALID_ARGUMENT", f"grpc_address: {exc}") from None
        await self._bridge.blocking(self._node.add_member, nid, raft)
        if grpc_addr:
            # The new node announces its own address too once it has caught up; this makes
            # it known at once. Ignored by the state machine if the node is not a member.
            fut = self._bridge.propose(commands.SetMemberGrpc(nid, grpc_addr))
            try:
                await asyncio.wait_for(fut, MAX_WAIT)
            except (asyncio.TimeoutError, CommandFailed):
                log.warning("grpc address of the new member not recorded yet", extra={"id": nid})
        return cpb.AddNodeResponse(member=cpb.Member(id=nid, raft_address=raft, grpc_address=grpc_addr,
                                                     role="follower"))

    @_unary
    async def RemoveNode(self, request, context):
        nid = request.id
        if not nid:
            raise NodeError("INVALID_ARGUMENT", "id: must name a member")
        grpc_addr = self._node.machine.grpc_addresses.get(nid, "")
        removed = (await self._bridge.blocking(self._node.remove_member, nid))["removed"]
        return cpb.RemoveNodeResponse(member=cpb.Member(id=removed["id"], raft_address=removed["address"],
                                                        grpc_address=grpc_addr))

    @_unary
    async def TakeSnapshot(self, request, context):
        taken = await self._bridge.blocking(self._node.take_snapshot)
        return _snapshot_pb(taken["snapshot"], self._node.cfg.node_id)

    @_unary
    async def ListSnapshots(self, request, context):
        kept = await self._bridge.blocking(self._node.snapshot_list)
        return cpb.ListSnapshotsResponse(snapshots=[_snapshot_pb(s, self._node.cfg.node_id) for s in kept])

    @_stream
    async def ExportSnapshot(self, request, context):
        # Streamed from the LMDB snapshot store a chunk at a time (each chunk one short read
        # transaction): an export holds one chunk in memory, whatever the snapshot's size.
        # Webhook secrets are left out unless asked for (api/snapshot_export.py).
        info = await self._bridge.call(self._node.snapshot_info, request.last_index or None)
        async for sent, offset, data in export_chunks(self._bridge, self._node, info, request.include_secrets,
                                                      EXPORT_CHUNK):
            header = _snapshot_pb(sent, self._node.cfg.node_id) if offset == 0 else None
            yield cpb.SnapshotChunk(snapshot=header, offset=offset, data=data)

    @_unary
    async def TransferLeadership(self, request, context):
        leader = await self._bridge.blocking(self._node.transfer_leadership, request.to or None)
        return cpb.TransferLeadershipResponse(leader=leader)

    @_unary
    async def GetDigest(self, request, context):
        d = await self._bridge.blocking(self._node.kernel_digest)   # serialises the whole state
        return cpb.GetDigestResponse(node=self._node.cfg.node_id, applied_index=d["applied_index"],
                                     sha256=d["sha256"], size=d["bytes"])


def _snapshot_pb(s: dict, node: str = "") -> cpb.Snapshot:
    return cpb.Snapshot(last_index=s["last_index"], last_term=s["last_term"],
                        created_at=ms_timestamp(s["created_at_ms"]), size=s["size"], timers=s["timers"],
                        sha256=s["sha256"], node=node)
