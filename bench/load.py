"""End-to-end load harness: N outstanding timers on a real local cluster, then let them all fire.

Run it as ``minoots bench load`` (``--help`` lists the options).

Phases (each bounded in time; every process started is stopped by PID):

1. start a ``--nodes`` cluster (LocalCluster in a temp dir) and one watcher
   (a durable subscription from sequence 1 for FIRED events, read with the SDK's
   ``Client.subscribe``: retention keeps what it has not committed, and it resumes
   across failovers), record each node's VmRSS;
2. single creates: ``--single-seconds`` of ``Client.create`` from 16 threads;
3. batched load: ``--timers`` timers through ``Client.create_many`` in batches
   of ``--batch`` from ``--clients`` threads (one Client each). Deadlines are
   uniform over ``--window`` starting ``--lead`` seconds after the load began
   (default: an estimate of the load time plus a margin), so nothing should be
   due while loading; timers that were due before their create was acknowledged
   are counted and reported, not hidden;
4. at full load: VmRSS of each node, a snapshot (``Client.take_snapshot``) with
   its size and time, then the restart recovery of one follower (SIGKILL,
   restart, time until its applied index reaches the leader's commit index);
5. fire: wait (bounded) until every timer's FIRED event has been seen;
   ``--failover`` SIGKILLs the leader in the middle of the window.

Lateness per fired timer: ``at - fire_at`` (the tick's time stamped by the
cluster) and ``received - fire_at`` (this process's clock when the watcher got
the event; same machine, same clock). The steady-state row
(``lateness_steady_tick_ms``) is ``at - fire_at`` of every timer due outside the
fault windows (``steady_excludes_ms``: the burst second, the failover from the kill
until the restarted node caught up, the follower restart). Correctness: every created timer fires
exactly once; a lost or duplicated timer makes the run fail (exit status 1).
The verdict is about the cluster, not its observer: if the watcher fails (e.g.
OUT_OF_RANGE after retention trimmed its cursor) or falls behind, the verdict
says "observer failed" and correctness is judged from the nodes' state (every
timer's state, ``fired_at`` and attempts by paged ``ListTimers`` from a
caught-up node, see ``judge``); the failover step runs regardless.
``--stress`` adds a competing CPU hog (``CpuHog``) from the load's start.

The cluster, the clients and the watcher share one machine: the numbers are for
comparing changes (and systems) on that machine, not absolute capacity.
"""
from __future__ import annotations

import json
import math
import os
import queue
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

from minoots.api.client import Client
from minoots.api.types import EventKind, TimerSpec, datetime_to_ms
from minoots.chaos.ledger import percentile
from minoots.raft.clock import now_ms
from minoots.raft.store import DEFAULT_SYNC
from minoots.raft.testing import LocalCluster, harness_token

try:
    from minoots.bench import metrics_check
    from minoots.bench.external import ExternalCluster, ExternalClusterError
except ImportError:  # pragma: no cover - running from the repo root
    from bench import metrics_check  # type: ignore
    from bench.external import ExternalCluster, ExternalClusterError  # type: ignore

SINGLE_THREADS = 16
PCTS = (50, 95, 99, 99.9)


class LoadBenchError(Exception):
    """A bad argument or an environment problem: a clean error, not a traceback."""


