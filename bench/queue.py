"""Pull-queue delivery on a local 3-node cluster: fire → lease latency with N workers.

    minoots bench queue [--timers 2000] [--window 10] [--workers 8] [--json FILE] [--plot FILE]

Creates N queue timers due uniformly over WINDOW seconds (a few seconds out) on one
queue; W worker threads, each with its own client, long-poll `lease(max_timers=1)` and
ack what they get (the agent-worker pattern of the README). Reports, per leased timer,
fire → lease (the worker's receipt minus the timer's committed `fired_at`) and deadline
→ lease (receipt minus `fire_at`), P50/P95/P99/max in ms, leases/s, and whether every
timer ended SETTLED with no timer leased twice. The cluster, the workers and this process
share the machine: figures are for comparing changes on one machine.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from minoots.chaos.ledger import percentile
from minoots.raft.store import DEFAULT_SYNC
from minoots.raft.testing import LocalCluster

from .delivery import minoots_wait

__all__ = ["run"]

LEAD_S = 3.0          # the first deadline is this far after the creates start
BATCH = 500
QUEUE = "bench"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run(timers: int = 2_000, window_s: float = 10.0, workers: int = 8, sync: str = DEFAULT_SYNC,
        report: Callable[[str], None] = print, json_path: Optional[str] = None,
        plot_path: Optional[str] = None) -> dict:
    import minoots

    root = Path(tempfile.mkdtemp(prefix="minoots-bench-queue-"))
    cluster = LocalCluster(root / "cluster", node_args=("--sync", sync))
    seen: dict[str, tuple[int, int, int]] = {}    # timer id -> (receipt ms, fire → lease, deadline → lease)
    doubles: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        cluster.start()
        cluster.leader(timeout=60)
        nodes = [n.grpc for n in cluster.nodes.values()]
        token = cluster.admin_token()

        def work() -> None:
            with minoots.Client(nodes, timeout=60, token=token) as wc:
                while not stop.is_set():
                    try:
                        leases = wc.lease(QUEUE, max_timers=1, visibility=60, wait=2)
                    except minoots.MinootsError as exc:
                        with lock:
                            errors.append(f"lease: {exc}")
                        time.sleep(0.1)
                        continue
                    got = _now_ms()
                    for lease in leases:
                        t = lease.timer
                        with lock:
                            if t.id in seen:
                                doubles.append(t.id)
                            else:
                                seen[t.id] = (got, got - t.fired_at_ms, got - t.fire_at_ms)
                        try:
                            wc.ack_lease(lease)
                        except minoots.MinootsError as exc:
                            with lock:
                                errors.append(f"ack: {exc}")

        with minoots.Client(nodes, timeout=60, token=token) as c:
            minoots_wait(c)
            start_ms = _now_ms() + int((LEAD_S + timers / 1000) * 1000)
            specs = [dict(fire_at=start_ms + int(i * window_s * 1000 / max(timers - 1, 1)), queue=QUEUE,
                          max_attempts=3) for i in range(timers)]
            threads = [threading.Thread(target=work, name=f"bench-worker-{i}", daemon=True) for i in range(workers)]
            for th in threads:
                th.start()
            for i in range(0, timers, BATCH):
                c.create_many(specs[i:i + BATCH])
            created_by = _now_ms()
            deadline = time.monotonic() + LEAD_S + timers / 1000 + window_s + 120
            counts: dict = {}
            while time.monotonic() < deadline:
                counts = {k.upper(): int(v) for k, v in c.status().timers.items()}
                if counts.get("SETTLED", 0) + counts.get("DEAD_LETTERED", 0) >= timers:
                    break
                time.sleep(0.5)
            stop.set()
            for th in threads:
                th.join(timeout=10)
            counts = {k.upper(): int(v) for k, v in c.status().timers.items()}
    finally:
        stop.set()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

    fire_to_lease = sorted(v[1] for v in seen.values())
    deadline_to_lease = sorted(v[2] for v in seen.values())
    receipts = sorted(v[0] for v in seen.values())
    span_s = (receipts[-1] - receipts[0]) / 1000 if len(receipts) > 1 else 0.0

    def pcts(xs: list) -> dict:
        return {p: percentile(xs, q) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))} \
            | {"max": xs[-1] if xs else None}

    result = {
        "timers": timers, "window_s": window_s, "workers": workers, "sync": sync,
        "created_before_first_deadline": created_by <= start_ms,
        "leased": len(seen), "leased_fraction": round(len(seen) / timers, 5),
        "leased_twice": len(doubles), "settled": counts.get("SETTLED", 0),
        "dead_lettered": counts.get("DEAD_LETTERED", 0), "worker_errors": len(errors),
        "worker_error_examples": errors[:5],
        "leases_per_s": round(len(receipts) / span_s, 1) if span_s else None,
        "fire_to_lease_ms": pcts(fire_to_lease), "deadline_to_lease_ms": pcts(deadline_to_lease),
    }
    report(_table(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if plot_path:
        _plot(seen, start_ms, plot_path, report)
    return result


def _plot(seen: dict, start_ms: int, path: str, say) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install 'minoots[bench]')")
        return
    pts = sorted(seen.values())
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([(p[0] - start_ms) / 1000 for p in pts], [p[1] for p in pts], ".", markersize=2)
    ax.set_xlabel("seconds since the first deadline")
    ax.set_ylabel("fire → lease (ms)")
    ax.set_title("pull queue: fire → lease latency per timer")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    say(f"plot: {path}")


def _table(r: dict) -> str:
    def ms(d: dict) -> str:
        return " / ".join("-" if d[k] is None else str(d[k]) for k in ("p50", "p95", "p99", "max"))

    rows = [
        ("timers", r["timers"]), ("workers", r["workers"]),
        ("leased", f"{r['leased']} ({r['leased_fraction'] * 100:.2f}%)"),
        ("leased twice", r["leased_twice"]),
        ("settled / dead-lettered", f"{r['settled']} / {r['dead_lettered']}"),
        ("worker errors", r["worker_errors"]),
        ("leases/s", r["leases_per_s"]),
        ("fire → lease P50 / P95 / P99 / max (ms)", ms(r["fire_to_lease_ms"])),
        ("deadline → lease P50 / P95 / P99 / max (ms)", ms(r["deadline_to_lease_ms"])),
        ("all created before the first deadline", r["created_before_first_deadline"]),
    ]
    return "\n".join(["| pull queue | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows])
