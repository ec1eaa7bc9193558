"""The leader's tick loop: time enters the replicated state only through here.

The leader sleeps until the kernel's next deadline (not a fixed poll period),
then proposes `tick(now)`. At most one tick is in flight; when it commits, the
loop looks again at once, so a high fire rate coalesces into a few big ticks
instead of a queue of small ones. An idle cluster proposes no ticks at all.
Right after winning an election the new leader looks at once, so whatever came
due during the election fires immediately; with nothing due it proposes nothing
(a tick moves the kernel's last-tick time, so an idle failover or restart would
otherwise change the replicated state for no reason). Ticks never move time backwards even
when this leader's clock is behind the last one's: the kernel clamps them.
"""
from __future__ import annotations

import logging
import threading
import time

from opentelemetry import context as otel_context
from .pysyncobj_compat import FAIL_REASON

from . import commands, tracing
from .clock import Clock

log = logging.getLogger("minoots.raft.ticker")

IDLE_WAIT = 1.0        # seconds: re-check at least this often (leadership, clock steps)
IN_FLIGHT_LIMIT = 2.0  # seconds: give up waiting for a lost tick's callback


_GRAPH_WAKES = frozenset(("cancel", "ack", "ack_lease", "bulk_cancel"))


class Ticker:
    """Proposes ticks while this node leads; runs in its own daemon thread."""

    def __init__(self, machine, clock: Clock, links: "tracing.FireLinks | None" = None) -> None:
        self._machine = machine
        self._links = links          # creating traces of live timers: the fire span links to them
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight = 0        # generation of the tick in flight, 0 when none
        self._generation = 0
        self._sent_at = 0.0
        self.proposed = 0
        self.committed = 0
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)
        machine.leader_listeners.append(self._on_leadership)
        machine.apply_listeners.append(self._on_apply)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def poke(self) -> None:
        """Look at the next deadline again (a create may have brought it forward)."""
        self._wake.set()

    def _on_leadership(self, is_leader: bool) -> None:
        self._wake.set()

    def _on_apply(self, kind: str) -> None:
        # Only a leader proposes ticks: waking a follower's ticker thread on every apply
        # cost a thread switch (and a GIL hand-off) in the tick thread for nothing.
        if kind in ("create", "reschedule", "create_delivery", "delivery_attempt", "delivery_attempts", "lease",
                    "nack_lease", "extend_lease", "create_graph", "bulk_reschedule") and self._machine.is_leader():
            self._wake.set()
        # Graphs (kernel/graph.py): while some timer waits on others, a cancel or an ack may
        # arm a dependent (an earlier deadline): look again.
        elif kind in _GRAPH_WAKES and self._machine.is_leader() and getattr(self._machine, "has_graph", bool)():
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                timeout = self._step()
            except Exception:
                log.exception("ticker step failed")
                timeout = IDLE_WAIT
            if timeout > 0:
                self._wake.wait(timeout)

    def _step(self) -> float:
        if not self._machine.is_leader():
            return IDLE_WAIT
        if self._in_flight:
            if self._clock.monotonic() - self._sent_at < IN_FLIGHT_LIMIT:
                return IN_FLIGHT_LIMIT
            log.warning("tick callback lost; proposing again")
            self._in_flight = 0
        if self._machine.storage_full is not None:
            return IDLE_WAIT            # the log cannot grow here; the node hands leadership away
        deadline = self._machine.next_deadline()
        now = self._clock.now_ms()
        if deadline is not None and deadline <= now:
            self._generation += 1
            gen = self._in_flight = self._generation
            self._sent_at = self._clock.monotonic()
            self.proposed += 1
            started_ns = time.time_ns()
            self._machine.propose(commands.Tick(now),
                                  lambda res, err, gen=gen, t0=started_ns: self._done(gen, err, res, t0))
            return IN_FLIGHT_LIMIT
        if deadline is None:
            return IDLE_WAIT
        return min(max(self._clock.seconds_until(deadline), 0.0), IDLE_WAIT)

    def _done(self, gen: int, err: int, res=None, started_ns: int = 0) -> None:
        if gen == self._in_flight:
            self._in_flight = 0
        if err == FAIL_REASON.SUCCESS:
            self.committed += 1
            if started_ns and tracing.enabled():
                self._trace(res, started_ns)
        self._wake.set()

    def _trace(self, res, started_ns: int) -> None:
        """A span for a committed tick that fired timers, proposal to apply, linked to
        the requests that created them (runs in the tick thread, right after the apply)."""
        try:
            events = getattr(res, "events", None)
            if not events:
                return
            fired = len(res.fired)
            if not fired:
                return
            links = self._links.links_for(events) if self._links is not None else []
            span = tracing.tracer().start_span(
                "raft.tick", context=otel_context.Context(), start_time=started_ns, links=links,
                attributes={"minoots.fired": fired, "minoots.tick_ms": int(res.now_ms)})
            span.end()
        except Exception:
            log.exception("tick span failed")
