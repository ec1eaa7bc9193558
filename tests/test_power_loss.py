"""Power loss, not just kill -9: every node's data dir on a filesystem that forgets unsynced writes.

A SIGKILLed process on a running machine keeps its writes in the page cache, so kill -9
alone cannot tell a node that fsyncs from one that does not. Here each node's data dir
is on its own lazy mount (tests/lazyfs.py): bytes written but not fsynced live only in
that filesystem's memory. The power cut SIGKILLs every node, then every filesystem
(whatever was not fsynced is gone), unmounts and mounts again over what was synced, and
restarts the cluster on it.

The promise checked: every create the cluster acknowledged is on every node after the
cut. With `--sync durable` (the default) nothing may be lost, over two cuts (the second
hits a cluster that already recovered from one). The same run with `--sync relaxed`
(LMDB commits without fsync; the journal syncs once a second) must lose acknowledged
creates: that shows the first test measures durability and not the page cache.

Why relaxed loses reliably: the writer that receives the N-th acknowledgement SIGKILLs
every node itself, within a millisecond or two of that acknowledgement, with the other
writers' creates still in flight. No acknowledged create is lost only if some node
synced its log between a follower appending the last acknowledged entry and the cut
(append, reply, commit, apply, answer, client: 10-20 ms on a loaded 2-core machine):
with three nodes syncing about once a second, a few % of cuts (1 first cut of 21 lost
nothing when measured). So the relaxed test cuts again (up to four times, each cut
independent) until a loss shows, ~1e-5 odds of a false alarm; it also checks the loss
is not total (what was synced before the cut survived). Measured over 21 runs: 270-570
acknowledged per cut; under relaxed sync the last 7-290 of them lost (0 once, then lost
at the next cut); under durable sync 0 lost in 52 cuts (20,025 acknowledged creates).

Found on the way (reported, not asserted: it depends on which node synced last): under
relaxed sync the cut can also leave replicas out of step. A node that synced a longer
log, with a commit index past what the others kept, applies those entries at restart;
the others elect a leader without them and overwrite them, and PySyncObj logs
"truncating already-applied log entries ... state machine may have diverged". That node
then shows timers no other node has, until its next restart replays the log. The
durable test asserts neither happens: every node holds the same timers and no node
logged such a line.
"""
from __future__ import annotations

import threading
import time

import pytest

import minoots
import support
from lazyfs import LazyMount, missing_requirements
from minoots.v1 import timers_pb2 as pb

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

WAIT = 60.0            # seconds: bound for anything to happen on a loaded machine
FAR_S = 3600           # the timers never fire during the test
WRITERS = 4
MIN_ACKED = 150        # acknowledged creates before the cut (at least)
MIN_LOAD_S = 2.5       # and at least this long under load (more than a relaxed sync period: 1-2 s)
DURABLE_CUTS = 2       # the second cut hits a cluster that already recovered from one
RELAXED_CUTS = 4       # cuts until a loss shows (see the module doc)


class Writers:
    """Threads creating timers one by one; each acknowledged id is recorded. The writer that
    gets the `cut_at`-th acknowledgement (after `MIN_LOAD_S` of load) calls `cut()` at once,
    from its own thread: the cut lands within a millisecond or two of an acknowledgement,
    with the other writers' creates still in flight."""

    def __init__(self, addresses: list[str], prefix: str, cut_at: int, cut) -> None:
        self.addresses, self.prefix, self.cut_at, self._cut = addresses, prefix, cut_at, cut
        self.acked: list[str] = []
        self.unknown = 0
        self.stop = threading.Event()
        self.cut_done = threading.Event()
        self._cut_lock = threading.Lock()
        self._began = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WRITERS)]

    def start(self) -> "Writers":
        for t in self._threads:
            t.start()
        return self

    def _run(self, i: int) -> None:
        with minoots.Client(self.addresses, timeout=2) as client:
            n = 0
            while not self.stop.is_set():
                tid = f"{self.prefix}w{i}-{n}"
                n += 1
                try:
                    client.create(delay=FAR_S, id=tid)   # the id is the idempotency key of its retries
                except minoots.MinootsError:
                    self.unknown += 1                  # outcome unknown: not counted as acknowledged
                    continue
                self.acked.append(tid)
                if len(self.acked) >= self.cut_at and time.monotonic() - self._began >= MIN_LOAD_S:
                    with self._cut_lock:
                        if not self.cut_done.is_set():
                            self._cut()
                            self.cut_done.set()

    def join(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=WAIT)
        assert not any(t.is_alive() for t in self._threads), "a writer did not stop"


def timer_ids(node) -> set[str]:
    """Every timer id of the default tenant, read from `node` itself (reads are local)."""
    ids, token = set(), ""
    while True:
        resp = node.timers().ListTimers(pb.ListTimersRequest(tenant="default", page_size=1000, page_token=token),
                                        timeout=WAIT)
        ids.update(t.id for t in resp.timers)
        token = resp.next_page_token
        if not token:
            return ids


def truncated_applied(cluster) -> list[str]:
    """Node log lines saying an entry it had applied was truncated away (replicas diverged)."""
    return [f"{node.node_id}: {line}" for node in cluster.nodes.values() if node.log_file.exists()
            for line in node.log_file.read_text(errors="replace").splitlines()
            if "truncating already-applied" in line or "diverged" in line]


