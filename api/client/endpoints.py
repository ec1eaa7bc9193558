"""Managed endpoints, delivery defaults, dead letters and queue stats for the blocking
`Client` (the EndpointService; proto/minoots/v1/delivery.proto).

A mixin of `Client`, using its routing and retries (`_call`). Creating an endpoint or
rotating its secret draws the secret here when none is given (so a retry sets the same
one) and returns it: the only time it is shown. Replay and purge act on at most 1,000
dead letters per call and say `truncated` when more were selected.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping, Optional, Sequence, Union

from minoots.v1 import delivery_pb2, delivery_pb2_grpc

from . import policy, wire
from .webhooks import new_webhook_secret

__all__ = ["Endpoint", "DeliveryDefaults", "DeadLetterResults", "QueueStats", "EndpointMethods",
           "AsyncEndpointMethods"]


@dataclass(frozen=True)
class Endpoint:
    tenant: str
    id: str
    url: str
    headers: Mapping[str, str]
    timeout_ms: int
    created_at: datetime
    secret_rotated_at: Optional[datetime] = None
    secret: Optional[str] = None        # only from create_endpoint / rotate_endpoint_secret

    def to_dict(self) -> dict:
        out = {"tenant": self.tenant, "id": self.id, "url": self.url, "headers": dict(self.headers),
               "timeout_ms": self.timeout_ms, "created_at": self.created_at.isoformat(),
               "secret_rotated_at": self.secret_rotated_at.isoformat() if self.secret_rotated_at else None}
        if self.secret is not None:
            out["secret"] = self.secret
        return out


@dataclass(frozen=True)
class DeliveryDefaults:
    tenant: str
    max_attempts: int
    backoff_base: timedelta
    backoff_cap: timedelta
    attempt_timeout: timedelta
    ack_deadline: timedelta
    built_in: bool                      # True: the tenant has no defaults of its own

    def to_dict(self) -> dict:
        ms = lambda d: int(d / timedelta(milliseconds=1))   # noqa: E731
        return {"tenant": self.tenant, "max_attempts": self.max_attempts, "backoff_base_ms": ms(self.backoff_base),
                "backoff_cap_ms": ms(self.backoff_cap), "attempt_timeout_ms": ms(self.attempt_timeout),
                "ack_deadline_ms": ms(self.ack_deadline), "built_in": self.built_in}


@dataclass(frozen=True)
class DeadLetterResults:
    results: tuple                      # ((id, ok, error), ...)
    truncated: bool                     # more were selected than one call handles

    @property
    def ok(self) -> list[str]:
        return [i for i, ok, _ in self.results if ok]


@dataclass(frozen=True)
class QueueStats:
    queue: str
    visible: int
    leased: int
    waiting: int
    dead: int


def _endpoint(pb) -> Endpoint:
    return Endpoint(pb.tenant, pb.id, pb.url, dict(pb.headers), pb.timeout_ms, wire.ts_to_datetime(pb.created_at),
                    wire.opt_ts(pb, "secret_rotated_at"), pb.secret or None)


def _defaults(pb) -> DeliveryDefaults:
    p = pb.policy
    return DeliveryDefaults(pb.tenant, p.max_attempts, p.backoff_base.ToTimedelta(), p.backoff_cap.ToTimedelta(),
                            p.attempt_timeout.ToTimedelta(), p.ack_deadline.ToTimedelta(), pb.built_in)


def _results(pb) -> DeadLetterResults:
    return DeadLetterResults(tuple((r.id, r.ok, r.error) for r in pb.results), pb.truncated)


class EndpointMethods:
    """The calls, for the blocking `Client`. Each method builds its request and hands it to
    `_ecall` with the conversion of the answer: `AsyncEndpointMethods` overrides `_ecall`
    alone, so there every method returns an awaitable of the same result."""

    def _endpoints(self, addr: str):
        return self.node_stub(addr, delivery_pb2_grpc.EndpointServiceStub)

    def _ecall(self, what: str, method: str, req, timeout, convert, safe_only: bool = False):
        resp, _ = self._call(what, lambda a, t: getattr(self._endpoints(a), method)(req, timeout=t),
                             safe_only=safe_only, timeout=timeout)
        return convert(resp)

    def create_endpoint(self, url: str, *, headers: Optional[Mapping[str, str]] = None, timeout_ms: int = 0,
                        secret: Optional[str] = None, tenant: Optional[str] = None,
                        timeout: Optional[float] = None) -> Endpoint:
        """Add a managed webhook endpoint; the answer carries its `whsec_` secret (drawn here
        unless given): the only time it is shown. Timers reach it with `create(endpoint=ID)`."""
        req = delivery_pb2.CreateEndpointRequest(tenant=self._tenant(tenant) or "", url=url, headers=headers or {},
                                                 timeout_ms=timeout_ms, secret=secret or new_webhook_secret())
        # Not retried after an ambiguous failure: the server draws the id (a retry could add a twin).
        return self._ecall("create_endpoint", "CreateEndpoint", req, timeout, _endpoint, safe_only=True)

    def list_endpoints(self, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> list[Endpoint]:
        req = delivery_pb2.ListEndpointsRequest(tenant=self._tenant(tenant) or "")
        return self._ecall("list_endpoints", "ListEndpoints", req, timeout,
                           lambda r: [_endpoint(e) for e in r.endpoints])

    def get_endpoint(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Endpoint:
        req = delivery_pb2.EndpointRef(tenant=self._tenant(tenant) or "", id=id)
        return self._ecall("get_endpoint", "GetEndpoint", req, timeout, _endpoint)

    def rotate_endpoint_secret(self, id: str, *, secret: Optional[str] = None, tenant: Optional[str] = None,
                               timeout: Optional[float] = None) -> Endpoint:
        """Give the endpoint a new secret (returned, shown once); the old one keeps signing
        beside it for 24 h."""
        req = delivery_pb2.RotateEndpointSecretRequest(tenant=self._tenant(tenant) or "", id=id,
                                                       secret=secret or new_webhook_secret())
        return self._ecall("rotate_endpoint_secret", "RotateEndpointSecret", req, timeout, _endpoint)

    def delete_endpoint(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Endpoint:
        """Remove an endpoint; FailedPrecondition while a timer that has not ended uses it."""
        req = delivery_pb2.EndpointRef(tenant=self._tenant(tenant) or "", id=id)
        return self._ecall("delete_endpoint", "DeleteEndpoint", req, timeout, _endpoint)

    def set_delivery_defaults(self, *, max_attempts: Optional[int] = None,
                              backoff_base: Union[timedelta, int, float, None] = None,
                              backoff_cap: Union[timedelta, int, float, None] = None,
                              attempt_timeout: Union[timedelta, int, float, None] = None,
                              ack_deadline: Union[timedelta, int, float, None] = None, clear: bool = False,
                              tenant: Optional[str] = None, timeout: Optional[float] = None) -> DeliveryDefaults:
        """Set the policy the tenant's new webhook/queue timers take for every field they do
        not give (fields not given here: the built-in defaults); `clear=True` removes them."""
        req = delivery_pb2.SetDeliveryDefaultsRequest(tenant=self._tenant(tenant) or "", clear=clear)
        if not clear:
            p = req.policy
            p.max_attempts = max_attempts or 0
            for name, value in (("backoff_base", backoff_base), ("backoff_cap", backoff_cap),
                                ("attempt_timeout", attempt_timeout), ("ack_deadline", ack_deadline)):
                if value is not None:
                    getattr(p, name).CopyFrom(wire.duration_to_pb(value, name))
        return self._ecall("set_delivery_defaults", "SetDeliveryDefaults", req, timeout, _defaults)

    def get_delivery_defaults(self, *, tenant: Optional[str] = None,
                              timeout: Optional[float] = None) -> DeliveryDefaults:
        req = delivery_pb2.GetDeliveryDefaultsRequest(tenant=self._tenant(tenant) or "")
        return self._ecall("get_delivery_defaults", "GetDeliveryDefaults", req, timeout, _defaults)

    def dead_letters(self, *, queue: Optional[str] = None, endpoint: Optional[str] = None,
                     labels: Union[Mapping[str, str], str, None] = None, limit: int = 100,
                     tenant: Optional[str] = None, timeout: Optional[float] = None) -> tuple[list, bool]:
        """(dead-lettered timers, whether more matched than `limit` ≤ 1000)."""
        req = delivery_pb2.ListDeadLettersRequest(tenant=self._tenant(tenant) or "", queue=queue or "",
                                                  endpoint=endpoint or "", label_selector=wire.label_selector(labels),
                                                  limit=limit)
        return self._ecall("dead_letters", "ListDeadLetters", req, timeout,
                           lambda r: ([wire.timer_from_pb(t) for t in r.timers], r.truncated))

    def _dead_request(self, ids, queue, endpoint, labels, all, tenant):
        return delivery_pb2.DeadLettersRequest(tenant=self._tenant(tenant) or "", ids=list(ids or ()),
                                               queue=queue or "", endpoint=endpoint or "",
                                               label_selector=wire.label_selector(labels), all=all)

    def replay_dead_letters(self, ids: Sequence[str] = (), *, queue: Optional[str] = None,
                            endpoint: Optional[str] = None, labels: Union[Mapping[str, str], str, None] = None,
                            all: bool = False, tenant: Optional[str] = None,
                            timeout: Optional[float] = None) -> DeadLetterResults:
        """Re-arm dead letters (by id, or selected) with their attempts reset and history kept,
        in one replicated command; a result per timer."""
        req = self._dead_request(ids, queue, endpoint, labels, all, tenant)
        return self._ecall("replay_dead_letters", "ReplayDeadLetters", req, timeout, _results)

    def purge_dead_letters(self, ids: Sequence[str] = (), *, queue: Optional[str] = None,
                           endpoint: Optional[str] = None, labels: Union[Mapping[str, str], str, None] = None,
                           all: bool = False, tenant: Optional[str] = None,
                           timeout: Optional[float] = None) -> DeadLetterResults:
        """Delete dead letters (by id, or selected); a result per timer."""
        req = self._dead_request(ids, queue, endpoint, labels, all, tenant)
        return self._ecall("purge_dead_letters", "PurgeDeadLetters", req, timeout, _results)

    def queue_stats(self, queue: Optional[str] = None, *, tenant: Optional[str] = None,
                    timeout: Optional[float] = None) -> list[QueueStats]:
        """Per queue of the tenant: visible, leased, waiting (backoff) and dead timers."""
        req = delivery_pb2.QueueStatsRequest(tenant=self._tenant(tenant) or "", queue=queue or "")
        return self._ecall("queue_stats", "QueueStats", req, timeout,
                           lambda r: [QueueStats(q.queue, q.visible, q.leased, q.waiting, q.dead) for q in r.queues])


class AsyncEndpointMethods(EndpointMethods):
    """The same calls for `AsyncClient`: each returns an awaitable (`await c.create_endpoint(...)`)."""

    def _endpoints(self, addr: str):
        return policy.AuthedStub(delivery_pb2_grpc.EndpointServiceStub(self._channel(addr)), self._token)

    async def _ecall(self, what: str, method: str, req, timeout, convert, safe_only: bool = False):
        resp = await self._call(what, lambda a, t: getattr(self._endpoints(a), method)(req, timeout=t),
                                safe_only=safe_only, timeout=timeout)
        return convert(resp)
