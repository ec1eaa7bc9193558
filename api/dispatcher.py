"""The leader's webhook dispatcher: performs delivery attempts and proposes their outcomes.

Only the leader dispatches, on the node's asyncio loop. It learns of due attempts from
`delivery_due` events (applied in the tick thread, handed to the loop) and from a
sweep of the kernel's due deliveries (at once when this node becomes leader, then
every SWEEP_S): a new leader continues from the last committed fact, so an attempt
whose outcome the old leader never committed is made again with the same
webhook-id (at-least-once; receivers deduplicate on it).

Each outcome is proposed with the retry time drawn here (exponential backoff with full
jitter): replicas never draw or read a clock. Outcomes are group-committed: at most one
DeliveryAttempts entry is in flight, and the outcomes that arrive meanwhile go together
in the next (a Raft round per batch, not per attempt).

Isolation: one queue per endpoint (scheme, host, port) drained by at most
PER_ENDPOINT workers, and at most MAX_IN_FLIGHT requests overall, so a slow or dead
endpoint holds up only its own timers. A circuit breaker per endpoint opens after
BREAKER_FAILURES consecutive failures and pauses that endpoint (its queue waits;
no attempt is spent) for a cooldown that doubles up to BREAKER_MAX_S.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections import deque
from typing import Optional
from urllib.parse import urlsplit

import aiohttp

from minoots.kernel import EventKind, KernelError
from minoots.kernel.delivery import MAX_BODY_EXCERPT
from minoots.raft import commands
from minoots.raft.machine import CommandFailed

from .client.webhooks import sign
from .ssrf import AddressPolicy, PolicyResolver, RefusedAddress
from .wirebase import ms_timestamp

log = logging.getLogger("minoots.api.webhooks")

__all__ = ["WebhookDispatcher", "envelope", "webhook_id", "backoff_ms"]

MAX_IN_FLIGHT = 64          # HTTP requests at once, all endpoints
PER_ENDPOINT = 8            # workers (so requests) per endpoint
MAX_QUEUED = 100_000        # attempts waiting at this leader (beyond: left to the next sweep)
MAX_ENDPOINTS = 10_000      # endpoint entries kept (idle ones are dropped first)
SWEEP_S = 1.0
BREAKER_FAILURES = 5
BREAKER_BASE_S = 1.0
BREAKER_MAX_S = 30.0
PROPOSE_TRIES = 3
MAX_OUTCOMES = 1000         # outcomes per DeliveryAttempts entry
READ_CHUNK = 500            # due attempts read per hold of the state lock
FRESH_S = 1.0               # a queued attempt older than this is read again before it is made
USER_AGENT = "MINOOTS-Webhooks/1"
DRAIN_LIMIT = 64 << 10      # bytes of an answer read past the excerpt to keep its connection
_DUE = EventKind.DELIVERY_DUE


def webhook_id(fire_id: int) -> str:
    """The receiver's idempotency key: one per fire (seqs are cluster-wide), the same on
    every attempt, every leader and after a redrive."""
    return f"msg_{fire_id}"


def backoff_ms(policy, attempt: int, rng: random.Random) -> int:
    """Full jitter: uniform(0, min(cap, base * 2**(attempt-1))) ms, drawn by the leader."""
    ceiling = min(policy.backoff_cap_ms, policy.backoff_base_ms * (1 << min(attempt - 1, 40)))
    return int(rng.uniform(0, ceiling))


def envelope(timer, attempt: int) -> bytes:
    """The JSON body (docs/webhooks.md): Standard Webhooks' {type, timestamp, data}."""
    def iso(ms):
        return None if ms is None else ms_timestamp(ms).ToJsonString()

    data = {
        "schema": "minoots.webhook.v1",
        "tenant": timer.tenant,
        "timer_id": timer.id,
        "name": timer.name,
        "fire_id": timer.fire_id,
        "attempt": attempt,
        "scheduled_at": iso(timer.fire_at),
        "fired_at": iso(timer.fired_at),
        "labels": dict(timer.labels),
        "payload_base64": base64.b64encode(timer.payload).decode("ascii"),
    }
    kind = "timer.fired"
    if getattr(timer, "escalation_step", 0):     # an escalation timer "<id>@<seq>" (kernel/occurrences.py)
        kind = "timer.escalated"
        data.update(escalated_timer_id=timer.id.rpartition("@")[0], escalation_step=timer.escalation_step,
                    action_base64=base64.b64encode(timer.action).decode("ascii"))
    elif "@" in timer.id:   # an occurrence timer "<id>@<fire id>" of a recurring timer (kernel/occurrences.py)
        data["recurring_timer_id"] = timer.id.rpartition("@")[0]
    return json.dumps({"type": kind, "timestamp": iso(timer.fired_at), "data": data},
                      separators=(",", ":"), sort_keys=True).encode()


