"""The drill runner: a local cluster, the workload and watchers, a fault script, the verdict.

    minoots chaos leader-kill [--nodes 3] [--rounds 3] [--report FILE] [--seed S]

Each drill starts its own cluster (`LocalCluster`: free ports on 127.0.0.1, a
temporary data root removed afterwards), waits for a leader, starts two
watchers (SDK `watch(from_sequence=1)`, which resume across failovers) and the
client workload (`chaos.workload`), runs its fault script for `--rounds`
rounds, stops the workload, waits (bounded) until everything due has fired,
then checks the invariants of `chaos.ledger` on what the clients were told and
what the watchers saw, plus the drill's own checks. It prints a summary, writes
a JSON report (`--report`) and exits 0 only when every invariant held.

Failover time per round is measured the way `chaos/failover.py` does it (a
probe timer due 20 ms after the fault; the first survivor that reports it
fired marks the end), by calling its `run_round`.

Everything is bounded: the workload by time and count, every wait by a
timeout, every round by `--round-timeout`. Every process started is stopped by
PID (LocalCluster.stop), every proxy closed, the temp dir removed.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from minoots.raft.testing import LocalCluster, harness_token

from . import failover
from .ledger import Ledger, percentile
from .workload import Watcher, Workload, now_ms, settle, wait_seen

WAIT = 30.0


@dataclass
class Context:
    cluster: LocalCluster
    ledger: Ledger
    args: argparse.Namespace
    addresses: list = field(default_factory=list)
    windows: list = field(default_factory=list)        # (start_ms, end_ms) fault windows
    failovers: list = field(default_factory=list)      # failover.run_round results
    checks: dict = field(default_factory=dict)         # drill-specific invariants: name -> count (0 = held)
    info: dict = field(default_factory=dict)           # drill-specific facts for the report
    notes: list = field(default_factory=list)
    skew_ms: int = 0
    expected_down: set = field(default_factory=set)    # nodes the drill left stopped on purpose
    workload: Workload | None = None
    cleanup: list = field(default_factory=list)        # callables run after the cluster stopped
    post_checks: list = field(default_factory=list)    # fn(ctx, merged_events) after the watchers stopped

    def failover_args(self) -> failover.RoundArgs:
        return failover.RoundArgs(round_timeout=self.args.round_timeout)

    def check(self, name: str, bad: int) -> None:
        self.checks[name] = self.checks.get(name, 0) + int(bad)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  - {text}", flush=True)

    def measure_failover(self, n: int, fault=None) -> dict:
        """failover.run_round with the node left down; records the round and its fault window."""
        r = failover.run_round(self.cluster, n, self.failover_args(), fault=fault, restart=False)
        self.failovers.append(r)
        end = r["kill_wall_ms"] + int(1000 * (r["failover_s"] if r["failover_s"] is not None
                                               else self.args.round_timeout))
        self.windows.append((r["kill_wall_ms"], end + 500))
        if r.get("fired_before_kill"):
            self.check("probe_fired_by_old_leader", 1)
        if r["failover_s"] is None:
            self.check("failover_round_timeout", 1)
        print(f"    round {n}: {r['killed']} -> {r['new_leader'] or '?'}  failover "
              f"{_fmt_s(r['failover_s'])}  elected {_fmt_s(r['elected_s'])}", flush=True)
        return r

    def caught_up(self, timeout: float = WAIT) -> str:
        return failover.wait_caught_up(self.cluster, timeout=timeout)

    def pause(self) -> None:
        time.sleep(self.args.pause)


def _fmt_s(v) -> str:
    return "-" if v is None else f"{v:.3f}s"


# ---------------------------------------------------------------- the drills' registry

DRILLS: dict[str, "DrillSpec"] = {}


@dataclass
class DrillSpec:
    name: str
    help: str
    run: callable                       # run(ctx): the fault script
    configure: callable = None          # configure(cluster, args): per-node flags before start
    default_rounds: int = 3


def drill(name: str, help: str, default_rounds: int = 3, configure=None):
    def deco(fn):
        DRILLS[name] = DrillSpec(name, help, fn, configure, default_rounds)
        return fn
    return deco


def ensure_loaded() -> None:
    """Import the drill modules (each registers itself)."""
    from . import clock_skew, delivery, disk_full, follower_kill, leader_kill, partition, rolling_restart  # noqa: F401


# ---------------------------------------------------------------- running one drill

def wait_addresses(cluster: LocalCluster, timeout: float = WAIT) -> list[str]:
    """The gRPC addresses, once every member announced its own (so the SDK can route)."""
    import minoots

    addrs = [n.grpc for n in cluster.nodes.values()]
    deadline = time.monotonic() + timeout
    with minoots.Client(addrs, timeout=5.0, attempt_timeout=1.0) as c:
        while time.monotonic() < deadline:
            try:
                st = c.status()
                if st.leader and all(m.grpc_address for m in st.members) and len(st.members) == len(addrs):
                    return addrs
            except minoots.MinootsError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"members did not announce their gRPC addresses within {timeout}s")


def run_drill(name: str, args: argparse.Namespace) -> dict:
    """Run one drill; returns its report (report["ok"] is the verdict). Never raises for a failed
    drill: an exception is reported as a failed invariant "drill_error"."""
    ensure_loaded()
    spec = DRILLS[name]
    rounds = args.rounds if args.rounds is not None else spec.default_rounds
    args = argparse.Namespace(**{**vars(args), "rounds": rounds})
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    random.seed(seed)
    tmp = tempfile.mkdtemp(prefix=f"minoots-chaos-{name}-")
    harness_token()          # this process's SDK clients authenticate with it
    cluster = LocalCluster(Path(tmp) / "cluster", size=args.nodes)
    ledger = Ledger()
    ctx = Context(cluster, ledger, args)
    watchers: list[Watcher] = []
    workload = None
    started = time.monotonic()
    error = None
    result = None
    print(f"== {name}: {spec.help} ({args.nodes} nodes, {rounds} rounds, seed {seed})", flush=True)
    try:
        if spec.configure:
            spec.configure(cluster, args, ctx)
        cluster.start()
        cluster.leader(timeout=WAIT)
        ctx.addresses = wait_addresses(cluster)
        watchers = [Watcher("w1", ctx.addresses, ledger),
                    Watcher("w2", list(reversed(ctx.addresses)), ledger)]
        for w in watchers:
            w.start()
        import minoots

        with minoots.Client(ctx.addresses, timeout=WAIT, tenant=ledger.tenant) as c:
            c.create(delay=3600, id="marker")
        for w in watchers:
            if not wait_seen(ledger, "marker", "created", timeout=WAIT, watcher=w.name):
                raise TimeoutError("the watchers did not see the first create within 30 s")
        workload = Workload(ctx.addresses, ledger, threads=args.threads, pause=args.op_pause,
                            max_delay_ms=args.max_delay_ms, min_delay_ms=50, max_ops=args.max_ops,
                            seed=seed)
        ctx.workload = workload
        workload.start()
        time.sleep(args.warmup)
        spec.run(ctx)
        time.sleep(args.warmup)
    except Exception as exc:  # noqa: BLE001 - reported, and the drill fails
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        try:
            if workload is not None:
                workload.stop()
            end_ms = None
            if error is None or ledger.creates:
                try:
                    ctx.caught_up(timeout=WAIT) if error is None else None
                except TimeoutError as exc:
                    ctx.check("cluster_did_not_settle", 1)
                    ctx.note(str(exc))
                try:
                    end_ms = settle(ledger, ctx.addresses or [n.grpc for n in cluster.nodes.values()],
                                    grace_ms=3000, max_wait=args.max_delay_ms / 1000 + 30)
                except Exception as exc:  # noqa: BLE001
                    error = error or f"settle: {type(exc).__name__}: {exc}"
            for w in watchers:
                w.stop()
            # Nodes that died without the drill killing them.
            for nid, node in cluster.nodes.items():
                if nid not in ctx.expected_down and node.proc is not None and not node.alive():
                    ctx.check("unexpected_node_exit", 1)
                    ctx.note(f"{nid} exited on its own with code {node.proc.returncode}; log {node.log_file}")
            if end_ms is not None:
                merged = ledger.merged_events()
                for fn in ctx.post_checks:
                    fn(ctx, merged)
                result = ledger.check(end_ms=end_ms, skew_ms=ctx.skew_ms, windows=ctx.windows)
        finally:
            logs = {}
            if args.keep_logs:
                logs = {nid: str(n.log_file) for nid, n in cluster.nodes.items()}
            cluster.stop()
            for fn in ctx.cleanup:
                try:
                    fn()
                except Exception:  # noqa: BLE001
                    traceback.print_exc()
            if not args.keep_logs:
                shutil.rmtree(tmp, ignore_errors=True)

    times = [r["failover_s"] if r["failover_s"] is not None else math.inf for r in ctx.failovers]
    finite = [t for t in times if math.isfinite(t)]
    report = {
        "drill": name, "seed": seed, "nodes": args.nodes, "rounds": rounds,
        "duration_s": round(time.monotonic() - started, 1),
        "failover_s": {"rounds": len(times), "p50": percentile(times, 50),
                       "p95": percentile(times, 95),
                       "max": max(times) if times else None, "timed_out": len(times) - len(finite)},
        "workload_ops": dict(workload.ops) if workload else {},
        "watch_reconnects": {w.name: w.reconnects for w in watchers},
        "drill_checks": dict(ctx.checks),
        "drill_info": ctx.info,
        "notes": ctx.notes,
        "failover_rounds": ctx.failovers,
        "fault_windows_ms": ctx.windows,
    }
    for k in ("p50", "p95", "max"):
        v = report["failover_s"][k]
        report["failover_s"][k] = None if v is None or not math.isfinite(v) else round(v, 3)
    if result is not None:
        report.update({k: result[k] for k in ("invariants", "info", "lateness_ms", "examples")})
    else:
        report["invariants"] = {}
    if error:
        report["error"] = error
    report["ok"] = (error is None and result is not None and result["ok"]
                    and all(v == 0 for v in ctx.checks.values()))
    print_summary(report)
    return report


def print_summary(r: dict) -> None:
    inv = r.get("invariants", {})
    fo = r["failover_s"]
    print(f"-- {r['drill']}: {'PASS' if r['ok'] else 'FAIL'} in {r['duration_s']} s", flush=True)
    if fo["rounds"]:
        print(f"   failover ({fo['rounds']} rounds): P50 {fo['p50']} s  P95 {fo['p95']} s  max {fo['max']} s"
              + (f"  ({fo['timed_out']} timed out)" if fo["timed_out"] else ""))
    if inv:
        print("   " + "  ".join(f"{k}={v}" for k, v in inv.items()))
    if r.get("drill_checks"):
        print("   drill checks: " + "  ".join(f"{k}={v}" for k, v in r["drill_checks"].items()))
    info = r.get("info", {})
    if info:
        print(f"   acknowledged creates {info['acknowledged_creates']} (batch {info['batch_creates']}), "
              f"cancels {info['acknowledged_cancels']}, reschedules {info['acknowledged_reschedules']}, "
              f"idempotent retries {info['idempotent_retries']}, uncertain creates {info['uncertain_creates']}, "
              f"fired seen {info['fired_seen']}, events {info['events_seen']}")
        if info.get("skew_allowed_ms"):
            print(f"   skew allowed {info['skew_allowed_ms']} ms: tick-time early within skew "
                  f"{info['early_within_skew']} (max {info['max_early_ms']} ms); received before the deadline "
                  f"{info['early_received_within_skew']} (max {info['max_early_received_ms']} ms)")
    lat = r.get("lateness_ms")
    if lat:
        for what in ("tick", "receive"):
            for bucket in ("steady", "failover"):
                d = lat[what][bucket]
                if d["n"]:
                    print(f"   lateness {what:<7} {bucket:<8} n={d['n']:<5} P50 {d['p50']} ms  P95 {d['p95']} ms  "
                          f"P99 {d['p99']} ms  max {d['max']} ms")
    if r.get("error"):
        print(f"   ERROR: {r['error']}")
    for kind, exs in (r.get("examples") or {}).items():
        print(f"   e.g. {kind}: {exs[:2]}")


def summary_row(r: dict) -> dict:
    inv = r.get("invariants", {})
    fo = r["failover_s"]
    return {"drill": r["drill"], "ok": r["ok"], "failover_p50_s": fo["p50"], "failover_p95_s": fo["p95"],
            "failover_max_s": fo["max"], **{k: inv.get(k) for k in ("lost", "missed", "early", "duplicates",
                                                                  "gaps", "cancelled_fired")},
            "drill_checks_failed": sorted(k for k, v in r.get("drill_checks", {}).items() if v)}


def print_table(reports: list[dict]) -> None:
    cols = ("drill", "ok", "failover_p50_s", "failover_p95_s", "failover_max_s", "lost", "missed", "early",
            "duplicates", "gaps", "cancelled_fired")
    heads = ("drill", "ok", "fo P50", "fo P95", "fo max", "lost", "missed", "early", "dup", "gaps", "cxl-fired")
    rows = [[str(summary_row(r)[c]) for c in cols] for r in reports]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


# ---------------------------------------------------------------- running drills (`minoots chaos`)

def run(names: list[str], args: argparse.Namespace) -> int:
    reports = [run_drill(n, args) for n in names]
    ok = all(r["ok"] for r in reports)
    if len(reports) > 1:
        print()
        print_table(reports)
        print("ALL PASS" if ok else "SOME FAILED")
    if args.report:
        doc = reports[0] if len(reports) == 1 else {"ok": ok, "summary": [summary_row(r) for r in reports],
                                                     "drills": reports}
        args.report.write_text(json.dumps(doc, indent=2, default=str))
        print(f"report: {args.report}")
    return 0 if ok else 1


DRILL_ORDER = ("leader-kill", "follower-kill", "rolling-restart", "partition", "clock-skew", "disk-full", "delivery")
