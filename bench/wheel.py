"""Microbenchmark: the compiled timing wheel against what a Python user writes by hand.

Run it as ``minoots bench wheel``.

The workload (deterministic for a given seed)
---------------------------------------------
- ``timers`` distinct random uint64 keys, deadlines uniform in
  ``[START_MS + 1, START_MS + span_ms]`` (START_MS is a realistic epoch time in
  ms, so the wheel works with real-sized timestamps, not small integers);
- **insert** all of them;
- **cancel** half of them (a random sample, in random order);
- **reschedule** 10% of ``timers`` (a random sample of the survivors) to new
  random deadlines in the same span;
- **expire**: advance through to the end, stopping only at the milliseconds
  where something is due: ``t = next_deadline(); advance(t)`` until empty. No
  peer spins over the millions of empty milliseconds in between.

The peers
---------
- ``wheel (per-call)``: ``Wheel.insert`` / ``cancel`` / ``reschedule`` called
  once per timer from a Python loop (what a caller with one timer at a time
  gets).
- ``wheel (batch)``: ``Wheel.insert_many`` / ``cancel_many`` over the whole
  batch, given Python lists (the generic path). There is no batch reschedule,
  so its reschedule phase is the same per-call loop; its expire phase is the
  same ``next_deadline``/``advance`` loop.
- ``wheel (batch, arrays)``: the same, but the keys and deadlines are handed
  over as ``array('Q')`` / ``array('q')``, which ``insert_many`` /
  ``cancel_many`` read in place (no Python object per timer). Building the
  arrays from the lists is not timed (the data is assumed to be columnar
  already, as in the kernel); its cost is reported separately
  (``array_build_seconds``).
- ``heapq (lazy deletion)``: the scheduler a Python user writes by hand: a heap
  of entries ``[deadline, key, alive]`` plus a dict key -> entry. Insert checks
  the dict for a duplicate and pushes; cancel pops the dict entry and clears
  ``alive``; reschedule cancels and pushes a new entry; expire pops dead
  entries off the top, and then every entry with ``deadline <= t`` for the
  earliest live ``t``. It does not validate deadlines (the wheel does).
- ``asyncio call_at``: a real ``asyncio.SelectorEventLoop``'s timer heap:
  insert is ``loop.call_at(when, callback, key)`` (keeping the ``TimerHandle``
  in a dict, as a user must to cancel it), cancel is ``TimerHandle.cancel()``,
  reschedule is cancel + a new ``call_at``. No callback runs during those
  phases. **Expire** runs the unmodified loop (``run_forever``) on a virtual
  clock: the loop's ``time()`` returns a counter, and its selector's
  ``select(timeout)`` advances the counter by ``timeout`` instead of sleeping
  and reports no I/O. So the measured time is what the loop itself spends
  walking its timer heap to the end: computing each wake-up, purging cancelled
  handles (including its periodic heap rebuild), popping the due handles and
  running each live one's callback (``list.append(key)``, recording the
  expiry). Not measured for asyncio: real sleeping, the ``epoll_wait`` system
  call per wake-up, and any I/O. asyncio fires handles with equal ``when`` in
  heap order, not by key, so it is checked for the same *set* of keys, fired in
  non-decreasing deadline order.

Correctness is checked inside the run: both wheel variants and the heapq peer
must expire exactly the same keys in the same (deadline, key) order, equal to
the order computed directly from the workload; any difference raises
:class:`WheelBenchError`.

Memory ("bytes per timer", with all ``timers`` timers held, measured in a
separate untimed pass): the wheel reports ``Wheel.memory_bytes() / len(wheel)``
(its C arrays, allocated capacity included); the heapq and asyncio peers report
the ``tracemalloc`` delta of building their structures (entries or handles, the
heap list, the key dict; the keys and deadlines themselves are inputs that
exist beforehand and are not counted).

Timing uses ``time.perf_counter`` around each phase, one run per peer, with
the garbage collector enabled (as in a real process; a ``gc.collect()``
precedes each phase). The machine's noise applies: read ratios, not digits.
"""
from __future__ import annotations

