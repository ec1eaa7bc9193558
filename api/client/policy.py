"""Call policy of the SDK, shared by `Client` and `AsyncClient` (no I/O here): the
defaults; which member a call goes to (`Router`); whether a failed attempt is
retried (`classify`, `retryable`, `backoff`, `give_up`); how a cluster change
is sent to the leader and retried (`LeaderCall`); and the settings both clients
are made with (`ClientSettings`). Why each call is safe to retry is told in
`minoots.api.client`'s docstring.
"""
from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import grpc

from ..types import (
    ERRORS_BY_CODE,
    AlreadyExists,
    ClusterStatus,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Member,
    MinootsError,
    NotFound,
    Unavailable,
)

__all__ = [
    "DEFAULT_TIMEOUT", "DEFAULT_ATTEMPT_TIMEOUT", "DEFAULT_BACKOFF_BASE", "DEFAULT_BACKOFF_MAX",
    "DEFAULT_REFRESH_INTERVAL", "DISCOVERY_ATTEMPT_TIMEOUT", "DEFAULT_STALL_TIMEOUT",
    "INCOMPLETE_REFRESH_INTERVAL", "CHANNEL_OPTIONS", "credentials", "ClientSettings", "resolve_token",
    "AuthedStub", "TOKEN_ENV",
    "FINAL", "SAFE", "AMBIGUOUS", "classify", "error_from_rpc", "retryable", "give_up", "backoff",
    "Router", "LeaderCall", "add_checks", "remove_checks", "transfer_checks",
]

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
    # Bounded like everything that crosses a boundary: a node sends at most 64 MiB in one
    # message (api/server.py MAX_SEND_BYTES) and takes at most 16 MiB.
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 16 << 20),
)


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


# ---------------------------------------------------------------- failures and retries

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


def give_up(last: Optional[BaseException], what: str, timeout: float, tried: int) -> MinootsError:
    """The error a retried call raises when its deadline has passed, from its last failure."""
    if last is None:
        return DeadlineExceeded(f"{what}: deadline of {timeout:.1f}s passed before any attempt")
    if isinstance(last, grpc.RpcError):
        err = error_from_rpc(last)
        msg = f"{what} failed after {tried} attempt(s) within {timeout:.1f}s; last error: {err.code}: {err.message}"
        if isinstance(err, DeadlineExceeded):
            return DeadlineExceeded(msg)
        return Unavailable(msg)
    return Unavailable(f"{what} failed after {tried} attempt(s) within {timeout:.1f}s: {last}")


def backoff(n: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog, 2015)."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(n, 30))))


# ---------------------------------------------------------------- routing


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

    def discovery_order(self, avoid: Optional[str] = None) -> list[str]:
        """Whom to ask for Cluster.Status: `rotation()`, with `avoid` (a member that just
        failed) moved to the end."""
        order = self.rotation()
        if avoid in order and len(order) > 1:
            order.remove(avoid)
            order.append(avoid)
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


# ---------------------------------------------------------------- cluster changes


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
        return give_up(self.last, self.what, self.total, self.attempts)


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


# ---------------------------------------------------------------- credentials

TOKEN_ENV = "MINOOTS_TOKEN"
TOKEN_FILE_ENV = "MINOOTS_TOKEN_FILE"
DATA_ENV = "MINOOTS_DATA"                 # where `minoots up` keeps its cluster
DEFAULT_DATA = "minoots-data"
ADMIN_TOKEN_FILE = "admin.token"          # what `minoots up` writes there


def resolve_token(token: Optional[str]) -> Optional[str]:
    """The API token a client sends: `token`, else $MINOOTS_TOKEN, else the file named by
    $MINOOTS_TOKEN_FILE, else the admin token `minoots up` wrote ($MINOOTS_DATA or
    ./minoots-data)/admin.token, else None (calls then fail with UNAUTHENTICATED). An empty
    `token` sends none (a client certificate authenticates the calls: mutual TLS)."""
    if token is not None:
        return token or None
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = os.environ.get(TOKEN_FILE_ENV) or os.path.join(os.environ.get(DATA_ENV, DEFAULT_DATA), ADMIN_TOKEN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(1024).strip() or None
    except OSError:
        if os.environ.get(TOKEN_FILE_ENV):
            raise MinootsError(f"cannot read the token file {path} (${TOKEN_FILE_ENV})",
                               code="UNAUTHENTICATED") from None
        return None


class AuthedStub:
    """A gRPC stub whose every call carries `authorization: Bearer <token>`."""

    __slots__ = ("_stub", "_metadata")

    def __init__(self, stub, token: Optional[str]) -> None:
        self._stub = stub
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        if not self._metadata:
            return method
        metadata = self._metadata

        def call(request, **kw):
            kw["metadata"] = tuple(kw.get("metadata") or ()) + metadata
            return method(request, **kw)
        return call


# ---------------------------------------------------------------- what both clients hold


class ClientSettings:
    """The arguments `Client` and `AsyncClient` take (documented on `Client`) and the state
    both keep between calls: the router, the channels by address, the backoff's RNG."""

    def __init__(self, nodes: Union[Sequence[str], str], *, timeout: float = DEFAULT_TIMEOUT,
                 attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT, tls=False, tenant: Optional[str] = None,
                 backoff_base: float = DEFAULT_BACKOFF_BASE, backoff_max: float = DEFAULT_BACKOFF_MAX,
                 refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
                 channel_options: Sequence[tuple[str, Any]] = (), token: Optional[str] = None) -> None:
        self.router = Router(nodes)
        self._token = resolve_token(token)
        self.timeout = float(timeout)
        self.attempt_timeout = float(attempt_timeout)
        self.tenant = tenant
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.refresh_interval = refresh_interval
        self._creds = credentials(tls)
        self._options = CHANNEL_OPTIONS + tuple(channel_options)
        self._channels: dict[str, Any] = {}   # address -> grpc channel (sync or aio)
        self._lock = threading.Lock()         # guards _channels across the blocking client's threads
        self._rng = random.Random()
        self._closed = False

    def _tenant(self, tenant: Optional[str]) -> str:
        return tenant if tenant is not None else (self.tenant or "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.router.addresses!r}, leader={self.router.leader!r})"
