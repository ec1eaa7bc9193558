"""ops/mutation.py's choice of mutants: --from-line and --shard (docs/mutation.md)."""
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