import array
import asyncio
import gc
import heapq
import json
import os
import platform
import random
import selectors
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = [
    "WheelBenchError",
    "DEFAULT_SEED",
    "DEFAULT_SPAN_MS",
    "DEFAULT_TIMERS",
    "START_MS",
    "Workload",
    "check_output_path",
    "format_report",
    "make_workload",
    "run",
    "write_json",
]

DEFAULT_TIMERS = 1_000_000
DEFAULT_SPAN_MS = 3_600_000  # one hour
DEFAULT_SEED = 0
START_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z, in ms since the Unix epoch
CANCEL_FRACTION = 0.5
RESCHEDULE_FRACTION = 0.1
TARGET_SPEEDUP = 10.0  # wheel vs heapq on insert+cancel+expire
TARGET_BYTES_PER_TIMER = 64

PHASES = ("insert", "cancel", "reschedule", "expire")
WHEELS = ("wheel_per_call", "wheel_batch", "wheel_arrays")
COMBINED = ("insert", "cancel", "expire")

Progress = Optional[Callable[[str], None]]


class WheelBenchError(Exception):
    """A bad parameter or a failed correctness check; the message is for humans."""


def _load_wheel():
    try:
        from minoots.kernel._wheel import MAX_TIME, Wheel
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise WheelBenchError(
            f"the compiled timing wheel is not available ({exc}); "
            "build it with: pip install -e '.[test]'"
        ) from None
    return Wheel, MAX_TIME


# ---------------------------------------------------------------------------
# workload


@dataclass(frozen=True)
class Workload:
    timers: int
    span_ms: int
    seed: int
    start_ms: int
    keys: list
    deadlines: list
    cancel_keys: list
    resched_keys: list
    resched_deadlines: list
    expected: list  # keys in (final deadline, key) order: what must expire
    final_deadline: dict = field(repr=False)  # key -> deadline after rescheduling


def make_workload(timers: int, span_ms: int, seed: int, start_ms: int = START_MS) -> Workload:
    """Build the deterministic workload; WheelBenchError on parameters out of range."""
    _, max_time = _load_wheel()
    if not isinstance(timers, int) or timers < 1:
        raise WheelBenchError(f"timers must be a positive integer, got {timers!r}")
    if not isinstance(span_ms, int) or span_ms < 1:
        raise WheelBenchError(f"span must be a positive number of milliseconds, got {span_ms!r}")
    if start_ms < 0 or start_ms + span_ms > max_time:
        raise WheelBenchError(
            f"span of {span_ms} ms from {start_ms} ends after the wheel's MAX_TIME ({max_time})"
        )
    rng = random.Random(seed)
    getrandbits = rng.getrandbits
    seen: dict = {}
    while len(seen) < timers:
        seen[getrandbits(64)] = None
    keys = list(seen)
    rand = rng.random
    first = start_ms + 1
    deadlines = [first + int(rand() * span_ms) for _ in range(timers)]

    n_cancel = int(timers * CANCEL_FRACTION)
    n_resched = int(timers * RESCHEDULE_FRACTION)
    cancel_keys = rng.sample(keys, n_cancel)
    cancelled = set(cancel_keys)
    survivors = [k for k in keys if k not in cancelled]
    resched_keys = rng.sample(survivors, n_resched)
    resched_deadlines = [first + int(rand() * span_ms) for _ in range(n_resched)]

    final = dict(zip(keys, deadlines))
    for k in cancel_keys:
        del final[k]
    final.update(zip(resched_keys, resched_deadlines))
    expected = sorted(final, key=lambda k: (final[k], k))
    return Workload(
        timers=timers,
        span_ms=span_ms,
        seed=seed,
        start_ms=start_ms,
        keys=keys,
        deadlines=deadlines,
        cancel_keys=cancel_keys,
        resched_keys=resched_keys,
        resched_deadlines=resched_deadlines,
        expected=expected,
        final_deadline=final,
    )


# ---------------------------------------------------------------------------
# peers: each returns (phase seconds, expired keys, wake-ups)


