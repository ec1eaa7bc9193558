"""`minoots bench single-creates`: the table, the CPU reading, and a tiny real run."""
from __future__ import annotations

import os

import pytest

from minoots.bench import single_creates


def test_cpu_seconds_reads_this_process_and_nothing_for_a_missing_one():
    t0 = single_creates.cpu_seconds(os.getpid())
    x = 0
    for i in range(300_000):
        x += i
    assert t0 is not None and single_creates.cpu_seconds(os.getpid()) >= t0
    assert single_creates.cpu_seconds(None) is None
    assert single_creates.cpu_seconds(2 ** 22 + 12345) is None       # above pid_max: no such process


def test_table_has_one_row_per_system_and_run():
    rows = [
        {"system": "minoots", "sync": "durable", "callers": 16, "per_s": 1234.4, "p50_ms": 10.0, "p99_ms": 30.5,
         "raft_entries": 100, "requests_per_entry": 7.25, "run": 1, "loadavg": [3.0, None],
         "cpu_ms_per_create": {"leader": 0.8, "followers": [0.3, None], "callers": 0.4}},
        {"system": "redis", "callers": 16, "per_s": 8000.0, "p50_ms": 0.8, "p99_ms": 5.0, "run": 1,
         "loadavg": [3.0, 3.1], "cpu_ms_per_create": {"server": 0.01, "callers": 0.05}},
        {"system": "redis", "skipped": "redis-server missing", "run": 2},
    ]
    lines = single_creates.format_table(rows).splitlines()
    assert len(lines) == 5 and lines[1].count("---") == lines[0].count("|") - 1
    assert "| 1,234 |" in lines[2] and "| 7.2 |" in lines[2] and "followers 0.30 / -" in lines[2]
    assert "3.0 - -" in lines[2]
    assert "redis ZADD" in lines[3] and "| 8,000 |" in lines[3]
    assert "skipped: redis-server missing" in lines[4]


@pytest.mark.bench
def test_a_tiny_run_creates_and_counts_entries():
    rows = single_creates.run(seconds=1.0, callers=4, repeat=1, redis=False, say=lambda m: None)
    (r,) = rows
    assert r["system"] == "minoots" and r["errors"] == 0 and r["creates"] > 0
    assert 0 < r["raft_entries"] <= r["creates"] + 5         # group commit: never more than one per request (+ ticks)
    assert r["cpu_ms_per_create"]["leader"] is not None and len(r["cpu_ms_per_create"]["followers"]) == 2
