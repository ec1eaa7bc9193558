"""The EndpointService: managed webhook endpoints, tenant delivery defaults, dead letters
and queue statistics (proto/minoots/v1/delivery.proto).

Writes are replicated commands (raft/commands.py records 33-39); the node taking the
call draws what is random (an endpoint's id, a generated secret) and proposes it as
data. Reads answer from this node's applied state. A secret is returned by
CreateEndpoint and RotateEndpointSecret only: every other answer is built from
`Endpoint.public()`. api/auth.py's table limits each call to the caller's tenants.
"""
from __future__ import annotations

import secrets as _random

from minoots.kernel import InvalidArgument, TimerState
from minoots.kernel.delivery import (DEFAULT_POLICY, MAX_ATTEMPT_TIMEOUT_MS, Delivery, DeliveryPolicy, Webhook,
                                     check_delivery, check_endpoint_id, check_policy, check_queue)
from minoots.kernel.queue_stats import queue_stats
from minoots.raft import commands
from minoots.raft.endpoints import MAX_PER_TENANT, TooManyEndpoints
from minoots.raft.webhook_secrets import check_secret, new_secret
from minoots.v1 import delivery_pb2 as dpb
from minoots.v1 import delivery_pb2_grpc

from . import validation
from .convert import ms_timestamp, timer_to_pb
from .service import Writes, _unary
from .ssrf import AddressPolicy

__all__ = ["EndpointService", "MAX_DEAD_LETTERS_PER_CALL"]

MAX_DEAD_LETTERS_PER_CALL = 1000     # timers one replay / purge / list handles (one bounded command)
DEFAULT_LIST = 100
SCAN_CHUNK = 50_000                  # table positions examined per hold of the state lock
_DEAD = [TimerState.DEAD_LETTERED]


def endpoint_to_pb(ep, secret: str = "") -> dpb.Endpoint:
    out = dpb.Endpoint(tenant=ep.tenant, id=ep.id, url=ep.url, headers=dict(ep.headers), timeout_ms=ep.timeout_ms,
                       created_at=ms_timestamp(ep.created_at_ms), secret=secret)
    if ep.rotated_at_ms:
        out.secret_rotated_at.CopyFrom(ms_timestamp(ep.rotated_at_ms))
    return out


def _defaults_to_pb(tenant: str, policy: DeliveryPolicy, built_in: bool) -> dpb.DeliveryDefaults:
    out = dpb.DeliveryDefaults(tenant=tenant, built_in=built_in)
    p = out.policy
    p.max_attempts = policy.max_attempts
    p.backoff_base.FromMilliseconds(policy.backoff_base_ms)
    p.backoff_cap.FromMilliseconds(policy.backoff_cap_ms)
    p.attempt_timeout.FromMilliseconds(policy.attempt_timeout_ms)
    p.ack_deadline.FromMilliseconds(policy.ack_deadline_ms)
    return out


