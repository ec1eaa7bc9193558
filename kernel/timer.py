"""Value types of the timer kernel: lifecycle enums, the create spec, the
read-only Timer view, events and command results.

The kernel stores timers column-wise (see state.py); these objects are built on
demand for callers and never held by the kernel, so they cost nothing per timer
at rest. Enum values are written into snapshots: never renumber them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple, Optional

from .delivery import Delivery

__all__ = [
    "DEFAULT_TENANT",
    "TimerState",
    "EventKind",
    "TimerSpec",
    "TimerRef",
    "Timer",
    "Event",
    "CreateItem",
    "CreateResult",
    "CancelResult",
    "RescheduleResult",
    "TickResult",
    "AckResult",
    "DeliveryResult",
    "Lease",
    "LeaseResult",
    "DeleteResult",
    "EMPTY_LABELS",
]

DEFAULT_TENANT = "default"

#: The one shared empty labels mapping handed out by views without labels.
EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


class TimerState(IntEnum):
    """Lifecycle state; values are persisted in snapshots."""

    SCHEDULED = 1      # accepted, waiting for its start condition
    ARMED = 2          # in the wheel, waiting for fire_at
    FIRED = 3          # deadline reached, awaiting acknowledgement
    SETTLED = 4        # acknowledged, or nothing to acknowledge (terminal)
    CANCELLED = 5      # cancelled before settling (terminal)
    DEAD_LETTERED = 6  # delivery gave up (terminal; RedriveTimer re-delivers it)
    DELIVERING = 7     # fired, its action (a webhook) is being delivered: attempt due or retry waiting

    @property
    def terminal(self) -> bool:
        """True for states no command but a redrive can leave."""
        return TimerState.SETTLED <= self <= TimerState.DEAD_LETTERED


class EventKind(IntEnum):
    """Kind of a lifecycle event; values are part of the event log format."""

    CREATED = 1
    ARMED = 2
    FIRED = 3
    SETTLED = 4
    RESCHEDULED = 5
    CANCELLED = 6
    DELIVERY_DUE = 7        # a delivery attempt is due: the leader dispatches it
    DELIVERY_ATTEMPTED = 8  # an attempt failed and a retry waits in the wheel (GetTimer shows the outcome)
    DEAD_LETTERED = 9       # the last attempt failed: delivery gave up
    REDRIVEN = 10           # a dead-lettered timer got a fresh attempt budget
    LEASED = 11             # a worker leased a queue timer (attempt n)
    LEASE_EXTENDED = 12     # the worker extended its lease (a heartbeat)
    # 18, 19: recurring timers' controls (kernel/recurrence.py); a trigger is a FIRED event.
    PAUSED = 18             # a recurring timer was paused: no occurrence fires until it is resumed
    RESUMED = 19            # a paused timer was armed again at its next occurrence
    # 20+: retention (7..19 are left to delivery and other lifecycle kinds).
    PURGED = 20        # a terminal timer left the table after its tenant's retention
    DELETED = 21       # a terminal timer was removed by DeleteTimer
    # 40+: timer graphs (kernel/graph.py).
    ESCALATED = 40     # an escalation step of an unacknowledged fire came due (fire_at: the step's deadline)


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """What a client asks to create. Validated by State.create, not here, so a
    batch reports the index of the bad spec (`specs[3].fire_at`)."""

    id: str
    fire_at: int
    tenant: str = DEFAULT_TENANT
    name: str = ""
    payload: bytes = b""
    labels: Optional[Mapping[str, str]] = None
    action: bytes = b""
    idempotency_key: Optional[str] = None
    ack_required: bool = False
    every_ms: int = 0                  # > 0: recurring, first at fire_at (schedule.py)
    until: Optional[int] = None        # last time an occurrence may be due (with every_ms)
    max_count: int = 0                 # occurrences in all, 0: unbounded (with every_ms or cron)
    cron: str = ""                     # recurring at these times (5 or 6 fields); fire_at is then the start
    tz: str = ""                       # the cron's IANA time zone (from the pinned tzdata package)
    # Keyword only in practice (records build it positionally up to tz: raft/commands.py).
    delivery: Optional[Delivery] = None     # a webhook to call when it fires (kernel/delivery.py)
    graph: Any = None                  # a kernel.graph.GraphSpec: dependencies, escalation ladder
    catch_up: str = ""                 # recurring: "once" (default), "all" or "skip" (kernel/recurrence.py)
    overlap: str = ""                  # recurring: "skip" (default), "buffer_one" or "allow_all"
    flex_ms: int = 0                   # recurring: fire each occurrence within [t, t + flex_ms]
    flex_seed: int = 0                 # the accepting node's draw the window offsets derive from


class TimerRef(NamedTuple):
    """(tenant, id): how cancel names a timer. Any 2-tuple is accepted too."""

    tenant: str
    id: str


@dataclass(frozen=True, slots=True)
class Timer:
    """Read-only view of one timer at the moment it was built.

    Time fields are ms since the Unix epoch, None when the transition has not
    happened. `settled_at` is the time the timer reached a terminal state
    (settled, cancelled or dead-lettered); `state` tells which. `fire_id` is the
    seq of the current fire's `fired` event, None before the first fire. A
    recurring timer (every_ms > 0) shows its next occurrence as fire_at and its
    occurrences so far as attempts.
    """

    tenant: str
    id: str
    name: str
    fire_at: int
    payload: bytes
    labels: Mapping[str, str] = field(hash=False)
    action: bytes
    idempotency_key: Optional[str]
    ack_required: bool
    state: TimerState
    created_at: int
    armed_at: Optional[int]
    fired_at: Optional[int]
    settled_at: Optional[int]
    attempts: int
    fire_id: Optional[int]
    revision: int
    delivery: Optional[Delivery] = None
    #: Delivery attempts so far (kernel/delivery.py Attempt), oldest first.
    delivery_attempts: tuple = ()
    #: When the next delivery attempt is due (a retry waiting in the wheel), else None.
    next_attempt_at: Optional[int] = None
    #: Attempts made in the current budget (a queue timer: leases handed out, the live one included).
    delivery_attempt: int = 0
    every_ms: int = 0
    until: Optional[int] = None
    max_count: int = 0
    cron: str = ""
    tz: str = ""
    #: Dependencies (kernel/graph.py): parent ids, condition, mode, delay, policy, the parents
    #: still awaited and the outcome (waiting, met, released, cancelled); children: its dependents.
    after: tuple = ()
    on: str = ""
    mode: str = ""
    delay_ms: int = 0
    on_parent_cancel: str = ""
    waiting_on: tuple = ()
    dependency: str = ""
    children: tuple = ()
    #: Escalation ladder: ((after_ms, action), ...) and how many steps have fired.
    escalate: tuple = ()
    escalated: int = 0
    #: Recurring timers (kernel/recurrence.py): paused (state SCHEDULED meanwhile), the
    #: policies, extra fires from triggers and occurrences the catch-up policy skipped.
    paused: bool = False
    catch_up: str = ""
    overlap: str = ""
    triggered: int = 0
    skipped: int = 0
    flex_ms: int = 0
    #: ack_required recurring timers: the fire ids awaiting an ack, oldest first, and whether
    #: an occurrence waits for them (overlap buffer_one).
    pending_fires: tuple = ()
    buffered: bool = False
    #: An escalation timer "<id>@<escalated seq>" (kernel/occurrences.py): the ladder step it delivers.
    escalation_step: int = 0


class Event(NamedTuple):
    """One lifecycle transition. `seq` is kernel-wide: 1, 2, 3, ... in apply order.

    `at_ms` is the command time, `revision` and `state` are the timer's after the
    transition, `fire_at` its deadline then; `fire_id` is set on fired/settled;
    `step` and `action` only on escalated events (kernel/graph.py).
    A tuple rather than a dataclass because a busy tick emits thousands.
    """

    seq: int
    kind: EventKind
    tenant: str
    timer_id: str
    at_ms: int
    revision: int
    state: TimerState
    fire_at: int
    fire_id: Optional[int] = None
    #: ESCALATED events: the step (1 = the ladder's first) and that step's action bytes.
    step: int = 0
    action: bytes = b""


class CreateItem:
    """Outcome for one spec: the timer (as this command left it) and whether this
    command created it (False when an idempotency key matched an existing timer).

    Unpacks and compares like a (timer, created) pair. `timer` may be given as a
    zero-argument function and is built on first use: every replica applies each
    create, but only the node that answers the client reads the items, so the
    others never pay for building thousands of Timer objects per command.
    """

    __slots__ = ("_timer", "created")

    def __init__(self, timer: "Timer | Callable[[], Timer]", created: bool) -> None:
        self._timer = timer
        self.created = created

    @property
    def timer(self) -> Timer:
        t = self._timer
        if not isinstance(t, Timer):
            t = self._timer = t()
        return t

    def __iter__(self):
        return iter((self.timer, self.created))

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, CreateItem):
            return NotImplemented
        return self.created == other.created and self.timer == other.timer

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CreateItem(timer={self.timer!r}, created={self.created!r})"


@dataclass(frozen=True, slots=True)
class CreateResult:
    """Result of State.create: one item per spec, in spec order."""

    events: tuple[Event, ...]
    items: tuple[CreateItem, ...]

    @property
    def timers(self) -> tuple[Timer, ...]:
        return tuple(item.timer for item in self.items)


@dataclass(frozen=True, slots=True)
class CancelResult:
    """Result of State.cancel: the cancelled timers in ref order."""

    events: tuple[Event, ...]
    timers: tuple[Timer, ...]


@dataclass(frozen=True, slots=True)
class RescheduleResult:
    """Result of State.reschedule."""

    events: tuple[Event, ...]
    timer: Timer


@dataclass(frozen=True, slots=True)
class TickResult:
    """Result of State.tick. `now_ms` is the effective tick time (never below
    the previous tick); `fired` lists the timers that fired, in firing order,
    as they stand after the tick (settled already unless ack_required; a timer
    whose tenant's retention is 0 is no longer in the table)."""

    events: tuple[Event, ...]
    now_ms: int
    fired: tuple[Timer, ...]
    purged: int = 0     # terminal timers this tick removed (their retention ended)


@dataclass(frozen=True, slots=True)
class AckResult:
    """Result of State.ack."""

    events: tuple[Event, ...]
    timer: Timer


@dataclass(frozen=True, slots=True)

class DeliveryResult:
    """Result of State.delivery_attempt and State.redrive."""

    events: tuple[Event, ...]
    timer: Timer


class Lease(NamedTuple):
    """A leased queue timer: ack or nack it with `lease_id` before `expires_at` (ms)."""

    timer: Timer
    lease_id: str
    attempt: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class LeaseResult:
    """Result of State.lease and State.extend_lease."""

    events: tuple[Event, ...]
    leases: tuple[Lease, ...]


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """Result of State.delete: the deleted timers (as they were) in ref order."""

    events: tuple[Event, ...]
    timers: tuple[Timer, ...]
