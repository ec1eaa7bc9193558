"""`minoots bench load` end to end on a small scale: correctness (every timer fires once), not speed."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from minoots.bench import load as load_bench
from minoots.cli.bench import bench
from support import wait_for


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
    # The steady row leaves out the burst second (300 timers due in it) and the restart window.
    steady = report["lateness_steady_tick_ms"]
    burst_ms = report["steady_excludes_ms"][0][0]
    assert 0 < steady["n"] <= report["lateness_tick_ms"]["n"] - 300
    assert all(b >= a for a, b in report["steady_excludes_ms"]) and len(report["steady_excludes_ms"]) == 2
    assert report["restart"]["start_ms"] <= report["restart"]["end_ms"] and burst_ms > 0
    assert report["snapshot"].get("bytes", 0) > 0
    assert report["restart"]["recovery_s"] is not None
    # The restarted follower snapshotted first: its restart shows a snapshot load and a replay.
    assert report["restart"]["snapshot_timers"] >= 5300 and report["restart"]["snapshot_load_s"] is not None
    assert report["restart"]["replay_s"] is not None
    chk = report["metrics_check"]                     # the local cluster's /metrics agree with the counts
    assert chk["ok"], chk
    assert sum(1 for row in chk["nodes"].values() if row.get("restarted")) == 1
    saved = json.loads((out / "results.json").read_text())
    assert saved["correctness"]["ok"]
    assert saved["lateness_steady_tick_ms"] == steady
    # each node's own log is kept beside the results (its elections, snapshots, restart)
    logs = sorted(p.name for p in (out / "node-logs").iterdir())
    assert logs == ["n1.log", "n2.log", "n3.log"]
    assert '"snapshot loaded"' in "".join((out / "node-logs" / n).read_text() for n in logs)
    assert "minoots load" in load_bench.format_table(report).lower()
    assert "steady lateness at - fire_at" in load_bench.format_table(report)


def test_restart_phases_are_read_from_the_node_log():
    log = "\n".join([
        '{"event": "node started"}',
        '{"event": "snapshot loaded", "timers": 1000, "seconds": 0.25, "last_index": 9}',
        'not json "snapshot loaded"',
        '{"event": "log replayed", "seconds": 1.5, "replay_s": 1.25, "snapshot_load_s": 0.25}',
        '{"event": "snapshot loaded", "timers": 5, "seconds": 9.0}'])      # a later install: not the restart
    assert load_bench.restart_phases(log) == {"snapshot_load_s": 0.25, "snapshot_timers": 1000,
                                              "replay_s": 1.25, "machine_ready_s": 1.5}
    assert load_bench.restart_phases("") == {}


def test_steady_lateness_leaves_out_every_fault_window():
    samples = {"tick": [1, 2, 500, 3, 900, 4, 700], "fire_at": [100, 200, 1_000, 2_500, 5_000, 6_000, 7_100]}
    windows = load_bench.fault_windows(1_000, {"kill_ms": 4_900, "elected_ms": 5_200, "recovered_ms": 5_600},
                                       {"start_ms": 7_000, "end_ms": 7_200})
    assert windows == [(1_000, 1_999), (4_900, 5_600), (7_000, 7_200)]
    d = load_bench.steady_lateness(samples, windows)
    assert (d["n"], d["max"]) == (4, 4)
    # Without recovery the failover window ends a second after the election.
    assert load_bench.fault_windows(None, {"kill_ms": 10, "elected_ms": 20}, None) == [(10, 1020)]
    assert load_bench.steady_lateness(None, windows) is None


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
    import matplotlib  # noqa: F401  (the [test] extra installs it: a missing one fails, never skips)
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


# ---------------------------------------------------------------- the verdict judges the cluster (issue 18)

def _expected(n=3, fa=1_000):
    """n acknowledged timers L0.. due at fa + i, as run() records them: id -> (fire_at_ms, ack_ms)."""
    return {f"L{i}": (fa + i, 500) for i in range(n)}


def test_observer_failed_and_state_shows_all_fired_is_ok_with_nothing_lost():
    expected = _expected()
    state = {tid: ("settled", fa, fa + 7, 1) for tid, (fa, _) in expected.items()}
    fired = [("L0", 1_007, 1_000, 1_020)]          # the watcher saw one before it died
    read = []

    def read_state():
        read.append(1)
        return state, {"node": "n1", "applied_index": 42, "timers": len(state), "seconds": 0.1}
    r = load_bench.judge(expected, fired, None, None,
                         "OutOfRange: event sequence 1 is no longer available", read_state)
    c = r["correctness"]
    assert read == [1]
    assert c["observer"] == "failed" and "OutOfRange" in c["observer_error"]
    assert c["judged_from"] == "state" and c["state_source"]["node"] == "n1"
    assert c["ok"] and c["lost"] == 0 and c["distinct_fired"] == 3 and c["observer_fired_seen"] == 1
    assert r["lateness_tick_ms"]["n"] == 3 and r["lateness_tick_ms"]["max"] == 7
    assert r["lateness_recv_ms"]["n"] == 1
    table = load_bench.format_table({"params": {"nodes": 3, "window_s": 1, "clients": 1, "batch": 1, "payload": 0,
                                                "sync": "x", "cpus": 2}, **r})
    assert "observer failed" in table and "OutOfRange" in table and "judged from the nodes' state" in table
    assert "correctness" in table and "lost 0," in table and "FAILED" not in table


def test_observer_failed_and_state_shows_an_unfired_timer_counts_it_lost():
    expected = _expected()
    state = {"L0": ("settled", 1_000, 1_003, 1), "L1": ("armed", 1_001, None, 0)}    # L2 missing altogether
    r = load_bench.judge(expected, [], None, None, "Unavailable: gone", lambda: (state, {"node": "n2"}))
    c = r["correctness"]
    assert c["observer"] == "failed" and c["judged_from"] == "state"
    assert not c["ok"] and c["lost"] == 2 and c["lost_sample"] == ["L1", "L2"]
    assert c["not_fired_by_state"] == {"armed": 1} and c["missing_from_state"] == 1


def test_state_catches_early_and_repeated_fires():
    expected = _expected()
    state = {"L0": ("settled", 1_000, 999, 1), "L1": ("settled", 1_001, 1_002, 2), "L2": ("settled", 1_002, 1_002, 1)}
    c = load_bench.judge(expected, [], None, None, "boom", lambda: (state, {}))["correctness"]
    assert not c["ok"] and c["lost"] == 0 and c["fired_early"] == 1 and c["duplicated_sample"] == ["L1"]


def test_a_watcher_that_fell_behind_is_an_observer_failure_not_lost_timers():
    expected = _expected()
    state = {tid: ("settled", fa, fa + 1, 1) for tid, (fa, _) in expected.items()}
    fired = [("L0", 1_001, 1_000, 1_010)]          # no error, but it saw one of three by the deadline
    c = load_bench.judge(expected, fired, None, None, None, lambda: (state, {}))["correctness"]
    assert c["ok"] and c["lost"] == 0 and c["observer"] == "failed" and "fell behind: 2" in c["observer_error"]


def test_a_healthy_watcher_is_judged_from_its_events_without_reading_state():
    expected = _expected()
    fired = [(tid, fa + 2, fa, fa + 5) for tid, (fa, _) in expected.items()]

    def no_read():
        raise AssertionError("state read although the watcher saw everything")
    c = load_bench.judge(expected, fired, None, None, None, no_read)["correctness"]
    assert c["ok"] and c["observer"] == "ok" and c["judged_from"] == "events"


def test_lost_timers_the_state_confirms_keep_the_observer_ok():
    expected = _expected()
    fired = [("L0", 1_001, 1_000, 1_010)]
    state = {"L0": ("settled", 1_000, 1_001, 1), "L1": ("armed", 1_001, None, 0), "L2": ("armed", 1_002, None, 0)}
    c = load_bench.judge(expected, fired, None, None, None, lambda: (state, {}))["correctness"]
    assert not c["ok"] and c["lost"] == 2 and c["observer"] == "ok" and c["judged_from"] == "events+state"


def test_unreadable_state_after_an_observer_failure_is_not_judged_and_calls_nothing_lost():
    def broken():
        raise TimeoutError("no leader")
    c = load_bench.judge(_expected(), [], None, None, "OutOfRange: trimmed", broken)["correctness"]
    assert not c["ok"] and c["judged_from"] is None and c["lost"] is None and "no leader" in c["state_error"]
    assert c["observer"] == "failed" and c["watcher_missed"] == 3
    c = load_bench.judge(_expected(), [], None, None, None, broken)["correctness"]      # no error, missed all
    assert not c["ok"] and c["observer"] == "unconfirmed" and c["lost"] is None and c["watcher_missed"] == 3


def _gone(pid: int) -> bool:
    """No such process, not even a zombie waiting to be reaped."""
    return not os.path.exists(f"/proc/{pid}")


def _proc_stat(pid: int) -> tuple[str, float]:
    """(state letter, CPU seconds used) of a process, from /proc/<pid>/stat."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return fields[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_stress_hog_starts_and_is_stopped_by_pid():
    hog = load_bench.CpuHog(300).start()
    try:
        assert hog.pid and not _gone(hog.pid)
        # the hog spins: wait until it has used CPU (however loaded this machine is), then stop it
        seen = wait_for(lambda: (lambda cpu: cpu >= 0.1 and cpu)(_proc_stat(hog.pid)[1]), "the hog using CPU",
                        timeout=120)
    finally:
        hog.stop()
    assert _gone(hog.pid), "the hog process (or its zombie) is still there"
    r = hog.report()
    assert r["stopped_by"] in ("SIGTERM", "SIGKILL") and r["cpu_used_s"] >= seen and r["ran_s"] < 300
    hog.stop()                                     # idempotent
    short = load_bench.CpuHog(0.2).start()
    try:
        wait_for(lambda: _proc_stat(short.pid)[0] == "Z", "the short hog ending by itself", timeout=120)
    finally:
        short.stop()
    assert _gone(short.pid) and short.report()["stopped_by"] == "itself"
    with pytest.raises(load_bench.LoadBenchError):
        load_bench.CpuHog(0)


