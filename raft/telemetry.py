"""Prometheus metrics of one node, served on its own HTTP port (`--metrics HOST:PORT`).

Every metric lives in the node's own CollectorRegistry (not prometheus_client's
global one), so several nodes can run in one process (tests) without clashing.
Names carry the `minoots_` prefix and base units; counters end in `_total`;
labels have bounded cardinality only (command kinds, error codes, states, member
ids, gRPC methods and codes): never a timer id or a tenant.

Replicated facts (commands, fires) are counted where they are applied, on every
node: each node's counters describe the whole cluster's history as that node saw
it (aggregate across nodes with max(), not sum()). What is per node: lateness
(measured at this node's apply), Raft state, gRPC traffic, watchers, snapshots.

| metric | type | what |
| --- | --- | --- |
| minoots_node_info{node,cluster} | gauge | 1; join on it for the node id |
| minoots_timers{state} | gauge | timers by lifecycle state, read from the kernel at scrape time |
| minoots_timer_commands_total{command,outcome} | counter | timers created/cancelled/rescheduled/acked; outcome = ok or the error code |
| minoots_fires_total | counter | FIRED events applied |
| minoots_fires_replayed_total | counter | of those, applied long after their tick (log replay, catch-up): not in the lateness histogram |
| minoots_fire_lateness_seconds | histogram | apply wall clock on this node - fire_at, for each live firing |
| minoots_ticks_proposed_total / _committed_total | counter | this node's ticker (as leader) |
| minoots_raft_term, _commit_index, _applied_index, _is_leader, _has_quorum | gauge | |
| minoots_raft_leader_changes_total | counter | times the leader this node knows changed |
| minoots_raft_pre_vote_rounds_total | counter | PreVote rounds this node started (its election deadline passed) |
| minoots_raft_pre_votes_refused_total | counter | pre-votes this node refused (it heard a leader recently, or its log is newer) |
| minoots_raft_stale_replies_dropped_total | counter | on a leader: AppendEntries replies of an older term not counted |
| minoots_raft_follower_lag_entries{follower} | gauge | on the leader: commit index - the follower's match index |
| minoots_raft_follower_connected{follower} | gauge | |
| minoots_raft_log_entries | gauge | entries in the Raft journal (since the last compaction) |
| minoots_snapshots_total{outcome} | counter | snapshots written by this node |
| minoots_snapshot_duration_seconds | histogram | capture to durable |
| minoots_snapshot_last_bytes, _last_index | gauge | the newest snapshot written |
| minoots_snapshots_kept | gauge | snapshots kept in LMDB |

The API layer adds gRPC and event-retention metrics to the same registry
(api/telemetry.py).
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger("minoots.raft.telemetry")

__all__ = ["NodeMetrics", "BulkHistogram", "LATENESS_BUCKETS", "start_metrics_server"]

# Fine enough for P50/P95/P99 from 1 ms to 10 s.
LATENESS_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A FIRED event applied more than this long after its tick was proposed is a replay
# (restart, catch-up after a partition, a lagging follower): its "lateness" would
# measure the outage of this node, not when the cluster fired the timer.
REPLAY_AFTER_S = 30.0
COUNTED = ("create", "cancel", "reschedule", "ack", "delete")


class BulkHistogram:
    """A histogram fed many observations at once from the apply thread.

    prometheus_client's Histogram takes a lock per observation; a tick firing
    thousands of timers would pay it thousands of times in the tick thread. This
    one takes the lock once per batch; the exposition is a normal histogram.
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        bounds = self.bounds
        values = list(values)
        idx = [bisect.bisect_left(bounds, v) for v in values]  # le is inclusive: v <= bound
        total = 0.0
        for v in values:
            total += v
        with self._lock:
            counts = self._counts
            for i in idx:
                counts[i] += 1
            self._sum += total

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    @property
    def count(self) -> int:
        return sum(self._counts)

    def collect(self):
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        buckets = []
        acc = 0
        for bound, n in zip(self.bounds, counts):
            acc += n
            buckets.append((_fmt(bound), acc))
        acc += counts[-1]
        buckets.append(("+Inf", acc))
        h = HistogramMetricFamily(self.name, self.documentation)
        h.add_metric([], buckets, total)
        yield h


