"""Webhook delivery on a local 3-node cluster: lateness at the receiver and throughput.

    minoots bench delivery [--timers 10000] [--window 10] [--fail-first 0.1] [--json FILE]

Creates N webhook timers due uniformly over WINDOW seconds (a few seconds out), aimed
at an aiohttp receiver in this process on 127.0.0.1; with --fail-first F, the first
attempt of a fraction F of the timers (picked by id) answers 500. Reports lateness at
the receiver (first 2xx receipt minus the deadline, ms) P50/P95/P99/max, deliveries per
second, attempts per success and the delivered fraction (every timer must end SETTLED,
or DEAD_LETTERED with a reason). The cluster, the receiver and the client share the
machine: figures are for comparing changes on one machine.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from minoots.chaos.ledger import percentile
from minoots.chaos.receiver import Hit, WebhookReceiver
from minoots.raft.store import DEFAULT_SYNC
from minoots.raft.testing import LocalCluster

__all__ = ["run"]

LEAD_S = 3.0          # the first deadline is this far after the creates start
BATCH = 500


def _fails_first(timer_id: str, fraction: float) -> bool:
    return fraction > 0 and hashlib.sha256(timer_id.encode()).digest()[0] < fraction * 256


def _iso_ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def run(timers: int = 10_000, window_s: float = 10.0, fail_first: float = 0.0, sync: str = DEFAULT_SYNC,
        report: Callable[[str], None] = print, json_path: Optional[str] = None) -> dict:
    import minoots

    root = Path(tempfile.mkdtemp(prefix="minoots-bench-delivery-"))
    cluster = LocalCluster(root / "cluster", node_args=("--sync", sync, "--webhook-allow-hosts", "127.0.0.1"))
    def answer(hit: Hit) -> int:
        data = json.loads(hit.body)["data"]
        return 500 if data["attempt"] == 1 and _fails_first(data["timer_id"], fail_first) else 200

    receiver = WebhookReceiver(answer).start()
    try:
        cluster.start()
        cluster.leader(timeout=60)
        nodes = [n.grpc for n in cluster.nodes.values()]
        with minoots.Client(nodes, timeout=60, token=cluster.admin_token()) as c:
            minoots_wait(c)
            c.rotate_webhook_secret()
            url = receiver.url
            # Creating takes time on a busy machine: the first deadline waits for it.
            start_ms = time.time_ns() // 1_000_000 + int((LEAD_S + timers / 1000) * 1000)
            specs = [dict(fire_at=start_ms + int(i * window_s * 1000 / max(timers - 1, 1)), webhook=url,
                          max_attempts=5, backoff_base=0.05, backoff_cap=1.0) for i in range(timers)]
            for i in range(0, timers, BATCH):
                c.create_many(specs[i:i + BATCH])
            created_by = time.time_ns() // 1_000_000
            deadline = time.monotonic() + LEAD_S + timers / 1000 + window_s + 120
            done = 0
            while time.monotonic() < deadline:
                counts = {k.upper(): v for k, v in c.status().timers.items()}
                done = int(counts.get("SETTLED", 0)) + int(counts.get("DEAD_LETTERED", 0))
                if done >= timers:
                    break
                time.sleep(0.5)
            counts = {k.upper(): v for k, v in c.status().timers.items()}
            errors: dict = {}
            for t in c.list(page_size=1000):
                for a in t.delivery_attempts:
                    if a.error_class:
                        errors[a.error_class] = errors.get(a.error_class, 0) + 1
    finally:
        receiver.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)

    ok = {}
    for h in receiver.hits:
        data = json.loads(h.body)["data"]
        if h.status == 200 and data["timer_id"] not in ok:
            ok[data["timer_id"]] = h.at_ms - _iso_ms(data["scheduled_at"])
    lateness = sorted(ok.values())
    oks = [h.at_ms for h in receiver.hits if h.status == 200]
    span_s = (max(oks) - min(oks)) / 1000 if len(oks) > 1 else 0.0
    result = {
        "timers": timers, "window_s": window_s, "fail_first": fail_first, "sync": sync,
        "created_before_first_deadline": created_by <= start_ms,
        "delivered": len(ok), "delivered_fraction": round(len(ok) / timers, 5),
        "settled": int(counts.get("SETTLED", 0)), "dead_lettered": int(counts.get("DEAD_LETTERED", 0)),
        "attempts": len(receiver.hits), "failed_attempts_by_class": errors, "attempts_per_success": round(len(receiver.hits) / max(len(ok), 1), 3),
        "deliveries_per_s": round(len(oks) / span_s, 1) if span_s else None,
        "lateness_ms": {p: percentile(lateness, q) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))}
        | {"max": lateness[-1] if lateness else None},
    }
    report(_table(result))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def minoots_wait(client) -> None:
    """Until the cluster answers with a leader (the nodes announce their gRPC addresses)."""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if client.status().leader:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("the bench cluster has no leader")


def _table(r: dict) -> str:
    lat = r["lateness_ms"]
    rows = [("timers", r["timers"]), ("first attempts failing", f"{r['fail_first']:.0%}"),
            ("delivered (2xx)", f"{r['delivered']} ({r['delivered_fraction']:.2%})"),
            ("settled / dead-lettered", f"{r['settled']} / {r['dead_lettered']}"),
            ("attempts per success", r["attempts_per_success"]),
            ("failed attempts by class", ", ".join(f"{k} {v}" for k, v in sorted(r["failed_attempts_by_class"].items()))
             or "none"), ("deliveries/s", r["deliveries_per_s"]),
            ("lateness P50 / P95 / P99 / max (ms)", f"{lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']}"),
            ("all created before the first deadline", r["created_before_first_deadline"])]
    return "\n".join(f"| {k} | {v} |" for k, v in [("webhook delivery", "value")] + rows)
