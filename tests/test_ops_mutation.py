"""ops/mutation.py's choice of mutants (--from-line, --to-line, --shard), its verdicts and its probe (docs/mutation.md)."""
from __future__ import annotations

import importlib.util
import sys
from collections import namedtuple
from pathlib import Path

_spec = importlib.util.spec_from_file_location("ops_mutation", Path(__file__).parent.parent / "ops" / "mutation.py")
mutation = importlib.util.module_from_spec(_spec)
sys.modules["ops_mutation"] = mutation  # its dataclasses look their module up there
_spec.loader.exec_module(mutation)

# mutmut's RelativeMutationID: a 0-based line_number and the index of the mutant on it.
Mid = namedtuple("Mid", "line_number index")
MIDS = [Mid(9, 0), Mid(10, 0), Mid(10, 1), Mid(11, 0), Mid(20, 0)]


def lines(mids):
    return [m.line_number + 1 for m in mids]


def test_without_from_line_or_shard_every_mutant_runs():
    assert mutation.select(MIDS, None, None) == MIDS


def test_from_line_keeps_the_mutants_on_that_1_based_line_and_later():
    assert lines(mutation.select(MIDS, 11, None)) == [11, 11, 12, 21]
    assert lines(mutation.select(MIDS, 12, None)) == [12, 21]
    assert lines(mutation.select(MIDS, 22, None)) == []


def test_from_line_applies_before_the_shard_split():
    picked = [mutation.select(MIDS, 11, (k, 2)) for k in (0, 1)]
    assert lines(picked[0]) == [11, 12] and lines(picked[1]) == [11, 21]
    assert sorted(picked[0] + picked[1]) == sorted(mutation.select(MIDS, 11, None))


def test_from_line_is_a_command_line_option(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["mutation.py", "--help"])
    try:
        mutation.main()
    except SystemExit:
        pass
    assert "--from-line" in capsys.readouterr().out


def test_the_probe_names_the_tests_that_ran_code_outside_coverages_sight(tmp_path):
    """A survivor faces these tests too (a child process or a thread is not in the test's
    coverage context); a test that stays in its own thread is not among them."""
    import json
    import os
    import subprocess

    (tmp_path / "test_sample.py").write_text(
        "import subprocess, sys, threading, os\n"
        "def test_plain():\n    assert sum(range(3)) == 3\n"
        "def test_child_process():\n    subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
        "def test_thread():\n    t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "def test_fork():\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n")
    out = tmp_path / "probe.json"
    ops = Path(__file__).parent.parent / "ops"
    env = dict(os.environ, PYTHONPATH=str(ops), MUTATION_PROBE_OUT=str(out))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation_probe",
                           "test_sample.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    probe = json.loads(out.read_text())
    assert probe["elsewhere"] == ["test_sample.py::test_child_process", "test_sample.py::test_fork",
                                  "test_sample.py::test_thread"]
    assert sorted(probe["seconds"]) == ["test_sample.py::test_child_process", "test_sample.py::test_fork",
                                        "test_sample.py::test_plain", "test_sample.py::test_thread"]
    assert all(s > 0 for s in probe["seconds"].values())


def test_no_tests_run_is_never_counted_as_a_kill():
    """pytest's 5 (no tests ran) would be a kill that no test made: the run stops instead.
    4 is what a mutant breaking tests/conftest.py's imports gets (the canary does): a kill."""
    import pytest

    assert mutation.verdict(0, []) == "survived"
    assert [mutation.verdict(code, []) for code in (1, 2, 3, 4)] == ["killed"] * 4
    with pytest.raises(SystemExit, match="pytest exited 5"):
        mutation.verdict(5, ["tests/test_x.py::test_gone"])


def test_to_line_keeps_the_mutants_on_that_line_and_earlier_and_combines_with_from_line():
    assert lines(mutation.select(MIDS, None, None, 11)) == [10, 11, 11]
    assert lines(mutation.select(MIDS, 11, None, 12)) == [11, 11, 12]
    assert lines(mutation.select(MIDS, 12, None, 11)) == []