def _fmt(x: float) -> str:
    return repr(float(x))


class NodeMetrics:
    """The metrics of one Raft node; `attach(machine)` hooks the apply path."""

    def __init__(self, node) -> None:
        self.node = node
        # No `*_created` series next to every counter and histogram: they double the page
        # and no dashboard of ours reads them (prometheus_client's switch is process-wide).
        disable_created_metrics()
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.commands = Counter("minoots_timer_commands", "Timers in applied commands, by command and outcome "
                                "(ok or the kernel's error code).", ["command", "outcome"], registry=r)
        self.fires = Counter("minoots_fires", "Timer firings (FIRED events) applied on this node.", registry=r)
        self.fires_replayed = Counter(
            "minoots_fires_replayed", "Firings applied more than 30 s after their tick (log replay, catch-up); "
            "left out of the lateness histogram.", registry=r)
        self.lateness = BulkHistogram(
            "minoots_fire_lateness_seconds",
            "Apply wall clock on this node minus the timer's fire_at, per firing.", LATENESS_BUCKETS)
        r.register(self.lateness)
        self.snapshots = Counter("minoots_snapshots", "Snapshots written by this node, by outcome.", ["outcome"],
                                 registry=r)
        self.snapshot_duration = Histogram("minoots_snapshot_duration_seconds",
                                           "Snapshot creation time: kernel capture to durable on disk.",
                                           buckets=SNAPSHOT_BUCKETS, registry=r)
        self.snapshot_bytes = Gauge("minoots_snapshot_last_bytes", "Size of the newest snapshot written.",
                                    registry=r)
        self.snapshot_index = Gauge("minoots_snapshot_last_index", "Last log index in the newest snapshot written.",
                                    registry=r)
        r.register(_NodeCollector(node))
        try:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=r)
        except Exception:   # no /proc (not Linux): skip the process metrics
            pass
        self._children: dict = {}
        self._server = None
        self._server_thread = None
        self.address: Optional[str] = None

    # ---- hooks (PySyncObj's tick thread; never raise) ------------------------------

    def attach(self, machine) -> None:
        machine.result_listeners.append(self.on_result)
        machine.snapshot_written_listeners.append(self.on_snapshot)

    def _count(self, command: str, outcome: str, n: int) -> None:
        child = self._children.get((command, outcome))
        if child is None:
            child = self._children[(command, outcome)] = self.commands.labels(command, outcome)
        child.inc(n)

    def on_result(self, command, result) -> None:
        try:
            self._on_result(command, result)
        except Exception:
            log.exception("metrics: apply bookkeeping failed")

    def _on_result(self, command, result) -> None:
        kind = command.kind
        if kind == "tick":
            if isinstance(result, Exception):
                return
            self._fired(command.now_ms, result.events)
        elif kind == "create":
            groups = command.groups
            if isinstance(result, list):
                for group, res in zip(groups, result):
                    self._count("create", _outcome(res), len(group))
            else:
                self._count("create", _outcome(result), sum(len(g) for g in groups))
        elif kind == "cancel":
            self._count("cancel", _outcome(result), len(command.refs))
        elif kind in COUNTED:
            self._count(kind, _outcome(result), 1)

    def _fired(self, tick_ms: int, events) -> None:
        if not events:
            return
        from minoots.kernel import EventKind

        fired = EventKind.FIRED
        fire_ats = [e.fire_at for e in events if e.kind == fired]
        if not fire_ats:
            return
        self.fires.inc(len(fire_ats))
        now = time.time() + self.node.clock.offset_ms / 1000.0
        if now - tick_ms / 1000.0 > REPLAY_AFTER_S:
            self.fires_replayed.inc(len(fire_ats))
            return
        self.lateness.observe_many([max(0.0, now - f / 1000.0) for f in fire_ats])

    def on_snapshot(self, ok: bool, nbytes: int, seconds: float, last_index: int) -> None:
        try:
            if ok:
                self.snapshots.labels("ok").inc()
                self.snapshot_duration.observe(seconds)
                self.snapshot_bytes.set(nbytes)
                self.snapshot_index.set(last_index)
            else:
                self.snapshots.labels("error").inc()
        except Exception:
            log.exception("metrics: snapshot bookkeeping failed")

    # ---- the HTTP endpoint -----------------------------------------------------------

    def serve(self, address: str) -> None:
        from .net import split_address

        host, port = split_address(address)
        self._server, self._server_thread = start_metrics_server(host, port, self.registry)
        self.address = address
        log.info("metrics serving", extra={"metrics": f"http://{address}/metrics"})

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def start_metrics_server(host: str, port: int, registry: CollectorRegistry):
    """prometheus_client's threaded HTTP server on (host, port) for `registry`."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=registry)


def _outcome(res) -> str:
    if isinstance(res, Exception):
        code = getattr(res, "code", None)
        return code if isinstance(code, str) and code else "INTERNAL"
    return "ok"


class _NodeCollector:
    """Reads the node's Raft and kernel state at scrape time."""

    def __init__(self, node) -> None:
        self.node = node

    def describe(self):
        return []

    def collect(self):
        node = self.node
        m = node.machine
        info = GaugeMetricFamily("minoots_node_info", "This node's id and cluster (always 1).",
                                 labels=["node", "cluster"])
        info.add_metric([node.cfg.node_id, node.cfg.cluster], 1)
        yield info
        if m is None:
            return
        raw = _status(m)
        if raw is not None:
            yield from self._raft(node, m, raw)
        try:
            counts = m.read(lambda k: k.counts())
            g = GaugeMetricFamily("minoots_timers", "Timers by lifecycle state.", labels=["state"])
            for state, n in counts.items():
                g.add_metric([state.name.lower()], n)
            yield g
        except Exception:
            log.exception("metrics: reading timer counts failed")
        ticker = node.ticker
        yield CounterMetricFamily("minoots_ticks_proposed", "Ticks this node proposed as leader.",
                                  value=ticker.proposed if ticker else 0)
        yield CounterMetricFamily("minoots_ticks_committed", "Ticks this node proposed that committed.",
                                  value=ticker.committed if ticker else 0)
        yield CounterMetricFamily("minoots_raft_leader_changes", "Times the leader known to this node changed.",
                                  value=getattr(node, "leader_changes", 0))
        try:
            counters = m.election_counters()
        except Exception:
            counters = {}
        for key, doc in (("pre_vote_rounds", "PreVote rounds this node started."),
                         ("pre_votes_refused", "Pre-votes this node refused."),
                         ("stale_replies_dropped", "AppendEntries replies of an older term not counted.")):
            yield CounterMetricFamily(f"minoots_raft_{key}", doc, value=counters.get(key, 0))
        try:
            kept = len(m._snapshot_store.list())
            yield GaugeMetricFamily("minoots_snapshots_kept", "Snapshots kept in this node's LMDB.", value=kept)
        except Exception:
            pass

    @staticmethod
    def _raft(node, m, st):
        for name, doc, value in (
            ("minoots_raft_term", "Current Raft term.", st.term),
            ("minoots_raft_commit_index", "Raft commit index.", st.commit_index),
            ("minoots_raft_applied_index", "Last log index applied to the kernel.", st.applied_index),
            ("minoots_raft_is_leader", "1 when this node is the leader.", 1 if st.is_leader else 0),
            ("minoots_raft_has_quorum", "1 when this node sees a quorum.", 1 if st.has_quorum else 0),
            ("minoots_raft_log_entries", "Entries in the Raft journal (since the last compaction).", st.log_len),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        by_addr = {addr: nid for nid, addr in m.names.items()}
        conn = GaugeMetricFamily("minoots_raft_follower_connected", "1 when this node is connected to the member.",
                                 labels=["follower"])
        lag = GaugeMetricFamily("minoots_raft_follower_lag_entries",
                                "On the leader: commit index minus the follower's match index.", labels=["follower"])
        for addr in sorted(st.partners):
            nid = by_addr.get(addr, addr)
            conn.add_metric([nid], 1 if st.partners[addr] else 0)
            match = st.match_index.get(addr)
            if st.is_leader and match is not None:
                lag.add_metric([nid], max(0, st.commit_index - match))
        yield conn
        yield lag


def _status(m):
    try:
        return m.raft_status()
    except Exception:
        log.exception("metrics: raft status failed")
        return None
    return None
