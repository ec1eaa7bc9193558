"""A fake MINOOTS cluster over real gRPC, for the SDK and CLI tests (fixtures `fake` and
`tls_fake` in conftest.py; test_api_watch_batches.py adds a node kind of its own).

A few in-process gRPC servers share one kernel `State` (FakeBackend) and can be told to
fail a call in the two ways that matter (refuse before applying = "safe", or apply and
then lose the answer = "ambiguous"), to cut a watch stream, to replay duplicates, or to
stall (stream open, nothing sent). That pins the SDK's retry, reconciliation and
exactly-once watch logic deterministically.
"""
from __future__ import annotations

import threading
from concurrent import futures
from contextlib import contextmanager

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from minoots import kernel
from minoots.v1 import cluster_pb2, cluster_pb2_grpc, timers_pb2, timers_pb2_grpc

_KERNEL_CODES = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
}


def ts_pb(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def timer_pb(t: kernel.Timer) -> timers_pb2.Timer:
    pb = timers_pb2.Timer(id=t.id, tenant=t.tenant, name=t.name, fire_at=ts_pb(t.fire_at), payload=t.payload,
                          labels=dict(t.labels), action=t.action, idempotency_key=t.idempotency_key or "",
                          ack_required=t.ack_required, state=int(t.state), revision=t.revision,
                          created_at=ts_pb(t.created_at), attempts=t.attempts, fire_id=t.fire_id or 0)
    for name in ("armed_at", "fired_at", "settled_at"):
        v = getattr(t, name)
        if v is not None:
            getattr(pb, name).CopyFrom(ts_pb(v))
    return pb


def event_pb(e: kernel.Event) -> timers_pb2.Event:
    return timers_pb2.Event(sequence=e.seq, kind=int(e.kind), tenant=e.tenant, timer_id=e.timer_id, at=ts_pb(e.at_ms),
                            revision=e.revision, state=int(e.state), fire_at=ts_pb(e.fire_at),
                            fire_id=e.fire_id or 0)


class FakeBackend:
    """One kernel State shared by every fake node; `faults[addr]` lists what the next calls do."""

    def __init__(self):
        self.state = kernel.State()
        self.events: list[kernel.Event] = []
        self.lock = threading.Condition()
        self.faults: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []     # (address, method) of every call that reached a node
        self.leader: str | None = None
        self.nodes: list[str] = []
        self.now_ms = 1_000_000
        # A stalled node: its stream delivers nothing from event index `frozen[addr]` on, and
        # its Status says `stall[addr]`: 'no_leader' (isolated follower), 'lone_leader' (an
        # isolated leader that has not stepped down yet) or 'behind' (still connected to the
        # leader, but applied index stuck at the frozen position).
        self.frozen: dict[str, int] = {}
        self.stall: dict[str, str] = {}

    def stall_node(self, addr: str, how: str) -> None:
        with self.lock:
            self.frozen[addr] = len(self.events)
            self.stall[addr] = how

    def fault(self, addr: str) -> str | None:
        with self.lock:
            q = self.faults.get(addr)
            return q.pop(0) if q else None

    def apply(self, fn):
        with self.lock:
            self.now_ms += 1
            try:
                res = fn(self.now_ms)
            except kernel.KernelError as exc:
                return None, exc
            self.events.extend(res.events)
            self.lock.notify_all()
            return res, None

    def tick(self, now_ms: int):
        with self.lock:
            self.now_ms = max(self.now_ms, now_ms)
            res = self.state.tick(now_ms)
            self.events.extend(res.events)
            self.lock.notify_all()
            return res


class FakeTimers(timers_pb2_grpc.TimersServicer):
    def __init__(self, backend: FakeBackend, addr: str):
        self.b = backend
        self.addr = addr

    def _write(self, context, method, fn):
        """Faults: 'refuse' aborts before applying; 'drop' applies, then aborts (the answer is lost)."""
        self.b.calls.append((self.addr, method))
        fault = self.b.fault(self.addr)
        if fault == "refuse":
            context.abort(grpc.StatusCode.UNAVAILABLE, "command not committed: missing_leader")
        res, err = self.b.apply(fn)
        if fault == "drop":
            context.abort(grpc.StatusCode.UNAVAILABLE, "command not committed: leader_changed")
        if err is not None:
            context.abort(_KERNEL_CODES.get(err.code, grpc.StatusCode.INTERNAL), str(err))
        return res

    def _read(self, context, method, fn):
        self.b.calls.append((self.addr, method))
        if self.b.fault(self.addr) in ("refuse", "drop"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "no leader")
        with self.b.lock:
            try:
                return fn()
            except kernel.KernelError as exc:
                context.abort(_KERNEL_CODES.get(exc.code, grpc.StatusCode.INTERNAL), str(exc))

    @staticmethod
    def _spec(pb: timers_pb2.TimerSpec, now_ms: int) -> kernel.TimerSpec:
        if pb.HasField("fire_at"):
            fire_at = pb.fire_at.seconds * 1000 + pb.fire_at.nanos // 1_000_000
        else:
            fire_at = now_ms + pb.delay.seconds * 1000 + pb.delay.nanos // 1_000_000
        return kernel.TimerSpec(id=pb.id, fire_at=fire_at, tenant=pb.tenant or "default", name=pb.name,
                                payload=pb.payload, labels=dict(pb.labels) or None, action=pb.action,
                                idempotency_key=pb.idempotency_key or None, ack_required=pb.ack_required)

    def CreateTimer(self, request, context):
        res = self._write(context, "CreateTimer",
                          lambda now: self.b.state.create(now, [self._spec(request.timer, now)]))
        item = res.items[0]
        return timers_pb2.CreateTimerResponse(timer=timer_pb(item.timer), created=item.created)

    def CreateTimers(self, request, context):
        res = self._write(context, "CreateTimers",
                          lambda now: self.b.state.create(now, [self._spec(s, now) for s in request.timers]))
        return timers_pb2.CreateTimersResponse(results=[
            timers_pb2.CreateTimerResponse(timer=timer_pb(i.timer), created=i.created) for i in res.items])

    def GetTimer(self, request, context):
        return timer_pb(self._read(context, "GetTimer",
                                    lambda: self.b.state.get(request.tenant or "default", request.id)))

    def ListTimers(self, request, context):
        def page():
            sel = dict(p.split("=", 1) for p in request.label_selector.split(",") if p)
            ts = [t for t in self.b.state.timers(request.tenant or None)
                  if (not request.states or int(t.state) in request.states)
                  and all(t.labels.get(k) == v for k, v in sel.items())]
            start = int(request.page_token or 0)
            size = request.page_size or 100
            chunk = ts[start:start + size]
            nxt = str(start + size) if start + size < len(ts) else ""
            return timers_pb2.ListTimersResponse(timers=[timer_pb(t) for t in chunk], next_page_token=nxt)
        return self._read(context, "ListTimers", page)

    def CancelTimer(self, request, context):
        res = self._write(context, "CancelTimer",
                          lambda now: self.b.state.cancel(now, [(request.tenant or "default", request.id)]))
        return timer_pb(res.timers[0])

    def RescheduleTimer(self, request, context):
        def fn(now):
            if request.HasField("fire_at"):
                ms = request.fire_at.seconds * 1000 + request.fire_at.nanos // 1_000_000
                return self.b.state.reschedule(now, request.tenant or "default", request.id, fire_at=ms)
            d = request.extend_by.seconds * 1000 + request.extend_by.nanos // 1_000_000
            return self.b.state.reschedule(now, request.tenant or "default", request.id, extend_by=d)
        return timer_pb(self._write(context, "RescheduleTimer", fn).timer)

    def AckTimer(self, request, context):
        res = self._write(context, "AckTimer",
                          lambda now: self.b.state.ack(now, request.tenant or "default", request.id,
                                                       request.fire_id))
        return timer_pb(res.timer)

    def WatchEvents(self, request, context):
        """Faults (comma-separated in one entry): 'cut:K' ends the stream with UNAVAILABLE after K
        events; 'data_loss:K' ends it with DATA_LOSS after K events (what a node sends a live
        stream when a snapshot install skipped its next events); 'replay:K' first resends the K
        events before from_sequence; 'out_of_range' refuses."""
        self.b.calls.append((self.addr, "WatchEvents"))
        fault = dict(f.partition(":")[::2] for f in (self.b.fault(self.addr) or "").split(",") if f)
        if "out_of_range" in fault:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, "sequence 1 is no longer retained")
        cut = int(fault["cut"]) if "cut" in fault else None
        cut_with = (grpc.StatusCode.UNAVAILABLE, "node shutting down")
        if "data_loss" in fault:
            cut = int(fault["data_loss"])
            cut_with = (grpc.StatusCode.DATA_LOSS, "events are missing on this node: it installed a snapshot")
        with self.b.lock:
            pos = request.from_sequence - 1 if request.from_sequence else len(self.b.events)
        if "replay" in fault:
            pos = max(0, pos - int(fault["replay"]))
        sent = 0
        while context.is_active():
            with self.b.lock:
                if pos >= min(len(self.b.events), self.b.frozen.get(self.addr, len(self.b.events))):
                    self.b.lock.wait(0.1)
                    continue
                ev = self.b.events[pos]
            if request.tenant and ev.tenant != request.tenant:
                pos += 1
                continue
            if request.kinds and int(ev.kind) not in request.kinds:
                pos += 1
                continue
            if cut is not None and sent >= cut:
                context.abort(*cut_with)
            yield event_pb(ev)
            pos += 1
            sent += 1


