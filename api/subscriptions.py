"""The Subscriptions service: durable event subscriptions (raft/subscriptions.py).

Creating, committing and deleting a subscription are replicated commands; reads
answer from this node's applied state, with this node's retained event range so
a consumer can tell where it may read. Events themselves are streamed by
Timers.WatchEventBatches from the subscription's cursor (the SDK's
`Client.subscribe`), so every node serves them and failover is the watch's own.

`OverrunReporter` is the leader's half of "never silently": when this node's
event store trims past a subscription's cursor (only the hard budget may), the
leader proposes MarkSubscriptionOverrun with the exact count for each
subscription it passed. `SkipLostEvents` is the consumer's half, for events gone
on the node it reads from for another reason (a snapshot install).
"""
from __future__ import annotations

import asyncio
import logging

from minoots.kernel import FailedPrecondition, InvalidArgument
from minoots.raft import commands
from minoots.raft.subscriptions import check_kinds, check_subscription_name
from minoots.v1 import subscriptions_pb2 as spb
from minoots.v1 import subscriptions_pb2_grpc

from .convert import ms_timestamp
from .service import Writes, _unary

log = logging.getLogger("minoots.api.subscriptions")

__all__ = ["SubscriptionsService", "OverrunReporter"]


class SubscriptionsService(Writes, subscriptions_pb2_grpc.SubscriptionsServicer):
    def __init__(self, node, bridge, events) -> None:
        self._node = node
        self._bridge = bridge
        self._machine = node.machine
        self._events = events

    def _pb(self, sub) -> spb.Subscription:
        return spb.Subscription(tenant=sub.tenant, name=sub.name, all_tenants=sub.all_tenants, kinds=sub.kinds,
                                cursor=sub.cursor, created_at=ms_timestamp(sub.created_at_ms),
                                overrun=sub.overrun, lost=sub.lost, commits=sub.commits,
                                node_event_floor=self._events.floor, node_event_head=self._events.visible)

    @_unary
    async def CreateSubscription(self, request, context):
        name = check_subscription_name("name", request.name)
        kinds = check_kinds("kinds", list(request.kinds))
        start = request.from_sequence or self._events.visible + 1
        if request.from_sequence and request.from_sequence < self._events.floor:
            raise FailedPrecondition(f"from_sequence {request.from_sequence} is older than this node retains "
                                     f"(events from {self._events.floor})")
        sub = await self._write(commands.CreateSubscription(self._node.clock.now_ms(), request.tenant, name,
                                                            bool(request.all_tenants), kinds, start), context)
        return self._pb(sub)

    @_unary
    async def GetSubscription(self, request, context):
        return self._pb(self._machine.subscription(request.tenant, check_subscription_name("name", request.name)))

    @_unary
    async def ListSubscriptions(self, request, context):
        return spb.ListSubscriptionsResponse(subscriptions=[self._pb(s)
                                                            for s in self._machine.subscriptions(request.tenant)])

    @_unary
    async def CommitSubscription(self, request, context):
        name = check_subscription_name("name", request.name)
        if request.cursor < 1:
            raise InvalidArgument("cursor", "must be an event sequence >= 1")
        sub = self._machine.subscription(request.tenant, name)
        if request.cursor <= sub.cursor:
            return self._pb(sub)          # nothing to move: no write
        return self._pb(await self._write(commands.CommitSubscription(request.tenant, name, request.cursor),
                                          context))

    @_unary
    async def DeleteSubscription(self, request, context):
        name = check_subscription_name("name", request.name)
        return self._pb(await self._write(commands.DeleteSubscription(request.tenant, name), context))

    @_unary
    async def SkipLostEvents(self, request, context):
        name = check_subscription_name("name", request.name)
        sub = self._machine.subscription(request.tenant, name)
        floor = self._events.floor
        if sub.cursor >= floor:
            raise FailedPrecondition(f"nothing is lost on this node: subscription {name!r} is at event {sub.cursor}, "
                                     f"this node serves events from {floor}")
        sub = await self._write(commands.MarkSubscriptionOverrun(request.tenant, name, sub.cursor, floor), context)
        return self._pb(sub)


class OverrunReporter:
    """Leader-side: proposes MarkSubscriptionOverrun for every subscription the event
    store's budget trimmed past (EventLog.on_overrun, called in the tick thread)."""

    def __init__(self, machine, bridge, loop: asyncio.AbstractEventLoop) -> None:
        self._machine = machine
        self._bridge = bridge
        self._loop = loop
        self._floor = 0
        self._task = None
        self.proposed = 0

    def attach(self, events) -> None:
        events.on_overrun = self.on_overrun

    def on_overrun(self, floor: int) -> None:     # tick thread
        self._loop.call_soon_threadsafe(self._wake, floor)

    def _wake(self, floor: int) -> None:           # loop thread
        self._floor = max(self._floor, floor)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._report(), name="subscription-overrun")

    async def _report(self) -> None:
        while True:
            floor = self._floor
            if not self._machine.is_leader():
                return      # the leader reports; a follower's consumers use SkipLostEvents
            for sub in self._machine.subscriptions():
                if sub.cursor < floor:
                    try:
                        await asyncio.wait_for(self._bridge.propose(commands.MarkSubscriptionOverrun(
                            sub.tenant, sub.name, sub.cursor, floor)), 5.0)
                        self.proposed += 1
                        log.warning("events budget trimmed events a durable subscription had not committed",
                                    extra={"tenant": sub.tenant, "subscription": sub.name, "lost": floor - sub.cursor,
                                           "resume": floor})
                    except Exception as exc:   # the next trim reports it again
                        log.error("proposing a subscription overrun failed", extra={"error": repr(exc)})
            if self._floor == floor:
                return
