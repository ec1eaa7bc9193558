"""The replicated state machine behind PySyncObj: proposing, applying, snapshots.

Every mutating command is a typed record (raft/commands.py), encoded once and
carried as one replicated call, `_apply(bytes)`, which PySyncObj's tick thread
applies on every node in log order through the FSM (raft/fsm.py: Apply /
Snapshot / Restore). Nothing else mutates the kernel, and apply never raises.

Snapshots use PySyncObj's custom serializer hooks. The serializer runs in the
tick thread at exactly the last applied entry, so it takes the kernel's bytes
there and hands the slow part (writing the file PySyncObj streams to lagging
followers, and the copy kept in LMDB) to a background thread; `serializeChecker`
reports when that is done. No fork(): LMDB forbids using an environment across it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from opentelemetry import context as otel_context
from opentelemetry.trace import StatusCode

from minoots.kernel import KernelError, State

from . import commands, snapshot_writer, snapshots, tracing
from . import pysyncobj_compat as compat
from .clock import Clock
from .fsm import TimerFSM
from .pysyncobj_compat import FAIL_NAMES, FAIL_REASON, SERIALIZER_STATE, SyncObj, SyncObjConf, TCPNode, replicated

log = logging.getLogger("minoots.raft")

SNAPSHOT_NEW_SUFFIX = ".new"  # the snapshot file being written, beside the real one


class StorageFull(KernelError):
    """This node's LMDB map is full: it refuses writes until restarted with a larger map.

    A KernelError so that every layer above reports it like any typed refusal
    (RESOURCE_EXHAUSTED); it comes from the raft layer, never from the kernel.
    """

    code = "RESOURCE_EXHAUSTED"


class CommandFailed(Exception):
    """Raft did not commit the command (no leader, leader changed, queue full, ...).

    The command may or may not have been applied: retry only idempotent commands.
    """

    def __init__(self, reason: int) -> None:
        self.reason = reason
        super().__init__(f"command not committed: {FAIL_NAMES.get(reason, reason)}")


class TimerMachine(compat.StallGuardMixin, compat.PreVoteMixin, compat.HandOverMixin, compat.GroupSyncMixin,
                   compat.CommitNoticeMixin, compat.BoundedApplyMixin, SyncObj):
    """One node's replicated kernel. Create it through `raft.node`, which owns the data dir."""

    def __init__(
        self,
        self_addr: str,
        peer_addrs: Iterable[str],
        conf: SyncObjConf,
        *,
        snapshot_file: Path,
        snapshot_store: snapshots.SnapshotStore,
        names: dict[str, str],
        cluster_name: str,
        clock: Clock,
        hooks: Iterable[Callable[["TimerMachine"], None]] = (),
    ) -> None:
        self.fsm = TimerFSM(names)             # the replicated state: Apply / Snapshot / Restore
        self.storage_full: str | None = None    # set (with the reason) when the LMDB map is full
        self._clock = clock
        self._cluster_name = cluster_name
        self._snapshot_store = snapshot_store
        self._snapshot_file = Path(snapshot_file)
        self._snap_state = SERIALIZER_STATE.NOT_SERIALIZING
        self._snap_lock = threading.Lock()
        self._snap_error: str | None = None
        self._last_snapshot: snapshots.SnapshotInfo | None = None
        # The FSM's listeners (called after every apply, guarded; see raft/fsm.py).
        self.event_listeners = self.fsm.event_listeners
        self.apply_listeners = self.fsm.apply_listeners
        self.result_listeners = self.fsm.result_listeners
        self.leader_listeners: list[Callable[[bool], None]] = []
        # Called in the tick thread with the kernel's event seq right after a
        # snapshot replaced the kernel (at start-up, or streamed from the leader):
        # events up to that seq were never emitted on this node in this process.
        self.snapshot_listeners: list[Callable[[int], None]] = []
        # Telemetry: called after each snapshot this node wrote, with
        # (ok, bytes, seconds, last_index). They must not raise; errors are logged.
        self.snapshot_written_listeners: list[Callable[[bool, int, float, int], None]] = []
        conf.serializer = self._serialize
        conf.deserializer = self._deserialize
        conf.serializeChecker = self._check_serialize
        conf.fullDumpFile = str(snapshot_file)
        conf.onStateChanged = self._on_state_changed
        # Hooks attach their listeners here, before SyncObj starts the tick thread
        # that loads the snapshot and re-applies the log: no event is missed.
        for hook in hooks:
            hook(self)
        # Restart phases (issue 15): snapshot load, then replay of the local log up to the commit
        # index it recorded; logged once each ("snapshot loaded", "log replayed") with seconds.
        self._started = time.monotonic()
        self._snapshot_load_s: float | None = None
        super().__init__(self_addr, list(peer_addrs), conf, transportClass=compat.RaftConformantTCPTransport)
        self._replay_to = self.raftCommitIndex      # the journal's recorded commit index
        self.addOnTickCallback(self._check_replayed)

    def _check_replayed(self) -> None:
        """Once the local log is applied up to the commit index recorded at start: log the phases."""
        if self._replay_to is None or self.raftLastApplied < self._replay_to:
            return
        self._replay_to = None    # once (removing a callback from within one would deadlock PySyncObj)
        took = time.monotonic() - self._started
        log.info("log replayed", extra={"applied_index": self.raftLastApplied, "seconds": round(took, 3),
                                        "snapshot_load_s": self._snapshot_load_s,
                                        "replay_s": round(took - (self._snapshot_load_s or 0.0), 3)})

    # ---- the apply path (PySyncObj's tick thread) --------------------------

    @replicated
    def _apply(self, command):
        # The one replicated method (PySyncObj numbers replicated methods by name:
        # never add a second one). `command` is the encoded record (raft/commands.py),
        # or a v0 tuple from a log written before the schema.
        return self.fsm.apply(command)

    # ---- proposing ----------------------------------------------------------

    def propose(self, command: commands.Command, callback: Callable[[object, int], None]) -> None:
        """Replicate a command; callback(result, fail_reason) runs in the tick thread.

        Raises StorageFull at once while this node's log cannot grow."""
        if self.storage_full is not None:
            raise StorageFull(self.storage_full)
        self._apply(commands.encode(command), callback=callback)

    def propose_sync(self, command: commands.Command, timeout: float = 10.0):
        """Replicate a command and wait; raises CommandFailed, TimeoutError or the KernelError."""
        done = threading.Event()
        box: list = []

        def cb(result, err):
            box.append((result, err))
            done.set()

        self.propose(command, cb)
        if not done.wait(timeout):
            raise TimeoutError(f"{command.kind} not committed within {timeout:.1f}s")
        result, err = box[0]
        if err != FAIL_REASON.SUCCESS:
            raise CommandFailed(err)
        if isinstance(result, Exception):
            raise result
        return result

    # ---- reads (local applied state) ----------------------------------------

    def read(self, fn: Callable[[State], object]):
        """Run fn against the local applied kernel state, consistently."""
        with self.fsm.lock:
            return fn(self.fsm.kernel)

    def has_graph(self) -> bool:
        """Whether some timer has dependents or an escalation ladder (kernel/graph.py)."""
        return self.fsm.kernel.has_graph

    def next_deadline(self) -> int | None:
        with self.fsm.lock:
            return self.fsm.kernel.next_deadline()

    def kernel_bytes(self) -> bytes:
        with self.fsm.lock:
            return self.fsm.kernel.to_bytes()

    def token(self, token_id: str):
        """The replicated token record with this id (raft/tokens.py), or None."""
        with self.fsm.lock:
            return self.fsm.tokens.get(token_id)

    def tokens(self) -> list:
        with self.fsm.lock:
            return self.fsm.tokens.all()

    def quota(self, tenant: str):
        """(the Quota that applies to `tenant`, whether it is the default's): raft/quotas.py."""
        with self.fsm.lock:
            return self.fsm.quotas.effective(tenant)

    def subscription(self, tenant: str, name: str):
        """The durable subscription (raft/subscriptions.py); raises SubscriptionNotFound."""
        with self.fsm.lock:
            return self.fsm.subscriptions.get(tenant, name)

    def subscriptions(self, tenant=None) -> list:
        with self.fsm.lock:
            return self.fsm.subscriptions.list(tenant)

    def subscription_pin(self):
        """The lowest cursor of every durable subscription (None: none): events from it on are
        kept by retention (read on every event write: no lock, one attribute read)."""
        return self.fsm.subscriptions.pin
    def webhook_secret(self, tenant: str):
        """The tenant's webhook signing secret (raft/webhook_secrets.py), or None."""
        with self.fsm.lock:
            return self.fsm.webhook_secrets.get(tenant)

    def webhook_signing_secrets(self, tenant: str, now_ms: int) -> list:
        """The secrets the leader signs a tenant's webhooks with now (two during a rotation)."""
        with self.fsm.lock:
            return self.fsm.webhook_secrets.signing(tenant, now_ms)

    def endpoint_signing_secrets(self, tenant: str, endpoint: str, now_ms: int) -> list:
        """The secrets the leader signs an endpoint's webhooks with now (two during a rotation)."""
        with self.fsm.lock:
            return self.fsm.endpoints.signing(tenant, endpoint, now_ms)

    def endpoint(self, tenant: str, endpoint: str):
        """The endpoint without its secrets (raft/endpoints.py); raises EndpointNotFound."""
        with self.fsm.lock:
            return self.fsm.endpoints.get(tenant, endpoint).public()

    def endpoints(self, tenant: str) -> list:
        with self.fsm.lock:
            return self.fsm.endpoints.list(tenant)

    def delivery_defaults(self, tenant: str):
        """(the DeliveryPolicy new timers of `tenant` default to, whether it is the built-in one)."""
        with self.fsm.lock:
            return self.fsm.delivery_defaults.effective(tenant)

    def retention(self, tenant: str) -> tuple[int, bool]:
        """(the retention in ms that applies to `tenant`, whether it is inherited): raft/retention.py."""
        with self.fsm.lock:
            return self.fsm.retention.effective(tenant)

    @property
    def quotas(self):
        """The replicated QuotaTable (replaced whole by a snapshot load: read it, keep no reference)."""
        return self.fsm.quotas

    @property
    def names(self) -> dict[str, str]:
        return dict(self.fsm.names)

    @property
    def grpc_addresses(self) -> dict[str, str]:
        """Member id -> gRPC address, for the members that announced one."""
        return dict(self.fsm.grpc)

    def is_leader(self) -> bool:
        return compat.is_leader(self)

    def leader_address(self) -> str | None:
        return compat.leader_address(self)

    def leader_connected(self) -> bool:
        return compat.leader_connected(self)

    def raft_status(self) -> compat.RaftStatus | None:
        return compat.raft_status(self)

    def election_counters(self) -> dict:
        """PreVote rounds started, pre-votes refused, stale AppendEntries replies dropped."""
        return compat.election_counters(self)

    # ---- leadership ----------------------------------------------------------

    def _on_state_changed(self, old: int, new: int) -> None:
        log.info("raft role changed", extra={"from": compat.ROLE_NAMES.get(old), "to": compat.ROLE_NAMES.get(new),
                                             "term": self.raftCurrentTerm})
        for listener in self.leader_listeners:
            listener(new == compat.LEADER)

    # ---- snapshots -------------------------------------------------------------

    def _serialize(self, filename: str, raft_data: tuple) -> None:
        last_entry, prev_entry, cluster = raft_data
        snap = self.fsm.snapshot()   # memcpy-fast; the kernel part is encoded off this thread
        capture, names, grpc = snap.kernel, snap.names, snap.grpc
        meta = snapshots.SnapshotMeta(
            last_index=last_entry[1],
            last_term=last_entry[2],
            entries=(tuple(last_entry), tuple(prev_entry)),
            cluster=tuple(sorted(node.id for node in cluster)),
            names=names,
            grpc=grpc,
            created_at_ms=self._clock.now_ms(),
            timers=len(capture),
            cluster_name=self._cluster_name,
            tokens=snap.tokens,
            quotas=list(snap.quotas),
            subscriptions=list(snap.subscriptions),
            webhook_secrets=list(snap.webhook_secrets),
            retention=list(snap.retention),
            endpoints=list(snap.endpoints),
            delivery_defaults=list(snap.delivery_defaults),
        )
        # PySyncObj renames `filename` over the snapshot file as soon as this
        # returns, long before a background write ends: writing into it would
        # leave a torn snapshot file after a crash, which the node then refuses
        # to start from. So PySyncObj gets an empty placeholder (start-up treats
        # an empty file as absent and uses the copy kept in LMDB), and the real
        # file is written beside it and moved into place by _check_serialize in
        # the tick thread, after PySyncObj's rename, once complete.
        open(filename, "wb").close()
        fh = open(self._snapshot_file.with_name(self._snapshot_file.name + SNAPSHOT_NEW_SUFFIX), "wb")
        with self._snap_lock:
            self._snap_state = SERIALIZER_STATE.SERIALIZING
        span = None
        if tracing.enabled():
            span = tracing.tracer().start_span("raft.snapshot", context=otel_context.Context(), attributes={
                "minoots.last_index": meta.last_index, "minoots.timers": meta.timers})
        threading.Thread(target=self._write_snapshot, args=(fh, meta, capture, time.monotonic(), span),
                         name="snapshot-writer", daemon=True).start()

    def _write_snapshot(self, fh, meta: snapshots.SnapshotMeta, capture, started: float | None = None,
                        span=None) -> None:
        state = SERIALIZER_STATE.FAILED
        nbytes = 0
        try:
            parts = capture.to_parts()
            del capture  # freeing a 1M-timer capture takes ~10 ms: here, not in the tick thread
            with fh:     # chunked, fdatasynced, no second copy (raft/snapshot_writer.py)
                meta, written = snapshot_writer.write_file(fh, meta, parts)
            del parts
            self._last_snapshot = self._snapshot_store.put_file(fh.name)
            state = SERIALIZER_STATE.SUCCESS
            nbytes = written
            log.info("snapshot written", extra={"last_index": meta.last_index, "bytes": nbytes,
                                                "timers": meta.timers})
        except Exception as exc:
            self._snap_error = repr(exc)
            log.error("snapshot failed", extra={"error": repr(exc)})
            if span is not None:
                span.record_exception(exc)
        finally:
            ok = state == SERIALIZER_STATE.SUCCESS
            seconds = time.monotonic() - started if started is not None else 0.0
            if span is not None:
                span.set_attribute("minoots.bytes", nbytes)
                if not ok:
                    span.set_status(StatusCode.ERROR, self._snap_error or "snapshot failed")
                span.end()
            for listener in self.snapshot_written_listeners:
                try:
                    listener(ok, nbytes, seconds, meta.last_index)
                except Exception:
                    log.exception("snapshot listener failed")
            with self._snap_lock:
                self._snap_state = state

    def _check_serialize(self) -> int:
        with self._snap_lock:
            state = self._snap_state
            if state == SERIALIZER_STATE.SUCCESS:
                try:
                    new = self._snapshot_file.with_name(self._snapshot_file.name + SNAPSHOT_NEW_SUFFIX)
                    os.replace(new, self._snapshot_file)
                    dir_fd = os.open(self._snapshot_file.parent, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
                except OSError as exc:
                    self._snap_error = repr(exc)
                    log.error("snapshot failed", extra={"error": repr(exc)})
                    state = SERIALIZER_STATE.FAILED
            if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
                self._snap_state = SERIALIZER_STATE.NOT_SERIALIZING
            return state

    def snapshot_in_progress(self) -> bool:
        """True until PySyncObj has been told the last snapshot finished (it compacts then)."""
        with self._snap_lock:
            return self._snap_state != SERIALIZER_STATE.NOT_SERIALIZING

    def _deserialize(self, filename: str) -> tuple:
        """Load a snapshot file (ours at start-up, or one streamed from the leader)."""
        t0 = time.monotonic()
        data = Path(filename).read_bytes()
        meta, kernel = snapshots.decode(data)
        state = self.fsm.restore(kernel, meta.names, meta.grpc, meta.tokens, meta.quotas, meta.subscriptions,
                                 meta.webhook_secrets, meta.retention, meta.endpoints, meta.delivery_defaults)
        for listener in self.snapshot_listeners:
            listener(state.seq)
        if self._snapshot_store.info(meta.last_index) is None:
            self._snapshot_store.put(data)
        took = time.monotonic() - t0
        if self._snapshot_load_s is None:
            self._snapshot_load_s = round(took, 3)
        log.info("snapshot loaded", extra={"last_index": meta.last_index, "timers": meta.timers,
                                           "seconds": round(took, 3)})
        last_entry, prev_entry = meta.entries
        return last_entry, prev_entry, {TCPNode(addr) for addr in meta.cluster}

    @property
    def last_snapshot(self) -> snapshots.SnapshotInfo | None:
        return self._last_snapshot
