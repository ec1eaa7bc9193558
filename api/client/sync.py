"""`Client`, the blocking MINOOTS client, and `Watch`, its self-resuming event iterator.

How calls are routed and retried is told in `minoots.api.client`'s docstring;
the decisions themselves are shared with `AsyncClient`: `.policy` (routing,
retries, cluster changes), `.watch` (watch resumption and liveness), `.wire`
(conversions, requests) and `.snapshot` (exports).
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import IO, Any, Callable, Optional, Union

import grpc

from minoots.v1 import cluster_pb2, cluster_pb2_grpc, timers_pb2, timers_pb2_grpc

from ..types import (
    ClusterStatus,
    Event,
    FailedPrecondition,
    InvalidArgument,
    Lease,
    Member,
    MinootsError,
    NotFound,
    SnapshotInfo,
    Timer,
    TimerSpec,
    TimerState,
)
from . import policy, wire
from .subscriptions import SubscriptionMethods
from .tenants import TenantMethods
from .tokens import TokenMethods
from .policy import DEFAULT_STALL_TIMEOUT, DISCOVERY_ATTEMPT_TIMEOUT
from .snapshot import SnapshotReceiver, SnapshotSink
from .watch import WatchPolicy, WatchProgress, sees_leader
from .webhooks import new_webhook_secret
from .endpoints import EndpointMethods

__all__ = ["Client", "Watch"]


class Client(TokenMethods, TenantMethods, SubscriptionMethods, EndpointMethods, policy.ClientSettings):
    """Blocking MINOOTS client; thread-safe (one instance can serve many threads).

    `nodes`: gRPC addresses HOST:PORT of some members (a list, or one
    comma-separated string); the rest are discovered. `timeout`: default total
    deadline of a call in seconds, retries included; `attempt_timeout`: of one
    attempt. `tls`: False (plaintext), True (system roots), a path to PEM root
    certificates, or a `grpc.ChannelCredentials`. `tenant`: default tenant of
    every call (the server's "default" when None). `token`: the API token sent
    with every call (`authorization: Bearer`); None reads $MINOOTS_TOKEN, then
    the file named by $MINOOTS_TOKEN_FILE, then the admin token `minoots up`
    wrote (./minoots-data/admin.token, or under $MINOOTS_DATA).
    """

    # ---- plumbing --------------------------------------------------------------

    def _channel(self, addr: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise MinootsError("the client is closed", code="CANCELLED")
            ch = self._channels.get(addr)
            if ch is None:
                ch = (grpc.secure_channel(addr, self._creds, options=self._options) if self._creds
                      else grpc.insecure_channel(addr, options=self._options))
                # Carries the caller's OpenTelemetry context (W3C traceparent) to the node.
                from ..telemetry import TraceContextClientInterceptor
                ch = grpc.intercept_channel(ch, TraceContextClientInterceptor())
                self._channels[addr] = ch
            return ch

    def node_stub(self, addr: str, stub_class):
        """A `stub_class` (a generated minoots.v1 stub) bound to member `addr`, on this client's
        channel, TLS and token: for calls that must reach one node (e.g. its audit ledger)."""
        return policy.AuthedStub(stub_class(self._channel(addr)), self._token)

    def _timers(self, addr: str) -> timers_pb2_grpc.TimersStub:
        return self.node_stub(addr, timers_pb2_grpc.TimersStub)

    def _cluster(self, addr: str) -> cluster_pb2_grpc.ClusterStub:
        return self.node_stub(addr, cluster_pb2_grpc.ClusterStub)

    def _refresh(self, deadline: float, avoid: Optional[str] = None) -> Optional[ClusterStatus]:
        """Ask members for Cluster.Status until one answers (or the deadline); learn from it."""
        for addr in self.router.discovery_order(avoid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                pb = self._cluster(addr).Status(cluster_pb2.StatusRequest(),
                                                timeout=min(DISCOVERY_ATTEMPT_TIMEOUT, remaining))
            except grpc.RpcError:
                continue
            status = wire.status_from_pb(pb)
            self.router.learn(status)
            return status
        return None

    def _call(self, what: str, fn: Callable[[str, float], Any], *, safe_only: bool = False,
              timeout: Optional[float] = None, long: bool = False) -> tuple[Any, bool]:
        """Run fn(address, attempt_timeout) with routing and retries; returns (result, ambiguous_seen).

        `safe_only`: retry only failures known not to have reached Raft; raise
        Unavailable(ambiguous=True) on any other transient failure. `long`: an
        attempt may use the whole remaining deadline (snapshots, exports).
        """
        total = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + total
        last: Optional[BaseException] = None
        ambiguous = False
        failed_at: Optional[str] = None
        n = 0
        while True:
            if self.router.stale(self.refresh_interval):
                self._refresh(min(deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT), avoid=failed_at)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise policy.give_up(last, what, total, n)
            addr = self.router.pick(avoid=failed_at)
            n += 1
            try:
                return fn(addr, remaining if long else min(self.attempt_timeout, remaining)), ambiguous
            except grpc.RpcError as exc:
                ambiguous = policy.retryable(exc, what, ambiguous, safe_only)
                last = exc
                failed_at = addr
                self.router.failed(addr)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise policy.give_up(last, what, total, n)
            time.sleep(min(remaining, policy.backoff(n - 1, self.backoff_base, self.backoff_max, self._rng)))

    # ---- timers ----------------------------------------------------------------

    def create(self, fire_at: Union[datetime, int, None] = None, *, delay: Union[timedelta, int, float, None] = None,
               id: Optional[str] = None, tenant: Optional[str] = None, name: str = "",
               payload: Union[bytes, str] = b"", labels: Optional[Mapping[str, str]] = None,
               action: Union[bytes, str] = b"", idempotency_key: Optional[str] = None,
               ack_required: bool = False, webhook: Optional[str] = None,
               webhook_headers: Optional[Mapping[str, str]] = None, queue: Optional[str] = None, endpoint: Optional[str] = None,
               max_attempts: Optional[int] = None,
               backoff_base: Union[timedelta, int, float, None] = None,
               backoff_cap: Union[timedelta, int, float, None] = None,
               attempt_timeout: Union[timedelta, int, float, None] = None,
               every: Union[timedelta, int, float, None] = None,
               until: Union[datetime, int, None] = None, max_count: int = 0, cron: str = "", tz: str = "",
               after: Union[str, Iterable[str], None] = None, on: str = "", mode: str = "",
               on_parent_cancel: str = "", escalate: Optional[Iterable] = None,
               catch_up: str = "", overlap: str = "",
               flex: Union[timedelta, int, float, None] = None,
               timeout: Optional[float] = None) -> Timer:
        """Create one timer; returns it (ARMED).

        With `webhook` (a URL) MINOOTS POSTs a signed JSON envelope there when the timer
        fires (Standard Webhooks; check it with `minoots.verify_webhook`), retrying per
        `max_attempts`, `backoff_base`/`backoff_cap` (seconds or timedelta; full jitter)
        and `attempt_timeout`; then the timer is SETTLED, or DEAD_LETTERED (see `redrive`).
        The tenant needs a signing secret first (`rotate_webhook_secret`). With `endpoint`
        (an id from `create_endpoint`) instead, it is POSTed to that managed endpoint, signed
        with the endpoint's own secret. With `queue` instead, the fired timer waits on that
        pull queue for a worker (`lease`). Policy arguments not given take the tenant's
        delivery defaults (`set_delivery_defaults`).

        `every` (timedelta or seconds, at least 1 s) makes it recur: it fires at its
        deadline, then every `every` after, each occurrence a fire of its own, until
        `until` (inclusive) or `max_count` occurrences (with `ack_required`, each fire awaits
        its own ack; with a webhook, endpoint or queue, each occurrence is delivered as its own
        timer "<id>@<fire_id>", webhook-id msg_<fire_id>). Or
        `cron` (5 or 6 fields) with `tz` (an IANA zone): it fires at those times, the first
        at or after its deadline (give `delay=0` to start now). `catch_up` ("once", "all",
        "skip") says what a recurring timer does with occurrences missed during an outage;
        `overlap` ("skip", "buffer_one", "allow_all") decides an occurrence due while an
        earlier fire awaits its ack (`ack_required`) or an earlier occurrence is still being
        delivered (at most 100 in delivery at once). `flex` (seconds or timedelta): each
        occurrence fires at a time within [occurrence, occurrence + flex]. `pause`,
        `resume`, `trigger` and `next_occurrences` control and preview a recurring timer.

        Give exactly one of `fire_at` (aware datetime, or int ms since the
        epoch) and `delay` (timedelta, or seconds). Safe to retry: without an
        `id` the SDK generates one (uuid4 hex), and without an
        `idempotency_key` the id serves as the key, so a create retried after an
        ambiguous failure returns the timer its first attempt made
        (`created=False`) instead of making a duplicate. One consequence: a
        create naming an existing id whose timer was made with that id as its
        key returns the existing timer (created=False) rather than raising
        AlreadyExists.
        """
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
        resp, _ = self._call("create", lambda a, t: self._timers(a).CreateTimer(req, timeout=t), timeout=timeout)
        return wire.timer_from_pb(resp.timer, resp.created)

    def create_many(self, specs: Iterable[Union[TimerSpec, Mapping]], *, timeout: Optional[float] = None) -> list[Timer]:
        """Create up to 10,000 timers in one replicated command: all or nothing.

        Each spec is a TimerSpec or a dict of `create`'s keyword arguments; ids
        and idempotency keys are filled in as for `create`, so the batch is safe
        to retry as a whole.
        """
        req = wire.create_many_request(specs, self.tenant)
        resp, _ = self._call("create_many", lambda a, t: self._timers(a).CreateTimers(req, timeout=t),
                             timeout=timeout)
        return [wire.timer_from_pb(r.timer, r.created) for r in resp.results]

    def create_many_ids(self, specs: Iterable[Union[TimerSpec, Mapping]], *,
                        timeout: Optional[float] = None) -> list[tuple[str, bool]]:
        """create_many answered briefly: (id, created) per spec instead of the full records
        (no record per timer built, sent or parsed: for big batches whose caller keeps its specs)."""
        req = wire.create_many_request(specs, self.tenant, brief=True)
        resp, _ = self._call("create_many", lambda a, t: self._timers(a).CreateTimers(req, timeout=t),
                             timeout=timeout)
        return wire.brief_results(resp, len(req.timers))

    def get(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        req = timers_pb2.GetTimerRequest(tenant=self._tenant(tenant), id=id)
        resp, _ = self._call("get", lambda a, t: self._timers(a).GetTimer(req, timeout=t), timeout=timeout)
        return wire.timer_from_pb(resp)

    def list(self, *, tenant: Optional[str] = None, states=None,
             labels: Union[Mapping[str, str], str, None] = None,
             fire_at_from: Union[datetime, int, None] = None, fire_at_to: Union[datetime, int, None] = None,
             page_size: Optional[int] = None, limit: Optional[int] = None,
             timeout: Optional[float] = None, fired_at_from: Union[datetime, int, None] = None,
             fired_at_to: Union[datetime, int, None] = None) -> Iterator[Timer]:
        """Iterate over matching timers, fetching pages as needed (each page is retried on its own).

        `states`: a state or several (TimerState or names); `labels`: a mapping
        (all must match) or a selector "k=v,k2=v2"; `fire_at_from` inclusive,
        `fire_at_to` exclusive; `fired_at_from` / `fired_at_to`: only timers whose
        latest fire is in that range (how a consumer that lost events finds what
        fired); `limit`: stop after that many timers.
        """
        req = wire.list_request(self._tenant(tenant), states, labels, fire_at_from, fire_at_to,
                                wire.page_size_for(page_size, limit), fired_at_from, fired_at_to)
        return self._list_iter(req, limit, timeout)

    def _list_iter(self, req, limit, timeout) -> Iterator[Timer]:
        n = 0
        if limit == 0:
            return
        while True:
            resp, _ = self._call("list", lambda a, t: self._timers(a).ListTimers(req, timeout=t), timeout=timeout)
            for pb in resp.timers:
                if limit is not None and n >= limit:
                    return
                n += 1
                yield wire.timer_from_pb(pb)
            if not resp.next_page_token or (limit is not None and n >= limit):
                return
            req.page_token = resp.next_page_token

    def cancel(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Cancel a scheduled, armed or fired timer; returns it (CANCELLED)."""
        req = timers_pb2.CancelTimerRequest(tenant=self._tenant(tenant), id=id)
        return self._settle_call(
            "cancel", lambda a, t: self._timers(a).CancelTimer(req, timeout=t), id, tenant, timeout,
            lambda tm: tm.state == TimerState.CANCELLED)

    def reschedule(self, id: str, fire_at: Union[datetime, int], *, tenant: Optional[str] = None,
                   timeout: Optional[float] = None) -> Timer:
        """Move a scheduled or armed timer's deadline to `fire_at` (absolute; safe to retry)."""
        ms = wire.time_to_ms(fire_at)
        req = timers_pb2.RescheduleTimerRequest(tenant=self._tenant(tenant), id=id, fire_at=wire.ms_to_timestamp(ms))
        return self._settle_call(
            "reschedule", lambda a, t: self._timers(a).RescheduleTimer(req, timeout=t), id, tenant, timeout,
            lambda tm: tm.fire_at_ms == ms)

    def extend(self, id: str, by: Union[timedelta, int, float], *, tenant: Optional[str] = None,
               timeout: Optional[float] = None) -> Timer:
        """Move the deadline by `by` (timedelta or seconds; may be negative).

        Not idempotent: retried only when the request certainly did not reach
        Raft; otherwise raises `Unavailable(ambiguous=True)` (see the module
        docstring).
        """
        req = timers_pb2.RescheduleTimerRequest(tenant=self._tenant(tenant), id=id,
                                                extend_by=wire.duration_to_pb(by, "by"))
        resp, _ = self._call("extend", lambda a, t: self._timers(a).RescheduleTimer(req, timeout=t),
                             safe_only=True, timeout=timeout)
        return wire.timer_from_pb(resp)

    def ack(self, id: str, fire_id: int, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Acknowledge fire `fire_id` (Timer.fire_id) of a FIRED timer; returns it (SETTLED)."""
        req = timers_pb2.AckTimerRequest(tenant=self._tenant(tenant), id=id, fire_id=fire_id)
        return self._settle_call(
            "ack", lambda a, t: self._timers(a).AckTimer(req, timeout=t), id, tenant, timeout,
            lambda tm: tm.state == TimerState.SETTLED and tm.fire_id == fire_id)

    # ---- graphs and bulk ---------------------------------------------------------

    def cancel_many(self, ids: Union[str, Iterable[str], None] = None, *,
                    selector: Union[Mapping[str, str], str, None] = None, tenant: Optional[str] = None,
                    timeout: Optional[float] = None) -> list:
        """Cancel the timers `ids`, or every live timer matching the label `selector`
        ("team=infra" or a mapping; all pairs must match), each on its own: a BulkResult per
        timer. One replicated command per page of up to 1,000 timers; pages until done."""
        req = wire.bulk_request(timers_pb2.CancelTimersRequest, self._tenant(tenant), ids, selector)
        return self._bulk_pages("cancel_many", lambda a, t: self._timers(a).CancelTimers(req, timeout=t), req,
                                timeout, False)

    def reschedule_many(self, ids: Union[str, Iterable[str], None] = None, *,
                        selector: Union[Mapping[str, str], str, None] = None,
                        fire_at: Union[datetime, int, None] = None, delay: Union[timedelta, int, float, None] = None,
                        extend_by: Union[timedelta, int, float, None] = None, tenant: Optional[str] = None,
                        timeout: Optional[float] = None) -> list:
        """Move the deadline of scheduled or armed timers (`ids` or a label `selector`) to
        `fire_at`, to `delay` from when the cluster accepts it, or by `extend_by` (one of the
        three): a BulkResult per timer. `extend_by` is not retried after an ambiguous failure."""
        if sum(x is not None for x in (fire_at, delay, extend_by)) != 1:
            raise InvalidArgument("give exactly one of fire_at, delay and extend_by")
        req = wire.bulk_request(timers_pb2.RescheduleTimersRequest, self._tenant(tenant), ids, selector,
                                fire_at=fire_at, delay=delay, extend_by=extend_by)
        return self._bulk_pages("reschedule_many", lambda a, t: self._timers(a).RescheduleTimers(req, timeout=t),
                                req, timeout, extend_by is not None)

    def _bulk_pages(self, what, fn, req, timeout, safe_only) -> list:
        out: list = []
        while True:
            resp, _ = self._call(what, fn, safe_only=safe_only, timeout=timeout)
            out += wire.bulk_from_pb(resp)
            if not resp.next_page_token:
                return out
            req.page_token = resp.next_page_token

    def graph(self, id: str, *, tenant: Optional[str] = None, max_nodes: int = 200,
              timeout: Optional[float] = None) -> list:
        """The timer and its dependents, depth first: [(depth, Timer), ...] (at most `max_nodes`;
        a purged dependent is left out). Its parents are `Timer.after` of the first entry."""
        out: list = []
        stack = [(0, id)]
        seen = set()
        while stack and len(out) < max_nodes:
            depth, tid = stack.pop()
            if tid in seen:
                continue
            seen.add(tid)
            try:
                tm = self.get(tid, tenant=tenant, timeout=timeout)
            except NotFound:
                if depth == 0:
                    raise
                continue
            out.append((depth, tm))
            stack.extend((depth + 1, c) for c in reversed(tm.children))
        return out

    def redrive(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Deliver a DEAD_LETTERED webhook timer again with a fresh attempt budget (same
        webhook-id); returns it (DELIVERING). Safe to retry."""
        req = timers_pb2.RedriveTimerRequest(tenant=self._tenant(tenant), id=id)
        return self._settle_call(
            "redrive", lambda a, t: self._timers(a).RedriveTimer(req, timeout=t), id, tenant, timeout,
            lambda tm: tm.state != TimerState.DEAD_LETTERED)

    def rotate_webhook_secret(self, *, tenant: Optional[str] = None, secret: Optional[str] = None,
                              timeout: Optional[float] = None) -> str:
        """Set the tenant's webhook signing secret and return it: the only time it is shown.
        Without `secret` a fresh `whsec_` secret is drawn here (so a retry sets the same one).
        Webhooks sent from then on are signed with it."""
        req = timers_pb2.RotateWebhookSecretRequest(tenant=self._tenant(tenant) or "",
                                                    secret=secret or new_webhook_secret())
        resp, _ = self._call("rotate_webhook_secret",
                             lambda a, t: self._timers(a).RotateWebhookSecret(req, timeout=t), timeout=timeout)
        return resp.secret

    # ---- pull queues -------------------------------------------------------------

    def lease(self, queue: str, *, max_timers: int = 1, visibility: Union[timedelta, int, float] = 30,
              wait: Union[timedelta, int, float] = 0, tenant: Optional[str] = None,
              timeout: Optional[float] = None) -> list[Lease]:
        """Lease up to `max_timers` fired timers of `queue` for `visibility` (seconds or
        timedelta), waiting up to `wait` (≤ 20 s) for one; [] when none came. Not retried
        after an ambiguous failure (a lost answer would hide leases, which then expire)."""
        req, extra = wire.lease_request(queue, self._tenant(tenant), max_timers, visibility, wait)
        resp, _ = self._call("lease", lambda a, t: self._timers(a).LeaseTimers(req, timeout=t + extra),
                             safe_only=True, timeout=(timeout or self.timeout) + extra)
        return [wire.lease_from_pb(x) for x in resp.leases]

    def stream_leases(self, queue: str, *, max_outstanding: int = 1, visibility: Union[timedelta, int, float] = 30,
                      tenant: Optional[str] = None, reconnect_timeout: Optional[float] = None) -> Iterator[Lease]:
        """Leases of `queue` as its timers become available, with at most `max_outstanding`
        of them live at once: ack or nack each (or let it expire) to get the next. Survives
        node deaths and failovers by reopening the stream on another member, giving up with
        `Unavailable` after `reconnect_timeout` seconds without one (default: the client's
        timeout). Close the generator (or break out of the loop) to stop. After a reopen the
        count starts again, so leases of the old stream still live add to it until they end."""
        req = wire.stream_leases_request(queue, self._tenant(tenant), max_outstanding, visibility)
        budget = self.timeout if reconnect_timeout is None else float(reconnect_timeout)
        failed_at: Optional[str] = None
        last: Optional[BaseException] = None
        n = 0
        down_since = time.monotonic()
        while True:
            if self.router.stale(self.refresh_interval) or failed_at is not None:
                self._refresh(time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT, avoid=failed_at)
            addr = self.router.pick(avoid=failed_at)
            call = self._timers(addr).StreamLeases(req)
            try:
                for pb in call:
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
            time.sleep(policy.backoff(n - 1, self.backoff_base, self.backoff_max, self._rng))

    def ack_lease(self, lease: Lease, *, timeout: Optional[float] = None) -> Timer:
        """Done with a leased timer: it settles. Safe to retry."""
        req = wire.lease_ref(lease)
        return self._settle_call("ack_lease", lambda a, t: self._timers(a).AckLease(req, timeout=t),
                                 lease.timer.id, lease.timer.tenant, timeout,
                                 lambda tm: tm.state == TimerState.SETTLED)

    def nack_lease(self, lease: Lease, *, timeout: Optional[float] = None) -> Timer:
        """Give a leased timer back: it is retried per its policy (or dead-lettered after the last attempt)."""
        req = wire.lease_ref(lease)
        resp, _ = self._call("nack_lease", lambda a, t: self._timers(a).NackLease(req, timeout=t),
                             safe_only=True, timeout=timeout)
        return wire.timer_from_pb(resp)

    def extend_lease(self, lease: Lease, visibility: Union[timedelta, int, float] = 30, *,
                     timeout: Optional[float] = None) -> Lease:
        """Heartbeat: the lease now expires `visibility` from now. Safe to retry."""
        req = wire.extend_request(lease, visibility)
        resp, _ = self._call("extend_lease", lambda a, t: self._timers(a).ExtendLease(req, timeout=t),
                             timeout=timeout)
        return wire.lease_from_pb(resp)

    def delete(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Remove a settled, cancelled or dead-lettered timer now (before its tenant's
        retention ends); returns it as it was. FailedPrecondition for a timer that has
        not ended; NotFound for one that is gone (with `after_ambiguous` True when an
        earlier attempt of this call may have deleted it). Its idempotency key is forgotten."""
        req = timers_pb2.DeleteTimerRequest(tenant=self._tenant(tenant), id=id)
        resp, _ = self._call("delete", lambda a, t: self._timers(a).DeleteTimer(req, timeout=t), timeout=timeout)
        return wire.timer_from_pb(resp)

    # ---- recurring timers ----------------------------------------------------------

    def pause(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Pause an armed recurring timer: no occurrence fires until `resume` (its state is
        SCHEDULED, `paused` True meanwhile). FailedPrecondition for a one-shot timer or one
        not armed. Safe to retry."""
        req = timers_pb2.RecurringTimerRequest(tenant=self._tenant(tenant), id=id)
        return self._settle_call("pause", lambda a, t: self._timers(a).PauseTimer(req, timeout=t), id, tenant,
                                 timeout, lambda tm: tm.paused)

    def resume(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Resume a paused timer: armed again at its next occurrence after now (the ones due
        while it was paused do not fire). Safe to retry."""
        req = timers_pb2.RecurringTimerRequest(tenant=self._tenant(tenant), id=id)
        return self._settle_call("resume", lambda a, t: self._timers(a).ResumeTimer(req, timeout=t), id, tenant,
                                 timeout, lambda tm: not tm.paused)

    def trigger(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Fire one extra occurrence of a recurring timer now (its own fire_id); the schedule
        is unchanged. Not idempotent: retried only when the request certainly did not reach Raft."""
        req = timers_pb2.RecurringTimerRequest(tenant=self._tenant(tenant), id=id)
        resp, _ = self._call("trigger", lambda a, t: self._timers(a).TriggerTimer(req, timeout=t),
                             safe_only=True, timeout=timeout)
        return wire.timer_from_pb(resp)

    def next_occurrences(self, id: str, count: int = 5, *, tenant: Optional[str] = None,
                         timeout: Optional[float] = None) -> list[datetime]:
        """The timer's next `count` (1..100) fire times, computed by the server's kernel code:
        [] for a timer that ended; a paused one's as if resumed now."""
        req = wire.next_request(id, self._tenant(tenant), count)
        resp, _ = self._call("next_occurrences", lambda a, t: self._timers(a).NextOccurrences(req, timeout=t),
                             timeout=timeout)
        return [wire.ts_to_datetime(ts) for ts in resp.occurrences]

    def _settle_call(self, what, fn, id, tenant, timeout, reached: Callable[[Timer], bool]) -> Timer:
        try:
            resp, _ = self._call(what, fn, timeout=timeout)
        except FailedPrecondition as exc:
            if getattr(exc, "after_ambiguous", False):
                tm = self.get(id, tenant=tenant, timeout=timeout)
                if reached(tm):
                    return tm
            raise
        return wire.timer_from_pb(resp)

    # ---- cluster ---------------------------------------------------------------

    def status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """Cluster.Status from the leader when known, else any member."""
        resp, _ = self._call("status", lambda a, t: self._cluster(a).Status(cluster_pb2.StatusRequest(), timeout=t),
                             timeout=timeout)
        status = wire.status_from_pb(resp)
        self.router.learn(status)
        return status

    def add_node(self, id: str, raft_address: str, grpc_address: str = "", *,
                 timeout: Optional[float] = None) -> Member:
        """Add member `id` with its Raft address HOST:PORT (and gRPC address, if it serves one).

        Start the new node first, with a --peer for every member. Sent to the
        leader; after an ambiguous failure the membership is read back, so a
        retried add that had in fact committed returns the member instead of
        raising AlreadyExists.
        """
        req = cluster_pb2.AddNodeRequest(id=id, raft_address=raft_address, grpc_address=grpc_address)
        resp = self._leader_call("add_node", lambda a, t: self._cluster(a).AddNode(req, timeout=t), timeout,
                                 **policy.add_checks(id, raft_address))
        return resp if isinstance(resp, Member) else wire.member_from_pb(resp.member)

    def remove_node(self, id: str, *, timeout: Optional[float] = None) -> Member:
        """Remove member `id`; returns it. Removing the leader works too: it hands
        leadership to another member first (the request goes to the leader)."""
        req = cluster_pb2.RemoveNodeRequest(id=id)
        resp = self._leader_call("remove_node", lambda a, t: self._cluster(a).RemoveNode(req, timeout=t), timeout,
                                 **policy.remove_checks(id))
        return resp if isinstance(resp, Member) else wire.member_from_pb(resp.member)

    def transfer_leadership(self, to: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """Make member `to` (an id; None = the most caught-up follower) the leader;
        returns the new leader's id. Already leading: returns `to` at once."""
        req = cluster_pb2.TransferLeadershipRequest(to=to or "")
        resp = self._leader_call("transfer_leadership",
                                 lambda a, t: self._cluster(a).TransferLeadership(req, timeout=t), timeout,
                                 **policy.transfer_checks(to))
        return resp if isinstance(resp, str) else resp.leader

    def take_snapshot(self, *, timeout: Optional[float] = None) -> SnapshotInfo:
        """Snapshot the answering node (the leader when known) now and compact its log.
        With nothing applied since its last snapshot, returns that one."""
        resp, _ = self._call(
            "take_snapshot",
            lambda a, t: self._cluster(a).TakeSnapshot(cluster_pb2.TakeSnapshotRequest(), timeout=t),
            timeout=timeout, long=True)
        return wire.snapshot_from_pb(resp)

    def list_snapshots(self, *, timeout: Optional[float] = None) -> list[SnapshotInfo]:
        """The snapshots the answering node (the leader when known) keeps, oldest first."""
        resp, _ = self._call(
            "list_snapshots",
            lambda a, t: self._cluster(a).ListSnapshots(cluster_pb2.ListSnapshotsRequest(), timeout=t),
            timeout=timeout)
        return [wire.snapshot_from_pb(s) for s in resp.snapshots]

    def export_snapshot(self, dest: Union[str, os.PathLike, IO[bytes]], *, last_index: Optional[int] = None,
                        include_secrets: bool = False,
                        timeout: Optional[float] = None) -> SnapshotInfo:
        """Download a snapshot container (the file `minoots snapshot restore` takes) into
        `dest`: a path (written to PATH.part, renamed into place once complete and
        verified) or a binary file object. `last_index` picks one of the answering
        node's snapshots (`list_snapshots`); None = its latest. NotFound when it has
        none. The size and SHA-256 are checked; a broken stream is retried from the
        start (on another member if need be) until the deadline. Local file
        errors raise OSError. Webhook signing secrets are left out (the export is then a
        container of its own, restorable without them) unless `include_secrets`."""
        req = wire.export_request(last_index, include_secrets)
        sink = SnapshotSink(dest)

        def attempt(addr: str, t: float) -> SnapshotInfo:
            rx = SnapshotReceiver()
            out = sink.open()
            try:
                for chunk in self._cluster(addr).ExportSnapshot(req, timeout=t):
                    out.write(rx.accept(chunk))
                return rx.finish()
            finally:
                sink.close_attempt()

        try:
            info, _ = self._call("export_snapshot", attempt, timeout=timeout, long=True)
        except BaseException:
            sink.discard()
            raise
        sink.commit()
        return info

    def _leader_call(self, what: str, fn: Callable[[str, float], Any], timeout: Optional[float], **checks) -> Any:
        """A cluster change, sent to the leader (see `LeaderCall`); returns fn's answer, or
        the `settled` check's value when a retry finds the change already made."""
        plan = policy.LeaderCall(what, self.timeout if timeout is None else float(timeout), **checks)
        while True:
            plan.learn(self._refresh(min(plan.deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT)))
            step = plan.next()
            if step is not None and step[0] == "done":
                return step[1]
            if step is not None:
                addr = step[1]
                try:
                    return fn(addr, plan.remaining())
                except grpc.RpcError as exc:
                    if plan.failed(exc):
                        verdict = plan.recheck(
                            self._refresh(min(plan.deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT)), addr)
                        if verdict is not None:
                            return verdict[1]
                    self.router.failed(addr)
            time.sleep(plan.pause(self.backoff_base, self.backoff_max, self._rng))

    # ---- events ----------------------------------------------------------------

    def watch(self, from_sequence: int = 0, *, tenant: Optional[str] = None, kinds=None,
              reconnect_timeout: Optional[float] = None,
              stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> "Watch":
        """Stream events from sequence `from_sequence` on (0: only new events), forever.

        The iterator survives disconnects, node deaths and failovers: it
        reconnects to another member asking for (last sequence seen + 1), drops
        any event it has already yielded and, for an unfiltered watch, raises if
        a sequence number is ever skipped. It raises `OutOfRange` when the
        cluster no longer retains the sequence asked for, and `Unavailable` when
        no member could be reached for `reconnect_timeout` seconds (default: the
        client's timeout). `tenant` and `kinds` filter on the server. Call
        `close()` (or use it as a context manager) to stop; a `from_sequence=0`
        watch that is interrupted before its first event resumes from "now"
        and so may miss events from the gap. A stream idle for `stall_timeout`
        seconds gets a liveness check (one Cluster.Status or two per interval,
        none while events flow): when its node is cut off from the leader or
        falls behind, the watch resumes on a healthy member (None/0: never).
        """
        return Watch(self, wire.watch_request(from_sequence, self._tenant(tenant), kinds),
                     self.timeout if reconnect_timeout is None else reconnect_timeout, stall_timeout)

    # ---- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Watch(WatchProgress, Iterator[Event]):
    """Blocking, self-resuming event iterator (see Client.watch)."""

    def __init__(self, client: Client, request: timers_pb2.WatchEventsRequest, reconnect_timeout: float,
                 stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> None:
        self._client = client
        self._policy = WatchPolicy(request, reconnect_timeout, client.router, client.backoff_base,
                                   client.backoff_max, client._rng, stall_timeout)
        self._call = None
        self._closed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._monitor: Optional[threading.Thread] = None
        self._pending: Iterator = iter(())   # the rest of the last EventBatch received
        self._through = 0                    # and how far it said the server examined
        self._batched = False                # the open call is WatchEventBatches
        self._reopen: Optional[str] = None   # reopen here at once (it lacks WatchEventBatches)

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> Event:
        while True:
            if self._closed:
                raise StopIteration
            pb = next(self._pending, None)
            if pb is None:
                self._policy.cursor.examined(self._through)
                if self._call is None:
                    self._open()
                try:
                    msg = next(self._call)
                except StopIteration:
                    # The server ended an endless stream (shutting down): resume elsewhere.
                    self._drop_call()
                    self._policy.failed(None)
                    continue
                except grpc.RpcError as exc:
                    if self._closed:
                        raise StopIteration from None
                    self._drop_call()
                    self._reopen = self._policy.stream_failed(exc, self._batched) or self._reopen
                    continue
                if not self._batched:
                    pb = msg
                else:
                    self._pending = iter(msg.events)
                    self._through = msg.through
                    continue
            ev = self._policy.received(pb)
            if ev is not None:
                return ev

    def _open(self) -> None:
        c = self._client
        addr, self._reopen = self._reopen, None
        if addr is None:
            pause = self._policy.delay()
            if pause > 0:
                time.sleep(pause)
            if c.router.stale(c.refresh_interval):
                c._refresh(time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT, avoid=self._policy.addr)
            addr = self._policy.choose()
        with self._lock:
            if self._closed:
                raise StopIteration
            stub = c._timers(addr)
            self._batched = addr not in self._policy.unbatched
            rpc = stub.WatchEventBatches if self._batched else stub.WatchEvents
            self._call = rpc(self._policy.cursor.resume_request())
            self._policy.opened(addr)
            if self._monitor is None and self._policy.stall_timeout is not None:
                self._monitor = threading.Thread(target=_watch_monitor, args=(weakref.ref(self), self._wake),
                                                 name="minoots-watch-liveness", daemon=True)
                self._monitor.start()

    # ---- liveness (runs on the monitor thread; the iterating thread never waits for it)

    def _status(self, addr: Optional[str], timeout: float) -> Optional[ClusterStatus]:
        if not addr:
            return None
        try:
            return wire.status_from_pb(self._client._cluster(addr).Status(cluster_pb2.StatusRequest(), timeout=timeout))
        except (grpc.RpcError, MinootsError):
            return None

    def _check(self) -> None:
        """One liveness check of the open stream's node (see WatchPolicy); cancels the stream
        (the iterator then resumes elsewhere from the cursor) when the node is unfit and
        another member sees a leader."""
        p, router = self._policy, self._client.router
        with self._lock:
            call, addr = self._call, p.addr
        if call is None or addr is None or self._closed:
            return
        t = p.probe_timeout()
        own = self._status(addr, t)
        reason = p.unfit(own)
        if reason is None:
            p.mark(own if own.leader == own.node else self._status(own.leader_grpc_address, t))
            return
        for other in router.rotation():
            if other == addr:
                continue
            if self._closed or self._call is not call:
                return
            ref = self._status(other, t)
            if ref is not None and sees_leader(ref):
                router.learn(ref)
                with self._lock:
                    if self._call is not call or self._closed:
                        return
                    p.stalled(reason)
                call.cancel()
                return

    def _drop_call(self) -> None:
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def close(self) -> None:
        """Stop the stream (safe from another thread; the iterator then ends)."""
        with self._lock:
            self._closed = True
            call, self._call = self._call, None
        self._wake.set()
        if call is not None:
            call.cancel()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _watch_monitor(ref: "weakref.ref[Watch]", wake: threading.Event) -> None:
    """Liveness checks of one Watch's idle stream; ends when the watch is closed or dropped."""
    while True:
        w = ref()
        if w is None or w._closed:
            return
        due = w._policy.check_in()
        if due is not None and due <= 0 and w._call is not None:
            try:
                w._check()
            except Exception:   # noqa: BLE001 - a failed check must never break the watch
                w._policy.checked_at = time.monotonic()
            due = w._policy.check_in()
        del w
        wake.wait(0.25 if due is None else min(max(due, 0.01), 1.0))