class FakeCluster(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, backend: FakeBackend, addr: str):
        self.b = backend
        self.addr = addr

    def Status(self, request, context):
        self.b.calls.append((self.addr, "Status"))
        with self.b.lock:
            leader = self.b.leader or ""
            commit = applied = len(self.b.events)
            how = self.b.stall.get(self.addr)
            if how is not None:
                commit = applied = self.b.frozen[self.addr]
            if how == "no_leader":
                leader = ""
            elif how == "lone_leader":
                leader = self.addr
        connected = how not in ("no_leader", "lone_leader")
        return cluster_pb2.StatusResponse(
            node=self.addr, cluster="fake", leader=leader, leader_grpc_address=leader, term=1,
            commit_index=commit, applied_index=applied,
            members=[cluster_pb2.Member(id=a, grpc_address=a, role="leader" if a == leader else "follower",
                                        connected=connected or a == self.addr) for a in self.b.nodes])


def serve(backend: FakeBackend, timers_class=FakeTimers, credentials=None, workers: int = 8) -> grpc.Server:
    """Start one fake node on a free port of 127.0.0.1 (TLS with `credentials`), serving
    `timers_class` and FakeCluster over `backend`; its address is appended to backend.nodes."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    addr = f"127.0.0.1:{port}"
    timers_pb2_grpc.add_TimersServicer_to_server(timers_class(backend, addr), server)
    cluster_pb2_grpc.add_ClusterServicer_to_server(FakeCluster(backend, addr), server)
    server.start()
    backend.nodes.append(addr)
    return server


@contextmanager
def running(*timers_classes, credentials=None):
    """One fake node per entry of `timers_classes` (FakeTimers or a subclass), all on one
    backend, the first the leader. Yields the backend; stops the servers after."""
    backend = FakeBackend()
    servers = []
    try:
        for cls in timers_classes:
            servers.append(serve(backend, cls, credentials))
        backend.leader = backend.nodes[0]
        yield backend
    finally:
        for s in servers:
            s.stop(grace=None)
