"""`minoots bench load` end to end on a small scale: correctness (every timer fires once), not speed."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from minoots.bench import load as load_bench
from minoots.cli.bench import bench


@pytest.mark.bench
def test_small_load_every_timer_fires_exactly_once(tmp_path):
    out = tmp_path / "out"
    report = load_bench.run(timers=5000, nodes=3, window=8.0, clients=4, batch=500, payload=16,
                            out=str(out), burst=300, single_seconds=1.0, progress=False, say=lambda m: None)
    c = report["correctness"]
    assert c["ok"], c
    assert c["lost"] == 0 and c["duplicated"] == 0 and c["unknown"] == 0 and c["fired_early"] == 0
    assert c["expected"] >= 5300                      # batched + burst + the single creates
    assert c["distinct_fired"] == c["expected"] + c["ambiguous_fired"]
    assert report["batched_creates"]["timers"] == 5300
    assert report["lateness_tick_ms"]["n"] == c["fired_events"]
    assert report["snapshot"].get("bytes", 0) > 0
    assert report["restart"]["recovery_s"] is not None
    saved = json.loads((out / "results.json").read_text())
    assert saved["correctness"]["ok"]
    assert "minoots load" in load_bench.format_table(report).lower()


@pytest.mark.parametrize("args, message", [
    (["--timers", "0"], "--timers"),
    (["--window", "soon"], "bad duration"),
    (["--window", "0s"], "> 0"),
    (["--batch", "20000"], "--batch"),
    (["--peers", "memcached"], "unknown peer"),
    (["--nodes", "0"], "--nodes"),
])
def test_bad_args_give_a_clean_error(args, message):
    r = CliRunner().invoke(bench, ["load", *args])
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)


def test_parse_duration():
    assert load_bench.parse_duration("600s") == 600
    assert load_bench.parse_duration("10m") == 600
    assert load_bench.parse_duration("250ms") == 0.25
    assert load_bench.parse_duration(30) == 30
    with pytest.raises(load_bench.LoadBenchError):
        load_bench.parse_duration("-1s")


def test_etcd_peer_helpers_need_no_etcd():
    from minoots.bench import load_etcd
    assert load_etcd.default_timers(100_000) == 20_000
    assert load_etcd.default_timers(500) == 500
    assert load_etcd.ttl_for(10_000, 0) == 10            # whole seconds
    assert load_etcd.ttl_for(10_001, 0) == 11            # rounded up: never before the deadline
    assert load_etcd.ttl_for(500, 0) == load_etcd.MIN_TTL_S
    assert load_etcd.ttl_for(-5_000, 0) == load_etcd.MIN_TTL_S
    with pytest.raises(load_bench.LoadBenchError, match="--etcd-timers"):
        load_bench.validate(10, 3, 10.0, 1, 10, 0, ("etcd",), 0, etcd_timers=0)


def test_peer_table_labels_a_smaller_etcd_run_and_skips():
    r = {"params": {"nodes": 3}, "outstanding_at_full_load": 1000, "correctness": {"ok": True},
         "batched_creates": {"timers_per_s": 1000.0},
         "lateness_tick_ms": {"p50": 5, "p95": 8, "p99": 10, "max": 20},
         "rss": {"n1": {"bytes_per_timer": 100.0}},
         "peers": {"etcd": {"replicated": "yes (Raft x3)", "timers": 200, "correctness": {"ok": True},
                            "summary": {"create": 500.0, "p50": 250, "p95": 450, "p99": 500, "max": 510,
                                        "bpt": 1000.0}},
                   "redis": {"skipped": "redis-server not found"}}}
    text = "\n".join(load_bench._peer_table(r))
    assert "etcd (200 timers)" in text
    assert "0.50" in text and "50.00" in text and "10.00" in text    # creates/s, P99 and B/timer ratios
    assert "redis-server not found" in text


def test_peer_binaries_are_found_or_skipped_with_a_hint(monkeypatch):
    from minoots.bench import debian
    said = []
    path, why = debian.find_or_install("python3", "python3", True, said.append)
    assert path and why == "" and said == []                   # present: nothing to install
    path, why = debian.find_or_install("no-such-server-xyz", "no-such-server-xyz", False, said.append)
    assert path is None and "apt-get install -y no-such-server-xyz" in why and said == []
    monkeypatch.setattr(debian, "_apt_prefix", lambda: None)   # e.g. not root and no sudo
    path, why = debian.find_or_install("no-such-server-xyz", "no-such-server-xyz", True, said.append)
    assert path is None and "cannot run apt-get" in why and said == []


def test_a_peer_that_cannot_be_had_is_skipped_not_fatal(monkeypatch):
    from minoots.bench import debian, load_redis
    monkeypatch.setattr(debian, "find_or_install", lambda exe, pkg, install, say: (None, f"{exe} missing"))
    r = load_redis.run(10, 5.0, 1, 10, 0, 1.0, False, lambda m: None)
    assert r == {"skipped": "redis-server missing"}


def test_plots_show_every_system_and_results_json_has_no_samples(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib comes with the [test] extra")
    report = {"params": {"nodes": 3}, "correctness": {"ok": True},
              "_lateness_samples": {"tick": [0, 1, 2, 50], "recv": [3, 4, 5, 60],
                                    "peers": {"redis": [5, 9, 10], "etcd": [250, 400, 990]}},
              "throughput_series": [(0.0, 0), (1.0, 1000), (2.0, 2500)],
              "rss_series": [{"t": 0.0, "n1": 50 << 20}, {"t": 1.0, "n1": 60 << 20}]}
    load_bench.write_outputs(report, str(tmp_path), lambda m: None)
    for name in ("lateness.png", "throughput.png", "rss.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "_lateness_samples" not in saved and saved["correctness"]["ok"]
