"""Snapshot-write stall benchmark: how long a journal append (the Raft thread's fsynced
write) and the Raft thread's loop wait while a large snapshot is written.

Run it as ``minoots bench snapshot-stall`` (``--help`` lists the options).

One process, like a node: a kernel State with N timers; a "Raft thread" that appends a
256-byte entry to a real durable LMDB journal (raft/journal.py, fsynced per append)
every 2 ms and records each append's latency and how late each loop iteration started;
and the snapshot path of raft/machine.py: ``capture()`` in the caller (the Raft thread
pays it in a node) and the write in a background thread. Each writer runs on a fresh
data dir, in the same process and session, one after the other:

- ``legacy``: the write before issue 15 (kernel bytes, joined into one container copy,
  one write + fsync of the whole file, then the whole container put into the LMDB
  snapshot store and committed);
- ``chunked``: raft/snapshot_writer.py (the encode in slices, no container copy, chunks
  with fdatasync and a pause between them) and the store's copy put from the finished
  file in pieces of its own transactions (raft/snapshots.py SnapshotStore.put).

Every figure is in milliseconds, compared with the same appender before the write
(``idle``). On a shared machine the noise is large: run it with ``nice`` and ``--repeat``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path

from minoots.chaos.ledger import percentile
from minoots.kernel import State, TimerSpec
from minoots.kernel import snapshot as kernel_snapshot
from minoots.raft import snapshot_writer, snapshots
from minoots.raft.journal import LmdbJournal

START_MS = 1_764_000_000_000
PERIOD = 0.002
MODES = ("legacy", "chunked")


class Appender(threading.Thread):
    """The stand-in Raft thread: a fsynced journal append every PERIOD seconds."""

    def __init__(self, journal: LmdbJournal) -> None:
        super().__init__(daemon=True, name="raft-appender")
        self.journal = journal
        self.samples: list = []          # (start, append seconds, late start seconds)
        self._halt = threading.Event()

    def run(self) -> None:
        idx, cmd = 1, b"c" * 256
        due = time.perf_counter()
        while not self._halt.is_set():
            t = time.perf_counter()
            late = max(0.0, t - due)
            self.journal.add(cmd, idx, 1)
            self.samples.append((t, time.perf_counter() - t, late))
            idx += 1
            due = time.perf_counter() + PERIOD
            time.sleep(PERIOD)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def build_state(timers: int, payload: int) -> State:
    state, body = State(), b"x" * payload
    for lo in range(0, timers, 10_000):
        state.create(START_MS, [TimerSpec(id=f"t{i}", fire_at=START_MS + 1 + (i * 7919) % 3_600_000, payload=body)
                                for i in range(lo, min(lo + 10_000, timers))])
    return state


def _legacy_extra_blocks(table, ex_ords: list) -> list:
    return kernel_snapshot._extra_blocks_general([table.extra[o] for o in ex_ords])


def write_legacy(capture, meta, path: Path, store: snapshots.SnapshotStore, mark) -> int:
    """The write path of raft/machine.py before issue 15, with the kernel encode of then (one
    Extra object per timer with a payload), kept here to compare against."""
    fast = kernel_snapshot._extra_blocks
    kernel_snapshot._extra_blocks = _legacy_extra_blocks
    try:
        kernel = capture.to_bytes()
    finally:
        kernel_snapshot._extra_blocks = fast
    meta = dataclasses.replace(meta, kernel_size=len(kernel))
    data = snapshots.encode(meta, kernel)
    mark("encode")
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    mark("file")
    with store._env.begin(db=store._db, write=True) as txn:     # the store's put of then: one value
        txn.put(struct.pack(">Q", meta.last_index), data)
    mark("store")
    return len(data)


def write_chunked(capture, meta, path: Path, store: snapshots.SnapshotStore, mark) -> int:
    """What raft/machine.py does now."""
    parts = capture.to_parts()
    mark("encode")
    with open(path, "wb") as fh:
        _, n = snapshot_writer.write_file(fh, meta, parts)
    mark("file")
    store.put_file(path)
    mark("store")
    return n


WRITERS = {"legacy": write_legacy, "chunked": write_chunked}


def _dist(vals: list) -> dict:
    return {"n": len(vals), "p50": percentile(vals, 50) if vals else None,
            "p99": percentile(vals, 99) if vals else None, "max": max(vals) if vals else None}


def measure(state: State, mode: str, idle_s: float = 1.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="minoots-snapstall-"))
    journal = store = None
    try:
        journal = LmdbJournal(tmp / "lmdb", "durable", map_size=1 << 30)
        store = snapshots.SnapshotStore.open(tmp)
        app = Appender(journal)
        app.start()
        time.sleep(idle_s)
        t0 = time.perf_counter()
        capture = state.capture()            # in a node: the Raft thread, between two applies
        cap_s = time.perf_counter() - t0
        meta = snapshots.SnapshotMeta(last_index=1, last_term=1, timers=len(capture))
        box: dict = {}
        marks: list = []

        def writer():
            box["bytes"] = WRITERS[mode](capture, meta, tmp / "snapshot.bin", store,
                                         lambda what: marks.append((what, time.perf_counter())))
        w = threading.Thread(target=writer, name="snapshot-writer")
        w0 = time.perf_counter()
        w.start()
        w.join()
        w1 = time.perf_counter()
        time.sleep(0.3)
        app.stop()
        data = store.latest()
        meta_back, kernel = snapshots.decode(data)       # the kept copy reads back whole
        if kernel != state.to_bytes():
            raise RuntimeError(f"{mode}: the snapshot does not read back as the state")
        if (tmp / "snapshot.bin").read_bytes() != data:
            raise RuntimeError(f"{mode}: the file and the kept copy differ")
        idle = [s for s in app.samples if s[0] < t0]
        during = [s for s in app.samples if w0 <= s[0] <= w1]
        ms = 1e3
        phases, lo = {}, w0
        for what, hi in marks:          # each phase's seconds and the worst stall that began in it
            inside = [s for s in during if lo <= s[0] < hi]
            phases[what] = {"s": hi - lo, "stall_ms": max([(s[1] + s[2]) * ms for s in inside], default=None)}
            lo = hi
        return {"phases": phases, "mode": mode, "bytes": box["bytes"], "capture_ms": cap_s * ms, "write_s": w1 - w0,
                "idle_append_ms": _dist([s[1] * ms for s in idle]),
                "append_ms": _dist([s[1] * ms for s in during]),
                "late_start_ms": _dist([s[2] * ms for s in during]),
                "idle_late_start_ms": _dist([s[2] * ms for s in idle]),
                "stall_ms": max([s[1] * ms + s[2] * ms for s in during], default=None)}
    finally:
        if store is not None:
            store.close()
        if journal is not None:
            journal.close()
        shutil.rmtree(tmp, ignore_errors=True)


def run(timers: int = 200_000, payload: int = 64, modes=MODES, repeat: int = 1, progress=None) -> dict:
    say = progress or (lambda m: None)
    say(f"building a state of {timers:,} timers")
    state = build_state(timers, payload)
    results = []
    for r in range(repeat):
        for mode in modes:
            say(f"{mode} (round {r + 1}/{repeat})")
            results.append(measure(state, mode))
    return {"timers": timers, "payload": payload, "repeat": repeat, "cpus": os.cpu_count(), "results": results}


def format_table(rep: dict) -> str:
    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)
    head = ("writer", "MB", "write s", "capture ms", "idle append P99/max", "append P50/P99/max during",
            "late start max", "worst stall", "worst stall by phase: encode / file / store (s)")
    rows = [head]
    for r in rep["results"]:
        a, i = r["append_ms"], r["idle_append_ms"]
        rows.append((r["mode"], f(r["bytes"] / 1e6), f(r["write_s"], "{:.2f}"), f(r["capture_ms"]),
                     f"{f(i['p99'])}/{f(i['max'])}", f"{f(a['p50'])}/{f(a['p99'])}/{f(a['max'])} (n={a['n']})",
                     f(r["late_start_ms"]["max"]), f(r["stall_ms"]),
                     " / ".join(f"{f(p['stall_ms'])} ({p['s']:.2f})" for p in r["phases"].values())))
    w = [max(len(str(x[k])) for x in rows) for k in range(len(head))]
    out = [f"snapshot-write stall: {rep['timers']:,} timers, payload {rep['payload']} B, {rep['cpus']} CPUs; "
           f"a fsynced 256 B journal append every {PERIOD * 1e3:.0f} ms in another thread (ms unless said)"]
    out += ["  " + "  ".join(f"{str(x[k]):<{w[k]}}" for k in range(len(x))).rstrip() for x in rows]
    out.append("  worst stall = the longest append plus how late it started, while the snapshot was written;"
               " capture is paid by the Raft thread itself")
    return "\n".join(out)
