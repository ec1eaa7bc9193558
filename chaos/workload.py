"""The drills' client workload and event watchers, through the public SDK only.

`Workload` runs `threads` client threads until stopped (or `max_ops` each):
every operation is one of

* create      one timer, fire_at = now + uniform(min_delay, max_delay)
* batch       create_many of 2..8 timers (one replicated command)
* idempotent  create with an idempotency key, then the same call again twice
              (as a client retrying would): all three must return one timer
* cancel      cancel one of this thread's timers that is not yet due
* reschedule  move one of them to a new fire_at (absolute, safe to retry)

and records what the cluster acknowledged in the `Ledger`. A call that raises
(after the SDK's own retries) is recorded as "outcome unknown" — never as
acknowledged. Each thread sleeps `pause` between operations: the load is kept
modest on purpose (2 cores, shared); this is about correctness, not throughput.

`Watcher` consumes `Client.watch(from_sequence)` for the whole drill; the SDK
reconnects to another member with its cursor after a failure. When the SDK
gives up (no member for `reconnect_timeout`, or a skipped sequence, which it
reports as DATA_LOSS) the error is recorded and the watch resumes from the
last sequence seen + 1, a bounded number of times.
"""
from __future__ import annotations

import random
import threading
import time
import uuid

import minoots
from minoots.api.types import EventKind, FailedPrecondition, MinootsError, TimerSpec
from minoots.raft.clock import now_ms

from .ledger import EventRec, Ledger


class Workload:
    OPS = (("create", 40), ("batch", 20), ("idempotent", 10), ("cancel", 15), ("reschedule", 15))

    def __init__(self, addresses: list[str], ledger: Ledger, *, threads: int = 3, pause: float = 0.05,
                 min_delay_ms: int = 50, max_delay_ms: int = 3000, max_ops: int = 100_000,
                 seed: int | None = None, timeout: float = 15.0, attempt_timeout: float = 2.0) -> None:
        self.addresses = list(addresses)
        self.ledger = ledger
        self.threads = threads
        self.pause = pause
        self.min_delay_ms = min_delay_ms
        self.max_delay_ms = max(max_delay_ms, min_delay_ms)
        self.max_ops = max_ops
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.stop_event = threading.Event()
        self.ops = {name: 0 for name, _ in self.OPS}
        self._seed = seed if seed is not None else random.randrange(2**32)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> "Workload":
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), name=f"workload-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and join (an in-flight call finishes within the client's timeout)."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ---- one client thread ----------------------------------------------------

    def _run(self, i: int) -> None:
        rng = random.Random(self._seed * 1000 + i)
        names, weights = zip(*self.OPS)
        with minoots.Client(self.addresses, timeout=self.timeout, attempt_timeout=self.attempt_timeout,
                            tenant=self.ledger.tenant) as client:
            mine: list[str] = []
            for _ in range(self.max_ops):
                if self.stop_event.is_set():
                    return
                op = rng.choices(names, weights)[0]
                if op in ("cancel", "reschedule"):
                    open_ids = set(self.ledger.pending_ids(now_ms() + 100))
                    pending = [t for t in mine[-50:] if t in open_ids]
                    if not pending:
                        op = "create"
                try:
                    getattr(self, "_" + op)(client, rng, mine) if op not in ("cancel", "reschedule") \
                        else getattr(self, "_" + op)(client, rng, pending)
                except Exception as exc:  # noqa: BLE001 - a drill must never die on one call
                    self.ledger.op_failed(f"{op}:{type(exc).__name__}")
                with self._lock:
                    self.ops[op] += 1
                if self.stop_event.wait(self.pause):
                    return

    def _fire_at(self, rng: random.Random) -> int:
        return now_ms() + rng.randint(self.min_delay_ms, self.max_delay_ms)

    def _create(self, client, rng, mine) -> None:
        tid = uuid.uuid4().hex
        fire_at = self._fire_at(rng)
        try:
            t = client.create(fire_at, id=tid)
        except MinootsError:
            self.ledger.create_unknown(tid, fire_at)
            return
        self.ledger.created(t.id, t.fire_at_ms, now_ms())
        mine.append(t.id)

    def _batch(self, client, rng, mine) -> None:
        specs = [TimerSpec(fire_at=self._fire_at(rng), id=uuid.uuid4().hex) for _ in range(rng.randint(2, 8))]
        try:
            timers = client.create_many(specs)
        except MinootsError:
            for s in specs:
                self.ledger.create_unknown(s.id, s.fire_at, "batch")
            return
        ack = now_ms()
        for t in timers:
            self.ledger.created(t.id, t.fire_at_ms, ack, batch=True)
            mine.append(t.id)

    def _idempotent(self, client, rng, mine) -> None:
        key = "k-" + uuid.uuid4().hex
        fire_at = self._fire_at(rng)
        results = []
        for attempt in range(3):
            # A fresh id each time, as a client that lost the first answer might send: the key decides.
            tid = uuid.uuid4().hex
            try:
                t = client.create(fire_at, id=tid, idempotency_key=key)
            except MinootsError:
                self.ledger.create_unknown(tid, fire_at, "idempotent")
                continue
            results.append((t.id, bool(t.created)))
            if not any(r[0] == t.id for r in results[:-1]):
                self.ledger.created(t.id, t.fire_at_ms, now_ms(), key=key)
                mine.append(t.id)
        if len(results) >= 2:
            self.ledger.idempotent_retry(key, results)

    def _cancel(self, client, rng, pending) -> None:
        tid = rng.choice(pending)
        try:
            client.cancel(tid)
        except FailedPrecondition:
            return   # already fired: the cancel came too late, nothing promised
        except MinootsError:
            self.ledger.cancel_unknown(tid)
            return
        self.ledger.cancelled(tid, now_ms())

    def _reschedule(self, client, rng, pending) -> None:
        tid = rng.choice(pending)
        fire_at = self._fire_at(rng)
        try:
            t = client.reschedule(tid, fire_at)
        except FailedPrecondition:
            return   # fired in the meantime
        except MinootsError:
            self.ledger.reschedule_unknown(tid, fire_at)
            return
        self.ledger.rescheduled(tid, t.fire_at_ms, now_ms())


