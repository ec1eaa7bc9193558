"""Kernel-state benchmark: what a million outstanding timers cost one node's state machine.

Run it as ``minoots bench kernel``.

Creates ``timers`` timers (ids ``t0..``, one tenant, the given payload size,
deadlines spread over an hour) in batches of 10,000 through ``State.create`` —
the same path a replicated create takes — and reports:

- bytes per timer: the process RSS delta of building the State (records, id
  index, idempotency index, the wheel's C arrays), measured after a garbage
  collection and glibc's ``malloc_trim(0)`` on both sides, so freed heap the
  allocator would otherwise keep (the batches' request objects) is not counted;
- create throughput, one tick firing the first minute's timers, and the snapshot
  path: ``capture()`` (what the Raft tick thread pays), ``to_bytes()``,
  ``from_bytes()`` (restart recovery) and the snapshot size.
"""
from __future__ import annotations

import gc
import random
import ctypes
import resource
import sys
import time
from array import array

from minoots.kernel import State, TimerSpec

START_MS = 1_764_000_000_000
BATCH = 10_000


def _rss_bytes() -> int:
    """Resident set size after returning free heap to the OS (glibc), so deltas count live data."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure then includes allocator slack
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


DEFAULT_TIMERS = 1_000_000    # a million outstanding timers: `minoots bench kernel --timers`


def run(timers: int = DEFAULT_TIMERS, payload: int = 0, seed: int = 1, progress=None, path: str = "columns") -> dict:
    """`path`: "columns" creates through State.create_plain (a replica's plain batch),
    "specs" through State.create with a TimerSpec per timer (the general path). Only the
    create calls are timed (the batches' inputs are built outside the clock)."""
    say = progress or (lambda msg: None)
    rng = random.Random(seed)
    body = b"x" * payload
    rss0 = _rss_bytes()
    state = State()
    create_s = 0.0
    for lo in range(0, timers, BATCH):
        hi = min(lo + BATCH, timers)
        ids = [f"t{i}" for i in range(lo, hi)]
        fire_at = [START_MS + rng.randrange(1, 3_600_000) for _ in ids]
        if path == "columns":           # what a replica applies for a plain batch (kernel/plain.py)
            cols = (ids, array("q", fire_at), bytes(hi - lo), [body] * (hi - lo))
            t0 = time.perf_counter()
            state.create_plain(START_MS, "default", *cols)
        else:
            specs = [TimerSpec(id=i, fire_at=f, payload=body) for i, f in zip(ids, fire_at)]
            t0 = time.perf_counter()
            state.create(START_MS, specs)
        create_s += time.perf_counter() - t0
        if lo and lo % 200_000 == 0:
            say(f"created {lo:,}")
    del ids, fire_at
    rss = _rss_bytes() - rss0
    say("measuring snapshots")
    t0 = time.perf_counter()
    cap = state.capture()
    capture_s = time.perf_counter() - t0
    del cap
    t0 = time.perf_counter()
    blob = state.to_bytes()
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    restored = State.from_bytes(blob)
    decode_s = time.perf_counter() - t0
    if restored.to_bytes() != blob:
        raise RuntimeError("restore(snapshot(s)) != s")
    del restored
    t0 = time.perf_counter()
    fired = len(state.tick(START_MS + 60_000).fired)
    tick_s = time.perf_counter() - t0
    return {
        "timers": timers,
        "payload_bytes": payload,
        "bytes_per_timer": rss / timers,
        "creates_per_s": timers / create_s,
        "create_path": path,
        "replica_apply": replica_apply(min(timers, 100_000), payload),
        "capture_ms": capture_s * 1e3,
        "to_bytes_s": encode_s,
        "from_bytes_s": decode_s,
        "snapshot_bytes": len(blob),
        "tick_fired": fired,
        "tick_s": tick_s,
        "python": sys.version.split()[0],
    }


def replica_apply(timers: int, payload: int, batch: int = 1000) -> dict:
    """µs per timer a replica spends applying create entries of `batch` plain timers (decode
    + apply, no listeners), for the column record (48) and the general one (CreateTimers v1),
    each into a fresh state, in this process one after the other."""
    from minoots.raft import commands
    from minoots.raft.fsm import TimerFSM

    body = b"x" * payload
    out = {}
    for name, make in (("columns", commands.create_timers), ("specs", commands.CreateTimers)):
        entries = [commands.encode(make(START_MS, (tuple(
            TimerSpec(id=f"r{i}", fire_at=START_MS + 1 + i % 3_600_000, payload=body, idempotency_key=f"r{i}")
            for i in range(lo, min(lo + batch, timers))),)))
            for lo in range(0, timers, batch)]
        fsm = TimerFSM({})
        gc.collect()
        t0 = time.perf_counter()
        for e in entries:
            fsm.apply(e)
        took = time.perf_counter() - t0
        if len(fsm.kernel) != timers:
            raise RuntimeError(f"{name}: {len(fsm.kernel)} timers applied, expected {timers}")
        out[name] = {"us_per_timer": took / timers * 1e6, "entry_bytes": len(entries[0])}
    return out


def format_table(r: dict) -> str:
    rows = [
        ("timers", f"{r['timers']:,} (payload {r['payload_bytes']} B)", ""),
        ("state bytes/timer (RSS delta)", f"{r['bytes_per_timer']:.0f}", "target < 300"),
        ("create (10k batches)", f"{r['creates_per_s']:,.0f} timers/s", f"path: {r.get('create_path', 'specs')}"),
        *[(f"replica apply, {k} record (1k entries)", f"{v['us_per_timer']:.2f} us/timer",
           f"entry {v['entry_bytes']:,} B; decode + apply, no listeners")
          for k, v in r.get("replica_apply", {}).items()],
        ("capture() for a snapshot", f"{r['capture_ms']:.0f} ms", "paid by the Raft tick thread"),
        ("to_bytes()", f"{r['to_bytes_s']:.2f} s", "off the tick thread"),
        ("from_bytes() (restart recovery)", f"{r['from_bytes_s']:.2f} s", ""),
        ("snapshot size", f"{r['snapshot_bytes'] / 1e6:.1f} MB", ""),
        ("tick firing the first minute", f"{r['tick_fired']:,} in {r['tick_s']:.2f} s", ""),
    ]
    w = max(len(a) for a, _, _ in rows)
    v = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{w}}  {b:>{v}}  {c}".rstrip() for a, b, c in rows)