class PowerLossCluster:
    """A 3-node cluster (`--sync SYNC`) whose every data dir is on its own lazy mount."""

    def __init__(self, root, sync: str) -> None:
        why = missing_requirements()
        assert why is None, f"the power-loss test cannot run here: {why}"
        self.root, self.sync = root, sync
        self.mounts: dict[str, LazyMount] = {}
        self.cluster = None
        self.acked: list[str] = []     # every create acknowledged, over every cycle
        self.cycles: list[dict] = []   # per cut: acknowledged, unknown outcome, lost per node

    def _on_lazy_disks(self, c) -> None:
        for nid, node in c.nodes.items():
            m = self.mounts[nid] = LazyMount(self.root / "disks" / nid, self.root / "mnt" / nid,
                                             self.root / f"{nid}-fs.log")
            m.mount()
            node.data_dir = m.mountpoint / "data"
            node.extra_args = ("--sync", self.sync)

    def start(self) -> "PowerLossCluster":
        self.cluster = support.start_cluster(self.root / "cluster", prepare=self._on_lazy_disks)
        return self

    def _kill_every_node(self) -> None:
        for node in self.cluster.nodes.values():
            node.proc.kill()

    def cycle(self) -> dict:
        """Concurrent creates, the power cut under them, a restart on what was synced; returns
        this cycle's figures (and records them). Lost = acknowledged, in any cycle, and now
        missing on that node."""
        c = self.cluster
        writers = Writers(support.cluster_grpc(c), f"c{len(self.cycles)}", MIN_ACKED, self._kill_every_node)
        try:
            writers.start()
            assert writers.cut_done.wait(WAIT), f"fewer than {MIN_ACKED} creates acknowledged in {WAIT}s"
        finally:
            writers.join()
        # Every node is dead (SIGKILL); now every disk forgets what it was not told to keep.
        for nid in c.nodes:
            c.kill(nid)
        for m in self.mounts.values():
            m.crash()
        self.acked += writers.acked

        for m in self.mounts.values():
            m.mount()
        c.start()
        c.leader(timeout=WAIT)
        # A create acknowledged after the restart is committed in the new leader's term, and so
        # is every entry before it (acknowledged ones not yet committed again would look lost).
        with minoots.Client(support.cluster_grpc(c), timeout=WAIT) as client:
            client.create(delay=FAR_S, id=f"c{len(self.cycles)}-after")
        commit = max((c.status(nid) or {}).get("commit_index", 0) for nid in c.nodes)
        for nid in c.nodes:
            support.wait_for(lambda nid=nid: (c.status(nid) or {}).get("applied_index", -1) >= commit,
                             f"{nid} applying {commit}", timeout=WAIT)
        acked = set(self.acked)
        present = {nid: timer_ids(node) for nid, node in c.nodes.items()}
        missing = {nid: sorted(acked - ids) for nid, ids in present.items()}
        figures = {"sync": self.sync, "acked": len(writers.acked), "acked_total": len(acked),
                   "unknown": writers.unknown, "lost": {nid: len(ids) for nid, ids in missing.items()},
                   "missing": missing,
                   # every node applied the same log: the same timers (no create runs after the restart)
                   "replicas_agree": len({frozenset(ids) for ids in present.values()}) == 1,
                   "truncated_applied": truncated_applied(c)}
        self.cycles.append(figures)
        print(f"\npower loss {len(self.cycles)}, --sync {self.sync}: {figures['acked']} acknowledged this cycle "
              f"({figures['acked_total']} in all), {figures['unknown']} of unknown outcome, "
              f"lost per node {figures['lost']}, replicas agree: {figures['replicas_agree']}, "
              f"log lines about truncating applied entries: {len(figures['truncated_applied'])}")
        return figures

    def stop(self) -> None:
        """Every node and every filesystem process stopped by PID, every mount gone (also on failure)."""
        try:
            if self.cluster is not None:
                self.cluster.stop()
        finally:
            for m in self.mounts.values():
                m.unmount()
            for m in self.mounts.values():
                assert m.proc is None or m.proc.poll() is not None, f"lazyfs pid {m.proc.pid} still running"


@pytest.fixture
def lazy_cluster(tmp_path):
    """Start a PowerLossCluster with `lazy_cluster(sync)`; stopped and unmounted after the test."""
    made = []

    def start(sync: str) -> PowerLossCluster:
        made.append(PowerLossCluster(tmp_path, sync))
        return made[-1].start()

    yield start
    for plc in made:
        plc.stop()


def test_durable_sync_keeps_every_acknowledged_create_through_power_losses(lazy_cluster):
    plc = lazy_cluster("durable")
    for _ in range(DURABLE_CUTS):
        r = plc.cycle()
        assert r["acked"] >= MIN_ACKED
        assert r["missing"] == {nid: [] for nid in r["missing"]}, "acknowledged creates lost"
        assert r["replicas_agree"] and not r["truncated_applied"], r


def test_relaxed_sync_loses_acknowledged_creates_so_the_test_above_measures_durability(lazy_cluster):
    plc = lazy_cluster("relaxed")
    for _ in range(RELAXED_CUTS):
        r = plc.cycle()
        assert r["acked"] >= MIN_ACKED
        if any(r["lost"].values()):
            break
    lost = max(r["lost"].values())
    assert lost > 0, f"relaxed sync lost nothing in {RELAXED_CUTS} power cuts: {plc.cycles}"
    # ... and not everything: what was synced before the cut survived (the disk keeps synced bytes).
    assert lost < r["acked_total"], r
