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

from pysyncobj import FAIL_REASON

from .clock import Clock

log = logging.getLogger("minoots.raft.ticker")

IDLE_WAIT = 1.0        # seconds: re-check at least this often (leadership, clock steps)
IN_FLIGHT_LIMIT = 2.0  # seconds: give up waiting for a lost tick's callback


class Ticker:
    """Proposes ticks while this node leads; runs in its own daemon thread."""

    def __init__(self, machine, clock: Clock) -> None:
        self._machine = machine
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
        if kind in ("create", "reschedule"):
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
        import time

        if not self._machine.is_leader():
            return IDLE_WAIT
        if self._in_flight:
            if time.monotonic() - self._sent_at < IN_FLIGHT_LIMIT:
                return IN_FLIGHT_LIMIT
            log.warning("tick callback lost; proposing again")
            self._in_flight = 0
        deadline = self._machine.next_deadline()
        now = self._clock.now_ms()
        if deadline is not None and deadline <= now:
            self._generation += 1
            gen = self._in_flight = self._generation
            self._sent_at = time.monotonic()
            self.proposed += 1
            self._machine.propose(("tick", now), lambda res, err, gen=gen: self._done(gen, err))
            return IN_FLIGHT_LIMIT
        if deadline is None:
            return IDLE_WAIT
        return min(max(self._clock.seconds_until(deadline), 0.0), IDLE_WAIT)

    def _done(self, gen: int, err: int) -> None:
        if gen == self._in_flight:
            self._in_flight = 0
        if err == FAIL_REASON.SUCCESS:
            self.committed += 1
        self._wake.set()
