"""Watch policy of the SDK, shared by `Watch` (blocking) and `AsyncWatch` (no I/O here):
exactly-once bookkeeping of the event stream (`WatchCursor`), and where and when a
watch reconnects and when an idle stream's node is left (`WatchPolicy`).
"""
from __future__ import annotations

import random
import time
from typing import Optional

import grpc

from minoots.v1 import timers_pb2

from ..types import ClusterStatus, Event, MinootsError, OutOfRange
from .policy import DEFAULT_STALL_TIMEOUT, DISCOVERY_ATTEMPT_TIMEOUT, Router, backoff, error_from_rpc, give_up
from .wire import event_from_pb

__all__ = ["WATCH_RETRY_CODES", "WATCH_LACKING_CODES", "WATCH_HEALTHY_AFTER", "sees_leader", "WatchCursor",
           "WatchPolicy", "WatchProgress"]

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

    def examined(self, through: int) -> None:
        """A filtered stream examined every event up to `through` (an EventBatch's, once its
        events were taken): resume after it. Unfiltered streams have no hidden events."""
        if self.filtered and through >= self.next:
            self.next = through + 1

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
        self.refreshed_for_lacking = False             # asked for the membership once before raising
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
            raise give_up(self.last_error, "watch", self.reconnect_timeout, self.failures)
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
        self.refreshed_for_lacking = False
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
                if self.router.incomplete and not self.refreshed_for_lacking:
                    # Every member *known* lacks the cursor, but the membership answer was
                    # incomplete (members announce their gRPC address after start): ask the
                    # cluster once more before giving up (the next open refreshes first).
                    self.refreshed_for_lacking = True
                    self.router.discovered_at = None
                else:
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


class WatchProgress:
    """Where a watch is, read from its `WatchPolicy`: the properties `Watch` and `AsyncWatch` share."""

    _policy: WatchPolicy

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
