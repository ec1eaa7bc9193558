"""One MINOOTS node process: data dir, journal, replicated kernel, leader ticker.

Start-up refuses anything that could make a node vote with less than it had:
a missing/foreign/corrupt data dir, a snapshot file it cannot read, a port in
use. SIGTERM/SIGINT stop it cleanly: a leader first hands leadership to a caught-up
follower (bounded, `hand_over`), then ticker, Raft, LMDB. Operators and clients
reach it through the gRPC API (api/), which calls the methods here.
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path


from minoots.kernel import KernelError, State

from . import commands, peer_secret, snapshots, tracing
from . import pysyncobj_compat as compat
from .clock import Clock
from .config import NodeConfig
from .journal import LmdbJournal
from .pysyncobj_compat import FAIL_REASON, attach_journal
from .machine import SNAPSHOT_NEW_SUFFIX, CommandFailed, TimerMachine
from .net import check_port_free, split_address
from .store import DataDirError, open_data_dir
from .ticker import Ticker

log = logging.getLogger("minoots.raft.node")

SNAPSHOT_FILE = "snapshot.bin"
PID_FILE = "node.pid"       # present while a node runs on the data dir (restore refuses it)
HAND_OVER_S = 2.0           # a stopping leader tries this long to hand leadership over
HAND_OVER_RETRY_S = 0.5     # TimeoutNow again (to the best follower then) if nobody took over
TRANSFER_HOLD_S = 1.0       # a requested transfer holds writes at most this long per try
TRANSFER_GAP_S = 0.2        # and lets them through this long between tries

class NodeError(Exception):
    """An operator request this node refuses; `code` is the gRPC status it maps to."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class Node:
    """Owns every resource of one node; `start()` then `stop()`."""

    def __init__(self, cfg: NodeConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.clock = Clock(cfg.clock_offset_ms)
        self.env = None
        self._snapshot_store: snapshots.SnapshotStore | None = None
        self.machine: TimerMachine | None = None
        self.ticker: Ticker | None = None
        self.stopped = threading.Event()
        self._handing_over = False
        self.fired_total = 0
        self.leader_changes = 0           # times the leader this node knows changed (to a known leader)
        self._last_leader: str | None = None
        # Creating trace of each live timer, for the fire span's links (raft/tracing.py).
        self.fire_links = tracing.FireLinks()
        self.metrics = None
        if cfg.metrics:
            from .telemetry import NodeMetrics

            self.metrics = NodeMetrics(self)
        # Called with the TimerMachine before its tick thread starts (the API layer
        # attaches its event store here, so no replayed event is missed).
        self.machine_hooks: list = []

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        check_port_free(cfg.raft_bind or cfg.raft, "Raft")
        if cfg.metrics:
            check_port_free(cfg.metrics, "metrics")
        self.env = open_data_dir(cfg.data_dir, cluster=cfg.cluster, node_id=cfg.node_id,
                                 init=cfg.init, map_size=cfg.map_size, sync_policy=cfg.sync)
        self._pidfile = Path(cfg.data_dir) / PID_FILE
        self._pidfile.write_text(str(os.getpid()))
        try:
            self._start_raft()
        except BaseException:
            self._pidfile.unlink(missing_ok=True)
            if self._snapshot_store is not None:
                self._snapshot_store.close()
                self._snapshot_store = None
            self.env.close()
            self.env = None
            raise
        log.info("node started", extra={"raft": cfg.raft, "metrics": cfg.metrics,
                                         "data_dir": str(cfg.data_dir), "sync": cfg.sync})

    def _start_raft(self) -> None:
        cfg = self.cfg
        store = self._snapshot_store = snapshots.SnapshotStore.open(cfg.data_dir, keep=cfg.snapshot_keep,
                                                                     legacy_env=self.env)
        snap_file = Path(cfg.data_dir) / SNAPSHOT_FILE
        snap_meta = self._check_snapshot_file(snap_file, store)
        journal = LmdbJournal(self.env, sync_policy=cfg.sync)
        if snap_meta is not None:
            self._align_journal(journal, snap_meta)
        self._peer_password = self._peer_secret()
        conf = compat.build_conf(cfg.timing, bind=cfg.raft_bind or cfg.raft, password=self._peer_password,
                                 compaction_entries=cfg.compaction_entries,
                                 compaction_seconds=cfg.compaction_seconds)
        attach_journal(conf, journal)
        names = {cfg.node_id: cfg.raft, **cfg.peers}
        self.machine = TimerMachine(
            cfg.raft, list(cfg.peers.values()), conf,
            snapshot_file=snap_file, snapshot_store=store, names=names,
            cluster_name=cfg.cluster, clock=self.clock, hooks=[self._attach_telemetry, *self.machine_hooks],
        )
        journal.on_full = self._on_journal_full
        self.machine.event_listeners.append(self._count_fires)
        self.machine.addOnTickCallback(self._watch_leader)
        self.ticker = Ticker(self.machine, self.clock, links=self.fire_links)
        self.ticker.start()
        if self.metrics is not None:
            self.metrics.serve(cfg.metrics)

    def _peer_secret(self) -> bytes | None:
        """The cluster secret that authenticates every Raft frame; None only with --insecure-peers."""
        cfg = self.cfg
        if cfg.insecure_peers:
            log.warning("INSECURE: the Raft port accepts unauthenticated peers (--insecure-peers)",
                        extra={"raft": cfg.raft})
            threading.Thread(target=self._warn_insecure, name="insecure-peers", daemon=True).start()
            return None
        path = Path(cfg.cluster_secret_file or Path(cfg.data_dir) / peer_secret.SECRET_FILE)
        if cfg.cluster_secret_file is None and not path.exists():
            if not (cfg.init and not cfg.peers):
                raise DataDirError(
                    "no cluster secret: pass --cluster-secret-file FILE (the same file on every member; "
                    "`minoots up` writes one), or --insecure-peers to leave the Raft port unauthenticated")
            peer_secret.generate(path)
            log.info("cluster secret written; give this file to every other member (--cluster-secret-file)",
                     extra={"file": str(path)})
        try:
            return peer_secret.load(path)
        except peer_secret.SecretError as exc:
            raise DataDirError(str(exc)) from None

    def _warn_insecure(self) -> None:
        while not self.stopped.wait(60):
            log.warning("INSECURE: the Raft port accepts unauthenticated peers (--insecure-peers)",
                        extra={"raft": self.cfg.raft})

    def _on_journal_full(self, exc) -> None:
        """The LMDB map is full (called in the thread whose write failed, usually the tick thread).

        From now on this node refuses writes with RESOURCE_EXHAUSTED, proposes no ticks,
        and, while it leads, hands leadership to a caught-up follower so the cluster keeps
        committing. It recovers when restarted with a larger --map-size; nothing acknowledged
        is lost, since a failed append was never acknowledged.
        """
        if self.machine is None or self.machine.storage_full is not None:
            return
        self.machine.storage_full = (
            f"node {self.cfg.node_id}: {exc}; writes are refused here "
            "until the node is restarted with a larger --map-size")
        log.error("LMDB map full: refusing writes, stepping down if leading", extra={"error": str(exc)})
        threading.Thread(target=self._hand_over_while_full, name="storage-full", daemon=True).start()

    def _hand_over_while_full(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stopped.is_set():
            if self.machine.is_leader():
                try:
                    self._in_tick_thread(lambda: self.machine.transferLeadership())
                except Exception as exc:
                    log.warning("leadership hand-over failed; retrying", extra={"error": repr(exc)})
            time.sleep(0.5)

    def _attach_telemetry(self, machine: TimerMachine) -> None:
        """Machine hook (before the tick thread starts): metrics and trace links see every apply."""
        machine.result_listeners.append(self.fire_links.on_result)
        if self.metrics is not None:
            self.metrics.attach(machine)

    def _watch_leader(self) -> None:
        """PySyncObj tick callback: one log line (and a counted change) whenever the leader
        this node knows changes. PySyncObj has no hook for a follower learning a new leader."""
        addr = self.machine.leader_address()
        if addr == self._last_leader:
            return
        self._last_leader = addr
        if addr is None:
            log.info("leader unknown", extra={"term": self.machine.raftCurrentTerm})
            return
        self.leader_changes += 1
        nid = {a: n for n, a in self.machine.names.items()}.get(addr, addr)
        log.info("leader changed", extra={"leader": nid, "leader_address": addr,
                                          "term": self.machine.raftCurrentTerm,
                                          "self": addr == self.cfg.raft})

    @staticmethod
    def _check_snapshot_file(snap_file: Path, store: snapshots.SnapshotStore) -> snapshots.SnapshotMeta | None:
        """The snapshot PySyncObj will load must be readable, or we refuse to start.

        An empty file is the placeholder a crash during a snapshot write leaves
        (see TimerMachine._serialize): it counts as absent, and the newest snapshot
        kept in LMDB (stored before any log compaction relies on it) is used.
        """
        snap_file.with_name(snap_file.name + SNAPSHOT_NEW_SUFFIX).unlink(missing_ok=True)
        if snap_file.exists() and snap_file.stat().st_size == 0:
            log.warning("empty snapshot file (a snapshot write was interrupted); using the copy in LMDB",
                        extra={"file": str(snap_file)})
            snap_file.unlink()
        if not snap_file.exists():
            latest = store.latest()
            if latest is None:
                return None
            tmp = snap_file.with_name(snap_file.name + ".tmp")
            tmp.write_bytes(latest)  # the file was lost; LMDB keeps the history
            os.replace(tmp, snap_file)
        try:
            meta, kernel = snapshots.decode(snap_file.read_bytes())
            State.from_bytes(kernel)
        except (snapshots.SnapshotFormatError, KernelError, OSError) as exc:
            raise DataDirError(f"snapshot {snap_file} is unreadable: {exc}") from exc
        return meta

    @staticmethod
    def _align_journal(journal: LmdbJournal, meta: snapshots.SnapshotMeta) -> None:
        """Finish a log compaction that a crash interrupted, so no entry after the snapshot is lost.

        At start PySyncObj keeps the log only when its first two entries are the
        snapshot's last two; otherwise it clears the whole log (syncobj.py,
        __loadDumpFile), acknowledged entries after the snapshot included. A crash
        between a snapshot becoming durable and the log compaction leaves exactly
        such a log (starting before the snapshot): drop the entries the snapshot
        covers, as the compaction would have.
        """
        last, prev = meta.entries
        first = journal.first_index
        if first is None or first >= prev[1] or journal.last_index < last[1]:
            return
        if tuple(journal[prev[1] - first]) != tuple(prev) or tuple(journal[last[1] - first]) != tuple(last):
            return  # not this snapshot's history: PySyncObj's own rule applies
        journal.deleteEntriesTo(prev[1] - first)
        log.warning("finished an interrupted log compaction",
                    extra={"snapshot_index": last[1], "log_from": first, "log_to": journal.last_index})

    def hand_over(self, timeout: float = HAND_OVER_S) -> str | None:
        """Before a graceful stop: hand leadership to a caught-up follower (etcd does the same
        on SIGTERM), so the cluster goes on ticking without waiting out an election timeout.

        The ticker stops first (a leaving leader proposes no more ticks) and new proposals
        wait in PySyncObj's queue (compat.HandOverMixin) until another node leads, so a
        follower catches up within a round trip. Bounded: after `timeout` seconds without a
        caught-up follower or a new leader, it gives up, says so in the log, and the caller
        stops anyway (the others then elect a leader after their election timeout).
        Returns the new leader's id, or None when there was nothing to hand over or it failed."""
        m = self.machine
        if m is None or self._handing_over or not m.is_leader() or not m.otherNodes:
            return None
        self._handing_over = True       # once: stop() calls it again after the API layer did
        started = time.monotonic()
        deadline = started + timeout
        if self.ticker is not None:
            self.ticker.stop()
        new, chosen = self._hand_leadership(None, deadline, "before stopping")
        if new is not None:
            log.info("leadership handed over before stopping",
                     extra={"to": new, "chosen": chosen, "took_ms": round(1000 * (time.monotonic() - started), 1)})
            return new
        if not compat.any_peer_connected(m):
            reason = "no other member connected"
        elif chosen is None:
            reason = "no follower caught up"
        else:
            reason = "the chosen follower did not take over"
        log.warning("leadership not handed over before stopping; stopping anyway (the other members "
                    "elect a leader after their election timeout)",
                    extra={"after_s": round(time.monotonic() - started, 3), "chosen": chosen, "reason": reason})
        return None

    def _leader_elsewhere(self) -> str | None:
        """The id of the node that leads, when it is not this one (else None)."""
        m = self.machine
        leader = m.leader_address()
        if leader is None or leader == self.cfg.raft or m.is_leader():
            return None
        return {a: n for n, a in m.names.items()}.get(leader, leader)

    def _other_leader(self, until: float) -> str | None:
        """`_leader_elsewhere`, waiting for one until `until`."""
        while (new := self._leader_elsewhere()) is None and time.monotonic() < until:
            time.sleep(0.02)
        return new

    def _hand_leadership(self, target: str | None, until: float, why: str) -> tuple[str | None, str | None]:
        """Hand leadership to `target` (a Raft address; None: the first caught-up follower)
        by `until` (monotonic). PySyncObj sends TimeoutNow only to a follower whose matchIndex
        is the leader's last index, which under load rarely holds at the instant it is
        checked; so new proposals are held (compat.HandOverMixin, Raft thesis 3.10) until
        another node leads, and TimeoutNow goes out from the tick thread the moment the
        target holds the whole log (again after HAND_OVER_RETRY_S if nobody took over).
        Returns (the new leader's id or None, the id TimeoutNow last went to or None)."""
        m = self.machine
        ids = {a: n for n, a in m.names.items()}
        chosen = None
        sent_at = 0.0

        def pick():
            ready = compat.caught_up_followers(m)
            to = target if target is not None else (ready[0] if ready else None)
            if to is None or to not in ready:
                return None
            m.transferLeadership(to)
            return to

        m.hold_proposals(True)
        try:
            while time.monotonic() < until:
                new = self._leader_elsewhere()
                if new is not None:
                    return new, ids.get(chosen, chosen)
                if not compat.any_peer_connected(m):
                    break               # nobody to hand over to (e.g. the whole cluster is stopping)
                if m.is_leader() and time.monotonic() - sent_at > HAND_OVER_RETRY_S:
                    try:
                        sent = self._in_tick_thread(pick, timeout=max(0.05, until - time.monotonic()))
                    except TimeoutError:
                        sent = None
                    if sent is not None:
                        chosen, sent_at = sent, time.monotonic()
                        log.info(f"handing leadership over {why}", extra={"to": ids.get(sent, sent), "address": sent})
                time.sleep(0.005)
        finally:
            m.hold_proposals(False)
        return None, ids.get(chosen, chosen)

    def stop(self) -> None:
        self.hand_over()
        if self.metrics is not None:
            self.metrics.close()
        if self.ticker:
            self.ticker.stop()
        if self.machine:
            self.machine.destroy()
            deadline = time.monotonic() + 5
            while self.machine.tick_thread_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        if self._snapshot_store is not None:
            self._snapshot_store.close()
            self._snapshot_store = None
        if self.env is not None:
            self.env.sync(True)
            self.env.close()
            self.env = None
            self._pidfile.unlink(missing_ok=True)
        self.stopped.set()
        log.info("node stopped")

    def _count_fires(self, events) -> None:
        self.fired_total += sum(1 for e in events if e.kind.name == "FIRED")

    # ---- status -------------------------------------------------------------

    def status(self) -> dict:
        m = self.machine
        st = m.raft_status()
        if st is None:
            raise NodeError("UNAVAILABLE", "Raft status is changing too fast to read; retry")
        names = m.names
        grpc = m.grpc_addresses
        by_addr = {addr: nid for nid, addr in names.items()}
        leader_addr = st.leader
        self_addr = self.cfg.raft
        members = []
        for addr in sorted([self_addr, *st.partners]):
            member = {
                "id": by_addr.get(addr, addr),
                "address": addr,
                "grpc_address": grpc.get(by_addr.get(addr, addr)),
                "role": ("leader" if addr == leader_addr else st.role if addr == self_addr else "follower"),
            }
            if addr != self_addr:
                member["connected"] = st.partners.get(addr, False)
                match = st.match_index.get(addr)
                if match is not None and st.is_leader:
                    member["match_index"] = match
                    member["lag"] = max(0, st.commit_index - match)
            members.append(member)
        counts = m.read(lambda k: {s.name.lower(): n for s, n in k.counts().items()})
        return {
            "node": self.cfg.node_id,
            "cluster": self.cfg.cluster,
            "leader": by_addr.get(leader_addr, leader_addr) if leader_addr else None,
            "leader_address": leader_addr,
            "leader_grpc_address": grpc.get(by_addr.get(leader_addr, leader_addr)) if leader_addr else None,
            "role": st.role,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "log_len": st.log_len,
            "has_quorum": st.has_quorum,
            "members": members,
            "timers": counts,
            "next_deadline": m.next_deadline(),
            "ticks_proposed": self.ticker.proposed if self.ticker else 0,
            "fired_total": self.fired_total,
        }

    def kernel_digest(self) -> dict:
        """{"applied_index", "sha256", "bytes"}: the SHA-256 of the kernel state at the applied
        index; nodes that applied the same index agree (Cluster.GetDigest)."""
        m = self.machine
        while True:
            applied = m.raftLastApplied
            data = m.kernel_bytes()
            if m.raftLastApplied == applied:     # nothing applied in between: the bytes are at `applied`
                return {"applied_index": applied, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    # ---- membership, leadership, snapshots (the gRPC Cluster service calls these) ----

    def _membership_change(self, fn, arg) -> None:
        # PySyncObj denies a change until the leader's no-op of its term is applied
        # (right after an election): retry REQUEST_DENIED for a few seconds.
        deadline = time.monotonic() + 10
        while True:
            done = threading.Event()
            box = []
            fn(arg, callback=lambda res, err: (box.append(err), done.set()))
            if not done.wait(max(0.1, deadline - time.monotonic())):
                raise TimeoutError("membership change not committed within 10 s")
            if box[0] == FAIL_REASON.SUCCESS:
                return
            if box[0] != FAIL_REASON.REQUEST_DENIED or time.monotonic() > deadline - 0.5:
                raise CommandFailed(box[0])
            time.sleep(0.1)

    def _propose_name(self, nid: str, addr: str | None, timeout: float = 10.0) -> None:
        """Record (or forget) a member's id; idempotent, so retried across leader changes
        (adding a node often triggers one: it campaigned at a higher term while outside)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.machine.propose_sync(commands.SetMemberName(nid, addr), timeout=max(0.5, deadline - time.monotonic()))
                return
            except (CommandFailed, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _in_tick_thread(self, fn, timeout: float = 5.0):
        """Run fn in PySyncObj's tick thread (its non-queued calls are not thread-safe)."""
        box: list = []
        done = threading.Event()

        def once():
            if not done.is_set():
                try:
                    box.append(fn())
                except BaseException as exc:  # handed to the caller
                    box.append(exc)
                done.set()

        self.machine.addOnTickCallback(once)
        try:
            if not done.wait(timeout):
                raise TimeoutError("the Raft tick thread did not run the request")
        finally:
            self.machine.removeOnTickCallback(once)
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def add_member(self, nid: str, addr: str) -> dict:
        """Add member `nid` at Raft address `addr` (started already, with every member as a peer)."""
        if not nid:
            raise NodeError("INVALID_ARGUMENT", "id: must be the new node's id")
        try:
            split_address(addr)
        except ValueError as exc:
            raise NodeError("INVALID_ARGUMENT", str(exc)) from None
        names = self.machine.names
        if nid in names:
            raise NodeError("ALREADY_EXISTS", f"node id {nid!r} is already a member ({names[nid]})")
        if addr in names.values():
            raise NodeError("ALREADY_EXISTS", f"address {addr} already belongs to a member")
        self._membership_change(self.machine.addNodeToCluster, addr)
        self._propose_name(nid, addr)
        log.info("member added", extra={"id": nid, "address": addr})
        return {"added": {"id": nid, "address": addr}}

    def remove_member(self, nid: str) -> dict:
        names = self.machine.names
        if nid not in names:
            raise NodeError("NOT_FOUND", f"no member with id {nid!r}")
        addr = names[nid]
        if addr == self.machine.leader_address():
            if not self.machine.is_leader():
                raise NodeError("FAILED_PRECONDITION",
                                 f"{nid} leads: send the removal to {nid} itself, which steps down first")
            self.transfer_leadership()      # step down first (to the most caught-up follower)
            return self._remove_self(nid, addr)
        self._membership_change(self.machine.removeNodeFromCluster, addr)
        self._propose_name(nid, None)
        log.info("member removed", extra={"id": nid, "address": addr})
        return {"removed": {"id": nid, "address": addr}}

    def _remove_self(self, nid: str, addr: str) -> dict:
        """Remove this (former leader) node through the new leader.

        A removal forwarded from the node being removed never answers: the leader
        applies the change on append, drops the node's connection, and only then
        sends the reply (lost). So the id goes first, while this node is still a
        member, and the removal is asked over PySyncObj's utility protocol, which
        the leader answers on the asking connection once the change is committed.
        """
        self._propose_name(nid, None)
        leader = self.machine.leader_address()
        res = compat.ask_to_remove(leader, addr, self._peer_password)
        if not str(res).startswith("SUCCESS"):
            try:
                self._propose_name(nid, addr, timeout=3)  # still a member: keep its id
            except (CommandFailed, TimeoutError):
                pass
            raise NodeError("UNAVAILABLE", f"the new leader {leader} did not remove {nid}: {res}; retry")
        log.info("member removed", extra={"id": nid, "address": addr, "was_leader": True})
        return {"removed": {"id": nid, "address": addr}}

    def transfer_leadership(self, to: str | None = None, timeout: float = 10.0) -> str:
        """Hand leadership from this node (the leader) to member `to` (an id; None = the most
        caught-up follower) and wait until another node leads; returns the new leader's id.
        Writes wait while it is under way (`_hand_leadership`), at most TRANSFER_HOLD_S per
        try, so a target that cannot catch up stalls them that long, then they go through
        for TRANSFER_GAP_S before the next try, until `timeout`."""
        m = self.machine
        target = None
        if to:
            target = m.names.get(to)
            if target is None:
                raise NodeError("NOT_FOUND", f"no member with id {to!r}")
            if target == self.cfg.raft:
                raise NodeError("FAILED_PRECONDITION", f"{to} is this node; name another member")
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            if not m.is_leader() and not tries:
                raise NodeError("FAILED_PRECONDITION", "this node is not the leader; send the request to the leader")
            if not m.is_leader():               # it stepped down after our TimeoutNow: who won?
                new = self._other_leader(deadline + TRANSFER_HOLD_S)
                if new is None:
                    raise NodeError("UNAVAILABLE", "this node stepped down but no other node took leadership in "
                                    "time; retry")
                log.info("leadership transferred", extra={"to": new, "asked": to, "tries": tries})
                return new
            if target is not None and not compat.follower_connected(m, target):
                raise NodeError("UNAVAILABLE", f"{to} is not connected to this leader; retry when it is")
            tries += 1
            started = time.monotonic()
            new, chosen = self._hand_leadership(target, min(deadline, started + TRANSFER_HOLD_S), "on request")
            if new is not None:
                log.info("leadership transferred", extra={"to": new, "asked": to, "chosen": chosen, "tries": tries,
                                                          "took_ms": round(1000 * (time.monotonic() - started), 1)})
                return new
            if time.monotonic() + TRANSFER_GAP_S >= deadline:
                raise NodeError("UNAVAILABLE", "leadership transfer did not complete: "
                                + ("no follower caught up" if chosen is None else f"{chosen} did not take over")
                                + f" in {tries} tries of {TRANSFER_HOLD_S:g} s; retry")
            time.sleep(TRANSFER_GAP_S)

    def snapshot_list(self) -> list[dict]:
        """The snapshots this node keeps (oldest first), as SnapshotInfo dicts."""
        return [s.__dict__ for s in self.machine._snapshot_store.list()]

    def snapshot_info(self, last_index: int | None = None):
        """The SnapshotInfo of the latest kept snapshot (or the one at `last_index`), read
        without copying it; NodeError NOT_FOUND when this node keeps no such snapshot."""
        store = self.machine._snapshot_store
        info = store.info(last_index)
        if info is None:
            if last_index is None:
                raise NodeError("NOT_FOUND", f"{self.cfg.node_id} has no snapshot yet; take one first")
            kept = ", ".join(str(s.last_index) for s in store.list()) or "none"
            raise NodeError("NOT_FOUND", f"{self.cfg.node_id} keeps no snapshot at index {last_index} "
                                          f"(it keeps: {kept})")
        return info

    def snapshot_chunk(self, last_index: int, offset: int, size: int) -> bytes:
        """Bytes offset..offset+size of the kept snapshot at `last_index` (an export reads it
        chunk by chunk); NodeError UNAVAILABLE if it was dropped since (newer ones replaced it)."""
        data = self.machine._snapshot_store.read(last_index, offset, size)
        if data is None:
            raise NodeError("UNAVAILABLE", f"snapshot {last_index} was dropped during the export "
                                            "(newer snapshots replaced it); retry")
        return data

    def take_snapshot(self) -> dict:
        m = self.machine
        before = m.last_snapshot
        if before is not None and before.last_index >= m.raftLastApplied:
            # Nothing applied since: PySyncObj skips the compaction, so waiting would time out.
            return {"snapshot": before.__dict__}
        m.forceLogCompaction()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if m.last_snapshot is not before and not m.snapshot_in_progress():
                # PySyncObj compacts the log in the same tick that learns the snapshot is
                # done; one more pass through the tick thread means that has happened.
                self._in_tick_thread(lambda: None)
                return {"snapshot": m.last_snapshot.__dict__}
            time.sleep(0.02)
        raise TimeoutError("snapshot not written within 60 s")


def run(cfg: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT; returns the process exit code."""
    tracing.setup_from_env(cfg.node_id)
    node = Node(cfg)
    node.start()
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()
        tracing.shutdown()
    return 0