def test_stress_flag_is_checked():
    r = CliRunner().invoke(bench, ["load", "--stress", "0"])
    assert r.exit_code != 0 and "--stress" in r.output and "Traceback" not in r.output


@pytest.mark.bench
def test_tiny_run_with_a_failed_observer_and_stress_judges_from_state_and_still_fails_over(monkeypatch, tmp_path):
    class DeadWatcher(load_bench.Watcher):
        def run(self):
            self.error = RuntimeError("OUT_OF_RANGE (simulated): event sequence 1 is no longer available")
    monkeypatch.setattr(load_bench, "Watcher", DeadWatcher)
    report = load_bench.run(timers=300, nodes=3, window=3.0, clients=2, batch=100, payload=0, burst=0,
                            single_seconds=0.5, lead=4.0, failover=True, stress=2.0, progress=False,
                            say=lambda m: None, out=str(tmp_path))
    c = report["correctness"]
    assert c["observer"] == "failed" and "OUT_OF_RANGE" in c["observer_error"], c
    assert c["judged_from"] == "state" and c["ok"] and c["lost"] == 0, c
    assert c["distinct_fired"] >= 300 and c["timers_in_state"] >= 300
    assert report["failover"] and report["failover"]["new_leader"]          # ran without the watcher
    st = report["stress"]
    assert st["cpu_seconds"] == 2.0 and st["cpu_used_s"] > 0 and _gone(st["pid"])
    table = load_bench.format_table(report)
    assert "observer failed" in table and "--stress" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["correctness"]["judged_from"] == "state" and saved["stress"]["pid"] == st["pid"]