def parse_duration(text) -> float:
    """'600s', '10m', '1h', '250ms' or a bare number of seconds -> seconds."""
    s = str(text).strip().lower()
    for suffix, mult in (("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if s.endswith(suffix):
            s, m = s[: -len(suffix)], mult
            break
    else:
        m = 1.0
    try:
        v = float(s) * m
    except ValueError:
        raise LoadBenchError(f"bad duration {text!r} (use e.g. 600s, 10m, 1h)") from None
    if not math.isfinite(v) or v <= 0:
        raise LoadBenchError(f"duration must be > 0, got {text!r}")
    return v


def validate(timers: int, nodes: int, window: float, clients: int, batch: int, payload: int,
             peers: tuple = (), burst: int = 0, etcd_timers: Optional[int] = None) -> None:
    if timers < 1:
        raise LoadBenchError("--timers must be >= 1")
    if not 1 <= nodes <= 9:
        raise LoadBenchError("--nodes must be within 1..9")
    if window < 1:
        raise LoadBenchError("--window must be at least 1s")
    if clients < 1:
        raise LoadBenchError("--clients must be >= 1")
    if not 1 <= batch <= 10_000:
        raise LoadBenchError("--batch must be within 1..10000 (one replicated command)")
    if not 0 <= payload <= 65536:
        raise LoadBenchError("--payload must be within 0..65536")
    if burst < 0:
        raise LoadBenchError("--burst must be >= 0")
    for p in peers:
        if p not in ("redis", "etcd"):
            raise LoadBenchError(f"unknown peer {p!r} (known: redis, etcd)")
    if etcd_timers is not None and etcd_timers < 1:
        raise LoadBenchError("--etcd-timers must be >= 1")


def vmrss(pid: Optional[int], field: str = "VmRSS") -> Optional[int]:
    """VmRSS (or another /proc/PID/status size such as RssAnon, RssFile) in bytes; None if gone."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_parts(pid: Optional[int]) -> dict:
    """VmRSS split into heap (RssAnon) and mapped files (RssFile: here LMDB's maps, which the
    kernel can drop and re-read), so bytes per timer can be told apart by where they live."""
    return {f: vmrss(pid, f) for f in ("VmRSS", "RssAnon", "RssFile")}


def machine() -> str:
    """What the figures were measured on: CPU model, cores, memory, OS."""
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError):
        mem = "? GiB"
    return f"{cpu}, {os.cpu_count()} cores, {mem}, {platform.system()} {platform.release()}"


def dist(values: list) -> dict:
    out = {"n": len(values)}
    for p in PCTS:
        out[f"p{p:g}"] = percentile(values, p)
    out["max"] = max(values) if values else None
    return out


class RssSampler(threading.Thread):
    """VmRSS of every node every `interval` s (follows restarts: reads each node's current pid)."""

    def __init__(self, cluster: LocalCluster, t0: float, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss")
        self.cluster, self.t0, self.interval = cluster, t0, interval
        self.samples: list[dict] = []
        self._stop = threading.Event()

    def sample(self) -> dict:
        return {nid: vmrss(n.pid if n.alive() else None) for nid, n in self.cluster.nodes.items()}

    def run(self) -> None:
        while not self._stop.is_set():
            self.samples.append({"t": time.monotonic() - self.t0, **self.sample()})
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()


class Watcher(threading.Thread):
    """Consumes FIRED events through a durable subscription (so retention cannot trim its
    events from under it, however far behind it falls); records (timer_id, at_ms,
    fire_at_ms, received_ms)."""

    SUBSCRIPTION = "bench-load"

    def __init__(self, addrs: list[str], reconnect_timeout: float = 60.0, tag: str = "") -> None:
        """`tag`: this run's id suffix (``--cluster``): a subscription of its own from the next
        event (deleted by `stop`), and only the FIRED events of ids ending with it are kept."""
        super().__init__(daemon=True, name="watcher")
        self.client = Client(addrs, timeout=30)
        self.tag = tag
        self.name = self.SUBSCRIPTION + tag
        self.client.create_subscription(self.name, kinds=[EventKind.FIRED], from_sequence=0 if tag else 1)
        self.sub = self.client.subscribe(self.name, commit_every=10_000, reconnect_timeout=reconnect_timeout)
        self.fired: list[tuple] = []
        self.error: Optional[BaseException] = None
        self._stopping = False

    @property
    def watch(self):
        return self.sub.watch

    def run(self) -> None:
        try:
            for ev in self.sub:
                if self.tag and not ev.timer_id.endswith(self.tag):
                    continue          # another client's timer on a shared cluster
                self.fired.append((ev.timer_id, datetime_to_ms(ev.at), datetime_to_ms(ev.fire_at), now_ms()))
        except BaseException as exc:  # reported, not swallowed
            if not self._stopping:    # not the harness closing it
                self.error = exc

    def stop(self) -> None:
        self._stopping = True
        try:
            self.sub.close()
        except Exception:             # the cluster may be gone: the commit does not matter then
            self.sub.watch.close()
        self.join(5)
        if self.tag:                  # a shared cluster: its retention must not stay pinned by us
            try:
                self.client.delete_subscription(self.name, timeout=10)
            except Exception:
                pass
        self.client.close()


_HOG = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
x = 0
while time.monotonic() < end:
    for _ in range(20000):
        x += 1
"""


class CpuHog:
    """``--stress``: one separate process busy-looping for `seconds` (wall time; it ends by itself
    then, even if this process dies), as a competing install would on a shared host. `stop()`
    ends it by PID (SIGTERM, then SIGKILL) and reaps it; `report()` says how much CPU it got."""

    def __init__(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds <= 0:
            raise LoadBenchError("--stress must be > 0 CPU seconds")
        self.seconds = float(seconds)
        self.pid: Optional[int] = None
        self.started: Optional[float] = None
        self.wall_s: Optional[float] = None
        self.cpu_s: Optional[float] = None
        self.stopped_by: Optional[str] = None
        self._proc = None

    def start(self) -> "CpuHog":
        import subprocess
        self._proc = subprocess.Popen([sys.executable, "-c", _HOG, repr(self.seconds)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.pid, self.started = self._proc.pid, time.monotonic()
        return self

    def stop(self) -> None:
        import signal
        if self._proc is None or self._proc.returncode is not None:
            return
        pid = self.pid
        self.stopped_by = "itself"
        try:
            done, status, ru = os.wait4(pid, os.WNOHANG)
            if done == 0:             # still running: end it by its PID
                self.stopped_by = "SIGTERM"
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5.0
                while True:
                    done, status, ru = os.wait4(pid, os.WNOHANG)
                    if done:
                        break
                    if time.monotonic() > deadline:
                        self.stopped_by = "SIGKILL"
                        os.kill(pid, signal.SIGKILL)
                        done, status, ru = os.wait4(pid, 0)
                        break
                    time.sleep(0.02)
            self.cpu_s = ru.ru_utime + ru.ru_stime
            self._proc.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:     # reaped elsewhere
            self._proc.returncode = self._proc.returncode if self._proc.returncode is not None else -1
        self.wall_s = time.monotonic() - (self.started or time.monotonic())

    def report(self) -> dict:
        return {"cpu_seconds": self.seconds, "pid": self.pid, "ran_s": self.wall_s, "cpu_used_s": self.cpu_s,
                "stopped_by": self.stopped_by,
                "note": "one busy-looping process started with the load phase (a competing install)"}


# ---------------------------------------------------------------- phases

def _single_phase(addrs: list[str], seconds: float, deadline_of: Callable[[int], int], next_id: list,
                  expected: dict, lock: threading.Lock, tag: str = "") -> dict:
    """Single CreateTimer calls from SINGLE_THREADS threads for `seconds`."""
    stop_at = time.monotonic() + seconds
    lat: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        with Client(addrs, timeout=30) as c:
            while time.monotonic() < stop_at:
                with lock:
                    k = next_id[0]
                    next_id[0] += 1
                tid, fa = f"s{k}{tag}", deadline_of(k)
                t0 = time.perf_counter()
                try:
                    c.create(fa, id=tid)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    # may or may not exist: it still must not fire twice; count it only if it fires
                    with lock:
                        expected[tid] = (fa, None)
                    continue
                lat.append(time.perf_counter() - t0)
                with lock:
                    expected[tid] = (fa, now_ms())

    start = time.monotonic()
    ts = [threading.Thread(target=worker, daemon=True) for _ in range(SINGLE_THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 60)
    took = time.monotonic() - start
    return {"threads": SINGLE_THREADS, "seconds": round(took, 2), "timers": len(lat),
            "timers_per_s": len(lat) / took if took else 0.0, "errors": len(errors), "error_sample": errors[:3],
            "latency_ms": {k: (v * 1e3 if isinstance(v, float) and k != "n" else v) for k, v in dist(lat).items()}}


def _batched_phase(addrs: list[str], specs_for: Callable[[int], list], n_batches: int, clients: int,
                   total: int, budget_s: float, t0: float, progress: bool) -> dict:
    """create_many of every batch from `clients` threads; bounded by budget_s."""
    q: "queue.Queue[int]" = queue.Queue()
    for i in range(n_batches):
        q.put(i)
    done = [0]
    series: list[tuple[float, int]] = []       # (t since start, cumulative timers committed)
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + budget_s
    acked: dict[int, int] = {}                  # batch -> ack time (ms)

    def worker() -> None:
        with Client(addrs, timeout=60) as c:
            while time.monotonic() < stop_at:
                try:
                    i = q.get_nowait()
                except queue.Empty:
                    return
                specs = specs_for(i)
                b0 = time.perf_counter()
                try:
                    c.create_many_ids(specs, timeout=max(1.0, min(60.0, stop_at - time.monotonic())))
                except Exception as exc:
                    errors.append(f"batch {i}: {type(exc).__name__}: {exc}")
                    acked[i] = -1
                    continue
                lat.append(time.perf_counter() - b0)
                with lock:
                    done[0] += len(specs)
                    acked[i] = now_ms()
                    series.append((time.monotonic() - t0, done[0]))

    start = time.monotonic()
    ts = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in ts:
        t.start()
    bar = _bar(total, "load") if progress else None
    shown = 0
    while any(t.is_alive() for t in ts):
        time.sleep(0.2)
        if bar is not None:
            bar.update(done[0] - shown)
            shown = done[0]
    if bar is not None:
        bar.update(done[0] - shown)
        bar.render_finish()
    took = time.monotonic() - start
    return {"clients": clients, "seconds": round(took, 2), "timers": done[0],
            "timers_per_s": done[0] / took if took else 0.0, "batches_failed": len(errors),
            "error_sample": errors[:3], "timed_out": done[0] < total and not errors,
            "batch_latency_ms": {k: (v * 1e3 if isinstance(v, float) else v) for k, v in dist(lat).items()},
            "series": series, "acked": acked, "start_t": start - t0}


def _bar(length: int, label: str):
    import click
    bar = click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)
    bar.__enter__()
    return bar


def _wait_recovered(cluster: LocalCluster, nid: str, leader: str, timeout: float) -> Optional[float]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        s, ls = cluster.status(nid, timeout=1.0), cluster.status(leader, timeout=1.0)
        if s and ls and s.get("applied_index", -1) >= ls.get("commit_index", 1 << 62):
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def restart_phases(log_text: str) -> dict:
    """The restart phases a node logged (raft/machine.py), from its log since the restart:
    snapshot load seconds (and timers), local log replay seconds (to the commit index its log
    recorded), both counted from the Raft machine's creation."""
    out: dict = {}
    for line in log_text.splitlines():
        if '"snapshot loaded"' not in line and '"log replayed"' not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "snapshot loaded" and "snapshot_load_s" not in out:
            out["snapshot_load_s"], out["snapshot_timers"] = rec.get("seconds"), rec.get("timers")
        elif rec.get("event") == "log replayed" and "replay_s" not in out:
            out["replay_s"], out["machine_ready_s"] = rec.get("replay_s"), rec.get("seconds")
    return out


def _restart_follower(cluster: LocalCluster, leader: str, timeout: float) -> dict:
    nid = next(n for n in cluster.nodes if n != leader)
    ls = cluster.status(leader) or {}
    node = cluster.nodes[nid]
    try:
        offset = node.log_file.stat().st_size
    except OSError:
        offset = 0
    # Its own snapshot first (as a node that ran for a while has), so that the restart shows a
    # snapshot load as well as a log replay.
    snap_s = None
    try:
        from minoots.v1 import cluster_pb2
        t0 = time.perf_counter()
        node.cluster().TakeSnapshot(cluster_pb2.TakeSnapshotRequest(), timeout=120)
        snap_s = time.perf_counter() - t0
    except Exception:
        pass                  # restarted without one: the row then shows no snapshot load
    start_ms = now_ms()
    cluster.kill(nid)
    cluster.start_node(nid)
    took = _wait_recovered(cluster, nid, leader, timeout)
    try:
        with open(node.log_file, "rb") as f:
            f.seek(offset)
            phases = restart_phases(f.read().decode("utf-8", "replace"))
    except OSError:
        phases = {}
    return {"node": nid, "leader_commit_index_at_kill": ls.get("commit_index"),
            "recovery_s": took, "timed_out": took is None, "start_ms": start_ms, "end_ms": now_ms(),
            "own_snapshot_s": snap_s, **phases,
            "note": "SIGKILL, restart, until its applied index >= the leader's commit index; snapshot load and "
                    "local log replay as the node logged them (the rest: process start and catch-up)"}


def _pending_in_state(cluster: LocalCluster, fired_before: int) -> tuple:
    """(timers still scheduled or armed, timers fired or settled) by the leader's Cluster.Status;
    (None, fired_before) when no leader answers (e.g. during the failover)."""
    try:
        st = cluster.status(cluster.leader(timeout=2.0)) or {}
    except TimeoutError:
        return None, fired_before
    counts = st.get("timers") or {}
    if not counts:
        return None, fired_before
    return (int(counts.get("scheduled", 0)) + int(counts.get("armed", 0)),
            int(counts.get("fired", 0)) + int(counts.get("settled", 0)))


def _failover(cluster: LocalCluster, leader: str) -> dict:
    t_kill = now_ms()
    cluster.kill(leader)
    try:
        new = cluster.leader(timeout=30, exclude={leader})
    except TimeoutError:
        new = None
    t_elected = now_ms()
    cluster.start_node(leader)
    # The restarted node catching up is part of the fault (its window is not steady state).
    took = _wait_recovered(cluster, leader, new, 60) if new is not None else None
    return {"killed": leader, "new_leader": new, "kill_ms": t_kill, "elected_ms": t_elected,
            "elected_after_s": (t_elected - t_kill) / 1e3,
            "recovered_ms": now_ms() if took is not None else None}


def fault_windows(burst_ms: Optional[int], fo: Optional[dict], restart: Optional[dict]) -> list:
    """(from_ms, to_ms) deadlines that are not steady state: the burst second, the failover (kill
    until the restarted node caught up, else election + 1 s) and the follower restart."""
    out = []
    if burst_ms is not None:
        out.append((burst_ms, burst_ms + 999))
    if fo:
        out.append((fo["kill_ms"], fo.get("recovered_ms") or fo["elected_ms"] + 1000))
    if restart and restart.get("start_ms") is not None:
        out.append((restart["start_ms"], restart["end_ms"]))
    return out


def steady_lateness(samples: Optional[dict], windows: list) -> Optional[dict]:
    """Tick lateness (at - fire_at) of the timers due outside every fault window."""
    if not samples:
        return None
    return dist([d for d, fa in zip(samples["tick"], samples["fire_at"])
                 if not any(a <= fa <= b for a, b in windows)])


# ---------------------------------------------------------------- the run

def not_measured(external: bool, failover: bool, nodes: int) -> list:
    """The table rows a run cannot fill: against an existing cluster (``--cluster``) the harness
    starts and kills nothing and has no process ids."""
    if not external:
        return [] if nodes > 1 else ["follower restart recovery (one node)"]
    return ["RSS and bytes/timer (no process ids of an existing cluster)",
            "follower restart recovery (the harness kills no node)",
            "failover (the harness kills no node)"]


def _metrics_check(cluster, maddrs: list, before: Optional[dict], correctness: dict, external: bool) -> dict:
    """Each node's /metrics now against before the run (bench/metrics_check.py), once every node
    that answers has applied the leader's commit index (so a follower's state is complete)."""
    if not maddrs:
        return {"skipped": "no --metrics addresses given" if external else "the nodes serve no /metrics"}
    try:
        commit = (cluster.status(cluster.leader(timeout=30)) or {}).get("commit_index", 0)
        cluster.wait_applied(commit, timeout=60)
    except TimeoutError:
        pass                      # compared anyway: a lagging node shows as a mismatch
    after = metrics_check.scrape_all(maddrs)
    created = int(correctness.get("expected", 0))
    fired = int(correctness.get("distinct_fired", 0))
    return metrics_check.compare(before or {}, after, created, created + int(correctness.get("ambiguous_creates", 0)),
                                 fired)


def default_lead(timers: int, single_seconds: float) -> float:
    """Seconds from the load's start to the first deadline: assumes >= 4,000 timers/s batched."""
    return single_seconds + 10.0 + timers / 4000.0


def run(timers: int = 100_000, nodes: int = 3, window: float = 600.0, clients: int = 8, batch: int = 1000,
        payload: int = 64, out: Optional[str] = None, peers: tuple = (), burst: int = 0,
        single_seconds: float = 5.0, lead: Optional[float] = None, failover: bool = False,
        sync: str = DEFAULT_SYNC, progress: bool = True, say=None, etcd_timers: Optional[int] = None,
        install_peers: bool = True, stress: Optional[float] = None, cluster_addrs: Optional[list] = None,
        metrics_addrs: Optional[list] = None) -> dict:
    """``etcd_timers``: timers for the etcd peer (default ``min(timers + burst, 20000)``: one lease each).
    ``install_peers``: apt-get a missing peer's Debian package (bench/debian.py) instead of skipping it.
    ``stress``: seconds of a competing CPU hog (``CpuHog``) started with the load phase.
    ``cluster_addrs``: gRPC HOST:PORTs of a running cluster to load instead of starting one (bench/external.py;
    nothing is started or killed, ``nodes`` is ignored); ``metrics_addrs``: its nodes' /metrics HOST:PORTs,
    for the cross-check (a local cluster's are known)."""
    validate(timers, nodes, window, clients, batch, payload, peers, burst, etcd_timers)
    external = cluster_addrs is not None
    if external and failover:
        raise LoadBenchError("--failover kills the leader: not against an existing cluster (--cluster)")
    hog = CpuHog(stress) if stress else None
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    if out:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LoadBenchError(f"cannot write to {out}: {exc.strerror or exc}") from None
    lead = default_lead(timers + burst, single_seconds) if lead is None else float(lead)
    tmp = None
    if external:
        try:
            cluster = ExternalCluster(cluster_addrs, metrics_addrs)
        except ExternalClusterError as exc:
            raise LoadBenchError(str(exc)) from None
        nodes = len(cluster.nodes)
        tag = "-" + secrets.token_hex(4)     # this run's ids on a cluster other clients may use
    else:
        tmp = Path(tempfile.mkdtemp(prefix="minoots-load-"))
        harness_token()          # this process's SDK clients authenticate with it
        cluster = LocalCluster(tmp / "cluster", size=nodes, node_args=("--sync", sync))
        tag = ""
    t0 = time.monotonic()
    report: dict = {"params": {"timers": timers, "nodes": nodes, "window_s": window, "clients": clients,
                               "batch": batch, "payload": payload, "burst": burst, "lead_s": lead,
                               "single_seconds": single_seconds, "failover": failover,
                               "sync": "(the cluster's)" if external else sync,
                               "cluster": list(cluster_addrs) if external else None, "run_tag": tag or None,
                               "stress_cpu_s": stress,
                               "cpus": os.cpu_count(), "python": sys.version.split()[0],
                               "machine": machine()}}
    report["not_measured"] = not_measured(external, failover, nodes)
    sampler = watcher = None
    try:
        if external:
            say(f"loading the existing cluster {', '.join(cluster.nodes)} (ids end with {tag}); "
                f"not measured: {', '.join(report['not_measured']) or 'nothing'}")
        else:
            say(f"starting a {nodes}-node cluster in {tmp}")
            cluster.start()
        leader = cluster.leader(timeout=60)
        cluster.wait_applied((cluster.status(leader) or {}).get("commit_index", 0), timeout=30)
        addrs = [n.grpc for n in cluster.nodes.values()]
        maddrs = list(metrics_addrs or []) if external else [n.metrics for n in cluster.nodes.values() if n.metrics]
        time.sleep(1.0)
        metrics_before = metrics_check.scrape_all(maddrs) if maddrs else None
        if not external:
            sampler = RssSampler(cluster, t0)
            rss_before = sampler.sample()
            parts_before = {nid: rss_parts(n.pid) for nid, n in cluster.nodes.items()}
            sampler.start()
        watcher = Watcher(addrs, tag=tag)
        watcher.start()

        load_start_ms = now_ms()
        first_ms = load_start_ms + int(lead * 1000)
        win_ms = int(window * 1000)
        burst_ms = first_ms + win_ms // 2

        def deadline_of(k: int) -> int:   # spread by a golden-ratio sequence: uniform, no RNG state
            return first_ms + int(((k * 0.6180339887498949) % 1.0) * win_ms)

        expected: dict[str, tuple] = {}   # id -> (fire_at_ms, ack_ms or None if unknown)
        lock = threading.Lock()
        body = b"x" * payload

        if hog is not None:
            hog.start()
            say(f"stress: a competing CPU hog (pid {hog.pid}) for {hog.seconds:g}s from now")

        # -- single creates
        say(f"single creates: {single_seconds:g}s from {SINGLE_THREADS} threads")
        single = _single_phase(addrs, single_seconds, deadline_of, [0], expected, lock, tag)
        report["single_creates"] = single

        # -- batched load
        batch_ids: list[list[tuple[str, int]]] = []
        for lo in range(0, timers, batch):
            ids = []
            for j in range(lo, min(lo + batch, timers)):
                ids.append((f"L{j}{tag}", deadline_of(1_000_000 + j)))
            batch_ids.append(ids)
        for lo in range(0, burst, batch):      # --burst: all due within one second
            batch_ids.append([(f"B{j}{tag}", burst_ms + (j * 997) % 1000) for j in range(lo, min(lo + batch, burst))])

        def specs_for(i: int) -> list:
            return [TimerSpec(fire_at=fa, id=tid, payload=body) for tid, fa in batch_ids[i]]

        budget = max(60.0, lead * 3)
        say(f"batched load: {timers + burst:,} timers, batches of {batch}, {clients} clients "
            f"(first deadline {lead:.0f}s after the load began, window {window:g}s)")
        load = _batched_phase(addrs, specs_for, len(batch_ids), clients, timers + burst, budget, t0, progress)
        load_end_ms = now_ms()
        for i, ids in enumerate(batch_ids):
            ack = load["acked"].get(i)
            if ack is None:
                continue          # never sent (the load budget ran out): not a created timer
            for tid, fa in ids:
                expected[tid] = (fa, None if ack < 0 else ack)
        load.pop("acked")
        series = load.pop("series")
        load["due_before_ack"] = sum(1 for fa, ack in expected.values() if ack is not None and fa <= ack)
        load["load_end_after_first_deadline_s"] = (load_end_ms - first_ms) / 1e3
        report["batched_creates"] = load
        if load["batches_failed"] or load["timers"] < timers + burst:
            say(f"warning: load incomplete ({load['timers']:,} of {timers + burst:,} acknowledged; "
                f"{load['batches_failed']} batches failed)")

        # -- full load: memory, snapshot, restart recovery
        time.sleep(1.0)
        n_out = len(expected)

        def per_timer(a, b):
            return (b - a) / n_out if a is not None and b is not None else None
        if sampler is not None:
            rss_full = sampler.sample()
            parts_full = {nid: rss_parts(n.pid if n.alive() else None) for nid, n in cluster.nodes.items()}
        report["rss"] = {} if sampler is None else {nid: {"before": rss_before[nid], "full": rss_full[nid],
                               "bytes_per_timer": per_timer(rss_before[nid], rss_full[nid]),
                               "anon_bytes_per_timer": per_timer(parts_before[nid]["RssAnon"],
                                                                 parts_full[nid]["RssAnon"]),
                               "file_bytes_per_timer": per_timer(parts_before[nid]["RssFile"],
                                                                 parts_full[nid]["RssFile"])}
                         for nid in cluster.nodes}
        report["outstanding_at_full_load"] = n_out
        with Client(addrs, timeout=120) as c:
            s0 = time.perf_counter()
            try:
                info = c.take_snapshot(timeout=120)
                report["snapshot"] = {"seconds": time.perf_counter() - s0, "bytes": info.size,
                                      "timers": info.timers, "node": info.node, "last_index": info.last_index}
            except Exception as exc:
                report["snapshot"] = {"error": f"{type(exc).__name__}: {exc}"}
        leader = cluster.leader(timeout=30)
        say("restart recovery of one follower")
        report["restart"] = _restart_follower(cluster, leader, timeout=120) if nodes > 1 and not external else None

        # -- fire
        last_ms = max((fa for fa, _ in expected.values()), default=now_ms())
        fire_deadline = time.monotonic() + max(0, (last_ms - now_ms()) / 1e3) + 30.0
        say(f"fire: {n_out:,} timers, last due in {max(0, last_ms - now_ms()) / 1e3:.0f}s")
        want = {tid for tid, (_, ack) in expected.items() if ack is not None}
        fo = None
        fo_at = first_ms + win_ms // 3 if failover and nodes >= 3 else None
        bar = _bar(len(want), "fire") if progress else None
        shown = 0
        observer_failed = False     # then the wait (and the bar) follow the leader's counts by state
        pending, next_poll = None, 0.0
        while time.monotonic() < fire_deadline:
            if fo_at is not None and fo is None and now_ms() >= fo_at:
                say("\nfailover: SIGKILL of the leader")
                fo = _failover(cluster, cluster.leader(timeout=30))
            if watcher.error is not None and not observer_failed:
                observer_failed = True
                say(f"\nobserver failed: {watcher.error!r}; correctness will be judged from the nodes' state")
            if observer_failed:
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + 1.0
                    pending, seen = _pending_in_state(cluster, shown)
            else:
                seen = len(watcher.fired)
            if bar is not None:
                step = min(seen, len(want)) - shown
                if step > 0:
                    bar.update(step)
                    shown += step
            if now_ms() > last_ms + 1000 and (pending == 0 if observer_failed else seen >= len(want)):
                break
            time.sleep(0.2)
        if bar is not None:
            bar.render_finish()
        time.sleep(0.5)     # a duplicate arriving just after the last timer is still counted
        observer_error = watcher.error
        watcher.stop()
        if sampler is not None:
            sampler.stop()
        if hog is not None:
            hog.stop()
        report["watcher_error"] = repr(observer_error) if observer_error else None
        report["watcher_reconnects"] = watcher.watch.reconnects

        def read_state():
            say("reading every timer's state (paged ListTimers) from a caught-up node")
            return _read_state(cluster, tag=tag)
        report.update(judge(expected, watcher.fired, fo, burst_ms if burst else None,
                            f"{type(observer_error).__name__}: {observer_error}" if observer_error else None,
                            read_state))
        report["failover"] = fo
        windows = fault_windows(burst_ms if burst else None, fo, report.get("restart"))
        report["steady_excludes_ms"] = windows
        report["lateness_steady_tick_ms"] = steady_lateness(report.get("_lateness_samples"), windows)
        report["rss_series"] = sampler.samples if sampler is not None else []
        report["throughput_series"] = series
        report["metrics_check"] = _metrics_check(cluster, maddrs, metrics_before, report["correctness"], external)
    finally:
        if hog is not None:
            hog.stop()
            report["stress"] = hog.report()
        if watcher is not None and watcher.is_alive():
            watcher.stop()
        if sampler is not None:
            sampler.stop()
        cluster.stop()           # an ExternalCluster: closes this harness's channels only
        if tmp is not None:
            if out:              # the nodes' own logs (elections, snapshots, restarts) beside the results
                logs = Path(out) / "node-logs"
                logs.mkdir(parents=True, exist_ok=True)
                for nid, node in cluster.nodes.items():
                    if node.log_file.exists():
                        shutil.copyfile(node.log_file, logs / f"{nid}.log")
            shutil.rmtree(tmp, ignore_errors=True)
    report["peers"] = {}
    for p in peers:     # after the cluster is stopped: each system gets the machine to itself
        report["peers"][p] = _run_peer(p, timers + burst, window, clients, batch, payload, lead, progress, say,
                                       etcd_timers, install_peers)
        late = report["peers"][p].pop("_samples", None)
        if late is not None and "_lateness_samples" in report:
            report["_lateness_samples"].setdefault("peers", {})[p] = late
    report["seconds_total"] = time.monotonic() - t0
    if out:
        write_outputs(report, out, say)
    return report


def _verdict(expected: dict, did_fire: set, dup: list, wrong_deadline: list, rows: list, recv: list,
             n_events: int, fo: Optional[dict], burst_ms: Optional[int]) -> dict:
    """Correctness and lateness from what fired: `did_fire` the ids that fired, `rows` (id, fire_at_ms,
    at - fire_at) per fire, `recv` received - fire_at per event the watcher got."""
    must = {tid for tid, (_, ack) in expected.items() if ack is not None}
    maybe = {tid for tid, (_, ack) in expected.items() if ack is None}
    lost = sorted(must - did_fire)
    unknown = sorted(t for t in did_fire if t not in expected)
    tick = [d for _, _, d in rows]
    burst_tick = [d for tid, _, d in rows if tid.startswith("B")]
    out_tick = [d for _, fa, d in rows if fo and fo["kill_ms"] <= fa <= fo["elected_ms"]]
    early = sum(1 for v in tick if v < 0)
    ok = not lost and not dup and not unknown and not wrong_deadline and not early
    return {"correctness": {"ok": ok, "expected": len(must), "ambiguous_creates": len(maybe),
                            "ambiguous_fired": sum(1 for t in maybe if t in did_fire),
                            "fired_events": n_events, "distinct_fired": len(did_fire),
                            "lost": len(lost), "lost_sample": lost[:10], "duplicated": len(dup),
                            "duplicated_sample": dup[:10], "unknown": len(unknown),
                            "wrong_deadline": len(wrong_deadline), "fired_early": early},
            "lateness_tick_ms": dist(tick), "lateness_recv_ms": dist(recv),
            "lateness_burst_tick_ms": dist(burst_tick) if burst_ms else None,
            "lateness_outage_tick_ms": dist(out_tick) if fo else None,
            "_lateness_samples": {"tick": tick, "recv": recv, "fire_at": [fa for _, fa, _ in rows]},
            "_lost": lost}


def _analyse(expected: dict, fired: list, fo: Optional[dict], burst_ms: Optional[int]) -> dict:
    """Correctness from the watcher's FIRED events (timer_id, at_ms, fire_at_ms, received_ms)."""
    counts = Counter(tid for tid, *_ in fired)
    res = _verdict(expected, set(counts), sorted(t for t, c in counts.items() if c > 1),
                   [tid for tid, _, fa, _ in fired if tid in expected and expected[tid][0] != fa],
                   [(tid, fa, at - fa) for tid, at, fa, _ in fired], [rcv - fa for _, _, fa, rcv in fired],
                   len(fired), fo, burst_ms)
    res.pop("_lost")
    return res


def _analyse_state(expected: dict, state: dict, fired: list, fo: Optional[dict], burst_ms: Optional[int]) -> dict:
    """Correctness from the nodes' state: `state` is {timer id: (state name, fire_at_ms, fired_at_ms or
    None, attempts)} as listed by ListTimers. A timer the cluster fired (fired_at set) is never lost, seen
    by the watcher or not; `attempts` > 1 (or two FIRED events the watcher did see) is a duplicate.
    Lateness at - fire_at is fired_at - fire_at (fired_at is the firing tick's time, the FIRED event's
    `at`); received - fire_at only for the events the watcher got before it failed."""
    seen = Counter(tid for tid, *_ in fired)
    dup = sorted({tid for tid, (_, _, _, attempts) in state.items() if attempts > 1}
                 | {t for t, c in seen.items() if c > 1})
    rows = sorted(((tid, fa, fired_at - fa) for tid, (_, fa, fired_at, _) in state.items() if fired_at is not None),
                  key=lambda r: r[1])
    res = _verdict(expected, {tid for tid, _, _ in rows}, dup,
                   [tid for tid, (_, fa, _, _) in state.items() if tid in expected and expected[tid][0] != fa],
                   rows, [rcv - fa for _, _, fa, rcv in fired], len(fired), fo, burst_ms)
    lost = res.pop("_lost")
    res["correctness"].update(timers_in_state=len(state),
                              not_fired_by_state=dict(Counter(state[t][0] for t in lost if t in state)),
                              missing_from_state=sum(1 for t in lost if t not in state))
    return res


def judge(expected: dict, fired: list, fo: Optional[dict], burst_ms: Optional[int],
          observer_error: Optional[str], read_state: Callable[[], tuple]) -> dict:
    """The verdict is about the cluster, not its observer.

    With a healthy watcher that saw every timer fire, correctness comes from its events. If the
    watcher failed (`observer_error`: OUT_OF_RANGE, a lost connection, ...) or missed timers, the
    nodes' state decides (`read_state()` -> (state dict as for `_analyse_state`, where it was read));
    a watcher that only missed timers the state shows fired "fell behind": the observer failed too.
    If the state cannot be read either, nothing can be judged: not OK, nothing called lost."""
    res = _analyse(expected, fired, fo, burst_ms)
    c = res["correctness"]
    if observer_error is None and not c["lost"]:
        c.update(observer="ok", observer_error=None, judged_from="events")
        return res
    try:
        state, source = read_state()
    except Exception as exc:
        # failed, or (no error) missed timers that nothing can confirm lost: report what the watcher
        # missed as such, not as lost
        c.update(ok=False, observer="failed" if observer_error else "unconfirmed",
                 observer_error=observer_error or f"missed {c['lost']:,} timers", judged_from=None,
                 watcher_missed=c["lost"], lost=None, lost_sample=[], state_error=f"{type(exc).__name__}: {exc}")
        return res
    sres = _analyse_state(expected, state, fired, fo, burst_ms)
    sc = sres["correctness"]
    if observer_error is None:
        behind = c["lost"] - sc["lost"]     # the watcher's lost that the cluster did fire
        if behind <= 0:                     # the state agrees: they are lost, the watcher was right
            c.update(observer="ok", observer_error=None, judged_from="events+state",
                     not_fired_by_state=sc["not_fired_by_state"], missing_from_state=sc["missing_from_state"])
            return res
        observer_error = (f"fell behind: {behind:,} timers the nodes' state shows fired were not seen "
                          f"by the watcher before the deadline")
    sc.update(observer="failed", observer_error=observer_error, judged_from="state", state_source=source,
              observer_fired_seen=c["distinct_fired"])
    return sres


def _read_state(cluster: LocalCluster, timeout: float = 120.0, tag: str = "") -> tuple:
    """Every timer as a caught-up node holds it: the leader, once its applied index reaches its commit
    index, read with paged ListTimers (the SDK routes reads to the leader); with `tag`, only the
    ids that end with it (this run's, on a shared cluster)."""
    leader = cluster.leader(timeout=60)
    if _wait_recovered(cluster, leader, leader, 60.0) is None:
        raise TimeoutError(f"{leader} did not apply its commit index within 60s")
    applied = (cluster.status(leader) or {}).get("applied_index")
    state: dict = {}
    t0 = time.monotonic()
    with Client([cluster.nodes[leader].grpc], timeout=timeout) as c:
        for t in c.list(page_size=1000):
            if tag and not t.id.endswith(tag):
                continue
            state[t.id] = (t.state.name.lower(), t.fire_at_ms, t.fired_at_ms, t.attempts)
    return state, {"node": leader, "applied_index": applied, "timers": len(state),
                   "seconds": round(time.monotonic() - t0, 2)}


# ---------------------------------------------------------------- peers

def _run_peer(name: str, n: int, window: float, clients: int, batch: int, payload: int, lead: float,
              progress: bool, say, etcd_timers: Optional[int] = None, install: bool = True) -> dict:
    if name == "redis":
        try:
            from minoots.bench import load_redis
        except ImportError:  # pragma: no cover - running from the repo root
            from bench import load_redis  # type: ignore
        return load_redis.run(n, window, clients, batch, payload, lead, progress, say, install)
    if name == "etcd":
        try:
            from minoots.bench import load_etcd
        except ImportError:  # pragma: no cover - running from the repo root
            from bench import load_etcd  # type: ignore
        m = etcd_timers if etcd_timers is not None else load_etcd.default_timers(n)
        # its own lead (>= the MINOOTS one): one lease + one put per timer is slower than create_many
        return load_etcd.run(m, window, clients, payload, lead, progress, say, install)
    return {"skipped": f"{name}: not implemented in this harness yet"}


# ---------------------------------------------------------------- output

def _f(v, fmt="{:,.0f}", none="-"):
    return none if v is None else fmt.format(v)


def format_table(r: dict) -> str:
    lines = []
    p = r["params"]
    lines.append(f"MINOOTS load: {r.get('outstanding_at_full_load', 0):,} timers, {p['nodes']} nodes, "
                 f"window {p['window_s']:g}s, {p['clients']} clients x batch {p['batch']}, payload {p['payload']} B, "
                 f"sync={p['sync']}, {p['cpus']} CPUs (cluster and harness share them)")
    if p.get("machine"):
        lines.append(f"machine: {p['machine']}")
    b, s = r.get("batched_creates", {}), r.get("single_creates", {})
    rows = [
        ("create, batched (create_many)", f"{_f(b.get('timers_per_s'))} timers/s",
         f"{b.get('timers', 0):,} in {b.get('seconds', 0):.1f}s; batch P50 {_f(b.get('batch_latency_ms', {}).get('p50'), '{:.0f}')} ms"),
        ("create, single (16 threads)", f"{_f(s.get('timers_per_s'))} timers/s",
         f"P50 {_f(s.get('latency_ms', {}).get('p50'), '{:.1f}')} ms, P99 {_f(s.get('latency_ms', {}).get('p99'), '{:.1f}')} ms, errors {s.get('errors', 0)}"),
        ("due before their create was acked", f"{b.get('due_before_ack', 0):,}", "0 = nothing due while loading"),
    ]
    for nid, m in (r.get("rss") or {}).items():
        rows.append((f"RSS {nid} before -> full", f"{_f(m['before'] and m['before'] / 2**20, '{:.0f}')} -> "
                     f"{_f(m['full'] and m['full'] / 2**20, '{:.0f}')} MiB",
                     f"{_f(m['bytes_per_timer'])} B/timer = heap {_f(m.get('anon_bytes_per_timer'))} "
                     f"+ mapped LMDB files {_f(m.get('file_bytes_per_timer'))}"))
    sn = r.get("snapshot") or {}
    rows.append(("snapshot at full load", "error" if "error" in sn else
                 f"{_f(sn.get('bytes') and sn['bytes'] / 1e6, '{:.1f}')} MB in {_f(sn.get('seconds'), '{:.2f}')} s",
                 sn.get("error", f"{sn.get('timers', 0):,} timers")))
    rs = r.get("restart") or {}
    if rs:
        rows.append(("follower restart recovery", "timed out" if rs.get("timed_out") else f"{rs['recovery_s']:.2f} s",
                     "SIGKILL -> applied >= leader commit"))
        rows.append(("  of which snapshot load / log replay",
                     f"{_f(rs.get('snapshot_load_s'), '{:.2f}')} s / {_f(rs.get('replay_s'), '{:.2f}')} s",
                     f"snapshot of {_f(rs.get('snapshot_timers'), '{:,}')} timers; replay to the commit index its "
                     f"log recorded; the rest is process start and catch-up"))
    for key, label in (("lateness_tick_ms", "lateness at - fire_at"),
                       ("lateness_steady_tick_ms", "steady lateness at - fire_at"),
                       ("lateness_recv_ms", "lateness received - fire_at"),
                       ("lateness_burst_tick_ms", "burst lateness at - fire_at"),
                       ("lateness_outage_tick_ms", "outage lateness at - fire_at")):
        d = r.get(key)
        if d:
            rows.append((label + " (ms)", f"P50 {_f(d['p50'], '{:.0f}')}  P95 {_f(d['p95'], '{:.0f}')}  "
                         f"P99 {_f(d['p99'], '{:.0f}')}  P99.9 {_f(d['p99.9'], '{:.0f}')}  max {_f(d['max'], '{:.0f}')}",
                         f"n={d['n']:,}"))
    st = r.get("stress")
    if st:
        rows.append(("competing CPU hog (--stress)", f"{_f(st.get('cpu_used_s'), '{:.1f}')} CPU-s of {st['cpu_seconds']:g}",
                     f"pid {st.get('pid')}, one busy process from the load's start, stopped by {st.get('stopped_by')}"))
    c = r.get("correctness", {})
    if c.get("observer") in ("failed", "unconfirmed"):
        src = c.get("state_source") or {}
        rows.append(("observer (the harness's watcher)", f"observer {c['observer']}",
                     f"{c.get('observer_error')}; it saw {c.get('observer_fired_seen', c.get('distinct_fired', 0)):,} fired"))
        how = (f"judged from the nodes' state: {src.get('timers', 0):,} timers listed from {src.get('node')} "
               f"at applied index {src.get('applied_index')}" if c.get("judged_from") == "state"
               else f"not judged: the state could not be read either ({c.get('state_error')})")
        rows.append(("", "", how))
    rows.append(("correctness", "OK" if c.get("ok") else "FAILED",
                 f"expected {c.get('expected', 0):,}, fired {c.get('distinct_fired', 0):,}, lost {_f(c.get('lost'), '{:,}')}, "
                 f"duplicated {c.get('duplicated', 0)}, unknown {c.get('unknown', 0)}, early {c.get('fired_early', 0)}"))
    for what in r.get("not_measured") or []:
        rows.append((what.split(" (")[0], "not measured", what[len(what.split(" (")[0]):].strip(" ()")))
    w1 = max(len(a) for a, _, _ in rows)
    w2 = max(len(x) for _, x, _ in rows)
    lines += [f"  {a:<{w1}}  {x:<{w2}}  {z}".rstrip() for a, x, z in rows]
    lines += metrics_check.format_check(r.get("metrics_check"))
    lines += _peer_table(r)
    return "\n".join(lines)


def _peer_table(r: dict) -> list:
    peers = r.get("peers") or {}
    if not peers:
        return []
    lt = r.get("lateness_tick_ms") or {}
    base = {"create": r.get("batched_creates", {}).get("timers_per_s"), "p50": lt.get("p50"),
            "p95": lt.get("p95"), "p99": lt.get("p99"), "max": lt.get("max"),
            "bpt": _mean([m.get("bytes_per_timer") for m in (r.get("rss") or {}).values()])}
    rows = [("system", "replicated", "creates/s", "x", "late P50", "late P95", "late P99", "x", "late max",
             "B/timer", "x", "correct")]

    def row(name, repl, d, ok):
        def ratio(k, inv=False):
            if d.get(k) is None or not base.get(k):
                return "-"
            return f"{d[k] / base[k]:.2f}"
        return (name, repl, _f(d.get("create")), ratio("create"), _f(d.get("p50"), "{:.0f}"),
                _f(d.get("p95"), "{:.0f}"), _f(d.get("p99"), "{:.0f}"), ratio("p99"), _f(d.get("max"), "{:.0f}"),
                _f(d.get("bpt")), ratio("bpt"), ok)

    rows.append(row("minoots", f"yes (Raft x{r['params']['nodes']})", base,
                    "yes" if r.get("correctness", {}).get("ok") else "NO"))
    for name, pr in peers.items():
        if pr.get("skipped"):
            rows.append((name, "-", "skipped", "", "", "", "", "", "", "", "", pr["skipped"]))
            continue
        label = name if pr.get("timers") in (None, r.get("outstanding_at_full_load")) else f"{name} ({pr['timers']:,} timers)"
        rows.append(row(label, pr.get("replicated", "?"), pr.get("summary", {}),
                        "yes" if pr.get("correctness", {}).get("ok") else "NO"))
    widths = [max(len(str(x[i])) for x in rows) for i in range(len(rows[0]))]
    out = ["", "peers (lateness in ms = the system's own expiry - its deadline; x = that column / MINOOTS's):"]
    out += ["  " + "  ".join(f"{str(x[i]):<{widths[i]}}" for i in range(len(x))).rstrip() for x in rows]
    out += [f"  {name}: {pr['note']}" for name, pr in peers.items() if pr.get("note")]
    return out


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


_PEER_LATENESS = {"redis": "popped (10 ms poller)", "etcd": "lease expiry seen by a watcher"}


def write_outputs(report: dict, out: str, say) -> None:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    samples = report.pop("_lateness_samples", None)
    with open(d / "results.json", "w") as f:
        json.dump(report, f, indent=2, default=str)
    say(f"wrote {d / 'results.json'}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: skipping plots (pip install 'minoots[bench]')")
        return
    if samples and samples["tick"]:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
        curves = [("MINOOTS, fire committed (at - fire_at)", samples["tick"]),
                  ("MINOOTS, at the watcher (received - fire_at)", samples["recv"])]
        curves += [(f"{name}, {_PEER_LATENESS.get(name, 'fired')}", v)
                   for name, v in (samples.get("peers") or {}).items() if v]
        curves = [(label, v) for label, v in curves if v]   # an observer that failed early saw none
        import numpy as np
        lo = min(min(v) for _, v in curves)
        hi = max(max(v) for _, v in curves)
        # linear up to 1 ms, then log-spaced: readable on the symlog axis from 0 to seconds
        bins = np.unique(np.concatenate([np.linspace(min(lo, 0), 1, 5), np.geomspace(1, max(hi, 2) + 1, 80)]))
        for label, values in curves:
            v = sorted(values)
            a1.hist(v, bins=bins, alpha=0.5, label=label)
            a2.plot(v, [(i + 1) / len(v) for i in range(len(v))], label=f"{label} (n={len(v):,})")
        a1.set_xlabel("lateness (ms)"); a1.set_ylabel("timers"); a1.set_yscale("log"); a1.set_xscale("symlog")
        a1.set_xlim(left=min(lo, 0))
        a1.legend(fontsize=7)
        a2.set_xlabel("lateness (ms)"); a2.set_ylabel("fraction of timers fired"); a2.set_xscale("symlog")
        a2.legend(fontsize=7, loc="lower right"); a2.grid(True)
        fig.suptitle("fire lateness per system (same machine, same run)"); fig.tight_layout()
        fig.savefig(d / "lateness.png", dpi=110)
        plt.close(fig)
    if samples and samples.get("fire_at"):
        # Where in the run the late ones are: lateness against deadline, with the failover marked.
        fig, ax = plt.subplots(figsize=(11, 4))
        fa = samples["fire_at"]
        t0 = min(fa)
        step = max(1, len(fa) // 200_000)
        xs = [(v - t0) / 1e3 for v in fa[::step]]
        if len(samples["recv"]) == len(fa):   # not when judged from state: the watcher saw only some
            ax.scatter(xs, [max(v, 0.1) for v in samples["recv"][::step]], s=1, alpha=0.3,
                       label="received - fire_at")
        ax.scatter(xs, [max(v, 0.1) for v in samples["tick"][::step]], s=1, alpha=0.3, label="at - fire_at")
        fo = report.get("failover") or {}
        if fo.get("kill_ms"):
            ax.axvline((fo["kill_ms"] - t0) / 1e3, color="red", lw=0.8, label="leader SIGKILL")
        ax.set_yscale("log"); ax.set_xlabel("deadline, s after the first"); ax.set_ylabel("lateness (ms)")
        ax.legend(markerscale=8, fontsize=8); ax.grid(True)
        fig.suptitle("MINOOTS lateness over the run"); fig.tight_layout()
        fig.savefig(d / "lateness_over_time.png", dpi=110)
        plt.close(fig)
        with open(d / "lateness_samples.json", "w") as f:
            json.dump({"fire_at": fa, "tick": samples["tick"],
                       "recv": samples["recv"] if len(samples["recv"]) == len(fa) else None}, f)
    series = report.get("throughput_series") or []
    if len(series) > 1:
        fig, ax = plt.subplots(figsize=(7, 4))
        ts = [t for t, _ in series]
        ax.plot(ts, [c for _, c in series], label="cumulative")
        ax.set_xlabel("s since start"); ax.set_ylabel("timers committed"); ax.grid(True)
        ax2 = ax.twinx()
        rate_t, rate_v = [], []
        for i in range(1, len(series)):
            (ta, ca), (tb, cb) = series[max(0, i - 10)], series[i]
            if tb > ta:
                rate_t.append(tb); rate_v.append((cb - ca) / (tb - ta))
        ax2.plot(rate_t, rate_v, color="tab:orange", alpha=0.7, label="timers/s (10-batch window)")
        ax2.set_ylabel("timers/s")
        fig.suptitle("create throughput (batched)"); fig.tight_layout(); fig.savefig(d / "throughput.png", dpi=110)
        plt.close(fig)
    rss = report.get("rss_series") or []
    if rss:
        fig, ax = plt.subplots(figsize=(7, 4))
        for nid in [k for k in rss[0] if k != "t"]:
            ax.plot([s["t"] for s in rss], [(s.get(nid) or 0) / 2**20 for s in rss], label=nid)
        ax.set_xlabel("s since start"); ax.set_ylabel("VmRSS (MiB)"); ax.legend(); ax.grid(True)
        fig.suptitle("node resident memory"); fig.tight_layout(); fig.savefig(d / "rss.png", dpi=110)
        plt.close(fig)
    say(f"wrote plots to {d}")