class EndpointService(Writes, delivery_pb2_grpc.EndpointServiceServicer):
    def __init__(self, node, bridge, addresses: AddressPolicy | None = None) -> None:
        self._node = node
        self._bridge = bridge
        self._machine = node.machine
        self._addresses = addresses if addresses is not None else AddressPolicy()

    # ---- endpoints ------------------------------------------------------------------

    @_unary
    async def CreateEndpoint(self, request, context):
        tenant = validation.timer_ref(request.tenant, "x")[0]
        try:
            d = check_delivery("endpoint", Delivery(Webhook(request.url, tuple(request.headers.items()))))
        except InvalidArgument as exc:
            raise InvalidArgument(exc.field.replace("endpoint.webhook.", ""), exc.rule) from None
        if request.timeout_ms > MAX_ATTEMPT_TIMEOUT_MS:
            raise InvalidArgument("timeout_ms", f"must be within 0..{MAX_ATTEMPT_TIMEOUT_MS}")
        secret = check_secret("secret", request.secret) if request.secret else new_secret()
        if len(self._machine.endpoints(tenant)) >= MAX_PER_TENANT:
            raise TooManyEndpoints(f"tenant {tenant!r} has {MAX_PER_TENANT} endpoints, the most it may hold: "
                                   "remove one first")
        await self._addresses.check_url("url", d.webhook.url)
        eid = "ep_" + _random.token_hex(8)
        now = self._node.clock.now_ms()
        ep = await self._write(commands.CreateEndpoint(tenant, eid, d.webhook.url, d.webhook.headers,
                                                       request.timeout_ms, secret, now), context)
        return endpoint_to_pb(ep, secret)

    @_unary
    async def ListEndpoints(self, request, context):
        tenant = validation.timer_ref(request.tenant, "x")[0]
        return dpb.ListEndpointsResponse(endpoints=[endpoint_to_pb(e) for e in self._machine.endpoints(tenant)])

    @_unary
    async def GetEndpoint(self, request, context):
        tenant, eid = self._ref(request)
        return endpoint_to_pb(self._machine.endpoint(tenant, eid))

    @_unary
    async def RotateEndpointSecret(self, request, context):
        tenant, eid = self._ref(request)
        secret = check_secret("secret", request.secret) if request.secret else new_secret()
        ep = await self._write(commands.RotateEndpointSecret(tenant, eid, secret, self._node.clock.now_ms()),
                               context)
        return endpoint_to_pb(ep, secret)

    @_unary
    async def DeleteEndpoint(self, request, context):
        tenant, eid = self._ref(request)
        return endpoint_to_pb(await self._write(commands.DeleteEndpoint(tenant, eid), context))

    @staticmethod
    def _ref(request) -> tuple[str, str]:
        tenant = validation.timer_ref(request.tenant, "x")[0]
        return tenant, check_endpoint_id("id", request.id)

    # ---- delivery defaults ------------------------------------------------------------

    @_unary
    async def SetDeliveryDefaults(self, request, context):
        tenant = validation.timer_ref(request.tenant, "x")[0]
        if request.clear:
            if request.HasField("policy"):
                raise InvalidArgument("clear", "clears the tenant's defaults: give no policy with it")
            await self._write(commands.SetDeliveryDefaults(tenant, None), context)
        else:
            policy = _policy(request.policy)
            await self._write(commands.SetDeliveryDefaults(tenant, tuple(policy)), context)
        return _defaults_to_pb(tenant, *self._machine.delivery_defaults(tenant))

    @_unary
    async def GetDeliveryDefaults(self, request, context):
        tenant = validation.timer_ref(request.tenant, "x")[0]
        return _defaults_to_pb(tenant, *self._machine.delivery_defaults(tenant))

    # ---- dead letters ---------------------------------------------------------------

    async def _select(self, tenant: str, queue, endpoint, labels, limit: int) -> tuple[list, bool]:
        """Up to `limit` dead-lettered timers of `tenant` matching, in position order, and
        whether more matched; the table is walked in chunks (the lock is held per chunk)."""
        found: list = []
        start = 0

        def chunk(k, start=0):
            return k.scan(start, limit + 1 - len(found), tenant=tenant, states=_DEAD, labels=labels,
                          max_positions=SCAN_CHUNK)

        while start is not None and len(found) <= limit:
            timers, start = await self._bridge.read(lambda k, s=start: chunk(k, s))
            for t in timers:
                d = t.delivery
                if d is None or (queue and d.queue != queue) or (endpoint and d.endpoint != endpoint):
                    continue
                found.append(t)
        return found[:limit], len(found) > limit

    @staticmethod
    def _filters(request) -> tuple:
        queue = check_queue("queue", request.queue) if request.queue else None
        endpoint = check_endpoint_id("endpoint", request.endpoint) if request.endpoint else None
        labels = validation._label_selector(request.label_selector) or None
        return queue, endpoint, dict(labels) if labels else None

    @_unary
    async def ListDeadLetters(self, request, context):
        tenant = validation.timer_ref(request.tenant, "x")[0]
        limit = request.limit or DEFAULT_LIST
        if limit > MAX_DEAD_LETTERS_PER_CALL:
            raise InvalidArgument("limit", f"at most {MAX_DEAD_LETTERS_PER_CALL}")
        timers, more = await self._select(tenant, *self._filters(request), limit)
        return dpb.ListDeadLettersResponse(timers=[timer_to_pb(t) for t in timers], truncated=more)

    async def _targets(self, request) -> tuple[str, list, bool]:
        tenant = validation.timer_ref(request.tenant, "x")[0]
        queue, endpoint, labels = self._filters(request)
        if request.ids:
            if queue or endpoint or labels or request.all:
                raise InvalidArgument("ids", "name timers by id or select them, not both")
            if len(request.ids) > MAX_DEAD_LETTERS_PER_CALL:
                raise InvalidArgument("ids", f"at most {MAX_DEAD_LETTERS_PER_CALL} per call")
            ids = [validation.timer_ref(tenant, i)[1] for i in request.ids]
            if len(set(ids)) != len(ids):
                raise InvalidArgument("ids", "names a timer twice")
            return tenant, ids, False
        if not (queue or endpoint or labels or request.all):
            raise InvalidArgument("ids", "name timers, or select them (queue, endpoint, label_selector or all)")
        timers, more = await self._select(tenant, queue, endpoint, labels, MAX_DEAD_LETTERS_PER_CALL)
        return tenant, [t.id for t in timers], more

    @_unary
    async def ReplayDeadLetters(self, request, context):
        tenant, ids, more = await self._targets(request)
        out = dpb.DeadLettersResponse(truncated=more)
        if ids:
            results = await self._write(commands.ReplayDeadLetters(
                self._node.clock.now_ms(), tuple((tenant, i) for i in ids)), context)
            for i, r in zip(ids, results):
                out.results.add(id=i, ok=not isinstance(r, Exception), error="" if not isinstance(r, Exception)
                                else str(r))
        return out

    @_unary
    async def PurgeDeadLetters(self, request, context):
        tenant, ids, more = await self._targets(request)
        out = dpb.DeadLettersResponse(truncated=more)
        if ids:
            _, skipped = await self._write(commands.PurgeDeadLetters(
                self._node.clock.now_ms(), tuple((tenant, i) for i in ids)), context)
            skipped = {i for _, i in skipped}
            for i in ids:
                out.results.add(id=i, ok=i not in skipped,
                                error="not dead-lettered (or gone)" if i in skipped else "")
        return out

    # ---- queues -----------------------------------------------------------------------

    @_unary
    async def QueueStats(self, request, context):
        tenant = validation.timer_ref(request.tenant, "x")[0]
        queue = check_queue("queue", request.queue) if request.queue else None
        stats = await self._bridge.read(lambda k: queue_stats(k, tenant, queue))
        return dpb.QueueStatsResponse(queues=[dpb.QueueStats(queue=q, visible=v, leased=l, waiting=w, dead=d)
                                              for q, (v, l, w, d) in stats.items()])


def _policy(wp) -> DeliveryPolicy:
    """A full policy from the wire; fields not given take the built-in default's."""
    d = DEFAULT_POLICY

    def ms(name: str, default: int) -> int:
        if not wp.HasField(name):
            return default
        return validation._policy_ms(f"policy.{name}", getattr(wp, name), default, True)

    base = ms("backoff_base", d.backoff_base_ms)
    cap = ms("backoff_cap", max(d.backoff_cap_ms, base) if not wp.HasField("backoff_cap") else d.backoff_cap_ms)
    try:
        return check_policy("policy", DeliveryPolicy(wp.max_attempts or d.max_attempts, base, cap,
                                                     ms("attempt_timeout", d.attempt_timeout_ms),
                                                     ms("ack_deadline", d.ack_deadline_ms)))
    except InvalidArgument as exc:
        field = exc.field[:-3] if exc.field.endswith("_ms") else exc.field
        raise InvalidArgument(field, exc.rule) from None