class Watcher:
    """One watch over the whole drill, recording every event into the ledger."""

    def __init__(self, name: str, addresses: list[str], ledger: Ledger, *, from_sequence: int = 1,
                 reconnect_timeout: float = 20.0, max_restarts: int = 20) -> None:
        self.name = name
        self.addresses = list(addresses)
        self.ledger = ledger
        self.from_sequence = from_sequence
        self.reconnect_timeout = reconnect_timeout
        self.max_restarts = max_restarts
        self.last_sequence: int | None = None
        self.reconnects = 0
        self.restarts = 0
        self._stop = threading.Event()
        self._watch = None
        self._lock = threading.Lock()
        self._client = minoots.Client(self.addresses, timeout=reconnect_timeout, attempt_timeout=2.0)
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> "Watcher":
        self._thread.start()
        return self

    def _run(self) -> None:
        nxt = self.from_sequence
        while not self._stop.is_set() and self.restarts <= self.max_restarts:
            with self._lock:
                if self._stop.is_set():
                    break
                self._watch = self._client.watch(from_sequence=nxt, reconnect_timeout=self.reconnect_timeout)
            try:
                for ev in self._watch:
                    self.last_sequence = ev.sequence
                    self.ledger.saw(EventRec(self.name, ev.sequence, ev.kind.name.lower(), ev.timer_id,
                                             ev.at_ms, ev.fire_at_ms, now_ms(), ev.tenant))
                break   # closed
            except MinootsError as exc:
                if self._stop.is_set():
                    break
                self.ledger.watch_error(self.name, f"{exc.code}: {exc}")
                self.restarts += 1
                self.reconnects += self._watch.reconnects
                nxt = (self.last_sequence or (nxt - 1)) + 1
                self._stop.wait(0.5)
            except Exception as exc:  # noqa: BLE001
                if self._stop.is_set():
                    break
                self.ledger.watch_error(self.name, f"{type(exc).__name__}: {exc}")
                self.restarts += 1
                nxt = (self.last_sequence or (nxt - 1)) + 1
                self._stop.wait(0.5)
        if self._watch is not None:
            self.reconnects += self._watch.reconnects

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            w = self._watch
        if w is not None:
            w.close()
        self._thread.join(timeout=10)
        self._client.close()


def wait_seen(ledger: Ledger, timer_id: str, kind: str = "created", timeout: float = 20.0,
              watcher: str | None = None) -> bool:
    """Wait (bounded) until `watcher` (default: any) saw `kind` for `timer_id`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ledger._lock:
            streams = [ledger.events.get(watcher, [])] if watcher else list(ledger.events.values())
            if any(e.timer_id == timer_id and e.kind == kind for evs in streams for e in evs):
                return True
        time.sleep(0.05)
    return False


def settle(ledger: Ledger, addresses: list[str], *, grace_ms: int = 3000, max_wait: float = 60.0) -> int:
    """After the workload stopped: wait until every acknowledged, uncancelled timer was seen firing,
    or until max(deadline) + grace passed (bounded by max_wait); then look up the final state of
    every one not seen firing. Returns end_ms: timers due before it were expected to have fired
    (one second before the end, so a timer due in the very last moment is not counted missed)."""
    start = time.monotonic()
    horizon = ledger.max_deadline_ms() + grace_ms
    while time.monotonic() - start < max_wait:
        missing = ledger.expected_to_fire() - ledger.fired_ids()
        if not missing and now_ms() >= ledger.max_deadline_ms():
            break
        if now_ms() >= horizon:
            break
        time.sleep(0.1)
    end_ms = now_ms() - 1000
    missing = ledger.expected_to_fire() - ledger.fired_ids()
    if missing:
        with minoots.Client(addresses, timeout=10.0, attempt_timeout=2.0, tenant=ledger.tenant) as c:
            for tid in sorted(missing)[:2000]:
                try:
                    ledger.final_states[tid] = c.get(tid).state.name.lower()
                except minoots.NotFound:
                    ledger.final_states[tid] = "not_found"
                except MinootsError as exc:
                    ledger.final_states[tid] = f"unknown ({exc.code})"
    return end_ms


__all__ = ["Workload", "Watcher", "settle", "wait_seen", "now_ms", "EventKind"]