def _timed(fn):
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def _wheel_expire(w):
    out: list = []
    extend = out.extend
    next_deadline = w.next_deadline
    advance = w.advance
    wakeups = 0
    while True:
        t = next_deadline()
        if t is None:
            break
        extend(advance(t))
        wakeups += 1
    return out, wakeups


def _arrays(wl: Workload):
    t0 = time.perf_counter()
    arrs = (array.array("Q", wl.keys), array.array("q", wl.deadlines), array.array("Q", wl.cancel_keys))
    return arrs, time.perf_counter() - t0


def _run_wheel(wl: Workload, mode: str):
    """mode: "per_call", "batch" (insert_many/cancel_many on lists) or "arrays" (on array buffers)."""
    Wheel, _ = _load_wheel()
    w = Wheel(wl.start_ms)
    keys, deadlines, cancel_keys = wl.keys, wl.deadlines, wl.cancel_keys
    if mode == "arrays":
        (keys, deadlines, cancel_keys), _ = _arrays(wl)

    def insert():
        ins = w.insert
        for k, d in zip(keys, deadlines):
            ins(k, d)

    def insert_many():
        w.insert_many(keys, deadlines)

    def cancel():
        c = w.cancel
        for k in cancel_keys:
            c(k)

    def cancel_many():
        w.cancel_many(cancel_keys)

    def reschedule():
        r = w.reschedule
        for k, d in zip(wl.resched_keys, wl.resched_deadlines):
            r(k, d)

    batch = mode != "per_call"
    secs = {}
    _, secs["insert"] = _timed(insert_many if batch else insert)
    if len(w) != wl.timers:
        raise WheelBenchError(f"wheel holds {len(w)} timers after inserting {wl.timers}")
    _, secs["cancel"] = _timed(cancel_many if batch else cancel)
    if len(w) != wl.timers - len(wl.cancel_keys):
        raise WheelBenchError(f"wheel holds {len(w)} timers after cancelling {len(wl.cancel_keys)} of {wl.timers}")
    _, secs["reschedule"] = _timed(reschedule)
    (expired, wakeups), secs["expire"] = _timed(lambda: _wheel_expire(w))
    if len(w) != 0:
        raise WheelBenchError(f"wheel still holds {len(w)} timers after expiring everything")
    return secs, expired, wakeups


def _run_heapq(wl: Workload):
    heap: list = []
    index: dict = {}
    push, pop = heapq.heappush, heapq.heappop

    def insert():
        for k, d in zip(wl.keys, wl.deadlines):
            if k in index:
                raise KeyError(k)
            e = [d, k, True]
            index[k] = e
            push(heap, e)

    def cancel():
        for k in wl.cancel_keys:
            e = index.pop(k, None)
            if e is not None:
                e[2] = False

    def reschedule():
        for k, d in zip(wl.resched_keys, wl.resched_deadlines):
            e = index.pop(k)
            e[2] = False
            e = [d, k, True]
            index[k] = e
            push(heap, e)

    def expire():
        out: list = []
        append = out.append
        wakeups = 0
        while heap:
            e = heap[0]
            if not e[2]:
                pop(heap)
                continue
            t = e[0]
            wakeups += 1
            while heap and heap[0][0] <= t:
                e = pop(heap)
                if e[2]:
                    del index[e[1]]
                    append(e[1])
        return out, wakeups

    secs = {}
    _, secs["insert"] = _timed(insert)
    _, secs["cancel"] = _timed(cancel)
    _, secs["reschedule"] = _timed(reschedule)
    (expired, wakeups), secs["expire"] = _timed(expire)
    return secs, expired, wakeups


