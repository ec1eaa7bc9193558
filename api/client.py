"""The MINOOTS Python SDK: `Client` (blocking) here, `AsyncClient` (asyncio) in `minoots.api.aio`.

    import minoots
    with minoots.Client(["127.0.0.1:7201", "127.0.0.1:7202", "127.0.0.1:7203"]) as c:
        t = c.create(delay=30, name="reminder", labels={"team": "ops"})
        for event in c.watch(from_sequence=1):
            print(event.sequence, event.kind.name, event.timer_id)

How calls find a node
---------------------
The client is given a few seed addresses (gRPC HOST:PORT of any members). On
first use it asks one of them for `Cluster.Status`, which names every member's
gRPC address and the leader's, and from then on sends every call to the leader
when it knows it (a follower would forward writes there anyway: one hop fewer,
and reads see the caller's own writes) and to any member otherwise. It asks
again after a failure and every `refresh_interval` seconds.

Retries
-------
Each call has a total deadline (`timeout`, per client or per call) and each
attempt a shorter one (`attempt_timeout`). When an attempt fails with
UNAVAILABLE (node down, connection refused or reset, no leader while an
election runs, Raft could not commit) or its attempt deadline passes, the
client forgets the leader, rotates to another member and retries after an
exponential backoff with full jitter (sleep uniform(0, min(backoff_max,
backoff_base * 2**n))), until the total deadline. A leader failover that
resolves within the deadline is therefore never seen by the caller. Every
other status is final and raised at once as a typed error (`NotFound`, ...).

Which calls are retried, and why that is safe:

* reads (`get`, `list`, `status`) and `watch`: no effects.
* `create`/`create_many`: made idempotent. A spec without an id gets one
  (`uuid4().hex`), and a spec without an idempotency key uses its id as the
  key. The cluster answers a create whose (tenant, key) it has already seen
  with the timer that key created, so a retry after an ambiguous failure
  (the first attempt committed but its answer was lost) returns the original
  timer (`created=False`), never a second one.
* `cancel`, `ack`, `reschedule(fire_at=...)`: setting an absolute state twice
  is harmless, but the second attempt of a cancel that did commit would be
  refused (the timer is no longer cancellable). So when such a call fails with
  FAILED_PRECONDITION *after* an ambiguous attempt, the client reads the timer
  and returns it if it is already in the state the call asked for (cancelled;
  settled with that fire id; fire_at equal to the one asked). That cannot tell
  the caller's cancel from a concurrent one, but the outcome is the same.
* `extend(by=...)` is NOT idempotent: applied twice it moves the deadline
  twice. It is retried only when the failure shows the request never reached
  Raft (the connection was refused; the node said there is no leader or it is
  not the leader). After an ambiguous failure it raises
  `Unavailable(ambiguous=True)`: read the timer to see whether it moved, or
  use `reschedule(fire_at=...)`, which is safe to retry.
* cluster changes (`add_node`, `remove_node`, `transfer_leadership`) go to
  the leader a fresh `Status` names, wherever the seeds point, and may use the
  whole deadline per attempt (a configuration change commits slowly). They are
  not idempotent, so after an ambiguous failure, or a refusal, the client reads
  the membership back and returns the result when the change is already in
  place (see `LeaderCall`); a refusal from a node that stopped leading is
  retried at the new leader.
* `take_snapshot`, `list_snapshots`, `export_snapshot`: answered by the leader
  when known (snapshots are per node; each result names its node), retried
  like reads. An export is checked (size, SHA-256) and retried from its start.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import random
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Callable, Optional, Union

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from minoots.v1 import cluster_pb2, cluster_pb2_grpc, timers_pb2, timers_pb2_grpc

from .types import (
    EPOCH,
    ERRORS_BY_CODE,
    AlreadyExists,
    ClusterStatus,
    DeadlineExceeded,
    Event,
    EventKind,
    FailedPrecondition,
    InvalidArgument,
    Member,
    MinootsError,
    NotFound,
    OutOfRange,
    SnapshotInfo,
    Timer,
    TimerSpec,
    TimerState,
    Unavailable,
    datetime_to_ms,
    ms_to_datetime,
)

__all__ = ["Client", "Watch", "DEFAULT_TIMEOUT", "DEFAULT_ATTEMPT_TIMEOUT"]

DEFAULT_TIMEOUT = 30.0          # total deadline of one call, retries included
DEFAULT_ATTEMPT_TIMEOUT = 5.0   # deadline of one attempt
DEFAULT_BACKOFF_BASE = 0.05
DEFAULT_BACKOFF_MAX = 1.0
DEFAULT_REFRESH_INTERVAL = 30.0
DISCOVERY_ATTEMPT_TIMEOUT = 1.0
DEFAULT_STALL_TIMEOUT = 1.0     # a watch stream idle this long gets a liveness check (see WatchPolicy)
INCOMPLETE_REFRESH_INTERVAL = 1.0   # re-ask this often while the membership answer is incomplete

CHANNEL_OPTIONS = (
    # Reconnect to a restarted node quickly (the default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)

# ---------------------------------------------------------------- conversions (shared with aio)


def _ms_to_ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def _ts_to_datetime(ts: Timestamp) -> datetime:
    return _datetime_at(ts.seconds, ts.nanos // 1000)


@functools.lru_cache(maxsize=4096)
def _datetime_at(seconds: int, micros: int) -> datetime:
    """Cached: the timers of one batch share their created/armed instants, and a
    datetime is immutable, so converting each instant once saves a third of the
    cost of decoding a big create_many answer."""
    try:
        return EPOCH + timedelta(seconds=seconds, microseconds=micros)
    except OverflowError:
        return datetime.max.replace(tzinfo=timezone.utc)


def _opt_ts(msg, name: str) -> Optional[datetime]:
    return _ts_to_datetime(getattr(msg, name)) if msg.HasField(name) else None


def time_to_ms(value: Union[datetime, int], what: str = "fire_at") -> int:
    """An aware datetime or int ms since the epoch -> int ms (datetimes round up)."""
    if isinstance(value, datetime):
        return datetime_to_ms(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise InvalidArgument(f"{what} must be an aware datetime or int ms since the epoch, "
                          f"not {type(value).__name__}")


def duration_to_pb(value: Union[timedelta, int, float], what: str = "delay") -> Duration:
    """timedelta or seconds (int/float) -> Duration, at ms precision (rounded up)."""
    if isinstance(value, timedelta):
        us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        ms = -((-us) // 1000)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidArgument(f"{what} must be finite, got {value!r}")
        ms = math.ceil(value * 1000)
    else:
        raise InvalidArgument(f"{what} must be a timedelta or seconds (int/float), not {type(value).__name__}")
    if abs(ms) > 2**62:
        raise InvalidArgument(f"{what} is out of range")
    d = Duration()
    d.FromMilliseconds(ms)
    return d


def _bytes(value: Union[bytes, bytearray, str, None], what: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgument(f"{what} must be bytes or str, not {type(value).__name__}")


def new_timer_id() -> str:
    return uuid.uuid4().hex


def spec_to_pb(spec: TimerSpec) -> timers_pb2.TimerSpec:
    """TimerSpec -> wire spec, filling in the id and idempotency key (see the module docstring)."""
    if (spec.fire_at is None) == (spec.delay is None):
        raise InvalidArgument("give exactly one of fire_at and delay")
    timer_id = spec.id or new_timer_id()
    key = spec.idempotency_key or timer_id
    labels = spec.labels or {}
    if not isinstance(labels, Mapping):
        raise InvalidArgument("labels must be a mapping of str to str")
    pb = timers_pb2.TimerSpec(
        id=timer_id, tenant=spec.tenant or "", name=spec.name or "",
        payload=_bytes(spec.payload, "payload"), action=_bytes(spec.action, "action"),
        idempotency_key=key, ack_required=bool(spec.ack_required))
    try:
        for k, v in labels.items():
            pb.labels[k] = v
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"labels must map str to str: {exc}") from None
    if spec.fire_at is not None:
        pb.fire_at.CopyFrom(_ms_to_ts(time_to_ms(spec.fire_at)))
    else:
        pb.delay.CopyFrom(duration_to_pb(spec.delay))
    return pb


def as_spec(item: Union[TimerSpec, Mapping]) -> TimerSpec:
    if isinstance(item, TimerSpec):
        return item
    if isinstance(item, Mapping):
        try:
            return TimerSpec(**item)
        except TypeError as exc:
            raise InvalidArgument(f"bad timer spec: {exc}") from None
    raise InvalidArgument(f"a timer spec must be a TimerSpec or a dict, not {type(item).__name__}")


def timer_from_pb(pb: timers_pb2.Timer, created: Optional[bool] = None) -> Timer:
    return Timer(
        id=pb.id, tenant=pb.tenant, name=pb.name, fire_at=_ts_to_datetime(pb.fire_at),
        state=_enum(TimerState, pb.state), revision=pb.revision, payload=pb.payload,
        labels=MappingProxyType(dict(pb.labels)), action=pb.action,
        idempotency_key=pb.idempotency_key or None, ack_required=pb.ack_required,
        created_at=_opt_ts(pb, "created_at"), armed_at=_opt_ts(pb, "armed_at"),
        fired_at=_opt_ts(pb, "fired_at"), settled_at=_opt_ts(pb, "settled_at"),
        attempts=pb.attempts, fire_id=pb.fire_id or None, created=created)


def event_from_pb(pb: timers_pb2.Event) -> Event:
    return Event(
        sequence=pb.sequence, kind=_enum(EventKind, pb.kind), tenant=pb.tenant, timer_id=pb.timer_id,
        at=_ts_to_datetime(pb.at), revision=pb.revision, state=_enum(TimerState, pb.state),
        fire_at=_ts_to_datetime(pb.fire_at), fire_id=pb.fire_id or None)


def member_from_pb(m: cluster_pb2.Member) -> Member:
    return Member(m.id, m.raft_address, m.grpc_address, m.role, m.connected, m.match_index, m.lag)


def status_from_pb(pb: cluster_pb2.StatusResponse) -> ClusterStatus:
    return ClusterStatus(
        node=pb.node, cluster=pb.cluster, leader=pb.leader or None,
        leader_grpc_address=pb.leader_grpc_address or None, term=pb.term,
        commit_index=pb.commit_index, applied_index=pb.applied_index,
        members=tuple(member_from_pb(m) for m in pb.members),
        timers=MappingProxyType(dict(pb.timers)))


def snapshot_from_pb(pb: cluster_pb2.Snapshot) -> SnapshotInfo:
    return SnapshotInfo(last_index=pb.last_index, last_term=pb.last_term, created_at=_opt_ts(pb, "created_at"),
                        size=pb.size, timers=pb.timers, sha256=pb.sha256, node=pb.node)


SNAPSHOT_DIGEST = 32   # a snapshot container ends with the SHA-256 of everything before it


class SnapshotReceiver:
    """Checks an ExportSnapshot stream chunk by chunk (no I/O; shared by Client and AsyncClient).

    `accept(chunk)` returns the bytes to write; `finish()` returns the
    SnapshotInfo once the whole container arrived and its checksum holds, and
    raises MinootsError(DATA_LOSS) otherwise: a truncated or corrupt export is
    never reported as a success.
    """

    def __init__(self) -> None:
        self.info: Optional[SnapshotInfo] = None
        self.received = 0
        self._hash = hashlib.sha256()
        self._tail = b""          # the last (up to) 32 bytes seen: not hashed yet

    def accept(self, chunk: cluster_pb2.SnapshotChunk) -> bytes:
        if chunk.HasField("snapshot"):
            if self.info is not None:
                raise self._bad("a second header in the middle of the stream")
            self.info = snapshot_from_pb(chunk.snapshot)
        if self.info is None:
            raise self._bad("the stream did not start with the snapshot's description")
        if chunk.offset != self.received:
            raise self._bad(f"chunk at offset {chunk.offset}, expected {self.received}")
        data = chunk.data
        self.received += len(data)
        if self.received > self.info.size:
            raise self._bad(f"more than the announced {self.info.size} bytes")
        buf = self._tail + data
        cut = max(0, len(buf) - SNAPSHOT_DIGEST)
        self._hash.update(buf[:cut])
        self._tail = buf[cut:]
        return data

    def finish(self) -> SnapshotInfo:
        if self.info is None:
            raise self._bad("the node sent no snapshot")
        if self.received != self.info.size:
            raise self._bad(f"got {self.received} of {self.info.size} bytes")
        if self._hash.digest() != self._tail or self._tail.hex() != self.info.sha256:
            raise self._bad("checksum mismatch")
        return self.info

    @staticmethod
    def _bad(what: str) -> MinootsError:
        return MinootsError(f"snapshot export is corrupt: {what}", code="DATA_LOSS")


class _Sink:
    """Where an export goes: a path (written to PATH.part, renamed when complete) or a
    binary file object (rewound between attempts when it can seek)."""

    def __init__(self, dest) -> None:
        self.path: Optional[Path] = None
        self.file = None
        self.start: Optional[int] = None
        self.dirty = False
        if isinstance(dest, (str, os.PathLike)):
            self.path = Path(dest)
            self.part = self.path.with_name(self.path.name + ".part")
        elif hasattr(dest, "write"):
            self.file = dest
            try:
                self.start = dest.tell() if dest.seekable() else None
            except (AttributeError, OSError, ValueError):
                self.start = None
        else:
            raise InvalidArgument("dest must be a path or a binary file object, "
                                  f"not {type(dest).__name__}")

    def open(self):
        """A writable binary file for one attempt (truncated: a retry starts over)."""
        if self.path is not None:
            self.file = open(self.part, "wb")
            return self.file
        if self.dirty:
            if self.start is None:
                raise Unavailable("the export failed part-way into a file object that cannot seek; retry")
            self.file.seek(self.start)
            self.file.truncate()
        self.dirty = True
        return self.file

    def close_attempt(self) -> None:
        if self.path is not None and self.file is not None:
            self.file.close()
            self.file = None

    def commit(self) -> None:
        if self.path is not None:
            os.replace(self.part, self.path)
        else:
            self.file.flush()

    def discard(self) -> None:
        if self.path is not None:
            self.close_attempt()
            try:
                self.part.unlink()
            except FileNotFoundError:
                pass


def _enum(cls, value: int):
    try:
        return cls(value)
    except ValueError:  # a newer server's value: keep the number visible rather than fail
        return cls.UNSPECIFIED


def label_selector(labels: Union[Mapping[str, str], str, None]) -> str:
    if labels is None:
        return ""
    if isinstance(labels, str):
        return labels
    return ",".join(f"{k}={v}" for k, v in labels.items())


def list_request(tenant, states, labels, fire_at_from, fire_at_to, page_size) -> timers_pb2.ListTimersRequest:
    req = timers_pb2.ListTimersRequest(tenant=tenant or "", label_selector=label_selector(labels),
                                       page_size=page_size or 0)
    if states:
        if isinstance(states, (str, int, TimerState)):
            states = [states]
        req.states.extend(int(TimerState.parse(s)) for s in states)
    if fire_at_from is not None:
        req.fire_at_from.CopyFrom(_ms_to_ts(time_to_ms(fire_at_from, "fire_at_from")))
    if fire_at_to is not None:
        req.fire_at_to.CopyFrom(_ms_to_ts(time_to_ms(fire_at_to, "fire_at_to")))
    return req


def page_size_for(page_size: Optional[int], limit: Optional[int]) -> int:
    """The page size to ask for: no bigger than needed for `limit` (0 = the server's default)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgument(f"limit must be an int >= 0, got {limit!r}")
    ps = page_size or 0
    if limit:
        ps = min(ps, limit) if ps else min(limit, 1000)
    return ps


def watch_request(from_sequence: int, tenant, kinds) -> timers_pb2.WatchEventsRequest:
    if isinstance(from_sequence, bool) or not isinstance(from_sequence, int) or from_sequence < 0:
        raise InvalidArgument(f"from_sequence must be an int >= 0, got {from_sequence!r}")
    req = timers_pb2.WatchEventsRequest(from_sequence=from_sequence, tenant=tenant or "")
    if kinds:
        if isinstance(kinds, (str, int, EventKind)):
            kinds = [kinds]
        req.kinds.extend(int(EventKind.parse(k)) for k in kinds)
    return req


# ---------------------------------------------------------------- errors and failure kinds

FINAL, SAFE, AMBIGUOUS = "final", "safe", "ambiguous"

# Messages that prove the request was not (and will never be) applied: the
# client could not connect, or Raft refused it (PySyncObj's MISSING_LEADER,
# NOT_LEADER, QUEUE_FULL, DISCARDED fail reasons, as the server reports them).
# LEADER_CHANGED, UNKNOWN_OUTCOME, timeouts and broken connections are ambiguous.
_NOT_SENT_MARKERS = (
    "failed to connect", "connection refused", "dns resolution failed", "name resolution",
    "missing_leader", "not_leader", "no leader", "no raft leader", "not the leader", "queue_full",
    "discarded",   # the log slot was taken by another leader's entry: ours is gone
)


def _details(exc: grpc.RpcError) -> str:
    try:
        d = exc.details() or ""
    except Exception:  # noqa: BLE001 - a non-call RpcError
        d = ""
    try:
        dbg = exc.debug_error_string() or ""
    except Exception:  # noqa: BLE001
        dbg = ""
    return f"{d} {dbg}".lower()


def classify(exc: grpc.RpcError) -> str:
    """FINAL (a real answer), SAFE (retry: never reached Raft) or AMBIGUOUS (retry only idempotent calls)."""
    code = exc.code() if hasattr(exc, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        text = _details(exc)
        return SAFE if any(m in text for m in _NOT_SENT_MARKERS) else AMBIGUOUS
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AMBIGUOUS
    if code == grpc.StatusCode.UNKNOWN and "socket closed" in _details(exc):
        return AMBIGUOUS
    return FINAL


def error_from_rpc(exc: grpc.RpcError) -> MinootsError:
    """A typed MinootsError carrying the server's message and code name."""
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    try:
        message = exc.details() or name
    except Exception:  # noqa: BLE001
        message = str(exc) or name
    cls = ERRORS_BY_CODE.get(name, MinootsError)
    return cls(message) if cls is not MinootsError else MinootsError(message, code=name)


def retryable(exc: grpc.RpcError, what: str, ambiguous: bool, safe_only: bool) -> bool:
    """One failed attempt of a retried call (shared by Client and AsyncClient).

    Raises the typed error when the answer is final, or when the attempt may have
    applied and the call is not safe to repeat; otherwise returns whether the call
    is now ambiguous (some attempt may have applied) so the caller can retry.
    """
    kind = classify(exc)
    if kind == FINAL:
        err = error_from_rpc(exc)
        err.after_ambiguous = ambiguous
        raise err from None
    if kind == AMBIGUOUS:
        if safe_only:
            err = error_from_rpc(exc)
            raise Unavailable(
                f"{what}: the request may or may not have been applied ({err.code}: {err.message}); "
                "it is not safe to retry blindly: read the timer to find out", ambiguous=True) from None
        return True
    return ambiguous


def _give_up(last: Optional[BaseException], what: str, timeout: float, tried: int) -> MinootsError:
    if last is None:
        return DeadlineExceeded(f"{what}: deadline of {timeout:.1f}s passed before any attempt")
    if isinstance(last, grpc.RpcError):
        err = error_from_rpc(last)
        msg = f"{what} failed after {tried} attempt(s) within {timeout:.1f}s; last error: {err.code}: {err.message}"
        if isinstance(err, DeadlineExceeded):
            return DeadlineExceeded(msg)
        return Unavailable(msg)
    return Unavailable(f"{what} failed after {tried} attempt(s) within {timeout:.1f}s: {last}")


# ---------------------------------------------------------------- routing (shared with aio)


class Router:
    """Which member to try next: the leader when known, else the members in rotation."""

    def __init__(self, seeds: Sequence[str]) -> None:
        if isinstance(seeds, str):
            seeds = [s for s in seeds.split(",")]
        seeds = [s.strip() for s in seeds if s and s.strip()]
        if not seeds:
            raise InvalidArgument("give at least one node address HOST:PORT")
        self.addresses: list[str] = list(dict.fromkeys(seeds))
        self.leader: Optional[str] = None
        self.discovered_at: Optional[float] = None   # monotonic time of the last Status answer
        self.incomplete = True                       # the last answer lacked a leader or an address
        self._next = 0
        self._lock = threading.Lock()

    def pick(self, avoid: Union[str, Iterable[str], None] = None) -> str:
        """The leader unless avoided, else the next address in rotation that is not avoided
        (if every address is avoided, the next one anyway)."""
        avoid = {avoid} if isinstance(avoid, str) else set(avoid or ())
        with self._lock:
            if self.leader is not None and self.leader not in avoid:
                return self.leader
            n = len(self.addresses)
            for _ in range(n):
                addr = self.addresses[self._next % n]
                self._next += 1
                if addr not in avoid:
                    return addr
            addr = self.addresses[self._next % n]
            self._next += 1
            return addr

    def rotation(self) -> list[str]:
        """Every address once, leader first, then from the rotation cursor."""
        with self._lock:
            n = len(self.addresses)
            order = [self.addresses[(self._next + i) % n] for i in range(n)]
            if self.leader in order:
                order.remove(self.leader)
                order.insert(0, self.leader)
            return order

    def failed(self, addr: str) -> None:
        with self._lock:
            if self.leader == addr:
                self.leader = None
            self.discovered_at = None   # ask again before the next attempt
            if self.addresses and self.addresses[self._next % len(self.addresses)] == addr:
                self._next += 1

    def learn(self, status: ClusterStatus) -> None:
        with self._lock:
            for m in status.members:
                if m.grpc_address and m.grpc_address not in self.addresses:
                    self.addresses.append(m.grpc_address)
            self.leader = status.leader_grpc_address or None
            if self.leader and self.leader not in self.addresses:
                self.addresses.append(self.leader)
            self.discovered_at = time.monotonic()
            # Members announce their gRPC address through Raft after they start: until every
            # member's is known (and a leader), look again soon rather than after `interval`.
            self.incomplete = self.leader is None or any(not m.grpc_address for m in status.members)

    def stale(self, interval: float) -> bool:
        if self.discovered_at is None:
            return True
        age = time.monotonic() - self.discovered_at
        return age > (min(interval, INCOMPLETE_REFRESH_INTERVAL) if self.incomplete else interval)


class LeaderCall:
    """How a cluster change (add or remove a member, transfer leadership) is sent and
    retried; shared by Client and AsyncClient (no I/O here).

    Each attempt goes to the leader that a fresh Status names, and may use the whole
    remaining deadline (the server waits for Raft to commit a configuration change,
    which takes longer than `attempt_timeout`). Transient failures are retried after
    a backoff until the deadline, like every call. But a membership change is not
    idempotent, so:

    * after an ambiguous failure (the change may have committed), Status is read
      before any retry, and `settled(status)` returns the call's result when the
      change is already in place;
    * a refusal (FAILED_PRECONDITION, ALREADY_EXISTS, NOT_FOUND) is checked the
      same way, and a FAILED_PRECONDITION from a node that turns out no longer to
      lead is retried at the new leader; any other refusal is raised.

    `done_already(status)`, asked once before the first attempt, may answer without
    sending anything (transferring leadership to the member that leads already).
    """

    def __init__(self, what: str, total: float, settled: Callable[[ClusterStatus], Any],
                 seen: Optional[Callable[[ClusterStatus], None]] = None,
                 done_already: Optional[Callable[[ClusterStatus], Any]] = None) -> None:
        self.what = what
        self.total = total
        self.deadline = time.monotonic() + total
        self.settled = settled
        self.seen = seen
        self.done_already = done_already
        self.status: Optional[ClusterStatus] = None
        self.ambiguous = False
        self.attempts = 0
        self.last: Optional[BaseException] = None
        self._refusal: Optional[MinootsError] = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def learn(self, status: Optional[ClusterStatus]) -> None:
        self.status = status
        if status is not None and self.seen is not None:
            self.seen(status)

    def next(self) -> Optional[tuple[str, Any]]:
        """("done", result), ("send", leader address), or None: no leader known, wait and ask again."""
        st = self.status
        if st is not None:
            if self.attempts == 0 and self.done_already is not None:
                result = self.done_already(st)
                if result is not None:
                    return ("done", result)
            if self.ambiguous:
                result = self.settled(st)
                if result is not None:
                    return ("done", result)
        if self.remaining() <= 0:
            raise self.give_up()
        if st is None or not st.leader_grpc_address:
            self.last = self.last or Unavailable(f"{self.what}: no leader is known (an election may be under way)")
            return None
        self.attempts += 1
        return ("send", st.leader_grpc_address)

    def failed(self, exc: grpc.RpcError) -> bool:
        """Record a failed attempt. True: the node refused, read Status and call `recheck`;
        False: transient, retry after `pause`. Raises a final error."""
        kind = classify(exc)
        if kind == FINAL:
            err = error_from_rpc(exc)
            err.after_ambiguous = self.ambiguous
            if isinstance(err, (FailedPrecondition, AlreadyExists, NotFound)):
                self._refusal = err
                return True
            raise err
        if kind == AMBIGUOUS:
            self.ambiguous = True
        self.last = exc
        return False

    def recheck(self, status: Optional[ClusterStatus], addr: str) -> Optional[tuple[str, Any]]:
        """After a refusal from `addr`: ("done", result) when the change is in place, None to
        retry at the new leader; otherwise raises the refusal."""
        err, self._refusal = self._refusal, None
        if status is not None:
            self.learn(status)
            if self.ambiguous:
                result = self.settled(status)
                if result is not None:
                    return ("done", result)
            leader = status.leader_grpc_address
            if isinstance(err, FailedPrecondition) and leader and leader != addr and self.remaining() > 0:
                self.last = err
                return None
        raise err

    def pause(self, base: float, cap: float, rng: random.Random) -> float:
        """Seconds to wait before asking again; raises once the deadline has passed."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.give_up()
        return min(remaining, backoff(max(0, self.attempts - 1), base, cap, rng))

    def give_up(self) -> MinootsError:
        if isinstance(self.last, MinootsError):
            return Unavailable(f"{self.what} did not complete within {self.total:.1f}s; last error: "
                               f"{self.last.code}: {self.last.message}", ambiguous=self.ambiguous)
        return _give_up(self.last, self.what, self.total, self.attempts)


def add_checks(id: str, raft_address: str) -> dict:
    """LeaderCall checks of add_node: settled once the member is listed at that address."""
    def settled(st: ClusterStatus) -> Optional[Member]:
        return next((m for m in st.members if m.id == id and m.raft_address == raft_address), None)
    return {"settled": settled}


def remove_checks(id: str) -> dict:
    """LeaderCall checks of remove_node: settled once a member seen before is gone."""
    before: dict[str, Member] = {}

    def seen(st: ClusterStatus) -> None:
        before.update((m.id, m) for m in st.members if m.id not in before)

    def settled(st: ClusterStatus) -> Optional[Member]:
        if id in before and all(m.id != id for m in st.members):
            m = before[id]
            return Member(m.id, m.raft_address, m.grpc_address, "", False)
        return None
    return {"settled": settled, "seen": seen}


def transfer_checks(to: Optional[str]) -> dict:
    """LeaderCall checks of transfer_leadership: settled once `to` (or, without `to`,
    any member other than the first leader seen) leads; done at once if `to` leads."""
    first: list[str] = []

    def seen(st: ClusterStatus) -> None:
        if not first and st.leader:
            first.append(st.leader)

    def settled(st: ClusterStatus) -> Optional[str]:
        if not st.leader:
            return None
        if to:
            return st.leader if st.leader == to else None
        return st.leader if first and st.leader != first[0] else None

    def done_already(st: ClusterStatus) -> Optional[str]:
        return st.leader if to and st.leader == to else None
    return {"settled": settled, "seen": seen, "done_already": done_already}


def backoff(n: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog, 2015)."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(n, 30))))


def credentials(tls) -> Optional[grpc.ChannelCredentials]:
    """False/None: plaintext; True: TLS with the system's roots; a path (str or Path): TLS
    trusting the PEM certificates in that file; or ready-made grpc.ChannelCredentials."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    if isinstance(tls, (str, os.PathLike)):
        try:
            return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())
        except OSError as exc:
            raise InvalidArgument(f"cannot read the TLS root certificates {str(tls)!r}: {exc.strerror or exc}") from None
    raise InvalidArgument("tls must be False, True, a path to PEM root certificates or a grpc.ChannelCredentials")


# ---------------------------------------------------------------- the blocking client


class Client:
    """Blocking MINOOTS client; thread-safe (one instance can serve many threads).

    `nodes`: gRPC addresses HOST:PORT of some members (a list, or one
    comma-separated string); the rest are discovered. `timeout`: default total
    deadline of a call in seconds, retries included; `attempt_timeout`: of one
    attempt. `tls`: False (plaintext), True (system roots), a path to PEM root
    certificates, or a `grpc.ChannelCredentials`. `tenant`: default tenant of
    every call (the server's "default" when None).
    """

    def __init__(self, nodes: Union[Sequence[str], str], *, timeout: float = DEFAULT_TIMEOUT,
                 attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT, tls=False, tenant: Optional[str] = None,
                 backoff_base: float = DEFAULT_BACKOFF_BASE, backoff_max: float = DEFAULT_BACKOFF_MAX,
                 refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
                 channel_options: Sequence[tuple[str, Any]] = ()) -> None:
        self.router = Router(nodes)
        self.timeout = float(timeout)
        self.attempt_timeout = float(attempt_timeout)
        self.tenant = tenant
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.refresh_interval = refresh_interval
        self._creds = credentials(tls)
        self._options = CHANNEL_OPTIONS + tuple(channel_options)
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._closed = False

    # ---- plumbing --------------------------------------------------------------

    def _channel(self, addr: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise MinootsError("the client is closed", code="CANCELLED")
            ch = self._channels.get(addr)
            if ch is None:
                ch = (grpc.secure_channel(addr, self._creds, options=self._options) if self._creds
                      else grpc.insecure_channel(addr, options=self._options))
                # Carries the caller's OpenTelemetry context (W3C traceparent) to the node.
                from .telemetry import TraceContextClientInterceptor
                ch = grpc.intercept_channel(ch, TraceContextClientInterceptor())
                self._channels[addr] = ch
            return ch

    def _timers(self, addr: str) -> timers_pb2_grpc.TimersStub:
        return timers_pb2_grpc.TimersStub(self._channel(addr))

    def _cluster(self, addr: str) -> cluster_pb2_grpc.ClusterStub:
        return cluster_pb2_grpc.ClusterStub(self._channel(addr))

    def _refresh(self, deadline: float, avoid: Optional[str] = None) -> Optional[ClusterStatus]:
        """Ask members for Cluster.Status until one answers (or the deadline); learn from it."""
        order = self.router.rotation()
        if avoid in order and len(order) > 1:
            order.remove(avoid)
            order.append(avoid)
        for addr in order:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                pb = self._cluster(addr).Status(cluster_pb2.StatusRequest(),
                                                timeout=min(DISCOVERY_ATTEMPT_TIMEOUT, remaining))
            except grpc.RpcError:
                continue
            status = status_from_pb(pb)
            self.router.learn(status)
            return status
        return None

    def _call(self, what: str, fn: Callable[[str, float], Any], *, safe_only: bool = False,
              timeout: Optional[float] = None, long: bool = False) -> tuple[Any, bool]:
        """Run fn(address, attempt_timeout) with routing and retries; returns (result, ambiguous_seen).

        `safe_only`: retry only failures known not to have reached Raft; raise
        Unavailable(ambiguous=True) on any other transient failure. `long`: an
        attempt may use the whole remaining deadline (snapshots, exports).
        """
        total = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + total
        last: Optional[BaseException] = None
        ambiguous = False
        failed_at: Optional[str] = None
        n = 0
        while True:
            if self.router.stale(self.refresh_interval):
                self._refresh(min(deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT), avoid=failed_at)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _give_up(last, what, total, n)
            addr = self.router.pick(avoid=failed_at)
            n += 1
            try:
                return fn(addr, remaining if long else min(self.attempt_timeout, remaining)), ambiguous
            except grpc.RpcError as exc:
                ambiguous = retryable(exc, what, ambiguous, safe_only)
                last = exc
                failed_at = addr
                self.router.failed(addr)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _give_up(last, what, total, n)
            time.sleep(min(remaining, backoff(n - 1, self.backoff_base, self.backoff_max, self._rng)))

    def _tenant(self, tenant: Optional[str]) -> str:
        return tenant if tenant is not None else (self.tenant or "")

    # ---- timers ----------------------------------------------------------------

    def create(self, fire_at: Union[datetime, int, None] = None, *, delay: Union[timedelta, int, float, None] = None,
               id: Optional[str] = None, tenant: Optional[str] = None, name: str = "",
               payload: Union[bytes, str] = b"", labels: Optional[Mapping[str, str]] = None,
               action: Union[bytes, str] = b"", idempotency_key: Optional[str] = None,
               ack_required: bool = False, timeout: Optional[float] = None) -> Timer:
        """Create one timer; returns it (ARMED).

        Give exactly one of `fire_at` (aware datetime, or int ms since the
        epoch) and `delay` (timedelta, or seconds). Safe to retry: without an
        `id` the SDK generates one (uuid4 hex), and without an
        `idempotency_key` the id serves as the key, so a create retried after an
        ambiguous failure returns the timer its first attempt made
        (`created=False`) instead of making a duplicate. One consequence: a
        create naming an existing id whose timer was made with that id as its
        key returns the existing timer (created=False) rather than raising
        AlreadyExists.
        """
        spec = TimerSpec(fire_at=fire_at, delay=delay, id=id, tenant=self._tenant(tenant), name=name,
                         payload=payload, labels=labels, action=action, idempotency_key=idempotency_key,
                         ack_required=ack_required)
        req = timers_pb2.CreateTimerRequest(timer=spec_to_pb(spec))
        resp, _ = self._call("create", lambda a, t: self._timers(a).CreateTimer(req, timeout=t), timeout=timeout)
        return timer_from_pb(resp.timer, resp.created)

    def create_many(self, specs: Iterable[Union[TimerSpec, Mapping]], *, timeout: Optional[float] = None) -> list[Timer]:
        """Create up to 10,000 timers in one replicated command: all or nothing.

        Each spec is a TimerSpec or a dict of `create`'s keyword arguments; ids
        and idempotency keys are filled in as for `create`, so the batch is safe
        to retry as a whole.
        """
        pbs = []
        for s in specs:
            s = as_spec(s)
            if s.tenant is None and self.tenant:
                s = TimerSpec(**{**s.__dict__, "tenant": self.tenant})
            pbs.append(spec_to_pb(s))
        req = timers_pb2.CreateTimersRequest(timers=pbs)
        resp, _ = self._call("create_many", lambda a, t: self._timers(a).CreateTimers(req, timeout=t),
                             timeout=timeout)
        return [timer_from_pb(r.timer, r.created) for r in resp.results]

    def get(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        req = timers_pb2.GetTimerRequest(tenant=self._tenant(tenant), id=id)
        resp, _ = self._call("get", lambda a, t: self._timers(a).GetTimer(req, timeout=t), timeout=timeout)
        return timer_from_pb(resp)

    def list(self, *, tenant: Optional[str] = None, states=None,
             labels: Union[Mapping[str, str], str, None] = None,
             fire_at_from: Union[datetime, int, None] = None, fire_at_to: Union[datetime, int, None] = None,
             page_size: Optional[int] = None, limit: Optional[int] = None,
             timeout: Optional[float] = None) -> Iterator[Timer]:
        """Iterate over matching timers, fetching pages as needed (each page is retried on its own).

        `states`: a state or several (TimerState or names); `labels`: a mapping
        (all must match) or a selector "k=v,k2=v2"; `fire_at_from` inclusive,
        `fire_at_to` exclusive; `limit`: stop after that many timers.
        """
        req = list_request(self._tenant(tenant), states, labels, fire_at_from, fire_at_to,
                           page_size_for(page_size, limit))
        return self._list_iter(req, limit, timeout)

    def _list_iter(self, req, limit, timeout) -> Iterator[Timer]:
        n = 0
        if limit == 0:
            return
        while True:
            resp, _ = self._call("list", lambda a, t: self._timers(a).ListTimers(req, timeout=t), timeout=timeout)
            for pb in resp.timers:
                if limit is not None and n >= limit:
                    return
                n += 1
                yield timer_from_pb(pb)
            if not resp.next_page_token or (limit is not None and n >= limit):
                return
            req.page_token = resp.next_page_token

    def cancel(self, id: str, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Cancel a scheduled, armed or fired timer; returns it (CANCELLED)."""
        req = timers_pb2.CancelTimerRequest(tenant=self._tenant(tenant), id=id)
        return self._settle_call(
            "cancel", lambda a, t: self._timers(a).CancelTimer(req, timeout=t), id, tenant, timeout,
            lambda tm: tm.state == TimerState.CANCELLED)

    def reschedule(self, id: str, fire_at: Union[datetime, int], *, tenant: Optional[str] = None,
                   timeout: Optional[float] = None) -> Timer:
        """Move a scheduled or armed timer's deadline to `fire_at` (absolute; safe to retry)."""
        ms = time_to_ms(fire_at)
        req = timers_pb2.RescheduleTimerRequest(tenant=self._tenant(tenant), id=id, fire_at=_ms_to_ts(ms))
        return self._settle_call(
            "reschedule", lambda a, t: self._timers(a).RescheduleTimer(req, timeout=t), id, tenant, timeout,
            lambda tm: tm.fire_at_ms == ms)

    def extend(self, id: str, by: Union[timedelta, int, float], *, tenant: Optional[str] = None,
               timeout: Optional[float] = None) -> Timer:
        """Move the deadline by `by` (timedelta or seconds; may be negative).

        Not idempotent: retried only when the request certainly did not reach
        Raft; otherwise raises `Unavailable(ambiguous=True)` (see the module
        docstring).
        """
        req = timers_pb2.RescheduleTimerRequest(tenant=self._tenant(tenant), id=id,
                                                extend_by=duration_to_pb(by, "by"))
        resp, _ = self._call("extend", lambda a, t: self._timers(a).RescheduleTimer(req, timeout=t),
                             safe_only=True, timeout=timeout)
        return timer_from_pb(resp)

    def ack(self, id: str, fire_id: int, *, tenant: Optional[str] = None, timeout: Optional[float] = None) -> Timer:
        """Acknowledge fire `fire_id` (Timer.fire_id) of a FIRED timer; returns it (SETTLED)."""
        req = timers_pb2.AckTimerRequest(tenant=self._tenant(tenant), id=id, fire_id=fire_id)
        return self._settle_call(
            "ack", lambda a, t: self._timers(a).AckTimer(req, timeout=t), id, tenant, timeout,
            lambda tm: tm.state == TimerState.SETTLED and tm.fire_id == fire_id)

    def _settle_call(self, what, fn, id, tenant, timeout, reached: Callable[[Timer], bool]) -> Timer:
        try:
            resp, _ = self._call(what, fn, timeout=timeout)
        except FailedPrecondition as exc:
            if getattr(exc, "after_ambiguous", False):
                tm = self.get(id, tenant=tenant, timeout=timeout)
                if reached(tm):
                    return tm
            raise
        return timer_from_pb(resp)

    # ---- cluster ---------------------------------------------------------------

    def status(self, *, timeout: Optional[float] = None) -> ClusterStatus:
        """Cluster.Status from the leader when known, else any member."""
        resp, _ = self._call("status", lambda a, t: self._cluster(a).Status(cluster_pb2.StatusRequest(), timeout=t),
                             timeout=timeout)
        status = status_from_pb(resp)
        self.router.learn(status)
        return status

    def add_node(self, id: str, raft_address: str, grpc_address: str = "", *,
                 timeout: Optional[float] = None) -> Member:
        """Add member `id` with its Raft address HOST:PORT (and gRPC address, if it serves one).

        Start the new node first, with a --peer for every member. Sent to the
        leader; after an ambiguous failure the membership is read back, so a
        retried add that had in fact committed returns the member instead of
        raising AlreadyExists.
        """
        req = cluster_pb2.AddNodeRequest(id=id, raft_address=raft_address, grpc_address=grpc_address)
        resp = self._leader_call("add_node", lambda a, t: self._cluster(a).AddNode(req, timeout=t), timeout,
                                 **add_checks(id, raft_address))
        return resp if isinstance(resp, Member) else member_from_pb(resp.member)

    def remove_node(self, id: str, *, timeout: Optional[float] = None) -> Member:
        """Remove member `id`; returns it. Removing the leader works too: it hands
        leadership to another member first (the request goes to the leader)."""
        req = cluster_pb2.RemoveNodeRequest(id=id)
        resp = self._leader_call("remove_node", lambda a, t: self._cluster(a).RemoveNode(req, timeout=t), timeout,
                                 **remove_checks(id))
        return resp if isinstance(resp, Member) else member_from_pb(resp.member)

    def transfer_leadership(self, to: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """Make member `to` (an id; None = the most caught-up follower) the leader;
        returns the new leader's id. Already leading: returns `to` at once."""
        req = cluster_pb2.TransferLeadershipRequest(to=to or "")
        resp = self._leader_call("transfer_leadership",
                                 lambda a, t: self._cluster(a).TransferLeadership(req, timeout=t), timeout,
                                 **transfer_checks(to))
        return resp if isinstance(resp, str) else resp.leader

    def take_snapshot(self, *, timeout: Optional[float] = None) -> SnapshotInfo:
        """Snapshot the answering node (the leader when known) now and compact its log.
        With nothing applied since its last snapshot, returns that one."""
        resp, _ = self._call(
            "take_snapshot",
            lambda a, t: self._cluster(a).TakeSnapshot(cluster_pb2.TakeSnapshotRequest(), timeout=t),
            timeout=timeout, long=True)
        return snapshot_from_pb(resp)

    def list_snapshots(self, *, timeout: Optional[float] = None) -> list[SnapshotInfo]:
        """The snapshots the answering node (the leader when known) keeps, oldest first."""
        resp, _ = self._call(
            "list_snapshots",
            lambda a, t: self._cluster(a).ListSnapshots(cluster_pb2.ListSnapshotsRequest(), timeout=t),
            timeout=timeout)
        return [snapshot_from_pb(s) for s in resp.snapshots]

    def export_snapshot(self, dest: Union[str, os.PathLike, IO[bytes]], *, last_index: Optional[int] = None,
                        timeout: Optional[float] = None) -> SnapshotInfo:
        """Download a snapshot container (the file `minoots snapshot restore` takes) into
        `dest`: a path (written to PATH.part, renamed into place once complete and
        verified) or a binary file object. `last_index` picks one of the answering
        node's snapshots (`list_snapshots`); None = its latest. NotFound when it has
        none. The size and SHA-256 are checked; a broken stream is retried from the
        start (on another member if need be) until the deadline. Local file
        errors raise OSError."""
        if last_index is not None and (isinstance(last_index, bool) or not isinstance(last_index, int)
                                       or last_index < 1):
            raise InvalidArgument(f"last_index must be an int >= 1, got {last_index!r}")
        req = cluster_pb2.ExportSnapshotRequest(last_index=last_index or 0)
        sink = _Sink(dest)

        def attempt(addr: str, t: float) -> SnapshotInfo:
            rx = SnapshotReceiver()
            out = sink.open()
            try:
                for chunk in self._cluster(addr).ExportSnapshot(req, timeout=t):
                    out.write(rx.accept(chunk))
                return rx.finish()
            finally:
                sink.close_attempt()

        try:
            info, _ = self._call("export_snapshot", attempt, timeout=timeout, long=True)
        except BaseException:
            sink.discard()
            raise
        sink.commit()
        return info

    def _leader_call(self, what: str, fn: Callable[[str, float], Any], timeout: Optional[float], **checks) -> Any:
        """A cluster change, sent to the leader (see `LeaderCall`); returns fn's answer, or
        the `settled` check's value when a retry finds the change already made."""
        plan = LeaderCall(what, self.timeout if timeout is None else float(timeout), **checks)
        while True:
            plan.learn(self._refresh(min(plan.deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT)))
            step = plan.next()
            if step is not None and step[0] == "done":
                return step[1]
            if step is not None:
                addr = step[1]
                try:
                    return fn(addr, plan.remaining())
                except grpc.RpcError as exc:
                    if plan.failed(exc):
                        verdict = plan.recheck(
                            self._refresh(min(plan.deadline, time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT)), addr)
                        if verdict is not None:
                            return verdict[1]
                    self.router.failed(addr)
            time.sleep(plan.pause(self.backoff_base, self.backoff_max, self._rng))

    # ---- events ----------------------------------------------------------------

    def watch(self, from_sequence: int = 0, *, tenant: Optional[str] = None, kinds=None,
              reconnect_timeout: Optional[float] = None,
              stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> "Watch":
        """Stream events from sequence `from_sequence` on (0: only new events), forever.

        The iterator survives disconnects, node deaths and failovers: it
        reconnects to another member asking for (last sequence seen + 1), drops
        any event it has already yielded and, for an unfiltered watch, raises if
        a sequence number is ever skipped. It raises `OutOfRange` when the
        cluster no longer retains the sequence asked for, and `Unavailable` when
        no member could be reached for `reconnect_timeout` seconds (default: the
        client's timeout). `tenant` and `kinds` filter on the server. Call
        `close()` (or use it as a context manager) to stop; a `from_sequence=0`
        watch that is interrupted before its first event resumes from "now"
        and so may miss events from the gap. A stream idle for `stall_timeout`
        seconds gets a liveness check (one Cluster.Status or two per interval,
        none while events flow): when its node is cut off from the leader or
        falls behind, the watch resumes on a healthy member (None/0: never).
        """
        return Watch(self, watch_request(from_sequence, self._tenant(tenant), kinds),
                     self.timeout if reconnect_timeout is None else reconnect_timeout, stall_timeout)

    # ---- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.router.addresses!r}, leader={self.router.leader!r})"


# Stream failures after which a watch reconnects (OUT_OF_RANGE and DATA_LOSS are handled apart;
# everything else is final).
WATCH_RETRY_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})
# "This node does not have your events": another member may (it applied the entries this one
# got as a snapshot, or retains more), so these move the watch on and only fail once every
# member said so.
WATCH_LACKING_CODES = frozenset({grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DATA_LOSS})
# A stream that stayed open this long counts as a successful connection (resets the reconnect clock).
WATCH_HEALTHY_AFTER = 2.0


def sees_leader(st: ClusterStatus) -> bool:
    """The answering node leads with a majority of members connected, or is connected to
    the leader it names (its own view, from Cluster.Status)."""
    if not st.leader:
        return False
    if st.leader == st.node:
        return 2 * sum(1 for m in st.members if m.connected or m.id == st.node) > len(st.members)
    return any(m.id == st.leader and m.connected for m in st.members)


class WatchCursor:
    """Exactly-once bookkeeping of a watch, shared by the sync and async iterators."""

    def __init__(self, request: timers_pb2.WatchEventsRequest) -> None:
        self.request = request
        self.next = request.from_sequence          # the sequence to ask for on reconnect
        self.filtered = bool(request.tenant or request.kinds)
        self.last: Optional[int] = None            # last sequence yielded

    def resume_request(self) -> timers_pb2.WatchEventsRequest:
        req = timers_pb2.WatchEventsRequest()
        req.CopyFrom(self.request)
        req.from_sequence = self.next
        return req

    def accept(self, pb: timers_pb2.Event) -> Optional[Event]:
        """The Event to yield, or None for a duplicate; raises on a gap in an unfiltered stream."""
        seq = pb.sequence
        if self.last is not None and seq <= self.last:
            return None
        if self.next and seq < self.next:
            return None
        if not self.filtered and self.last is not None and seq != self.last + 1:
            raise MinootsError(f"event stream skipped from sequence {self.last} to {seq}", code="DATA_LOSS")
        if not self.filtered and self.last is None and self.next and seq != self.next:
            raise MinootsError(f"asked for events from sequence {self.next}, got {seq} first", code="DATA_LOSS")
        self.last = seq
        self.next = seq + 1
        return event_from_pb(pb)


class WatchPolicy:
    """Where and when a watch (re)connects, shared by `Watch` and `AsyncWatch` (no I/O here).

    After a failure the watch reconnects to another member with the cursor
    (last sequence seen + 1), after a jittered exponential backoff. The clock
    for `reconnect_timeout` starts at the first failure and restarts whenever an
    event arrives or a stream had stayed open for WATCH_HEALTHY_AFTER seconds.
    A member answering OUT_OF_RANGE / DATA_LOSS is skipped for this cursor;
    only when every known member said so is the error raised (OutOfRange).

    Liveness: a node cut off from the majority (or whose log cannot grow) keeps
    the stream open but sends nothing. When a stream has been idle for
    `stall_timeout` seconds (no RPC at all while events flow; at most one check
    per interval) the watch asks the node for Cluster.Status: it is unfit when
    it does not answer, sees no reachable leader (`sees_leader`), or has not
    applied the commit index the leader reported one check earlier. An unfit
    node is left for a member that does see a leader, from the cursor, exactly
    as after a disconnect; when no member does (no quorum anywhere) the watch
    stays where it is. `stall_timeout` None or 0 turns the check off.
    """

    def __init__(self, request: timers_pb2.WatchEventsRequest, reconnect_timeout: float, router: Router,
                 backoff_base: float, backoff_max: float, rng: random.Random,
                 stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> None:
        self.cursor = WatchCursor(request)
        self.reconnect_timeout = reconnect_timeout
        self.router = router
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rng = rng
        self.addr: Optional[str] = None
        self.opened_at = 0.0
        self.down_since: Optional[float] = None
        self.failures = 0
        self.last_error: Optional[BaseException] = None
        self.lacking: dict[str, grpc.RpcError] = {}   # members without our cursor's events
        self.unbatched: set[str] = set()   # members without WatchEventBatches (older servers)
        self.reconnects = 0
        self.stall_timeout = float(stall_timeout) if stall_timeout else None
        self.active_at = 0.0        # monotonic time of the last open or event
        self.checked_at = 0.0       # ... of the last liveness check
        self.lag_mark: Optional[int] = None   # the leader's commit index at the last check
        self.stall_switches = 0     # times a stalled node was left
        self.last_stall: Optional[str] = None

    # ---- liveness of an idle stream

    def probe_timeout(self) -> float:
        return min(DISCOVERY_ATTEMPT_TIMEOUT, max(0.2, self.stall_timeout or 0.0))

    def check_in(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds until the liveness check of the open stream is due (<= 0: now), None when off."""
        if self.stall_timeout is None or self.addr is None:
            return None
        now = time.monotonic() if now is None else now
        return max(self.active_at, self.checked_at) + self.stall_timeout - now

    def unfit(self, own: Optional[ClusterStatus]) -> Optional[str]:
        """Why the streaming node (its own Status, None: no answer) should be left, or None."""
        self.checked_at = time.monotonic()
        if own is None:
            return "did not answer Cluster.Status"
        if not sees_leader(own):
            return "sees no reachable Raft leader"
        if self.lag_mark is not None and own.applied_index < self.lag_mark:
            return (f"applied index {own.applied_index} is still behind the commit index {self.lag_mark} "
                    f"the leader had {self.stall_timeout:.1f}s ago")
        return None

    def mark(self, leader_status: Optional[ClusterStatus]) -> None:
        """Remember the leader's commit index (from a Status that sees a leader)."""
        if leader_status is not None and sees_leader(leader_status):
            self.lag_mark = max(self.lag_mark or 0, leader_status.commit_index)

    def stalled(self, reason: str) -> None:
        """The open stream is abandoned for a healthier member (the caller cancels it)."""
        self.stall_switches += 1
        self.last_stall = f"{self.addr}: {reason}"

    def delay(self) -> float:
        """Seconds to wait before the next open; raises once reconnect_timeout has passed."""
        if self.down_since is None:
            return 0.0
        elapsed = time.monotonic() - self.down_since
        if elapsed > self.reconnect_timeout:
            if self.lacking:
                raise self._lacking_error()
            raise _give_up(self.last_error, "watch", self.reconnect_timeout, self.failures)
        if self.last_error is not None and self.last_error.code() in WATCH_LACKING_CODES:
            return 0.0   # the node answered; just try the next one
        return min(self.reconnect_timeout - elapsed,
                   backoff(self.failures - 1, self.backoff_base, self.backoff_max, self.rng))

    def choose(self) -> str:
        avoid = set(self.lacking)
        if self.down_since is not None and self.addr is not None:
            avoid.add(self.addr)
        return self.router.pick(avoid=avoid)

    def opened(self, addr: str) -> None:
        self.addr = addr
        self.opened_at = self.active_at = time.monotonic()
        self.lag_mark = None

    def received(self, pb: timers_pb2.Event) -> Optional[Event]:
        self.active_at = time.monotonic()
        self.down_since = None
        self.failures = 0
        self.lacking.clear()
        return self.cursor.accept(pb)

    def stream_failed(self, exc: grpc.RpcError, batched: bool) -> Optional[str]:
        """A stream call failed. An older server refuses WatchEventBatches (UNIMPLEMENTED):
        returns the node to reopen at once, per event and not counted as a reconnect.
        Otherwise as `failed` (None)."""
        if batched and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            self.unbatched.add(self.addr)
            return self.addr
        self.failed(exc)
        return None

    def failed(self, exc: Optional[grpc.RpcError]) -> None:
        """The stream ended (exc None: cleanly) or failed; raises when the failure is final."""
        code = exc.code() if exc is not None else None
        if code in WATCH_LACKING_CODES:
            if self.addr is not None:
                self.lacking[self.addr] = exc
            if set(self.router.addresses) <= set(self.lacking):
                raise self._lacking_error()
        elif code is not None and code not in WATCH_RETRY_CODES:
            raise error_from_rpc(exc)
        elif self.addr is not None:
            self.router.failed(self.addr)
        now = time.monotonic()
        if self.down_since is None or now - self.opened_at > WATCH_HEALTHY_AFTER:
            self.down_since = now
            self.failures = 0
        self.failures += 1
        self.last_error = exc
        self.reconnects += 1

    def _lacking_error(self) -> MinootsError:
        errs = [error_from_rpc(e) for e in self.lacking.values()]
        detail = "; ".join(f"{a}: {e.message}" for a, e in zip(self.lacking, errs))
        if any(isinstance(e, OutOfRange) for e in errs):
            return OutOfRange(f"no reachable member retains events from sequence {self.cursor.next} ({detail})")
        return MinootsError(f"no reachable member can stream from sequence {self.cursor.next} ({detail})",
                            code="DATA_LOSS")


class Watch(Iterator[Event]):
    """Blocking, self-resuming event iterator (see Client.watch)."""

    def __init__(self, client: Client, request: timers_pb2.WatchEventsRequest, reconnect_timeout: float,
                 stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT) -> None:
        self._client = client
        self._policy = WatchPolicy(request, reconnect_timeout, client.router, client.backoff_base,
                                   client.backoff_max, client._rng, stall_timeout)
        self._call = None
        self._closed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._monitor: Optional[threading.Thread] = None
        self._pending: Iterator = iter(())   # the rest of the last EventBatch received
        self._batched = False                # the open call is WatchEventBatches
        self._reopen: Optional[str] = None   # reopen here at once (it lacks WatchEventBatches)

    @property
    def last_sequence(self) -> Optional[int]:
        """Sequence of the last event yielded (None before the first)."""
        return self._policy.cursor.last

    @property
    def node(self) -> Optional[str]:
        """Address currently (or last) streaming from."""
        return self._policy.addr

    @property
    def reconnects(self) -> int:
        return self._policy.reconnects

    @property
    def stall_switches(self) -> int:
        """Times the watch left a node that stalled (idle stream, node isolated or behind)."""
        return self._policy.stall_switches

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> Event:
        while True:
            if self._closed:
                raise StopIteration
            pb = next(self._pending, None)
            if pb is None:
                if self._call is None:
                    self._open()
                try:
                    msg = next(self._call)
                except StopIteration:
                    # The server ended an endless stream (shutting down): resume elsewhere.
                    self._drop_call()
                    self._policy.failed(None)
                    continue
                except grpc.RpcError as exc:
                    if self._closed:
                        raise StopIteration from None
                    self._drop_call()
                    self._reopen = self._policy.stream_failed(exc, self._batched) or self._reopen
                    continue
                if not self._batched:
                    pb = msg
                else:
                    self._pending = iter(msg.events)
                    continue
            ev = self._policy.received(pb)
            if ev is not None:
                return ev

    def _open(self) -> None:
        c = self._client
        addr, self._reopen = self._reopen, None
        if addr is None:
            pause = self._policy.delay()
            if pause > 0:
                time.sleep(pause)
            if c.router.stale(c.refresh_interval):
                c._refresh(time.monotonic() + DISCOVERY_ATTEMPT_TIMEOUT, avoid=self._policy.addr)
            addr = self._policy.choose()
        with self._lock:
            if self._closed:
                raise StopIteration
            stub = c._timers(addr)
            self._batched = addr not in self._policy.unbatched
            rpc = stub.WatchEventBatches if self._batched else stub.WatchEvents
            self._call = rpc(self._policy.cursor.resume_request())
            self._policy.opened(addr)
            if self._monitor is None and self._policy.stall_timeout is not None:
                self._monitor = threading.Thread(target=_watch_monitor, args=(weakref.ref(self), self._wake),
                                                 name="minoots-watch-liveness", daemon=True)
                self._monitor.start()

    # ---- liveness (runs on the monitor thread; the iterating thread never waits for it)

    def _status(self, addr: Optional[str], timeout: float) -> Optional[ClusterStatus]:
        if not addr:
            return None
        try:
            return status_from_pb(self._client._cluster(addr).Status(cluster_pb2.StatusRequest(), timeout=timeout))
        except (grpc.RpcError, MinootsError):
            return None

    def _check(self) -> None:
        """One liveness check of the open stream's node (see WatchPolicy); cancels the stream
        (the iterator then resumes elsewhere from the cursor) when the node is unfit and
        another member sees a leader."""
        p, router = self._policy, self._client.router
        with self._lock:
            call, addr = self._call, p.addr
        if call is None or addr is None or self._closed:
            return
        t = p.probe_timeout()
        own = self._status(addr, t)
        reason = p.unfit(own)
        if reason is None:
            p.mark(own if own.leader == own.node else self._status(own.leader_grpc_address, t))
            return
        for other in router.rotation():
            if other == addr:
                continue
            if self._closed or self._call is not call:
                return
            ref = self._status(other, t)
            if ref is not None and sees_leader(ref):
                router.learn(ref)
                with self._lock:
                    if self._call is not call or self._closed:
                        return
                    p.stalled(reason)
                call.cancel()
                return

    def _drop_call(self) -> None:
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()

    def close(self) -> None:
        """Stop the stream (safe from another thread; the iterator then ends)."""
        with self._lock:
            self._closed = True
            call, self._call = self._call, None
        self._wake.set()
        if call is not None:
            call.cancel()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _watch_monitor(ref: "weakref.ref[Watch]", wake: threading.Event) -> None:
    """Liveness checks of one Watch's idle stream; ends when the watch is closed or dropped."""
    while True:
        w = ref()
        if w is None or w._closed:
            return
        due = w._policy.check_in()
        if due is not None and due <= 0 and w._call is not None:
            try:
                w._check()
            except Exception:   # noqa: BLE001 - a failed check must never break the watch
                w._policy.checked_at = time.monotonic()
            due = w._policy.check_in()
        del w
        wake.wait(0.25 if due is None else min(max(due, 0.01), 1.0))
