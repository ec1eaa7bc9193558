"""The kernel behind PySyncObj: the one place where replicated commands reach the state machine.

Every mutating kernel command travels as one replicated call, `_apply(command)`,
and is applied by PySyncObj's tick thread on every node in log order. Nothing
else mutates the kernel. The apply path never raises: a rejected command yields
its KernelError as the result, identically on every replica, because an
exception escaping into PySyncObj would make it retry the same entry forever.

Snapshots use PySyncObj's custom serializer hooks. The serializer runs in the
tick thread at exactly the last applied entry, so it takes the kernel's bytes
there and hands the slow part (writing the file PySyncObj streams to lagging
followers, and the copy kept in LMDB) to a background thread; `serializeChecker`
reports when that is done. No fork(): LMDB forbids using an environment across it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode
from opentelemetry import context as otel_context
from opentelemetry.trace import StatusCode

from minoots.kernel import KernelError, State, TimerSpec

from . import snapshots, tracing
from .clock import Clock
from .patches import RaftConformantTCPTransport

log = logging.getLogger("minoots.raft")

LEADER = 2  # pysyncobj.syncobj._RAFT_STATE.LEADER
SNAPSHOT_NEW_SUFFIX = ".new"  # the snapshot file being written, beside the real one
ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}

FAIL_NAMES = {
    v: k.lower() for k, v in vars(FAIL_REASON).items() if not k.startswith("_") and isinstance(v, int)
}


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


def spec_to_wire(spec: TimerSpec) -> tuple:
    labels = dict(spec.labels) if spec.labels else None
    return (spec.id, spec.fire_at, spec.tenant, spec.name, spec.payload, labels,
            spec.action, spec.idempotency_key, spec.ack_required)


def spec_from_wire(t: tuple) -> TimerSpec:
    return TimerSpec(*t)


class TimerMachine(SyncObj):
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
        self._kernel = State()
        self._lock = threading.RLock()
        self.storage_full: str | None = None    # set (with the reason) when the LMDB map is full
        self._clock = clock
        self._names = dict(names)              # node id -> raft address (replicated)
        self._grpc: dict[str, str] = {}        # node id -> gRPC address (replicated, members only)
        self._cluster_name = cluster_name
        self._snapshot_store = snapshot_store
        self._snapshot_file = Path(snapshot_file)
        self._snap_state = SERIALIZER_STATE.NOT_SERIALIZING
        self._snap_lock = threading.Lock()
        self._snap_error: str | None = None
        self._last_snapshot: snapshots.SnapshotInfo | None = None
        self.event_listeners: list[Callable] = []
        self.apply_listeners: list[Callable] = []
        self.leader_listeners: list[Callable[[bool], None]] = []
        # Called in the tick thread with the kernel's event seq right after a
        # snapshot replaced the kernel (at start-up, or streamed from the leader):
        # events up to that seq were never emitted on this node in this process.
        self.snapshot_listeners: list[Callable[[int], None]] = []
        # Telemetry (metrics, trace links): called in the tick thread after every apply
        # with (command, result); and after each snapshot this node wrote, with
        # (ok, bytes, seconds, last_index). They must not raise; errors are logged.
        self.result_listeners: list[Callable[[tuple, object], None]] = []
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
        super().__init__(self_addr, list(peer_addrs), conf, transportClass=RaftConformantTCPTransport)

    # ---- the apply path (PySyncObj's tick thread) --------------------------

    @replicated
    def _apply(self, command: tuple):
        with self._lock:
            try:
                result = self._dispatch(command)
            except KernelError as exc:
                self._tell_result(command, exc)
                return exc
            except Exception as exc:  # a kernel bug: same on every replica, keep the log moving
                log.critical("apply failed", extra={"command": command[0], "error": repr(exc)})
                self._tell_result(command, exc)
                return exc
        for listener in self.apply_listeners:
            listener(command[0])
        self._tell_result(command, result)
        return result

    def _tell_result(self, command: tuple, result) -> None:
        for listener in self.result_listeners:
            try:
                listener(command, result)
            except Exception:
                log.exception("apply result listener failed")

    def _dispatch(self, command: tuple):
        kind = command[0]
        k = self._kernel
        if kind == "create":
            # ("create", now, groups[, traceparents]): the optional 4th element (one W3C
            # traceparent or None per group, raft/tracing.py) is for telemetry only and
            # never reaches the kernel.
            now, groups = command[1], command[2]
            out = []
            for group in groups:
                try:
                    res = k.create(now, [spec_from_wire(t) for t in group])
                    self._emit(res.events)
                    out.append(res)
                except KernelError as exc:
                    out.append(exc)
            return out
        if kind == "tick":
            res = k.tick(command[1])
        elif kind == "cancel":
            res = k.cancel(command[1], command[2])
        elif kind == "reschedule":
            _, now, tenant, tid, fire_at, extend_by = command
            res = k.reschedule(now, tenant, tid, fire_at=fire_at, extend_by=extend_by)
        elif kind == "ack":
            _, now, tenant, tid, fire_id = command
            res = k.ack(now, tenant, tid, fire_id)
        elif kind == "name":
            _, node_id, address = command
            if address is None:
                self._names.pop(node_id, None)
                self._grpc.pop(node_id, None)
            else:
                self._names[node_id] = address
            return None
        elif kind == "grpc":
            # A member's gRPC address; ignored for a node that is not (or no longer) a member.
            _, node_id, address = command
            if node_id in self._names:
                if address is None:
                    self._grpc.pop(node_id, None)
                else:
                    self._grpc[node_id] = address
            return None
        else:
            raise ValueError(f"unknown command {kind!r}")
        self._emit(res.events)
        return res

    def _emit(self, events) -> None:
        if events:
            for listener in self.event_listeners:
                listener(events)

    # ---- proposing ----------------------------------------------------------

    def propose(self, command: tuple, callback: Callable[[object, int], None]) -> None:
        """Replicate a command; callback(result, fail_reason) runs in the tick thread.

        Raises StorageFull at once while this node's log cannot grow."""
        if self.storage_full is not None:
            raise StorageFull(self.storage_full)
        self._apply(command, callback=callback)

    def propose_sync(self, command: tuple, timeout: float = 10.0):
        """Replicate a command and wait; raises CommandFailed, TimeoutError or the KernelError."""
        done = threading.Event()
        box: list = []

        def cb(result, err):
            box.append((result, err))
            done.set()

        self.propose(command, cb)
        if not done.wait(timeout):
            raise TimeoutError(f"{command[0]} not committed within {timeout:.1f}s")
        result, err = box[0]
        if err != FAIL_REASON.SUCCESS:
            raise CommandFailed(err)
        if isinstance(result, Exception):
            raise result
        return result

    # ---- reads (local applied state) ----------------------------------------

    def read(self, fn: Callable[[State], object]):
        """Run fn against the local applied kernel state, consistently."""
        with self._lock:
            return fn(self._kernel)

    def next_deadline(self) -> int | None:
        with self._lock:
            return self._kernel.next_deadline()

    def kernel_bytes(self) -> bytes:
        with self._lock:
            return self._kernel.to_bytes()

    @property
    def names(self) -> dict[str, str]:
        return dict(self._names)

    @property
    def grpc_addresses(self) -> dict[str, str]:
        """Member id -> gRPC address, for the members that announced one."""
        return dict(self._grpc)

    def is_leader(self) -> bool:
        return self._isLeader()

    def leader_address(self) -> str | None:
        leader = self._getLeader()
        return leader.id if leader is not None else None

    # ---- leadership ----------------------------------------------------------

    def _on_state_changed(self, old: int, new: int) -> None:
        log.info("raft role changed", extra={"from": ROLE_NAMES.get(old), "to": ROLE_NAMES.get(new),
                                             "term": self.raftCurrentTerm})
        for listener in self.leader_listeners:
            listener(new == LEADER)

    # ---- snapshots -------------------------------------------------------------

    def _serialize(self, filename: str, raft_data: tuple) -> None:
        last_entry, prev_entry, cluster = raft_data
        with self._lock:
            capture = self._kernel.capture()   # memcpy-fast; encoded off this thread
            names = dict(self._names)
            grpc = dict(self._grpc)
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
            kernel = capture.to_bytes()
            del capture  # freeing a 1M-timer capture takes ~10 ms: here, not in the tick thread
            meta = dataclasses.replace(meta, kernel_size=len(kernel))
            data = snapshots.encode(meta, kernel)
            with fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self._last_snapshot = self._snapshot_store.put(data)
            state = SERIALIZER_STATE.SUCCESS
            nbytes = len(data)
            log.info("snapshot written", extra={"last_index": meta.last_index, "bytes": len(data),
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
        data = Path(filename).read_bytes()
        meta, kernel = snapshots.decode(data)
        state = State.from_bytes(kernel)
        with self._lock:
            self._kernel = state
            self._names = dict(meta.names)
            self._grpc = dict(meta.grpc)
        for listener in self.snapshot_listeners:
            listener(state.seq)
        if self._snapshot_store.get(meta.last_index) is None:
            self._snapshot_store.put(data)
        log.info("snapshot loaded", extra={"last_index": meta.last_index, "timers": meta.timers})
        last_entry, prev_entry = meta.entries
        return last_entry, prev_entry, {TCPNode(addr) for addr in meta.cluster}

    @property
    def last_snapshot(self) -> snapshots.SnapshotInfo | None:
        return self._last_snapshot