class _VirtualSelector(selectors.SelectSelector):
    """A selector that never blocks: select(timeout) moves the loop's virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: Optional[_VirtualClockLoop] = None
        self.wakeups = 0

    def select(self, timeout=None):
        if timeout is None:
            raise WheelBenchError("asyncio peer: the loop would block forever (no timer left to wait for)")
        if timeout > 0:
            self.loop.virtual_now += timeout
            self.wakeups += 1
        return []


class _VirtualClockLoop(asyncio.SelectorEventLoop):
    """An unmodified selector event loop whose clock only moves when it would sleep."""

    def __init__(self) -> None:
        self.virtual_now = 0.0
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self.virtual_now


def _run_asyncio(wl: Workload):
    loop = _VirtualClockLoop()
    try:
        handles: dict = {}
        expired: list = []
        fire = expired.append
        start = wl.start_ms

        def insert():
            call_at = loop.call_at
            for k, d in zip(wl.keys, wl.deadlines):
                if k in handles:
                    raise KeyError(k)
                handles[k] = call_at((d - start) / 1000.0, fire, k)

        def cancel():
            for k in wl.cancel_keys:
                h = handles.pop(k, None)
                if h is not None:
                    h.cancel()

        def reschedule():
            call_at = loop.call_at
            for k, d in zip(wl.resched_keys, wl.resched_deadlines):
                handles.pop(k).cancel()
                handles[k] = call_at((d - start) / 1000.0, fire, k)

        def expire():
            loop.run_forever()

        secs = {}
        _, secs["insert"] = _timed(insert)
        _, secs["cancel"] = _timed(cancel)
        _, secs["reschedule"] = _timed(reschedule)
        # Harness, not workload: one handle after the last deadline stops the loop.
        loop.call_at((wl.span_ms + 1) / 1000.0, loop.stop)
        _, secs["expire"] = _timed(expire)
        # The stop handle's own wake-up is not a deadline of the workload.
        wakeups = max(0, loop._selector.wakeups - 1)
        handles.clear()
        return secs, expired, wakeups
    finally:
        loop.close()


# ---------------------------------------------------------------------------
# memory (untimed)


def _traced_bytes(build: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = build()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del keep
    return after - before


def _memory(wl: Workload, progress: Progress) -> dict:
    Wheel, _ = _load_wheel()
    n = wl.timers

    w = Wheel(wl.start_ms)
    w.insert_many(wl.keys, wl.deadlines)
    wheel_bytes = w.memory_bytes()
    del w

    def build_heapq():
        heap: list = []
        index: dict = {}
        push = heapq.heappush
        for k, d in zip(wl.keys, wl.deadlines):
            e = [d, k, True]
            index[k] = e
            push(heap, e)
        return heap, index

    def build_asyncio():
        handles: dict = {}
        call_at, start = loop.call_at, wl.start_ms
        for k, d in zip(wl.keys, wl.deadlines):
            handles[k] = call_at((d - start) / 1000.0, _never, k)
        return handles

    _say(progress, "memory: heapq (tracemalloc)")
    heapq_bytes = _traced_bytes(build_heapq)
    _say(progress, "memory: asyncio (tracemalloc)")
    loop = _VirtualClockLoop()
    try:
        asyncio_bytes = _traced_bytes(build_asyncio)
    finally:
        loop.close()
    return {
        "wheel_per_call": (wheel_bytes / n, "Wheel.memory_bytes() / len"),
        "wheel_batch": (wheel_bytes / n, "Wheel.memory_bytes() / len"),
        "wheel_arrays": (wheel_bytes / n, "Wheel.memory_bytes() / len"),
        "heapq": (heapq_bytes / n, "tracemalloc delta / timers"),
        "asyncio": (asyncio_bytes / n, "tracemalloc delta / timers"),
    }


def _never(_key) -> None:  # pragma: no cover - never scheduled to run
    raise AssertionError("a memory-pass handle ran")


# ---------------------------------------------------------------------------
# verification


def _first_difference(a: list, b: list) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _check_same_order(name: str, got: list, wl: Workload) -> None:
    want = wl.expected
    if got == want:
        return
    i = _first_difference(got, want)
    d = wl.final_deadline

    def show(seq):
        if i >= len(seq):
            return "<end>"
        k = seq[i]
        return f"key {k} (deadline {d.get(k)})"

    raise WheelBenchError(
        f"correctness check failed: {name} expired {len(got)} keys, expected {len(want)}; "
        f"first difference at position {i}: {name} gave {show(got)}, expected {show(want)}"
    )


def _check_asyncio(got: list, wl: Workload) -> None:
    d = wl.final_deadline
    if len(got) != len(wl.expected) or set(got) != set(wl.expected):
        raise WheelBenchError(
            f"correctness check failed: asyncio ran {len(got)} callbacks, "
            f"expected the {len(wl.expected)} surviving keys"
        )
    last = -1
    for i, k in enumerate(got):
        if d[k] < last:
            raise WheelBenchError(
                f"correctness check failed: asyncio fired key {k} (deadline {d[k]}) "
                f"at position {i}, after a timer with deadline {last}"
            )
        last = d[k]


# ---------------------------------------------------------------------------
# the run


PEERS = (
    ("wheel_per_call", "wheel (per-call)"),
    ("wheel_batch", "wheel (batch)"),
    ("wheel_arrays", "wheel (batch, arrays)"),
    ("heapq", "heapq (lazy deletion)"),
    ("asyncio", "asyncio call_at"),
)


def _say(progress: Progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


def run(
    timers: int = DEFAULT_TIMERS,
    span_ms: int = DEFAULT_SPAN_MS,
    seed: int = DEFAULT_SEED,
    start_ms: int = START_MS,
    repeat: int = 1,
    progress: Progress = None,
) -> dict:
    """Run the whole benchmark and return the JSON-ready report; WheelBenchError on failure.

    With repeat > 1 every peer runs that many times (each run checked) and each
    phase keeps its best time.
    """
    if not isinstance(repeat, int) or repeat < 1:
        raise WheelBenchError(f"repeat must be a positive integer, got {repeat!r}")
    _say(progress, f"generating workload: {timers:,} timers over {span_ms:,} ms (seed {seed})")
    wl = make_workload(timers, span_ms, seed, start_ms)
    ops = {
        "insert": len(wl.keys),
        "cancel": len(wl.cancel_keys),
        "reschedule": len(wl.resched_keys),
        "expire": len(wl.expected),
    }
    runners = {
        "wheel_per_call": lambda: _run_wheel(wl, "per_call"),
        "wheel_batch": lambda: _run_wheel(wl, "batch"),
        "wheel_arrays": lambda: _run_wheel(wl, "arrays"),
        "heapq": lambda: _run_heapq(wl),
        "asyncio": lambda: _run_asyncio(wl),
    }
    peers: dict = {}
    for name, label in PEERS:
        best: dict = {}
        for i in range(repeat):
            _say(progress, f"running {label}" + (f" ({i + 1}/{repeat})" if repeat > 1 else ""))
            secs, expired, wakeups = runners[name]()
            if name == "asyncio":
                _check_asyncio(expired, wl)
            else:
                _check_same_order(name, expired, wl)
            del expired
            gc.collect()
            for ph, s in secs.items():
                best[ph] = min(best.get(ph, s), s)
        peers[name] = {"label": label, "seconds": best, "wakeups": wakeups}

    memory = _memory(wl, progress)
    _, array_build = _arrays(wl)
    report = _build_report(wl, ops, peers, memory, repeat)
    report["array_build_seconds"] = array_build
    return report


def _rate(n: int, s: float) -> Optional[float]:
    return n / s if n and s > 0 else None


def _ratio(a: float, b: float) -> Optional[float]:
    return a / b if b > 0 else None


def _build_report(wl: Workload, ops: dict, peers: dict, memory: dict, repeat: int) -> dict:
    total_ops = sum(ops.values())
    out_peers = {}
    for name, p in peers.items():
        secs = p["seconds"]
        total = sum(secs.values())
        combined = sum(secs[ph] for ph in COMBINED)
        bpt, method = memory[name]
        out_peers[name] = {
            "label": p["label"],
            "phases": {
                ph: {"ops": ops[ph], "seconds": secs[ph], "ops_per_s": _rate(ops[ph], secs[ph])}
                for ph in PHASES
            },
            "total": {"ops": total_ops, "seconds": total, "ops_per_s": _rate(total_ops, total)},
            "insert_cancel_expire": {
                "ops": sum(ops[ph] for ph in COMBINED),
                "seconds": combined,
                "ops_per_s": _rate(sum(ops[ph] for ph in COMBINED), combined),
            },
            "expire_wakeups": p["wakeups"],
            "bytes_per_timer": bpt,
            "bytes_method": method,
        }

    def seconds(name, what):
        if what in PHASES:
            return out_peers[name]["phases"][what]["seconds"]
        return out_peers[name][what]["seconds"]

    ratios = {}
    for wheel in WHEELS:
        for base in ("heapq", "asyncio"):
            ratios[f"{wheel}_vs_{base}"] = {
                what: _ratio(seconds(base, what), seconds(wheel, what))
                for what in PHASES + ("total", "insert_cancel_expire")
            }

    best_combined = max((ratios[f"{w}_vs_heapq"]["insert_cancel_expire"] or 0.0) for w in WHEELS)
    wheel_bpt = out_peers["wheel_batch"]["bytes_per_timer"]
    return {
        "benchmark": "wheel",
        "minoots_version": _version(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "params": {
            "timers": wl.timers,
            "span_ms": wl.span_ms,
            "seed": wl.seed,
            "start_ms": wl.start_ms,
            "cancel_fraction": CANCEL_FRACTION,
            "reschedule_fraction": RESCHEDULE_FRACTION,
            "repeat": repeat,
        },
        "ops": ops,
        "peers": out_peers,
        "ratios": ratios,
        "ratio_definition": "peer seconds / wheel seconds for the same operations (higher = wheel faster)",
        "targets": {
            "speedup_vs_heapq_insert_cancel_expire": {
                "target": TARGET_SPEEDUP,
                "wheel_per_call": ratios["wheel_per_call_vs_heapq"]["insert_cancel_expire"],
                "wheel_batch": ratios["wheel_batch_vs_heapq"]["insert_cancel_expire"],
                "wheel_arrays": ratios["wheel_arrays_vs_heapq"]["insert_cancel_expire"],
                "met": best_combined >= TARGET_SPEEDUP,
                "met_means": "the best wheel variant reaches the target",
            },
            "wheel_bytes_per_timer": {
                "target": TARGET_BYTES_PER_TIMER,
                "value": wheel_bpt,
                "met": wheel_bpt <= TARGET_BYTES_PER_TIMER,
            },
        },
        "correctness": {
            "checked": True,
            "expired": ops["expire"],
            "same_order": ["wheel_per_call", "wheel_batch", "wheel_arrays", "heapq"],
            "same_set_nondecreasing_deadline": ["asyncio"],
            "order": "(deadline, key)",
        },
        "notes": {
            "asyncio_expire": (
                "unmodified SelectorEventLoop.run_forever on a virtual clock: time() returns a counter "
                "and select(timeout) advances it instead of sleeping; measures the loop's own timer-heap "
                "work (wake-up computation, cancelled-handle purge/rebuild, popping due handles, running "
                "each live callback = list.append(key)); excludes real sleeping, the epoll_wait syscall "
                "per wake-up, and I/O; its wake-ups count the loop's sleeps (asyncio caps one sleep at 24 h, "
                "so spans over a day add a few)"
            ),
            "wheel_batch": "insert_many / cancel_many on lists; reschedule has no batch API (per-call loop); expire is next_deadline()/advance()",
            "wheel_arrays": "as wheel_batch, with array('Q') keys / array('q') deadlines read in place; building the arrays is not timed (see array_build_seconds)",
            "heapq": "entries [deadline, key, alive] + dict key->entry; duplicate check on insert; no deadline validation",
            "memory": "measured after inserting all timers, in a separate untimed pass",
            "gc": "garbage collector enabled during timing; gc.collect() before each phase",
            "repeat": "each phase's time is the best of `repeat` full runs of its peer",
        },
    }


def _version() -> str:
    try:
        import minoots

        return minoots.__version__
    except Exception:  # pragma: no cover
        return "unknown"


# ---------------------------------------------------------------------------
# output


def _fmt_rate(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _fmt_ratio(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f}x"


def _table(header: list, rows: list) -> list:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate([header] + rows):
        cells = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_report(report: dict) -> str:
    """The human-readable table of a report from run()."""
    p = report["params"]
    ops = report["ops"]
    peers = report["peers"]
    lines = [
        f"minoots bench wheel  (minoots {report['minoots_version']}, {report['implementation']} "
        f"{report['python']}, {report['cpus']} cpus)",
        f"workload: insert {ops['insert']:,} timers over {p['span_ms']:,} ms from t={p['start_ms']} "
        f"(seed {p['seed']}); cancel {ops['cancel']:,}; reschedule {ops['reschedule']:,}; "
        f"expire {ops['expire']:,}" + (f"; best of {p['repeat']} runs per phase" if p["repeat"] > 1 else ""),
        "",
        "throughput (ops/s; expire = timers fired / time to advance through every due ms)",
    ]
    header = ["peer", "insert", "cancel", "reschedule", "expire", "total", "ins+can+exp", "wake-ups", "bytes/timer"]
    rows = []
    for name, _ in PEERS:
        q = peers[name]
        rows.append(
            [q["label"]]
            + [_fmt_rate(q["phases"][ph]["ops_per_s"]) for ph in PHASES]
            + [
                _fmt_rate(q["total"]["ops_per_s"]),
                _fmt_rate(q["insert_cancel_expire"]["ops_per_s"]),
                f"{q['expire_wakeups']:,}",
                f"{q['bytes_per_timer']:.1f}",
            ]
        )
    lines += _table(header, rows)
    lines += [
        "  bytes/timer: wheel = Wheel.memory_bytes()/len (C arrays, capacity included); "
        "heapq, asyncio = tracemalloc delta",
        f"  batch, arrays: building array('Q')/array('q') from the lists took "
        f"{report.get('array_build_seconds', 0) * 1000:.1f} ms (not timed above)",
        "",
        "speed-up (peer time / wheel time for the same operations; higher = wheel faster)",
    ]
    header = ["wheel vs peer", "insert", "cancel", "reschedule", "expire", "total", "ins+can+exp"]
    rows = []
    for wheel in WHEELS:
        for base in ("heapq", "asyncio"):
            r = report["ratios"][f"{wheel}_vs_{base}"]
            rows.append(
                [f"{peers[wheel]['label']} vs {base}"]
                + [_fmt_ratio(r[w]) for w in PHASES + ("total", "insert_cancel_expire")]
            )
    lines += _table(header, rows)
    t = report["targets"]
    s = t["speedup_vs_heapq_insert_cancel_expire"]
    m = t["wheel_bytes_per_timer"]
    lines += [
        "",
        "targets (shown, not asserted):",
        f"  >= {s['target']:.0f}x heapq on insert+cancel+expire: per-call {_fmt_ratio(s['wheel_per_call'])}, "
        f"batch {_fmt_ratio(s['wheel_batch'])}, batch arrays {_fmt_ratio(s['wheel_arrays'])}  "
        f"-> {'met' if s['met'] else 'NOT met'}",
        f"  <= {m['target']} bytes per timer in the wheel: {m['value']:.1f}  -> {'met' if m['met'] else 'NOT met'}",
        f"correctness: every wheel variant and heapq expired the same {ops['expire']:,} keys "
        "in the same (deadline, key) order; asyncio the same keys in deadline order",
    ]
    return "\n".join(lines)


def check_output_path(path: str) -> None:
    """Fail early (OSError) if the JSON report could not be written to path; creates parent dirs."""
    if os.path.isdir(path):
        raise IsADirectoryError(21, "is a directory", path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    existed = os.path.exists(path)
    with open(path, "a", encoding="utf-8"):
        pass
    if not existed:
        os.unlink(path)


def write_json(report: dict, path: str) -> None:
    """Write the report as JSON, creating parent directories; OSError on failure."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")