async def _drain_body(resp) -> None:
    """Read (and drop) the rest of a small answer, so its connection goes back to the pool
    for reuse; a body past DRAIN_LIMIT is left unread and its connection closed instead."""
    left = DRAIN_LIMIT
    while left > 0 and not resp.content.at_eof():
        chunk = await resp.content.read(min(left, 16384))
        if not chunk:
            break
        left -= len(chunk)


class _Endpoint:
    __slots__ = ("key", "queue", "workers", "failures", "opens", "open_until", "sent", "failed")

    def __init__(self, key: str) -> None:
        self.key = key
        self.queue: deque = deque()
        self.workers = 0
        self.failures = 0           # consecutive
        self.opens = 0              # consecutive openings (cooldown doubles)
        self.open_until = 0.0       # monotonic
        self.sent = 0
        self.failed = 0

    def state(self, now: float) -> str:
        return "open" if self.open_until > now else ("half_open" if self.opens else "closed")


class WebhookDispatcher:
    def __init__(self, machine, bridge, clock, addresses: AddressPolicy, *, rng: Optional[random.Random] = None,
                 max_in_flight: int = MAX_IN_FLIGHT, per_endpoint: int = PER_ENDPOINT) -> None:
        self._machine = machine
        self._bridge = bridge
        self._clock = clock
        self._addresses = addresses
        self._rng = rng or random.SystemRandom()
        self._per_endpoint = per_endpoint
        self._slots = asyncio.Semaphore(max_in_flight)
        self._endpoints: dict[str, _Endpoint] = {}
        self._pending: set[tuple[str, str]] = set()     # queued or in flight at this node
        self._session: Optional[aiohttp.ClientSession] = None
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task] = set()
        self._outcomes: deque = deque()     # (command, ref) waiting for the next group commit
        self._committing = False
        self.attempts_ok = 0
        self.attempts_failed = 0
        self.dropped = 0
        machine.event_listeners.append(self._on_events)
        machine.leader_listeners.append(self._on_leader)

    # ---- tick thread -> loop --------------------------------------------------------

    def _on_events(self, events) -> None:
        due = [(e.tenant, e.timer_id) for e in events if e.kind == _DUE]
        if due and self._machine.is_leader():
            try:
                self._loop.call_soon_threadsafe(self._enqueue_many, due)
            except RuntimeError:
                pass

    def _on_leader(self, is_leader: bool) -> None:
        if is_leader:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass

    # ---- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Sweep for due attempts at start, on leadership and every SWEEP_S (while leader)."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=self._per_endpoint,
                                           resolver=PolicyResolver(self._addresses), ttl_dns_cache=10),
            headers={"User-Agent": USER_AGENT}, auto_decompress=False)
        while True:
            try:
                if self._machine.is_leader():
                    due = await self._bridge.read(lambda k: k.deliveries_due())
                    self._enqueue_many(due)
            except Exception:
                log.exception("webhook sweep failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), SWEEP_S)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _enqueue_many(self, refs) -> None:
        fresh = []
        for ref in refs:
            if ref in self._pending:
                continue
            if len(self._pending) >= MAX_QUEUED:
                self.dropped += 1        # still due in the kernel: a later sweep takes it
                continue
            self._pending.add(ref)
            fresh.append(ref)
        for i in range(0, len(fresh), READ_CHUNK):     # chunks: a read holds the state lock
            task = self._loop.create_task(self._route_many(fresh[i:i + READ_CHUNK]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _route_many(self, refs: list) -> None:
        """Read the due attempts (one read for the whole batch) and queue each at its endpoint."""
        try:
            found = await self._bridge.read(lambda k: [k.delivery_due(*ref) for ref in refs])
        except Exception:
            log.exception("reading due deliveries failed")
            found = [None] * len(refs)
        for ref, due in zip(refs, found):
            if due is None or self._session is None:
                self._pending.discard(ref)
            else:
                self._route(ref, due)

    def _route(self, ref, due) -> None:
        """Put a due attempt (with the timer as read) on its endpoint's queue."""
        timer = due[0]
        parts = urlsplit(timer.delivery.webhook.url)
        key = f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        ep = self._endpoints.get(key)
        if ep is None:
            if len(self._endpoints) >= MAX_ENDPOINTS:
                for k in [k for k, e in self._endpoints.items() if not e.queue and not e.workers]:
                    del self._endpoints[k]
            ep = self._endpoints[key] = _Endpoint(key)
        ep.queue.append((ref, due, time.monotonic()))
        if ep.workers < self._per_endpoint:
            ep.workers += 1
            task = self._loop.create_task(self._drain(ep))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self, ep: _Endpoint) -> None:
        try:
            while ep.queue:
                wait = ep.open_until - time.monotonic()
                if wait > 0:                       # breaker open: this endpoint pauses, others go on
                    await asyncio.sleep(wait)
                    continue
                ref, due, queued_at = ep.queue.popleft()
                cmd = None
                try:
                    cmd = await self._attempt(ep, ref, due if time.monotonic() - queued_at < FRESH_S else None)
                except asyncio.CancelledError:
                    self._pending.discard(ref)
                    raise
                except Exception:
                    log.exception("webhook attempt failed unexpectedly")
                if cmd is None:
                    self._pending.discard(ref)
                else:
                    # The outcome commits in the background: this endpoint's next request does
                    # not wait for a Raft round. The timer stays pending here until it has.
                    self._outcomes.append((cmd, ref))
                    if not self._committing:
                        self._committing = True
                        task = self._loop.create_task(self._commit_outcomes())
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
        finally:
            ep.workers -= 1

    async def _attempt(self, ep: _Endpoint, ref, found):
        """Make one attempt; returns the outcome command to propose (None: nothing to do).
        `found` is the (timer, attempt) read when it was queued, or None to read it again
        (it waited long, e.g. behind an open breaker, and may have been settled meanwhile)."""
        if not self._machine.is_leader():
            return None
        if found is None:
            found = await self._bridge.read(lambda k: k.delivery_due(*ref))
        if found is None:                          # settled, cancelled or resolved meanwhile
            return None
        timer, n = found
        policy = timer.delivery.policy
        stamp = self._clock.now_ms() // 1000
        if timer.delivery.endpoint is not None:     # a managed endpoint signs with its own secret
            secrets = self._machine.endpoint_signing_secrets(timer.tenant, timer.delivery.endpoint, stamp * 1000)
        else:
            secrets = self._machine.webhook_signing_secrets(timer.tenant, stamp * 1000)
        body = envelope(timer, n)
        msg_id = webhook_id(timer.fire_id)
        headers = dict(timer.delivery.webhook.headers)
        headers.update({"content-type": "application/json", "webhook-id": msg_id,
                        "webhook-timestamp": str(stamp)})
        if secrets:      # both during a rotation: receivers accept either
            headers["webhook-signature"] = " ".join(sign(s, msg_id, stamp, body) for s in secrets)
        status, error, excerpt = 0, "", b""
        async with self._slots:
            started = time.monotonic()
            try:
                if not secrets:
                    error = "no_secret"
                else:
                    timeout = aiohttp.ClientTimeout(total=policy.attempt_timeout_ms / 1000)
                    async with self._session.post(timer.delivery.webhook.url, data=body, headers=headers,
                                                  allow_redirects=False, timeout=timeout) as resp:
                        status = resp.status
                        excerpt = await resp.content.read(MAX_BODY_EXCERPT)
                        await _drain_body(resp)
                    if not 200 <= status < 300:
                        error = "redirect" if 300 <= status < 400 else "http_status"
            except asyncio.TimeoutError:
                error = "timeout"
            except RefusedAddress:
                error = "refused_address"
            except aiohttp.ClientConnectorError as exc:
                error = "refused_address" if isinstance(exc.os_error, RefusedAddress) else "connect"
            except aiohttp.ClientError:
                error = "http_error"
            latency = int((time.monotonic() - started) * 1000)
        ok = not error
        if ok:
            self.attempts_ok += 1
            ep.failures = ep.opens = 0
        else:
            self.attempts_failed += 1
            ep.failed += 1
            ep.failures += 1
            if ep.failures >= BREAKER_FAILURES:
                ep.opens += 1
                ep.open_until = time.monotonic() + min(BREAKER_MAX_S, BREAKER_BASE_S * 2 ** (ep.opens - 1))
                ep.failures = 0
                log.warning("webhook endpoint paused (circuit open)", extra={"endpoint": ep.key})
        ep.sent += 1
        now = self._clock.now_ms()
        next_at = None
        if not ok and n < policy.max_attempts:
            next_at = now + backoff_ms(policy, n, self._rng)
        return commands.DeliveryAttempt(now, timer.tenant, timer.id, timer.fire_id, n, status, latency, error,
                                        bytes(excerpt[:MAX_BODY_EXCERPT]), next_at)

    async def _commit_outcomes(self) -> None:
        """Group commit: propose everything queued as one entry, then whatever came meanwhile."""
        try:
            while self._outcomes:
                batch = [self._outcomes.popleft() for _ in range(min(len(self._outcomes), MAX_OUTCOMES))]
                try:
                    cmd = batch[0][0] if len(batch) == 1 else \
                        commands.DeliveryAttempts(tuple(c for c, _ in batch))
                    await self._propose_outcome(cmd)
                finally:
                    for _, ref in batch:
                        self._pending.discard(ref)
        finally:
            self._committing = False

    async def _propose_outcome(self, cmd) -> None:
        for i in range(PROPOSE_TRIES):
            try:
                result = await asyncio.wait_for(self._bridge.propose(cmd), 10.0)
            except (CommandFailed, asyncio.TimeoutError) as exc:
                log.info("delivery outcome not committed; retrying", extra={"error": repr(exc)})
                if not self._machine.is_leader():
                    return                      # the next leader re-dispatches the attempt
                await asyncio.sleep(0.2 * (i + 1))
                continue
            if isinstance(result, KernelError):     # stale: another leader recorded this attempt
                log.info("delivery outcome refused", extra={"error": str(result)})
            return

    # ---- reporting ------------------------------------------------------------------

    def stats(self) -> dict:
        now = time.monotonic()
        return {
            "pending": len(self._pending),
            "attempts_ok": self.attempts_ok,
            "attempts_failed": self.attempts_failed,
            "endpoints": {k: {"state": e.state(now), "queued": len(e.queue), "sent": e.sent, "failed": e.failed}
                          for k, e in sorted(self._endpoints.items())},
        }

    def collector(self):
        from .telemetry import DeliveryCollector

        return DeliveryCollector(self)