# ---------------------------------------------------------------- --cluster and the /metrics cross-check (issue 15)

@pytest.mark.bench
def test_load_against_an_existing_cluster_cross_checks_metrics(tmp_path):
    """A cluster the harness did not start: it is loaded and left running (same pids, same leader
    process), the rows it cannot fill are named, and each node's /metrics agrees with the counts."""
    from minoots.raft.testing import LocalCluster, harness_token

    harness_token()
    cluster = LocalCluster(tmp_path / "c", size=3)
    cluster.start()
    try:
        cluster.leader(timeout=60)
        pids = {nid: n.pid for nid, n in cluster.nodes.items()}
        addrs = [n.grpc for n in cluster.nodes.values()]
        maddrs = [n.metrics for n in cluster.nodes.values()]
        report = load_bench.run(timers=1500, window=5.0, clients=2, batch=300, payload=8, single_seconds=0.5,
                                progress=False, say=lambda m: None, cluster_addrs=addrs, metrics_addrs=maddrs)
        assert report["correctness"]["ok"], report["correctness"]
        assert report["restart"] is None and report["rss"] == {}
        assert any("restart" in m for m in report["not_measured"])
        assert all(n.alive() and n.pid == pids[nid] for nid, n in cluster.nodes.items())   # nothing killed
        tag = report["params"]["run_tag"]
        assert tag and all(t.endswith(tag) for t in report["correctness"]["lost_sample"]) is True
        chk = report["metrics_check"]
        assert chk["ok"], chk
        assert sorted(chk["nodes"]) == sorted(cluster.nodes)
        for row in chk["nodes"].values():          # nobody restarted: the counters are compared too
            assert row["counter_created"]["match"] and row["counter_fired"]["match"]
            assert row["state_fired"]["value"] == report["correctness"]["distinct_fired"] >= 1500
        text = load_bench.format_table(report)
        assert "not measured" in text and "metrics cross-check" in text and "agree" in text
        # A second run on the same cluster counts only its own timers (new tag, its own subscription).
        again = load_bench.run(timers=300, window=3.0, clients=1, batch=300, payload=0, single_seconds=0.5,
                               progress=False, say=lambda m: None, cluster_addrs=addrs, metrics_addrs=maddrs)
        assert again["correctness"]["ok"] and again["correctness"]["unknown"] == 0, again["correctness"]
        assert again["metrics_check"]["ok"] and again["params"]["run_tag"] != tag
        assert again["correctness"]["expected"] < report["correctness"]["expected"]
    finally:
        cluster.stop()


