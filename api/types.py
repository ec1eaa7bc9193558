"""What the SDK hands back: plain, typed values and errors, never raw protobuf.

Times are timezone-aware UTC `datetime`s (``Timer.fire_at``), each with an
integer twin in milliseconds since the Unix epoch (``Timer.fire_at_ms``), the
unit the kernel works in. A transition that has not happened is ``None``.

Errors form one small hierarchy rooted at `MinootsError`, one class per gRPC
status code a caller can act on; each keeps the server's message and the gRPC
code. The classes also derive from the matching builtin (`InvalidArgument` is a
`ValueError`, `NotFound` a `LookupError`, `DeadlineExceeded` a `TimeoutError`)
so generic handlers keep working.

This module imports neither grpc nor the generated stubs: it is safe to import
anywhere (the conversions from protobuf live in `minoots.api.client.wire`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Mapping, Optional, Union

__all__ = [
    "TimerState",
    "EventKind",
    "CatchUpPolicy",
    "OverlapPolicy",
    "TimerSpec",
    "Timer",
    "Event",
    "BulkResult",
    "Member",
    "ClusterStatus",
    "SnapshotInfo",
    "MinootsError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "OutOfRange",
    "Unavailable",
    "DeadlineExceeded",
    "Unauthenticated",
    "PermissionDenied",
    "ResourceExhausted",
    "ms_to_datetime",
    "datetime_to_ms",
]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ms_to_datetime(ms: Optional[int]) -> Optional[datetime]:
    """ms since the Unix epoch -> aware UTC datetime (None stays None)."""
    if ms is None:
        return None
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(dt: datetime) -> int:
    """Aware datetime -> ms since the Unix epoch, rounded UP to the next whole ms.

    Rounding up keeps the promise that a timer never fires before the instant
    asked for. A naive datetime is refused: guessing its zone is how timers end
    up an hour off.
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidArgument("a naive datetime has no time zone; pass an aware one "
                              "(e.g. datetime.now(timezone.utc))")
    delta = dt - EPOCH
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return -((-us) // 1000)


# ---------------------------------------------------------------- enums


class TimerState(enum.IntEnum):
    """Lifecycle state (values are the wire values of minoots.v1.TimerState)."""

    UNSPECIFIED = 0
    SCHEDULED = 1      # accepted, waiting for its start condition
    ARMED = 2          # in the wheel, fires at fire_at
    FIRED = 3          # deadline reached, awaiting acknowledgement
    SETTLED = 4        # acknowledged, or nothing to acknowledge
    CANCELLED = 5
    DEAD_LETTERED = 6  # delivery gave up (redrive re-delivers it)
    DELIVERING = 7     # fired; its webhook is being delivered

    @property
    def terminal(self) -> bool:
        """True for settled, cancelled and dead-lettered (only a redrive leaves the last)."""
        return TimerState.SETTLED <= self <= TimerState.DEAD_LETTERED

    @classmethod
    def parse(cls, text: Union[str, int, "TimerState"]) -> "TimerState":
        """'armed', 'ARMED', 'dead-lettered', 2 -> TimerState; InvalidArgument otherwise."""
        return _parse_enum(cls, text, "timer state")


class EventKind(enum.IntEnum):
    """Kind of a lifecycle event (values are the wire values of minoots.v1.EventKind)."""

    UNSPECIFIED = 0
    CREATED = 1
    ARMED = 2
    FIRED = 3
    SETTLED = 4
    RESCHEDULED = 5
    CANCELLED = 6
    DELIVERY_DUE = 7
    DELIVERY_ATTEMPTED = 8
    DEAD_LETTERED = 9
    REDRIVEN = 10
    LEASED = 11
    LEASE_EXTENDED = 12
    PAUSED = 18        # a recurring timer was paused (pause())
    RESUMED = 19       # a paused timer was armed again (resume())
    PURGED = 20        # a terminal timer left the cluster after its tenant's retention
    DELETED = 21       # a terminal timer was removed by delete()
    ESCALATED = 40     # an escalation step of an unacknowledged fire came due (fire_at: the step's deadline)

    @classmethod
    def parse(cls, text: Union[str, int, "EventKind"]) -> "EventKind":
        return _parse_enum(cls, text, "event kind")


class CatchUpPolicy(enum.IntEnum):
    """minoots.v1.CatchUpPolicy: a recurring timer's occurrences missed in an outage
    (the SDK speaks of them by lower-case name: Timer.catch_up, create(catch_up=...))."""

    UNSPECIFIED = 0
    ONCE = 1
    ALL = 2
    SKIP = 3


class OverlapPolicy(enum.IntEnum):
    """minoots.v1.OverlapPolicy: an occurrence due before the previous one settled."""

    UNSPECIFIED = 0
    SKIP = 1
    BUFFER_ONE = 2
    ALLOW_ALL = 3


def _parse_enum(cls, text, what: str):
    if isinstance(text, cls):
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        try:
            return cls(text)
        except ValueError:
            pass
    elif isinstance(text, str):
        name = text.strip().upper().replace("-", "_")
        if name in cls.__members__ and name != "UNSPECIFIED":
            return cls[name]
    choices = ", ".join(m.name.lower() for m in cls if m.name != "UNSPECIFIED")
    raise InvalidArgument(f"unknown {what} {text!r}; expected one of: {choices}")


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class TimerSpec:
    """One timer to create, for `Client.create_many` (the same fields as `Client.create`).

    Give exactly one of `fire_at` (aware datetime, or int ms since the epoch)
    and `delay` (timedelta, or seconds as int/float). `id` and
    `idempotency_key` are filled in by the SDK when left empty (see
    `Client.create`).
    """

    fire_at: Union[datetime, int, None] = None
    delay: Union[timedelta, int, float, None] = None
    id: Optional[str] = None
    tenant: Optional[str] = None
    name: str = ""
    payload: Union[bytes, str] = b""
    labels: Optional[Mapping[str, str]] = None
    action: Union[bytes, str] = b""
    idempotency_key: Optional[str] = None
    ack_required: bool = False
    every: Union[timedelta, int, float, None] = None   # recurring: seconds (or timedelta) between occurrences
    until: Union[datetime, int, None] = None           # with every: last time an occurrence may be due
    max_count: int = 0                                 # with every or cron: occurrences in all (0: unbounded)
    cron: str = ""                                     # or recur at these cron times (5/6 fields) ...
    tz: str = ""                                       # ... in this IANA time zone
    #: Recurring timers: "once" (default), "all" or "skip" after an outage; "skip" (default),
    #: "buffer_one" or "allow_all" when an occurrence is due before the previous one settled.
    catch_up: str = ""
    overlap: str = ""
    #: Recurring timers: fire each occurrence at a time within [occurrence, occurrence + flex]
    #: (seconds or timedelta; EventBridge's flexible time window).
    flex: Union[timedelta, int, float, None] = None
    #: Delivery: POST a signed envelope to this URL when the timer fires (retried per the
    #: policy below; None fields take the server's defaults: 5 attempts, 1 s base, 60 s cap, 10 s timeout).
    webhook: Optional[str] = None
    webhook_headers: Optional[Mapping[str, str]] = None
    #: Or: make it available on this pull queue of its tenant when it fires (workers lease it).
    queue: Optional[str] = None
    #: Or: POST to this managed endpoint of its tenant (Client.create_endpoint), signed with its secret.
    endpoint: Optional[str] = None
    max_attempts: Optional[int] = None
    backoff_base: Union[timedelta, int, float, None] = None
    backoff_cap: Union[timedelta, int, float, None] = None
    attempt_timeout: Union[timedelta, int, float, None] = None
    #: Dependencies: wait (SCHEDULED) until the timers `after` (ids of this tenant; one id or
    #: several) meet `on` (fired | settled | dead_lettered | cancelled), all of them or `mode`
    #: any; then fire `delay` (seconds or timedelta) after that. With `after`, `delay` counts from
    #: the condition and no deadline is needed (`fire_at`, if given, is the earliest fire time).
    #: `on_parent_cancel`: cancel (default) or release when a parent can no longer meet it.
    after: Union[str, tuple, list, None] = None
    on: str = ""
    mode: str = ""
    on_parent_cancel: str = ""
    #: Escalation ladder (with ack_required): [(after seconds or timedelta, action), ...] from the
    #: fire; each step without an ack is an ESCALATED event; an ack stops the ladder.
    escalate: Optional[tuple] = None


@dataclass(frozen=True)
class BulkResult:
    """One timer's outcome in a bulk cancel / reschedule: `code` OK, NOT_FOUND,
    FAILED_PRECONDITION, INVALID_ARGUMENT or NO_MATCH (no longer carries the selector's labels)."""

    id: str
    code: str
    message: str = ""
    timer: Optional["Timer"] = None

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    def to_dict(self) -> dict:
        return {"id": self.id, "code": self.code, "message": self.message,
                "timer": None if self.timer is None else self.timer.to_dict()}


@dataclass(frozen=True)
class DeliveryAttempt:
    """One delivery attempt's outcome (a replicated fact): `status_code` 0 when no HTTP
    answer came; `error_class` empty on success; `next_attempt_at` the retry drawn then."""

    attempt: int
    fire_id: int
    at: datetime
    status_code: int
    latency_ms: int
    error_class: str
    response_body: bytes
    next_attempt_at: Optional[datetime] = None

    def to_dict(self) -> dict:
        return {"attempt": self.attempt, "fire_id": self.fire_id, "at": _iso(self.at),
                "status_code": self.status_code, "latency_ms": self.latency_ms, "error_class": self.error_class,
                **_blob("response_body", self.response_body), "next_attempt_at": _iso(self.next_attempt_at)}


@dataclass(frozen=True)
class Lease:
    """A queue timer leased to this worker until `expires_at`: ack, nack or extend it
    with `Client.ack_lease(lease)` etc. before then, or it becomes available again."""

    timer: "Timer"
    lease_id: str
    attempt: int
    expires_at: datetime

    def to_dict(self) -> dict:
        return {"lease_id": self.lease_id, "attempt": self.attempt, "expires_at": _iso(self.expires_at),
                "timer": self.timer.to_dict()}


@dataclass(frozen=True)
class Timer:
    """A timer as the server last reported it.

    Datetime fields are aware UTC; each has a ``*_ms`` property with the same
    instant in ms since the epoch. `fire_id` is the sequence number of the
    current fire's FIRED event (what `Client.ack` needs), None before the first
    fire. `created` is set only on results of `create`/`create_many`: False
    when an idempotency key matched an existing timer (including the SDK's own
    retry of a create whose first attempt did reach the cluster).
    """

    id: str
    tenant: str
    name: str
    fire_at: datetime
    state: TimerState
    revision: int
    payload: bytes = b""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    action: bytes = b""
    idempotency_key: Optional[str] = None
    ack_required: bool = False
    created_at: Optional[datetime] = None
    armed_at: Optional[datetime] = None
    fired_at: Optional[datetime] = None
    settled_at: Optional[datetime] = None
    attempts: int = 0
    fire_id: Optional[int] = None
    created: Optional[bool] = None
    webhook: Optional[str] = None                 # the delivery URL, when it has one
    queue: Optional[str] = None                   # the pull queue, when it has one
    endpoint: Optional[str] = None                # the managed endpoint it delivers to, when it has one
    max_attempts: int = 0
    delivery_attempts: tuple = ()                 # DeliveryAttempt, oldest first
    next_attempt_at: Optional[datetime] = None    # a delivery retry waiting
    every: Optional[timedelta] = None     # recurring timers: fire_at is the next occurrence
    until: Optional[datetime] = None
    max_count: int = 0
    cron: str = ""
    tz: str = ""
    #: Graph: parents (as created), condition, mode, delay after it, policy; the parents still
    #: awaited; the outcome (waiting, met, released, cancelled); the dependents (children);
    #: the escalation ladder ((timedelta, action), ...) and the steps escalated so far.
    after: tuple = ()
    on: str = ""
    mode: str = ""
    after_delay: Optional[timedelta] = None
    on_parent_cancel: str = ""
    waiting_on: tuple = ()
    dependency: str = ""
    children: tuple = ()
    escalate: tuple = ()
    escalated: int = 0
    paused: bool = False                  # recurring: paused (state SCHEDULED) until resume()
    catch_up: str = ""                    # recurring: "once", "all" or "skip"
    overlap: str = ""                     # recurring: "skip", "buffer_one" or "allow_all"
    triggered: int = 0                    # extra fires from trigger()
    skipped: int = 0                      # occurrences the catch-up policy skipped
    flex: Optional[timedelta] = None      # recurring: the flexible window (fire_at is the flexed deadline)
    pending_fire_ids: tuple = ()          # ack_required recurring: fires awaiting ack(), oldest first
    buffered: bool = False                # ack_required recurring: an occurrence waits for them

    @property
    def fire_at_ms(self) -> int:
        return datetime_to_ms(self.fire_at)

    @property
    def created_at_ms(self) -> Optional[int]:
        return None if self.created_at is None else datetime_to_ms(self.created_at)

    @property
    def armed_at_ms(self) -> Optional[int]:
        return None if self.armed_at is None else datetime_to_ms(self.armed_at)

    @property
    def fired_at_ms(self) -> Optional[int]:
        return None if self.fired_at is None else datetime_to_ms(self.fired_at)

    @property
    def settled_at_ms(self) -> Optional[int]:
        return None if self.settled_at is None else datetime_to_ms(self.settled_at)

    def to_dict(self) -> dict:
        """JSON-ready: times as RFC 3339 strings, bytes as UTF-8 text when they are text, else base64."""
        return {
            "id": self.id, "tenant": self.tenant, "name": self.name,
            "state": self.state.name.lower(), "revision": self.revision,
            "fire_at": _iso(self.fire_at), "created_at": _iso(self.created_at),
            "armed_at": _iso(self.armed_at), "fired_at": _iso(self.fired_at),
            "settled_at": _iso(self.settled_at), "attempts": self.attempts, "fire_id": self.fire_id,
            "ack_required": self.ack_required, "idempotency_key": self.idempotency_key,
            "labels": dict(self.labels), **_blob("payload", self.payload), **_blob("action", self.action),
            **({} if self.created is None else {"created": self.created}),
            **({} if self.webhook is None and self.queue is None else {
                "webhook": self.webhook, "queue": self.queue, "max_attempts": self.max_attempts,
                **({} if self.endpoint is None else {"endpoint": self.endpoint}),
                "delivery_attempts": [a.to_dict() for a in self.delivery_attempts],
                "next_attempt_at": _iso(self.next_attempt_at)}),
            **({} if self.every is None else {"every_ms": int(self.every / timedelta(milliseconds=1)),
                                              "until": _iso(self.until), "max_count": self.max_count}),
            **({} if not self.cron else {"cron": self.cron, "tz": self.tz, "until": _iso(self.until),
                                         "max_count": self.max_count}),
            **({} if not self.after else {
                "after": list(self.after), "on": self.on, "mode": self.mode, "on_parent_cancel": self.on_parent_cancel,
                "after_delay_ms": 0 if self.after_delay is None else int(self.after_delay / timedelta(milliseconds=1)),
                "waiting_on": list(self.waiting_on), "dependency": self.dependency}),
            **({} if not self.children else {"children": list(self.children)}),
            **({} if not self.escalate else {
                "escalate": [{"after_ms": int(a / timedelta(milliseconds=1)), **_blob("action", b)}
                             for a, b in self.escalate], "escalated": self.escalated}),
            **({} if self.every is None and not self.cron else {
                "paused": self.paused, "catch_up": self.catch_up, "overlap": self.overlap,
                "triggered": self.triggered, "skipped": self.skipped,
                "flex_ms": 0 if self.flex is None else int(self.flex / timedelta(milliseconds=1)),
                "pending_fire_ids": list(self.pending_fire_ids), "buffered": self.buffered}),
        }


@dataclass(frozen=True)
class Event:
    """One lifecycle transition. `sequence` is kernel-wide and gap-free in commit order.

    `at` is the command time of the transition; `revision`, `state` and
    `fire_at` are the timer's right after it; `fire_id` is set on fired/settled.
    """

    sequence: int
    kind: EventKind
    tenant: str
    timer_id: str
    at: datetime
    revision: int
    state: TimerState
    fire_at: datetime
    fire_id: Optional[int] = None
    #: ESCALATED events only: the ladder step that came due (1 = the first) and its action.
    escalation_step: int = 0
    action: bytes = b""

    @property
    def at_ms(self) -> int:
        return datetime_to_ms(self.at)

    @property
    def fire_at_ms(self) -> int:
        return datetime_to_ms(self.fire_at)

    def to_dict(self) -> dict:
        return {"sequence": self.sequence, "kind": self.kind.name.lower(), "tenant": self.tenant,
                "timer_id": self.timer_id, "at": _iso(self.at), "revision": self.revision,
                "state": self.state.name.lower(), "fire_at": _iso(self.fire_at), "fire_id": self.fire_id,
                **({} if not self.escalation_step else {"escalation_step": self.escalation_step,
                                                        "action": _action_text(self.action)})}


def _action_text(action: bytes) -> str:
    """An action for JSON: its text when it is UTF-8, else base64 prefixed "base64:"."""
    try:
        return action.decode("utf-8")
    except UnicodeDecodeError:
        import base64
        return "base64:" + base64.b64encode(action).decode("ascii")


@dataclass(frozen=True)
class Member:
    id: str
    raft_address: str
    grpc_address: str
    role: str               # leader | follower | candidate (as seen by the answering node)
    connected: bool
    match_index: int = 0    # set when the answering node leads
    lag: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ClusterStatus:
    node: str                       # the answering node's id
    cluster: str
    leader: Optional[str]           # None while no leader is known
    leader_grpc_address: Optional[str]
    term: int
    commit_index: int
    applied_index: int
    members: tuple[Member, ...]
    timers: Mapping[str, int]       # count by state name
    lagging: bool = False           # a watcher on the answering node is near the event retention floor
    #: The answering node's webhook endpoints (the leader's are the live ones) -> circuit
    #: breaker state: closed, open (paused after repeated failures) or half_open.
    webhook_circuits: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["members"] = [m.to_dict() for m in self.members]
        d["timers"] = dict(self.timers)
        d["webhook_circuits"] = dict(self.webhook_circuits)
        return d


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot a node keeps (snapshots are per node: each compacts its own log)."""
    last_index: int                 # the last Raft log index it includes
    last_term: int
    created_at: Optional[datetime]
    size: int                       # bytes of the container (what export writes)
    timers: int
    sha256: str                     # hex; the container's last 32 bytes, the SHA-256 of the rest
    node: str = ""                  # id of the node that holds it

    @property
    def created_at_ms(self) -> Optional[int]:
        return None if self.created_at is None else datetime_to_ms(self.created_at)

    def to_dict(self) -> dict:
        return {"last_index": self.last_index, "last_term": self.last_term, "created_at": _iso(self.created_at),
                "created_at_ms": self.created_at_ms, "size": self.size, "timers": self.timers,
                "sha256": self.sha256, "node": self.node}


def _iso(dt: Optional[datetime]) -> Optional[str]:
    if dt is None:
        return None
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _blob(name: str, data: bytes) -> dict:
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        import base64

        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


# ---------------------------------------------------------------- errors


class MinootsError(Exception):
    """Base of every error the SDK raises on purpose.

    `code` is the gRPC status code name ("NOT_FOUND", ...); `message` the
    server's (or the SDK's) explanation.
    """

    code: str = "UNKNOWN"

    def __init__(self, message: str = "", *, code: Optional[str] = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message or self.code


class InvalidArgument(MinootsError, ValueError):
    """The request breaks a rule (server- or SDK-side validation)."""

    code = "INVALID_ARGUMENT"


class NotFound(MinootsError, LookupError):
    """No such timer in that tenant."""

    code = "NOT_FOUND"


class AlreadyExists(MinootsError):
    """The id is taken in that tenant (and no idempotency key matched)."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(MinootsError):
    """The timer exists but its state does not allow the operation."""

    code = "FAILED_PRECONDITION"


