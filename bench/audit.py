"""The audit ledger alone: what one timer lifecycle event costs its writer thread.

Run it as ``minoots bench audit``.

Builds the events of `timers` plain timers created in batches of `batch` (a created and an
armed event each, as a replica's apply emits them; built outside the clock), then hands
each batch's events to a fresh ledger the way the FSM's event listener does and times until
the writer thread has encoded, hashed and written them all (LMDB in a temporary directory,
signing key as on a node). One row per record layout: `per-event` is one chain record per
event (the format before issue 15's audit pass, still selectable), `batched` one
`timer.events` record per apply batch. Also reports the writer's CPU time per event
(thread CPU clock), the bytes stored per event and the number of records.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from array import array

from minoots.kernel import State

START_MS = 1_764_000_000_000
DEFAULT_TIMERS = 200_000
DEFAULT_BATCH = 1000
MODES = ("per-event", "batched")


def _events(timers: int, batch: int) -> list:
    """The event lists of `timers` plain creates, one list per apply batch."""
    s = State()
    out = []
    for lo in range(0, timers, batch):
        n = min(batch, timers - lo)
        ids = [f"t{i:08d}" for i in range(lo, lo + n)]
        fire_at = array("q", [START_MS + 3_600_000 + i for i in range(lo, lo + n)])
        res = s.create_plain(START_MS + lo, "bench", ids, fire_at, bytes(n), [b"x" * 64] * n)
        out.append(list(res.events))
    return out


def _writer_cpu(ledger) -> float:
    """CPU seconds of the ledger's writer thread so far (Linux: its /proc task stat)."""
    tid = getattr(ledger._thread, "native_id", None)
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run_one(mode: str, batches: list, key) -> dict:
    from minoots.raft.audit import AuditLedger

    kw = {} if mode == "per-event" and not _has_modes() else {"batch_events": mode == "batched"}
    d = tempfile.mkdtemp(prefix="minoots-bench-audit-")
    try:
        ledger = AuditLedger(os.path.join(d, "audit"), "n1", key=key, queue_max=10 ** 9, **kw)
        try:
            ledger.checkpoint_now("bench")            # the opening record is written
            seq0, cpu0 = ledger.head_seq, _writer_cpu(ledger)
            n = sum(len(b) for b in batches)
            t0 = time.perf_counter()
            for events in batches:
                ledger._on_events(events)
            ledger.checkpoint_now("bench")
            wall = time.perf_counter() - t0
            cpu = _writer_cpu(ledger) - cpu0
            records = ledger.head_seq - seq0
        finally:
            ledger.close()
        size = sum(os.path.getsize(os.path.join(d, "audit", f)) for f in os.listdir(os.path.join(d, "audit")))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"mode": mode, "events": n, "records": records, "wall_s": wall, "us_per_event": wall / n * 1e6,
            "writer_cpu_us_per_event": cpu / n * 1e6, "file_bytes_per_event": size / n}


def _has_modes() -> bool:
    import inspect

    from minoots.raft.audit import AuditLedger

    return "batch_events" in inspect.signature(AuditLedger).parameters


def run(timers: int = DEFAULT_TIMERS, batch: int = DEFAULT_BATCH, modes=MODES, repeat: int = 1) -> list:
    from minoots.raft.audit import chain

    key = chain.private_key_from_text(chain.new_private_key())
    batches = _events(timers, batch)
    if not _has_modes():
        modes = ("per-event",)        # an older build: only the per-event layout exists
    rows = []
    for _ in range(repeat):
        for mode in modes:
            rows.append(run_one(mode, batches, key))
    return rows


def format_table(rows: list) -> str:
    head = ("layout", "events", "records", "appended -> written us/event", "writer CPU us/event", "file B/event")
    body = [(r["mode"], f"{r['events']:,}", f"{r['records']:,}", f"{r['us_per_event']:.2f}",
             f"{r['writer_cpu_us_per_event']:.2f}", f"{r['file_bytes_per_event']:.0f}") for r in rows]
    w = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    line = lambda cols: "  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(cols))
    return "\n".join([line(head), line(tuple("-" * x for x in w))] + [line(b) for b in body])


if __name__ == "__main__":      # also runs under older builds: python bench/audit.py
    import sys

    t = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TIMERS
    print(format_table(run(t, repeat=int(sys.argv[2]) if len(sys.argv) > 2 else 1)))
