"""Durable subscriptions for the blocking `Client`: a named cursor the cluster keeps.

A plain `watch` keeps its place in the client: if it is away longer than the
cluster's event retention, it gets OutOfRange. A durable subscription keeps its
place in the replicated state, and retention keeps every event it has not
committed (up to the hard events budget; past it the subscription is marked
`overrun` with the exact number of events it lost, never silently).

    with client.subscribe("billing") as sub:
        for event in sub:
            handle(event)          # everything before this event is committed as you go

`subscribe` streams from the subscription's cursor with its filters (any node,
surviving failover like `watch`), and commits the cursor: every `commit_every`
events or `commit_interval` seconds (what the loop has finished: an event counts
as processed once the next one is asked for), and everything handed out on
`commit()` and `close()`. After a crash the consumer sees again at most the
events since its last commit (at-least-once). A subscription with filters also
commits the progress the server reports through filtered-out stretches, so an
idle filter does not hold retention back.

When the events from the cursor are gone anyway (the budget overran it, or every
node it can reach installed a snapshot past it), `subscribe(on_loss="resync")`
recovers instead of raising: it marks the loss on the cluster (SkipLostEvents,
counted in `lost`), lists the timers that fired since the last fire time it saw
(`resynced`, from ListTimers' fired_at range) for the caller to handle, and goes
on live. The default `on_loss="raise"` raises OutOfRange.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator, Optional

from minoots.v1 import subscriptions_pb2, subscriptions_pb2_grpc

from ..types import Event, EventKind, FailedPrecondition, MinootsError, OutOfRange, Timer
from . import wire
from .policy import DEFAULT_STALL_TIMEOUT

__all__ = ["SubscriptionInfo", "SubscriptionMethods", "Subscriber"]


@dataclass(frozen=True)
class SubscriptionInfo:
    tenant: str
    name: str
    all_tenants: bool
    kinds: tuple                 # EventKind values; empty: every kind
    cursor: int                  # next event not committed
    created_at: Optional[datetime]
    overrun: bool                # the events budget trimmed events it had not committed
    lost: int                    # how many, in total
    commits: int
    node_event_floor: int        # the answering node's oldest retained event
    node_event_head: int         # and newest applied one


def subscription_from_pb(pb: subscriptions_pb2.Subscription) -> SubscriptionInfo:
    created = wire.ts_to_datetime(pb.created_at) if pb.HasField("created_at") else None
    return SubscriptionInfo(pb.tenant, pb.name, pb.all_tenants, tuple(EventKind(k) for k in pb.kinds), pb.cursor,
                            created, pb.overrun, pb.lost, pb.commits, pb.node_event_floor, pb.node_event_head)


class SubscriptionMethods:
    """A mixin of `Client`: routing and retries come from its `_call`. Create and delete are
    not blindly retried after an unknown outcome (the SDK reads back instead); commits are
    idempotent (the cursor only moves forward)."""

    def _subscriptions(self, addr: str):
        return self.node_stub(addr, subscriptions_pb2_grpc.SubscriptionsStub)

    def create_subscription(self, name: str, *, tenant: Optional[str] = None, kinds=None, from_sequence: int = 0,
                            all_tenants: bool = False, timeout: Optional[float] = None) -> SubscriptionInfo:
        """A durable subscription named `name` in `tenant` (default: the client's tenant),
        starting at event `from_sequence` (0: the next event), receiving `kinds` (EventKinds
        or names; all when None). `all_tenants=True` sees every tenant's events (tokens that
        see every tenant only)."""
        req = subscriptions_pb2.CreateSubscriptionRequest(
            tenant=self._tenant(tenant) or "", name=name, from_sequence=from_sequence, all_tenants=all_tenants,
            kinds=wire.event_kinds(kinds))
        resp, _ = self._call("create_subscription",
                             lambda a, t: self._subscriptions(a).CreateSubscription(req, timeout=t),
                             safe_only=True, timeout=timeout)
        return subscription_from_pb(resp)

    def get_subscription(self, name: str, *, tenant: Optional[str] = None,
                         timeout: Optional[float] = None) -> SubscriptionInfo:
        req = subscriptions_pb2.SubscriptionRef(tenant=self._tenant(tenant) or "", name=name)
        resp, _ = self._call("get_subscription", lambda a, t: self._subscriptions(a).GetSubscription(req, timeout=t),
                             timeout=timeout)
        return subscription_from_pb(resp)

    def list_subscriptions(self, *, tenant: Optional[str] = None,
                           timeout: Optional[float] = None) -> list[SubscriptionInfo]:
        req = subscriptions_pb2.ListSubscriptionsRequest(tenant=self._tenant(tenant) or "")
        resp, _ = self._call("list_subscriptions",
                             lambda a, t: self._subscriptions(a).ListSubscriptions(req, timeout=t), timeout=timeout)
        return [subscription_from_pb(s) for s in resp.subscriptions]

    def delete_subscription(self, name: str, *, tenant: Optional[str] = None,
                            timeout: Optional[float] = None) -> SubscriptionInfo:
        req = subscriptions_pb2.SubscriptionRef(tenant=self._tenant(tenant) or "", name=name)
        resp, _ = self._call("delete_subscription",
                             lambda a, t: self._subscriptions(a).DeleteSubscription(req, timeout=t),
                             safe_only=True, timeout=timeout)
        return subscription_from_pb(resp)

    def commit_subscription(self, name: str, cursor: int, *, tenant: Optional[str] = None,
                            timeout: Optional[float] = None) -> SubscriptionInfo:
        """Every event below `cursor` is processed (the cursor never moves back)."""
        req = subscriptions_pb2.CommitSubscriptionRequest(tenant=self._tenant(tenant) or "", name=name, cursor=cursor)
        resp, _ = self._call("commit_subscription",
                             lambda a, t: self._subscriptions(a).CommitSubscription(req, timeout=t), timeout=timeout)
        return subscription_from_pb(resp)

    def skip_lost_events(self, name: str, *, tenant: Optional[str] = None, node: Optional[str] = None,
                         timeout: Optional[float] = None) -> SubscriptionInfo:
        """Count the events gone from the subscription's cursor as lost and move it to the
        oldest event the answering node (`node`, default: any) still serves."""
        req = subscriptions_pb2.SubscriptionRef(tenant=self._tenant(tenant) or "", name=name)
        if node is not None:
            return subscription_from_pb(self._subscriptions(node).SkipLostEvents(req, timeout=timeout or self.timeout))
        resp, _ = self._call("skip_lost_events",
                             lambda a, t: self._subscriptions(a).SkipLostEvents(req, timeout=t), timeout=timeout)
        return subscription_from_pb(resp)

    def subscribe(self, name: str, *, tenant: Optional[str] = None, commit_every: int = 1000,
                  commit_interval: float = 1.0, on_loss: str = "raise",
                  reconnect_timeout: Optional[float] = None,
                  stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> "Subscriber":
        """Iterate over the subscription's events from its committed cursor, committing as
        it goes (see the module doc). `on_loss`: "raise" (OutOfRange) or "resync"."""
        if on_loss not in ("raise", "resync"):
            raise ValueError(f"on_loss must be 'raise' or 'resync', got {on_loss!r}")
        if commit_every < 1 or commit_interval <= 0:
            raise ValueError("commit_every must be >= 1 and commit_interval > 0")
        return Subscriber(self, name, self._tenant(tenant) or "", commit_every, commit_interval, on_loss,
                          self.timeout if reconnect_timeout is None else reconnect_timeout, stall_timeout)


class Subscriber(Iterator[Event]):
    """The iterator `Client.subscribe` returns (a context manager: close() commits)."""

    def __init__(self, client, name: str, tenant: str, commit_every: int, commit_interval: float, on_loss: str,
                 reconnect_timeout: float, stall_timeout: Optional[float]) -> None:
        self._client = client
        self.name, self.tenant = name, tenant
        self._commit_every, self._commit_interval, self._on_loss = commit_every, commit_interval, on_loss
        self._reconnect_timeout, self._stall_timeout = reconnect_timeout, stall_timeout
        self.info = client.get_subscription(name, tenant=tenant)
        self.committed = self.info.cursor          # the cursor the cluster holds (as far as we know)
        self._yielded: Optional[int] = None        # sequence of the last event handed out
        self._done = self.committed                # every event below this one is finished
        self._waiting = False                      # the loop is inside __next__ (holds no event)
        self.lost = 0                              # events this subscriber could not see (marked on the cluster)
        self.resynced: list[Timer] = []            # timers that fired while events were lost (on_loss="resync")
        self.last_fired_at_ms: Optional[int] = None
        self.commit_errors = 0                     # automatic commits that failed (retried by the next)
        self.last_commit_error: Optional[BaseException] = None
        self._closed = False
        self._lock = threading.Lock()
        self._watch = None
        self._open(self.committed)
        self._stop = threading.Event()
        self._committer = threading.Thread(target=self._commit_loop, name=f"minoots-subscription-{name}",
                                           daemon=True)
        self._committer.start()

    def _open(self, cursor: int) -> None:
        info = self.info
        kinds = list(info.kinds) or None
        self._watch = self._client.watch(cursor, tenant=None if info.all_tenants else info.tenant, kinds=kinds,
                                         reconnect_timeout=self._reconnect_timeout, stall_timeout=self._stall_timeout)

    # ---- iteration

    def __iter__(self) -> "Subscriber":
        return self

    def __next__(self) -> Event:
        if self._closed:
            raise StopIteration
        with self._lock:
            if self._yielded is not None:          # the loop is back: the last event is done
                self._done = max(self._done, self._yielded + 1)
            self._waiting = True
        try:
            self._maybe_commit()
            while True:
                try:
                    ev = next(self._watch)
                except OutOfRange:
                    if self._on_loss != "resync" or self._closed:
                        raise
                    self._resync()
                    continue
                with self._lock:
                    self._yielded = ev.sequence
                    self._waiting = False
                if ev.kind == EventKind.FIRED and ev.at is not None:
                    self.last_fired_at_ms = wire.time_to_ms(ev.at, "at")
                return ev
        finally:
            self._waiting = False

    def processed(self) -> int:
        """The cursor this subscriber may commit: past every event the loop has finished (an
        event is finished once the next one is asked for), and, while the loop waits for
        more, past what the server examined for it (filtered-out stretches)."""
        with self._lock:
            done = max(self.committed, self._done)
            if self._waiting and self._watch is not None:
                done = max(done, self._watch._policy.cursor.next)
            return done

    # ---- committing

    def commit(self) -> int:
        """Commit every event handed out so far (call it once the current one is handled;
        close() does too). Returns the committed cursor."""
        with self._lock:
            if self._yielded is not None:
                self._done = max(self._done, self._yielded + 1)
        return self._commit()

    def _commit(self) -> int:
        cursor = self.processed()
        if cursor > self.committed:
            info = self._client.commit_subscription(self.name, cursor, tenant=self.tenant)
            with self._lock:
                self.committed = max(self.committed, info.cursor)
                self._last_commit = time.monotonic()
        return self.committed

    _last_commit = 0.0

    def _maybe_commit(self) -> None:
        if self._done - self.committed >= self._commit_every:
            self._try_commit()

    def _commit_loop(self) -> None:
        while not self._stop.wait(self._commit_interval):
            self._try_commit()

    def _try_commit(self) -> None:
        """An automatic commit: one that fails (no leader during a failover, say) must not stop
        the stream; the next one commits more. Counted in `commit_errors`."""
        try:
            self._commit()
        except MinootsError as exc:
            self.commit_errors += 1
            self.last_commit_error = exc

    # ---- losing events

    def _resync(self) -> None:
        """The events from our cursor are gone everywhere we can reach: mark the loss on the
        cluster, list what fired since the last fire we saw, and go on live."""
        self._watch.close()
        before = max(self.processed(), self._watch._policy.cursor.next)
        try:
            info = self._client.skip_lost_events(self.name, tenant=self.tenant)
        except FailedPrecondition:
            # The cluster moved the cursor already (the leader marked the overrun when its
            # budget trimmed): go on from there.
            info = self._client.get_subscription(self.name, tenant=self.tenant)
        with self._lock:
            self.lost += max(0, info.cursor - before)
            self.committed = max(self.committed, info.cursor)
            self.info = info
        since = self.last_fired_at_ms
        if since is None:
            since = wire.time_to_ms(info.created_at, "created_at") if info.created_at is not None else 0
        self.resynced.extend(self._client.list(tenant=None if info.all_tenants else info.tenant,
                                               fired_at_from=since))
        with self._lock:
            self._done = max(self._done, info.cursor)
        self._open(info.cursor)

    # ---- lifecycle

    @property
    def watch(self):
        return self._watch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self.commit()
        finally:
            if self._watch is not None:
                self._watch.close()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