class OutOfRange(MinootsError):
    """E.g. watch(from_sequence=N) where N is older than the nodes' event retention."""

    code = "OUT_OF_RANGE"


class Unavailable(MinootsError):
    """No node could serve the request within the deadline.

    `ambiguous` is True when the request may have been applied anyway (the
    connection broke after it was sent); the SDK only raises that for
    operations it cannot safely retry (`Client.extend`).
    """

    code = "UNAVAILABLE"

    def __init__(self, message: str = "", *, code: Optional[str] = None, ambiguous: bool = False) -> None:
        super().__init__(message, code=code)
        self.ambiguous = ambiguous


class DeadlineExceeded(MinootsError, TimeoutError):
    """The call's total deadline passed before it completed."""

    code = "DEADLINE_EXCEEDED"


class Unauthenticated(MinootsError):
    """No token, or one the cluster does not accept (unknown, revoked, expired)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(MinootsError):
    """The token's role or tenants do not allow this call."""

    code = "PERMISSION_DENIED"


class ResourceExhausted(MinootsError):
    """A limit refused the call and nothing was done: the tenant's quota (outstanding
    timers, payload bytes), its create rate, or one of the node's caps (concurrent calls,
    watchers, the create queue). The message names the limit and the numbers."""

    code = "RESOURCE_EXHAUSTED"


ERRORS_BY_CODE: dict[str, type[MinootsError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition,
                              OutOfRange, Unavailable, DeadlineExceeded, Unauthenticated, PermissionDenied,
                              ResourceExhausted)
}
