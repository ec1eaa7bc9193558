"""`minoots bench delivery` and `minoots bench queue` (bench/delivery.py, bench/queue.py):
a short real run of each on a real 3-node cluster (marked bench) — every timer delivered
or leased exactly once and settled, and the table and JSON carry the figures."""
from __future__ import annotations

import json

import pytest

from minoots.bench import delivery, queue

pytestmark = pytest.mark.bench


def test_bench_delivery_small_run_delivers_everything_once(tmp_path):
    out: list[str] = []
    r = delivery.run(timers=60, window_s=1.0, fail_first=0.2, report=out.append, json_path=str(tmp_path / "d.json"))
    assert r["delivered"] == 60 and r["settled"] == 60 and r["dead_lettered"] == 0
    assert r["attempts"] > 60 and r["failed_attempts_by_class"].get("http_status", 0) == r["attempts"] - 60
    assert None not in r["lateness_ms"].values()
    assert json.loads((tmp_path / "d.json").read_text()) == r
    assert "| delivered (2xx) | 60 (100.00%) |" in out[0]


def test_bench_queue_small_run_leases_everything_once(tmp_path):
    out: list[str] = []
    r = queue.run(timers=40, window_s=1.0, workers=3, report=out.append, json_path=str(tmp_path / "q.json"),
                  plot_path=str(tmp_path / "q.png"))
    assert (r["leased"], r["leased_twice"], r["settled"], r["worker_errors"]) == (40, 0, 40, 0)
    assert r["fire_to_lease_ms"]["p50"] is not None and r["fire_to_lease_ms"]["p50"] >= 0
    assert json.loads((tmp_path / "q.json").read_text()) == r
    assert (tmp_path / "q.png").stat().st_size > 0
    assert "| leased twice | 0 |" in out[0]
