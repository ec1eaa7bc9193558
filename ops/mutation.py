#!/usr/bin/env python3
"""Mutation testing of the modules whose tests must be sharp (issue 17).

Uses mutmut's (2.x, PyPI) mutation operators, applied IN PLACE in this checkout, one
mutant at a time, each judged by its module's own fast tests (never the cluster tests):

    pip install -e '.[test,mutation]'
    python ops/mutation.py --list                 # the targets and their test files
    python ops/mutation.py journal batcher        # run these targets (all when none given)
    python ops/mutation.py --recheck journal      # only last run's survivors (after adding tests)
    python ops/mutation.py --resume kernel.state  # go on with an unfinished run (it saves after each mutant)
    python ops/mutation.py --from-line 440 journal  # only the mutants on line 440 and later

Why not `mutmut run`: the package is installed in editable mode as `minoots`, mapped
from the top-level folders, so a tool that copies sources elsewhere (mutmut 3's
`mutants/`) tests the unmutated installed code and reports every mutant as survived.
Here the mutant is written over the real file, which is what `import minoots.x` loads
(checked before each target, together with a canary that must break the tests), and
restored afterwards (also on Ctrl-C / SIGTERM; a leftover backup is restored at start).
Bytecode caches are bypassed (PYTHONDONTWRITEBYTECODE and the module's .pyc deleted
before each run), since a same-size mutant written within the same second as the
original would otherwise run from the stale .pyc.

Speed: one coverage pass per target (shared by targets with the same tests and sources)
records which test executes each line
(pytest-cov's per-test contexts); each mutant is then judged by just the tests that run
its statement (all of the target's tests when the statement only runs at import time),
fastest first; a mutant that survives them is run again against the tests that started
a process or a thread (ops/mutation_probe.py records them in the same pass): coverage
does not see a line reached there.
A mutant in a statement no test executes is reported `survived` without a run
(marked `no-cov`). Everything runs under `nice -n 15`.

Results: .mutation/<target>.json (every mutant: line, diff, status) and a summary
table on stdout. Statuses: killed, survived, timeout (the tests ran > --timeout-factor
times the baseline; counted as detected). Known equivalent mutants are listed in
docs/mutation.md, not filtered here: the counts are raw.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".mutation"
FAST = "not cluster and not chaos and not bench and not packaging"


@dataclass(frozen=True)
class Target:
    path: str  # file to mutate, relative to the repository root
    tests: tuple[str, ...]  # its fast test files (globs allowed)
    scope: tuple[str, ...] = ()  # top-level defs/classes to mutate; empty: the whole file


# The kernel's own tests, and the kernel-level unit tests of the features whose modules and
# hooks live in kernel/ (graphs, recurrence, occurrences, plain creates, delivery, endpoints,
# retention, schedules): each builds a real State and applies commands, no cluster; the
# *_commands files hold golden snapshot digests. Every kernel target is judged by all of them:
# a narrower list let survivors of kernel/state.py stand that tests/test_occurrences.py kills.
KERNEL_TESTS = ("tests/test_state_*.py", "tests/test_wheel_*.py", "tests/test_graph.py", "tests/test_graph_model.py",
                "tests/test_recurrence.py", "tests/test_retention.py", "tests/test_retention_delivery.py",
                "tests/test_schedule.py",
                "tests/test_occurrences.py", "tests/test_plain_create.py", "tests/test_graph_commands.py",
                "tests/test_graph_recurring.py", "tests/test_sched3_commands.py", "tests/test_delivery_unit.py",
                "tests/test_delivery_commands.py", "tests/test_endpoints_unit.py", "tests/test_endpoints_commands.py",
                "tests/test_retention_commands.py", "tests/test_perfbatch_commands.py",
                "tests/test_escalation_events.py", "tests/test_recurrence_controls.py", "tests/test_snapshot_blocks.py")
TARGETS = {
    # The §5.3 AppendEntries patch: the planner and the transport's send/reply code.
    "pysyncobj_compat": Target("raft/pysyncobj_compat.py",
                               ("tests/test_raft_append_model.py", "tests/test_raft_journal.py"),
                               ("plan_append_entries", "RaftConformantTransportMixin")),
    # Deferred appends (the group sync) are tested with the group sync.
    "journal": Target("raft/journal.py", ("tests/test_raft_journal.py", "tests/test_raft_group_sync.py")),
    # The batcher's queue bound is tested with the quotas, its traceparents with telemetry.
    "batcher": Target("api/batcher.py", ("tests/test_batcher.py", "tests/test_quotas.py", "tests/test_telemetry.py")),
    "ticker": Target("raft/ticker.py", ("tests/test_ticker.py",)),
    # The subscription pins' retention and filtered-stream progress are tested with the subscriptions.
    "events": Target("api/events.py", ("tests/test_api_events.py", "tests/test_events_retention.py",
                                       "tests/test_subscriptions.py", "tests/test_api_watch_batches.py")),
    **{f"kernel.{m}": Target(f"kernel/{m}.py", KERNEL_TESTS)
       for m in ("state", "table", "timer", "validate", "snapshot", "graph", "occurrences", "recurrence",
                 "recurrence_commands", "schedule", "delivery", "plain", "bulk", "quota", "retention", "endpoints", "queue_stats", "errors")},
}


def test_files(target: Target) -> list[str]:
    files = sorted({str(p.relative_to(ROOT)) for pattern in target.tests for p in ROOT.glob(pattern)})
    if not files:
        sys.exit(f"no test files match {target.tests}")
    return files


def module_name(path: str) -> str:
    return "minoots." + path[: -len(".py")].replace("/", ".")


# ---------------------------------------------------------------- the file under test


class InPlace:
    """Writes mutants over the real file and always puts the original back."""

    def __init__(self, path: str):
        self.file = ROOT / path
        self.backup = OUT / "backup" / path.replace("/", "__")
        if self.backup.exists():  # a previous run died mid-mutant
            self.file.write_bytes(self.backup.read_bytes())
            print(f"restored {path} from a leftover backup", file=sys.stderr)
        self.original = self.file.read_text()
        self.backup.parent.mkdir(parents=True, exist_ok=True)
        self.backup.write_text(self.original)

    def write(self, source: str) -> None:
        self.file.write_text(source)
        self.drop_pyc()

    def restore(self) -> None:
        self.file.write_text(self.original)
        self.drop_pyc()

    def close(self) -> None:
        self.restore()
        self.backup.unlink(missing_ok=True)

    def drop_pyc(self) -> None:
        for pyc in (self.file.parent / "__pycache__").glob(self.file.stem + ".*.pyc"):
            pyc.unlink(missing_ok=True)


PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-m", FAST]


def no_hypothesis_db() -> None:
    """Hypothesis saves every failing example and replays it first next time: an example
    that broke one mutant would be replayed against the next ones, and one that fails the
    unmutated code too would "kill" every later mutant. Each run starts without one."""
    from hypothesis import settings

    settings.register_profile("mutation", database=None)
    settings.load_profile("mutation")


# The same for a fresh interpreter: `python -c PYTEST_MAIN args...`
PYTEST_MAIN = ("import sys; from hypothesis import settings; "
               "settings.register_profile('mutation', database=None); settings.load_profile('mutation'); "
               "import pytest; sys.exit(pytest.main(sys.argv[1:]))")


def verdict(code: int, args: list[str]) -> str:
    """pytest's exit code as a mutant's fate. 5 (no tests ran) is never the mutant's
    doing: counting it as a kill would inflate the score, so the run stops instead.
    4 (usage error) is a kill: a mutant that breaks the import of tests/conftest.py
    gets it (the test ids given are the coverage pass's own, so they exist)."""
    if code == 5:
        raise SystemExit(f"pytest exited 5 (no tests ran) for {' '.join(args)[:300]}")
    return "survived" if code == 0 else "killed"


def run_tests(args: list[str], timeout: float) -> tuple[str, float]:
    """One test run in a fresh interpreter (the slow, simple way; --no-fork)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-c", PYTEST_MAIN, *PYTEST_ARGS, *args]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the test run and anything it started
        proc.wait()
        return "timeout", time.monotonic() - start
    return verdict(code, args), time.monotonic() - start


class ForkRunner:
    """Test runs forked from this process after the third-party libraries the tests use
    (pytest, hypothesis, grpc, ...) are imported once: a run then costs the tests, not
    an interpreter start. Nothing of this repository is imported here (its modules
    register metrics and protobuf descriptors at import): each child imports
    `minoots` afresh, from the (mutated) files."""

    def __init__(self, files: list[str]):
        probe = ("import json, sys, pytest; pytest.main(['--co', '-q', '-p', 'no:cacheprovider', *sys.argv[1:]]);"
                 "print('MODULES=' + json.dumps(list(sys.modules)))")
        out = subprocess.run([sys.executable, "-c", probe, *files], cwd=ROOT,
                             capture_output=True, text=True).stdout
        names = json.loads(out.rsplit("MODULES=", 1)[1])
        import importlib

        for name in sorted(names):
            if name.split(".")[0] in ("minoots", "conftest", "support", "fake_grpc", "__main__") or name.startswith("test"):
                continue
            try:
                importlib.import_module(name)
            except Exception:  # an optional submodule: the child imports what it needs
                pass
        assert not any(n == "minoots" or n.startswith("minoots.") for n in sys.modules), "minoots imported in the fork parent"
        import threading

        if threading.active_count() > 1:
            print("warning: threads running in the fork parent", file=sys.stderr)

    def run(self, args: list[str], timeout: float) -> tuple[str, float]:
        start = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: own process group, quiet, run pytest, exit without cleanup
            code = 3
            try:
                os.setpgid(0, 0)
                os.chdir(ROOT)
                sys.dont_write_bytecode = True
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
                no_hypothesis_db()
                import pytest

                code = int(pytest.main([*PYTEST_ARGS, *args]))
            finally:
                os._exit(code)
        deadline = start + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                return verdict(code, args), time.monotonic() - start
            if time.monotonic() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                return "timeout", time.monotonic() - start
            time.sleep(0.02)


# ---------------------------------------------------------------- which tests run a line


@dataclass
class Coverage:
    lines: dict[int, set[str]]  # line -> node ids of the tests executing it ("" = at import time)
    elsewhere: set[str]  # tests that started a process or a thread (ops/mutation_probe.py)
    seconds: dict[str, float]  # node id -> how long the test took


def coverage_pass(name: str, target: Target, files: list[str]) -> tuple[Coverage, float]:
    """Run the target's tests once under coverage with per-test contexts: the baseline
    (must pass) and, per line of the target, the node ids of the tests executing it
    ("" = executed outside any test, i.e. at import/collection time); with
    ops/mutation_probe.py, the tests that ran code outside coverage's sight, and each
    test's duration."""
    from coverage import CoverageData

    # Targets in one folder judged by the same tests share one pass (the kernel's modules
    # do): it is keyed by the bytes of the tests and of every source file it measures.
    measured = Path(target.path).parent
    key = hashlib.sha256()
    for f in files + sorted(str(q.relative_to(ROOT)) for q in (ROOT / measured).rglob("*.py")):
        key.update(f.encode() + b"\0" + (ROOT / f).read_bytes() + b"\0")
    stem = OUT / "coverage" / key.hexdigest()[:24]
    data_file, probe_file, took_file = (stem.with_suffix(x) for x in (".coverage", ".probe.json", ".seconds"))
    if not took_file.exists():
        stem.parent.mkdir(parents=True, exist_ok=True)
        data_file.unlink(missing_ok=True)
        probe_file.unlink(missing_ok=True)
        path = os.pathsep.join(p for p in (str(ROOT / "ops"), os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, COVERAGE_FILE=str(data_file), MUTATION_PROBE_OUT=str(probe_file), PYTHONPATH=path)
        cmd = [sys.executable, "-c", PYTEST_MAIN, "-q", "-p", "no:cacheprovider", "-p", "mutation_probe", "-m", FAST,
               f"--cov={measured}", "--cov-context=test", "--cov-report=", *files]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name}: the tests fail on the unmutated code:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        took_file.write_text(str(time.monotonic() - start))
    else:
        print(f"  {name}: the coverage pass of the same tests and sources is reused ({stem.name})", flush=True)
    took = float(took_file.read_text())
    data = CoverageData(str(data_file))
    data.read()
    by_line = data.contexts_by_lineno(str(ROOT / target.path))
    probe = json.loads(probe_file.read_text())
    return Coverage({line: {c.split("|")[0] for c in ctxs} for line, ctxs in by_line.items()},
                    set(probe["elsewhere"]), probe["seconds"]), took


def statement_spans(tree: ast.AST) -> list[tuple[int, int]]:
    """(first, last) line of every statement, for mapping a mutant to the lines it runs as.
    A decorated def or class starts at its first decorator: a mutant that drops or changes
    a decorator is in the statement (outside every span it was taken for untested code)."""
    return [(min([n.lineno] + [d.lineno for d in getattr(n, "decorator_list", ())]), n.end_lineno)
            for n in ast.walk(tree) if isinstance(n, ast.stmt)]


def tests_for(line: int, spans, contexts: dict[int, set[str]]) -> set[str] | None:
    """Tests executing the innermost statement holding `line`; None = run them all."""
    first, last = min((s for s in spans if s[0] <= line <= s[1]), key=lambda s: s[1] - s[0], default=(line, line))
    found: set[str] = set()
    for n in range(first, last + 1):
        found |= contexts.get(n, set())
    if "" in found:  # runs at import time: every test depends on it
        return None
    return found


def scoped_lines(tree: ast.Module, scope: tuple[str, ...]) -> set[int] | None:
    if not scope:
        return None
    lines: set[int] = set()
    for node in tree.body:
        if getattr(node, "name", None) in scope:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            lines.update(range(start, node.end_lineno + 1))
    missing = set(scope) - {getattr(n, "name", None) for n in tree.body}
    if missing:
        sys.exit(f"scope names not found: {sorted(missing)}")
    return lines


# ---------------------------------------------------------------- one target


def mutants_of(source: str, path: str):
    import mutmut

    ctx = mutmut.Context(source=source, filename=path)
    return mutmut.list_mutations(ctx)


def apply_mutant(source: str, path: str, mutation_id) -> str:
    import mutmut

    ctx = mutmut.Context(source=source, filename=path, mutation_id=mutation_id)
    mutated, count = mutmut.mutate(ctx)
    assert count == 1, mutation_id
    return mutated


def describe(original: str, mutated: str) -> tuple[int, str, str]:
    a, b = original.split("\n"), mutated.split("\n")
    diff = [i for i in range(min(len(a), len(b))) if a[i] != b[i]]
    i = diff[0]
    return i + 1, a[i].strip(), b[i].strip()


def select(mids: list, from_line: int | None, shard: tuple[int, int] | None, to_line: int | None = None) -> list:
    """The mutants to run: those on line `from_line` (1-based) or later, and on `to_line`
    or earlier, when given (to
    finish a module whose earlier lines are already measured), then every N-th of those
    starting at the K-th when sharded (so N clones of the repository can share a module)."""
    if from_line:
        mids = [m for m in mids if m.line_number + 1 >= from_line]
    if to_line:
        mids = [m for m in mids if m.line_number + 1 <= to_line]
    if shard:
        mids = [m for i, m in enumerate(mids) if i % shard[1] == shard[0]]
    return mids


def run_target(name: str, target: Target, args) -> dict:
    files = test_files(target)
    shard = f".shard{args.shard[0]}of{args.shard[1]}" if args.shard else ""
    shard += f".from{args.from_line}" if args.from_line else ""
    shard += f".to{args.to_line}" if args.to_line else ""
    results_file = OUT / f"{name}{shard}.json"
    previous = json.loads(results_file.read_text()) if results_file.exists() else None
    guard = InPlace(target.path)
    try:
        source = guard.original
        # 1. `import minoots.x` must load this very file (not an installed copy).
        loaded = subprocess.run([sys.executable, "-c", f"import {module_name(target.path)} as m; print(m.__file__)"],
                                cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if Path(loaded).resolve() != (ROOT / target.path).resolve():
            sys.exit(f"{name}: {module_name(target.path)} loads {loaded!r}, not {target.path}: mutants would not be seen")
        # 2. Baseline + per-test line coverage.
        cov, baseline = coverage_pass(name, target, files)
        contexts = cov.lines
        timeout = max(60.0, args.timeout_factor * baseline)
        file_seconds = {f: sum(v for t, v in cov.seconds.items() if t.split("::")[0] == f) for f in files}
        by_file_time = sorted(files, key=lambda f: (file_seconds[f], f))
        # 3. Canary: a module that raises on import must fail the tests.
        guard.write(source + "\nraise RuntimeError('mutation canary')\n")
        runner = run_tests if args.no_fork else ForkRunner(files).run
        status, _ = runner(files, timeout)
        guard.restore()
        if status != "killed":
            sys.exit(f"{name}: the canary mutant was not killed ({status}): the tests do not run {target.path}")

        tree = ast.parse(source)
        spans = statement_spans(tree)
        scope = scoped_lines(tree, target.scope)
        mids = [m for m in mutants_of(source, target.path) if scope is None or m.line_number + 1 in scope]
        digest = hashlib.sha256(source.encode()).hexdigest()
        tests_digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in files)).hexdigest()
        reuse: dict = {}
        if (args.recheck or args.resume) and previous:
            if previous.get("source_sha256") not in (None, digest):
                sys.exit(f"{name}: {target.path} changed since the last run; --recheck/--resume need the same source")
            if args.resume and previous.get("tests_sha256") != tests_digest:
                sys.exit(f"{name}: its tests changed since the last run; --resume needs the same tests")
            # --resume: keep every result; --recheck: keep the detected (tests were only added
            # or strengthened, so a killed mutant stays killed), run the survivors again.
            reuse = {(m["line_number"], m["index"]): m for m in previous["mutants"]
                     if args.resume or m["status"] in ("killed", "timeout")}
            # --recheck after an unfinished run: what it never reached stays unrun.
            reached = {(m["line_number"], m["index"]) for m in previous["mutants"]}
        mutants = []
        started = time.monotonic()

        def save(complete: bool) -> dict:
            counts = {s: sum(m["status"] == s for m in mutants) for s in ("killed", "survived", "timeout")}
            result = {"target": name, "path": target.path, "source_sha256": digest, "tests_sha256": tests_digest,
                      "scope": list(target.scope), "from_line": args.from_line, "to_line": args.to_line, "tests": files, "complete": complete,
                      "baseline_seconds": round(baseline, 1), "seconds": round(time.monotonic() - started),
                      "counts": counts, "total": len(mutants), "mutants_in_module": len(mids),
                      "mutants_in_file": in_file, "mutants": mutants}
            tmp = results_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            tmp.replace(results_file)
            return result

        in_file = len(mids)
        mids = select(mids, args.from_line, args.shard, args.to_line)
        for n, mid in enumerate(mids, 1):
            key = (mid.line_number + 1, mid.index)
            if args.recheck and previous and not previous.get("complete", True) and key not in reached:
                continue
            mutated = apply_mutant(source, target.path, mid)
            line, before, after = describe(source, mutated)
            entry = {"line_number": key[0], "index": key[1], "before": before, "after": after}
            if key in reuse:
                entry.update(status=reuse[key]["status"], tests=reuse[key].get("tests", "all"), cached=True)
                mutants.append(entry)
                continue
            # mutmut's own line for the mutant (a deleted decorator shows up in the diff at the
            # blank line above it, outside every statement)
            selected = tests_for(key[0], spans, contexts)
            if selected is not None and not selected:
                entry.update(status="survived", tests="no-cov")
            else:
                guard.write(mutated)
                try:
                    # fastest first: with -x, a kill ends the run early
                    chosen = by_file_time if selected is None else sorted(
                        selected, key=lambda t: (cov.seconds.get(t, float("inf")), t))
                    entry["status"], entry["seconds"] = runner(chosen, timeout)
                    entry["tests"] = "all" if selected is None else len(selected)
                    rest = sorted(cov.elsewhere - selected) if selected is not None else []
                    if entry["status"] == "survived" and rest:
                        # Confirm with the tests that ran code in another process or a
                        # thread, which coverage does not see (ops/mutation_probe.py).
                        entry["status"], more = runner(rest, timeout)
                        entry["seconds"] += more
                        entry["tests"] = f"{len(selected)}+{len(rest)}"
                finally:
                    guard.restore()
            mutants.append(entry)
            save(complete=False)
            if args.verbose or entry["status"] != "killed":
                print(f"  [{name} {n}/{len(mids)}] {entry['status']:8} L{entry['line_number']}: "
                      f"{before[:70]}  ->  {after[:70]}", flush=True)
        result = save(complete=len(mutants) == len(mids))
        return result
    finally:
        guard.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and their tests")
    parser.add_argument("--recheck", action="store_true",
                        help="keep the previous run's killed and timed-out mutants, run the survivors again "
                             "(after adding tests)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an unfinished run (same source, same tests): keep every result it has")
    parser.add_argument("--timeout-factor", type=float, default=5.0, help="timeout = factor x the baseline run")
    parser.add_argument("--shard", type=lambda v: tuple(int(x) for x in v.split("/")), metavar="K/N",
                        help="only every N-th mutant starting at the K-th (0-based): to split a module over clones")
    parser.add_argument("--from-line", type=int, metavar="N",
                        help="only mutants on line N or later (1-based): to finish a module whose earlier "
                             "lines were measured; results go to .mutation/<target>.fromN.json")
    parser.add_argument("--to-line", type=int, metavar="N",
                        help="only mutants on line N or earlier (1-based): with --from-line, one range of "
                             "lines; results go to .mutation/<target>[.fromM].toN.json")
    parser.add_argument("--no-fork", action="store_true", help="a fresh interpreter per test run (slower)")
    parser.add_argument("--verbose", "-v", action="store_true", help="print killed mutants too")
    args = parser.parse_args()
    if args.list:
        for name, t in TARGETS.items():
            print(f"{name:18} {t.path}{' (' + ', '.join(t.scope) + ')' if t.scope else ''}: {' '.join(t.tests)}")
        return
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}")
    os.nice(15)  # shared machine: everything below runs at low priority
    OUT.mkdir(exist_ok=True)
    # SIGTERM -> SystemExit, so the `finally` blocks restore the file under test.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = []
    for name in args.targets or list(TARGETS):
        print(f"== {name}: {TARGETS[name].path}", flush=True)
        r = run_target(name, TARGETS[name], args)
        c = r["counts"]
        score = 100.0 * (c["killed"] + c["timeout"]) / max(1, r["total"])
        done = "" if r["complete"] else f" (run {r['total']} of {r['mutants_in_module']})"
        done += f" (lines {args.from_line or 1}-{args.to_line or ''})" if args.from_line or args.to_line else ""
        rows.append(f"| {name}{done} | {r['total']} | {c['killed']} | {c['survived']} | {c['timeout']} | {score:.1f} % |")
        print(rows[-1], flush=True)
    print("\n| target | mutants | killed | survived | timeout | detected |\n| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