def test_metrics_cross_check_flags_a_disagreement():
    from minoots.bench import metrics_check as mc
    before = {"n1": {"address": "a", "start": 1.0, "created": 10, "fires": 5, "timers": {"armed": 5, "settled": 5}},
              "n2": {"address": "b", "start": 1.0, "created": 10, "fires": 5, "timers": {"armed": 5, "settled": 5}}}
    after = {"n1": {"address": "a", "start": 1.0, "created": 110, "fires": 105,
                    "timers": {"armed": 5, "settled": 105}},
             "n2": {"address": "b", "start": 2.0, "created": 40, "fires": 99,     # restarted: counters restart
                    "timers": {"armed": 5, "fired": 1, "settled": 105}}}         # ... and one fire too many
    chk = mc.compare(before, after, created=100, created_max=100, fired=100)
    assert chk["nodes"]["n1"]["counter_created"]["match"] and chk["nodes"]["n1"]["state_fired"]["match"]
    assert chk["nodes"]["n2"]["counter_fired"]["value"] is None and chk["nodes"]["n2"]["restarted"]
    assert chk["nodes"]["n2"]["state_fired"] == {"value": 101, "match": False}
    assert not chk["ok"]
    assert "DISAGREE" in "\n".join(mc.format_check(chk)) and "n/a (restarted)" in "\n".join(mc.format_check(chk))
    assert mc.compare({}, {"n1": {"error": "URLError"}}, 1, 1, 1)["ok"] is False
    assert mc.scrape("127.0.0.1:9")["error"]                     # nothing listens: an error, not a raise


@pytest.mark.parametrize("args, message", [
    (["--cluster", "nohost"], "HOST:PORT"),
    (["--metrics", "127.0.0.1:9"], "--metrics goes with --cluster"),
    (["--cluster", "127.0.0.1:9", "--failover"], "--failover"),
])
def test_cluster_flag_errors_are_clean(args, message):
    r = CliRunner().invoke(bench, ["load", "--timers", "10", *args])
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert "Traceback" not in r.output
