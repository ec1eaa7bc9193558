"""A pytest plugin for ops/mutation.py's coverage pass: per test, how long it took and
whether it started another process or a thread.

Why: coverage's per-test contexts only see lines the test ran in its own thread of this
process. A mutant that survives the tests coverage selected must still face every test
that ran code elsewhere (a child process, or a thread whose lines may be filed under a
later test). Those are few, so that confirmation costs seconds instead of a run of all
the target's tests. The durations let a mutant's tests run fastest first, so a kill
(`-x`) comes early.

Loaded with `-p mutation_probe` (ops/ on PYTHONPATH); writes JSON to $MUTATION_PROBE_OUT.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

_current: str | None = None
_elsewhere: set[str] = set()
_seconds: dict[str, float] = {}


def _mark(*_args) -> None:
    if _current is not None:
        _elsewhere.add(_current)


def _wrap(owner, name: str) -> None:
    original = getattr(owner, name, None)
    if original is None:
        return

    def wrapper(*args, **kwargs):
        _mark()
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


_wrap(subprocess.Popen, "_execute_child")
_wrap(threading.Thread, "start")
for _name in ("posix_spawn", "posix_spawnp"):
    _wrap(os, _name)
os.register_at_fork(before=_mark)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _current
    _current = item.nodeid
    start = time.monotonic()
    try:
        yield
    finally:
        _seconds[item.nodeid] = _seconds.get(item.nodeid, 0.0) + time.monotonic() - start
        _current = None


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("MUTATION_PROBE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"elsewhere": sorted(_elsewhere), "seconds": _seconds}, f)
