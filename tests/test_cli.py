"""The `minoots` command line: version, bench wheel, and human-readable errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import re
import sys
from pathlib import Path

import pytest

import minoots
from minoots.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent


def assert_clean_failure(result, *needles):
    """Non-zero exit, a message for humans, no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "Error" in result.output
    for n in needles:
        assert n in result.output, result.output


def _no_nan(value):
    raise ValueError(f"non-JSON constant {value}")


# ---------------------------------------------------------------- version / help


def test_version(runner):
    result = runner.invoke(main, ["version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == minoots.__version__


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["bench", "--help"], ["bench", "wheel", "--help"]])
def test_help(runner, args):
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_group_lists_its_commands(runner):
    result = runner.invoke(main, ["--help"])
    assert "version" in result.output and "bench" in result.output


def test_unknown_command(runner):
    result = runner.invoke(main, ["frobnicate"])
    assert result.exit_code == 2
    assert_clean_failure(result, "frobnicate")


# ---------------------------------------------------------------- bench wheel


def test_bench_wheel_prints_the_table(runner):
    result = runner.invoke(main, ["bench", "wheel", "--timers", "2000"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for label in ("wheel (per-call)", "wheel (batch)", "wheel (batch, arrays)", "heapq (lazy deletion)", "asyncio call_at"):
        assert label in out
    for col in ("insert", "cancel", "reschedule", "expire", "total", "ins+can+exp", "bytes/timer"):
        assert col in out
    assert "insert 2,000 timers" in out
    assert "cancel 1,000; reschedule 200; expire 1,000" in out
    assert "targets (shown, not asserted)" in out
    assert "correctness:" in out
    # Progress goes to stderr, not into the table.
    assert "running heapq" not in out
    assert "running heapq" in result.stderr


def test_bench_wheel_writes_valid_json(runner, tmp_path):
    path = tmp_path / "results" / "nested" / "wheel.json"  # parents are created
    result = runner.invoke(main, ["bench", "wheel", "--timers", "2000", "--seed", "7", "--json", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert "heapq (lazy deletion)" in result.stdout
    report = json.loads(path.read_text(), parse_constant=_no_nan)
    assert report["benchmark"] == "wheel"
    assert report["minoots_version"] == minoots.__version__
    assert report["params"]["timers"] == 2000
    assert report["params"]["seed"] == 7
    assert report["ops"] == {"insert": 2000, "cancel": 1000, "reschedule": 200, "expire": 1000}
    assert set(report["peers"]) == {"wheel_per_call", "wheel_batch", "wheel_arrays", "heapq", "asyncio"}
    for peer in report["peers"].values():
        assert set(peer["phases"]) == {"insert", "cancel", "reschedule", "expire"}
        for phase in peer["phases"].values():
            assert phase["seconds"] > 0
            assert phase["ops_per_s"] > 0
        assert peer["total"]["ops"] == 4200
        assert peer["bytes_per_timer"] > 0
        assert peer["bytes_method"]
        assert peer["expire_wakeups"] > 0
    for wheel in ("wheel_per_call", "wheel_batch", "wheel_arrays"):
        for base in ("heapq", "asyncio"):
            assert report["ratios"][f"{wheel}_vs_{base}"]["insert_cancel_expire"] > 0
    assert report["targets"]["speedup_vs_heapq_insert_cancel_expire"]["target"] == 10
    assert report["targets"]["wheel_bytes_per_timer"]["target"] == 64
    assert report["correctness"]["checked"] is True
    # The same seed gives the same workload, so the same expire wake-ups.
    assert len({p["expire_wakeups"] for p in report["peers"].values()}) == 1


def test_bench_wheel_without_json_writes_nothing(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["bench", "wheel", "--timers", "500", "-q"])
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--timers", "0"], "--timers"),
        (["--timers", "-5"], "--timers"),
        (["--timers", "abc"], "--timers"),
        (["--timers", "1.5"], "--timers"),
        (["--span-ms", "0"], "--span-ms"),
        (["--seed", "x"], "--seed"),
        (["--repeat", "0"], "--repeat"),
        (["--bogus"], "--bogus"),
        (["--timers"], "--timers"),
    ],
)
def test_bench_wheel_bad_args(runner, args, needle):
    result = runner.invoke(main, ["bench", "wheel", *args])
    assert result.exit_code == 2
    assert_clean_failure(result, needle)


def test_bench_wheel_span_beyond_max_time(runner):
    result = runner.invoke(main, ["bench", "wheel", "--timers", "10", "--span-ms", str(10**15), "-q"])
    assert result.exit_code == 1
    assert_clean_failure(result, "MAX_TIME")


def test_bench_wheel_json_to_a_directory(runner, tmp_path):
    result = runner.invoke(main, ["bench", "wheel", "--timers", "10", "--json", str(tmp_path)])
    assert_clean_failure(result, str(tmp_path))


def test_bench_wheel_json_unwritable_fails_before_running(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # A path under a regular file cannot be created, whoever we are.
    result = runner.invoke(main, ["bench", "wheel", "--timers", "10", "--json", str(blocker / "w.json")])
    assert_clean_failure(result, "cannot write")
    assert "running" not in result.output  # failed before the benchmark ran


# ---------------------------------------------------------------- python -m minoots and the console script


def _run(args, **kw):
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, **kw)


def test_python_m_minoots_bench_wheel(tmp_path):
    """The benchmarks run through the CLI only (no second entry point per module)."""
    path = tmp_path / "w.json"
    proc = _run([sys.executable, "-m", "minoots", "bench", "wheel", "--timers", "2000", "--json", str(path)])
    assert proc.returncode == 0, proc.stderr
    assert "heapq (lazy deletion)" in proc.stdout
    assert json.loads(path.read_text(), parse_constant=_no_nan)["params"]["timers"] == 2000


def test_python_m_minoots_bench_wheel_bad_args():
    proc = _run([sys.executable, "-m", "minoots", "bench", "wheel", "--timers", "zero"])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--timers" in proc.stderr


@pytest.mark.parametrize("args, flag", [
    (["node", "run", "--id", "n1", "--raft", "127.0.0.1:1", "--data-dir", "d", "--admin", "127.0.0.1:2"], "--admin"),
    (["up", "--admin-port", "7301"], "--admin-port"),
])
def test_retired_admin_flags_say_what_to_use_instead(runner, args, flag):
    result = runner.invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"{flag} was removed: the JSON admin channel is retired" in result.output
    assert "minoots cluster" in result.output
    help_text = runner.invoke(main, args[:1 + (args[0] == "node")] + ["--help"]).output
    assert not re.search(re.escape(flag) + r"(?![\w-])", help_text)     # --admin-token-file is another flag


def test_node_run_takes_the_raft_timings_as_flags(runner, tmp_path):
    from minoots.raft.config import RaftTiming

    help_text = runner.invoke(main, ["node", "run", "--help"]).output
    for flag in ("--raft-min-timeout", "--raft-max-timeout", "--append-entries-period", "--connection-timeout",
                 "--connection-retry-time", "--leader-fallback-timeout"):
        assert flag in help_text, flag
    assert f"[default: {RaftTiming.raft_min_timeout};" in " ".join(help_text.split())
    # They reach the node's config, which checks them before anything else happens.
    proc = _run([sys.executable, "-m", "minoots", "node", "run", "--id", "n1", "--raft", "127.0.0.1:1",
                 "--data-dir", str(tmp_path / "d"), "--raft-min-timeout", "2", "--raft-max-timeout", "1"])
    assert proc.returncode == 1, proc.stderr
    assert "--raft-min-timeout must not exceed --raft-max-timeout" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d").exists()


def test_console_script():
    """`pip install -e .` puts the `minoots` command next to this interpreter."""
    script = shutil.which("minoots") or str(Path(sys.executable).with_name("minoots"))
    proc = _run([script, "version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == minoots.__version__


def test_bench_wheel_fails_loudly_when_peers_disagree(runner, monkeypatch):
    """The in-run correctness check: a peer that expires in the wrong order stops the run."""
    from minoots.bench import wheel as wheel_bench

    real = wheel_bench._run_heapq

    def swapped(wl):
        secs, expired, wakeups = real(wl)
        expired[3], expired[4] = expired[4], expired[3]
        return secs, expired, wakeups

    monkeypatch.setattr(wheel_bench, "_run_heapq", swapped)
    result = runner.invoke(main, ["bench", "wheel", "--timers", "200", "-q"])
    assert result.exit_code == 1
    assert_clean_failure(result, "correctness check failed", "heapq", "position 3")


def test_bench_kernel_small_run_prints_table_and_json(runner, tmp_path):
    out = tmp_path / "kernel.json"
    result = runner.invoke(main, ["bench", "kernel", "--timers", "3000", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "state bytes/timer" in result.output
    report = json.loads(out.read_text())
    assert report["timers"] == 3000
    assert report["tick_fired"] > 0          # the first minute's timers fired
    assert report["snapshot_bytes"] > 0
    assert report["create_path"] == "columns" and "replica apply, columns record" in result.output
    assert set(report["replica_apply"]) == {"columns", "specs"}


def test_bench_kernel_general_path_builds_the_same_state_size(runner, tmp_path):
    outs = []
    for path in ("columns", "specs"):
        out = tmp_path / f"{path}.json"
        result = runner.invoke(main, ["bench", "kernel", "--timers", "2000", "--path", path, "--json", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(json.loads(out.read_text()))
    assert outs[0]["snapshot_bytes"] == outs[1]["snapshot_bytes"] and outs[1]["create_path"] == "specs"


def test_bench_kernel_rejects_bad_payload(runner):
    result = runner.invoke(main, ["bench", "kernel", "--payload", "70000"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
