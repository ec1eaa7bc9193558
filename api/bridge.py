"""Where PySyncObj's tick thread and the asyncio loop meet. Nothing else crosses threads.

Three crossings, each one-way and non-blocking for the side that starts it:

* propose: the loop hands a command to PySyncObj (a thread-safe queue put) and
  gets an `asyncio.Future`; PySyncObj's callback runs in the tick thread after
  the entry was applied on *this* node and resolves the future with
  `loop.call_soon_threadsafe`. A follower forwards the command to the leader and
  calls back once it has applied the entry itself, so a write sent to any node
  answers with that node's state already containing it.
* read: a function over the applied kernel runs under the machine's lock in a
  small thread pool, so a long apply holding the lock never stalls the loop.
* events: the apply hook (tick thread) says "new events" with `notify_threadsafe`;
  coalesced, so a burst of applies wakes the loop once. Watchers wait on the
  loop side with `wait_events`.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from opentelemetry.trace import Status, StatusCode
from minoots.raft.pysyncobj_compat import FAIL_REASON

from minoots.raft import commands, tracing
from minoots.raft.machine import FAIL_NAMES, CommandFailed

__all__ = ["RaftBridge", "CommandFailed", "leader_reachable"]


class RaftBridge:
    def __init__(self, machine, loop: asyncio.AbstractEventLoop, *, read_threads: int = 4,
                 admin_threads: int = 2) -> None:
        self.machine = machine
        self.loop = loop
        self._reads = ThreadPoolExecutor(read_threads, thread_name_prefix="api-read")
        # Membership changes, snapshots and transfers block for seconds: their own pool,
        # so they never queue behind (or in front of) reads.
        self._admin = ThreadPoolExecutor(admin_threads, thread_name_prefix="api-admin")
        self._notify_pending = False
        self._events_waiter: asyncio.Future = loop.create_future()
        self._closed = False

    # ---- replicated writes -------------------------------------------------------

    def propose(self, command: commands.Command, *, trace_parent=None, trace_links=None) -> asyncio.Future:
        """Replicate `command`; the future resolves (on the loop) with the apply result,
        or fails with CommandFailed when Raft did not commit it. Cancelling the future
        abandons the wait, not the command (it may still commit).

        With tracing on, a `raft.propose` span covers proposal to apply on this node; its
        parent is `trace_parent` (an OTel Context) or else the caller's current span."""
        fut = self.loop.create_future()
        loop = self.loop
        span = None
        if tracing.enabled():
            span = tracing.tracer().start_span("raft.propose", context=trace_parent, links=trace_links,
                                               attributes={"minoots.command": command.kind})

        def done(result: Any, err: int) -> None:   # PySyncObj's tick thread
            if span is not None:
                if err != FAIL_REASON.SUCCESS:
                    span.set_status(Status(StatusCode.ERROR, f"not committed: {FAIL_NAMES.get(err, err)}"))
                elif isinstance(result, Exception):
                    span.set_attribute("minoots.error", getattr(result, "code", type(result).__name__))
                span.end()
            try:
                loop.call_soon_threadsafe(_settle, fut, result, err)
            except RuntimeError:                    # the loop is closed: nobody is waiting
                pass

        try:
            self.machine.propose(command, done)
        except BaseException:
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, "propose failed"))
                span.end()
            raise
        return fut

    # ---- reads -------------------------------------------------------------------

    async def read(self, fn: Callable) -> Any:
        """fn(kernel State) under the machine lock, off the loop. Keep fn short."""
        return await self.loop.run_in_executor(self._reads, self.machine.read, fn)

    async def call(self, fn: Callable, *args) -> Any:
        """Run a short non-replicated function (e.g. a status snapshot) off the loop."""
        return await self.loop.run_in_executor(self._reads, fn, *args)

    async def blocking(self, fn: Callable, *args) -> Any:
        """Run a blocking node operation (membership, snapshot, transfer) off the loop."""
        return await self.loop.run_in_executor(self._admin, fn, *args)

    # ---- events ------------------------------------------------------------------

    def notify_threadsafe(self) -> None:
        """New events are readable (any thread). Coalesced: at most one wake-up queued."""
        if self._notify_pending or self._closed:
            return
        self._notify_pending = True
        try:
            self.loop.call_soon_threadsafe(self._wake_watchers)
        except RuntimeError:
            pass

    def _wake_watchers(self) -> None:
        self._notify_pending = False
        fut, self._events_waiter = self._events_waiter, self.loop.create_future()
        if not fut.done():
            fut.set_result(None)

    async def wait_events(self, timeout: float) -> None:
        """Return when events were added after this call began, or after `timeout` seconds.
        Take the waiter before awaiting: a notify between a check and this call is not lost
        (both run on the loop thread)."""
        await asyncio.wait((self._events_waiter,), timeout=timeout)

    def close(self) -> None:
        self._closed = True
        self._reads.shutdown(wait=False, cancel_futures=True)
        self._admin.shutdown(wait=False, cancel_futures=True)


def leader_reachable(machine) -> bool:
    """This node leads, or knows a leader it is connected to.

    PySyncObj keeps a follower's last leader until an election, and a follower that
    is connected to nobody never starts one: a lone survivor would go on "knowing"
    a dead leader (and forwarding writes into the void). The connection is the test.
    """
    return machine.leader_connected()


def _settle(fut: asyncio.Future, result: Any, err: int) -> None:
    if fut.done():                  # the caller gave up (deadline, cancellation)
        return
    if err != FAIL_REASON.SUCCESS:
        fut.set_exception(CommandFailed(err))
    else:
        fut.set_result(result)
