"""The replicated log's schema: every command as a typed, versioned record, and its one codec.

A log entry or a snapshot on disk is a promise to every later build, so a
command is never a loose tuple. Each record class names its `kind` (the string
listeners and metrics use), a wire `KIND` number and a `VERSION`. On the wire a
command is::

    b"\\x01"                      the codec's format byte
    msgpack([KIND, VERSION, field, field, ...])

Changing a record's fields means a new VERSION (and a new class or a decode
branch for it); an old version is never read with a new meaning. A build that
meets a kind or version it does not know refuses it with `UnknownCommand`, as a
result, identically on every replica: the log keeps moving and every replica
stays equal.

Entries written before this schema existed (format "v0": PySyncObj pickled the
command tuple itself) are read by `from_legacy`, which maps each old tuple to
today's record; `tests/data/log_v0/` holds such a log and snapshot.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import ClassVar, Optional, Union

import msgpack

from minoots.kernel import KernelError, TimerSpec
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.graph import GraphSpec

from . import plain_record as _plain

__all__ = [
    "FORMAT", "Command", "CreateTimers", "Tick", "CancelTimers", "RescheduleTimer", "AckTimer",
    "SetMemberName", "SetMemberGrpc", "PutToken", "RevokeToken", "SetQuota", "ClearQuota",
    "CreateSubscription", "CommitSubscription", "DeleteSubscription", "MarkSubscriptionOverrun", "SetRetention",
    "DeleteTimers", "CreateTimersV2", "create_timers", "CreateRecurringTimers", "PauseTimer", "ResumeTimer",
    "TriggerTimer",
    "CreateDeliveryTimers", "DeliveryAttempt", "RedriveTimer", "PutWebhookSecret", "CreateDeliveryTimersV2",
    "LeaseTimers", "AckLease", "NackLease", "ExtendLease", "DeliveryAttempts",
    "CreateGraphTimers", "BulkCancelTimers", "BulkRescheduleTimers", "CreateEndpoint", "RotateEndpointSecret",
    "DeleteEndpoint", "SetDeliveryDefaults", "CreateDeliveryTimersV3", "ReplayDeadLetters", "PurgeDeadLetters",
    "CreateFullTimers", "CreatePlainTimers", "RECORDS", "encode",
    "decode", "from_legacy", "InvalidCommand", "UnknownCommand", "MAX_COMMAND_BYTES",
]

FORMAT = b"\x01"
#: Propose plain batches as CreatePlainTimers (record 48). A node of an older build cannot
#: apply it: while a cluster is upgraded from such a build, run the new nodes with
#: MINOOTS_PLAIN_CREATES=0 until every node is upgraded (README "Rolling upgrades").
PLAIN_CREATES = os.environ.get("MINOOTS_PLAIN_CREATES", "1") != "0"
# A command is one Raft entry; the API bounds a create far below this (api/batcher.py).
MAX_COMMAND_BYTES = 64 << 20


class InvalidCommand(KernelError):
    """The entry's bytes are not a well-formed command of a known kind and version."""

    code = "INVALID_ARGUMENT"


class UnknownCommand(KernelError):
    """A command kind or version this build does not know (a newer node proposed it)."""

    code = "FAILED_PRECONDITION"


def record(kind: str, *, number: int, version: int):
    """Declare a command record: an immutable dataclass with its name, wire number and version."""
    def wrap(cls):
        cls = dataclass(frozen=True, slots=True)(cls)
        cls.kind, cls.KIND, cls.VERSION = kind, number, version
        return cls
    return wrap


class _Record:
    """Flat records: their fields, in declaration order, are the wire fields."""

    __slots__ = ()
    kind: ClassVar[str]        # what listeners and metrics call it ("create", "tick", ...)
    KIND: ClassVar[int]        # its number on the wire
    VERSION: ClassVar[int]     # its layout version on the wire

    def fields(self) -> list:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    @classmethod
    def from_fields(cls, *values):
        return cls(*values)


def _spec_fields(s: TimerSpec) -> list:
    labels = dict(s.labels) if s.labels else None
    return [s.id, s.fire_at, s.tenant, s.name, s.payload, labels, s.action, s.idempotency_key, s.ack_required]


def _spec(fields) -> TimerSpec:
    if type(fields) is not tuple or len(fields) != 9:
        raise InvalidCommand("create: a timer spec must be an array of 9 fields")
    return TimerSpec(*fields)


@record("create", number=1, version=1)
class CreateTimers(_Record):
    """Create groups of timers at `now_ms`; each group applies or fails as a whole.

    `traceparents` (one W3C traceparent or None per group) is for telemetry only
    and never reaches the kernel."""

    now_ms: int
    groups: tuple            # tuple[tuple[TimerSpec, ...], ...]
    traceparents: Optional[tuple] = None

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields(s) for s in g] for g in self.groups],
                list(self.traceparents) if self.traceparents is not None else None]

    @classmethod
    def from_fields(cls, now_ms, groups, traceparents=None) -> "CreateTimers":
        if type(groups) is not tuple:
            raise InvalidCommand("create: groups must be an array")
        out = []
        for g in groups:
            if type(g) is not tuple:
                raise InvalidCommand("create: each group must be an array")
            out.append(tuple(_spec(f) for f in g))
        if traceparents is not None and (type(traceparents) is not tuple or len(traceparents) != len(out)):
            raise InvalidCommand("create: traceparents must be an array with one entry per group")
        return cls(now_ms, tuple(out), traceparents)


def _spec_fields_v2(s: TimerSpec) -> list:
    return _spec_fields(s) + [s.every_ms, s.until, s.max_count, s.cron, s.tz]


def _spec_v2(fields) -> TimerSpec:
    if type(fields) is not tuple or len(fields) != 14:
        raise InvalidCommand("create v2: a timer spec must be an array of 14 fields")
    return TimerSpec(*fields)


@record("create", number=1, version=2)
class CreateTimersV2(_Record):
    """CreateTimers whose specs also carry a recurrence (every_ms, until, max_count, cron,
    tz: kernel/schedule.py). Proposed only when some spec recurs (`create_timers`), so a
    cluster that never uses recurrence writes exactly the version-1 bytes."""

    now_ms: int
    groups: tuple
    traceparents: Optional[tuple] = None

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields_v2(s) for s in g] for g in self.groups],
                list(self.traceparents) if self.traceparents is not None else None]

    @classmethod
    def from_fields(cls, now_ms, groups, traceparents=None) -> "CreateTimersV2":
        if type(groups) is not tuple or any(type(g) is not tuple for g in groups):
            raise InvalidCommand("create: groups must be an array of arrays")
        out = tuple(tuple(_spec_v2(f) for f in g) for g in groups)
        if traceparents is not None and (type(traceparents) is not tuple or len(traceparents) != len(out)):
            raise InvalidCommand("create: traceparents must be an array with one entry per group")
        return cls(now_ms, out, traceparents)


def create_timers(now_ms: int, groups: tuple, traceparents: Optional[tuple] = None):
    """The create command for these groups: CreatePlainTimers when every group is plain
    (raft/plain_record.py), else version 1 unless some spec recurs (version 2), or has a
    catch-up or overlap policy (CreateRecurringTimers)."""
    if traceparents is None and PLAIN_CREATES:
        packed = _plain.pack_groups(groups)
        if packed is not None:
            return CreatePlainTimers(now_ms, packed)
    if any(s.catch_up or s.overlap or s.flex_ms for g in groups for s in g):
        return CreateRecurringTimers(now_ms, groups, traceparents)
    if any(s.every_ms or s.until is not None or s.max_count or s.cron or s.tz for g in groups for s in g):
        return CreateTimersV2(now_ms, groups, traceparents)
    return CreateTimers(now_ms, groups, traceparents)


@record("tick", number=2, version=1)
class Tick(_Record):
    """Time advanced to `now_ms` (proposed by the leader's ticker)."""

    now_ms: int


@record("cancel", number=3, version=1)
class CancelTimers(_Record):
    """Cancel timers named by (tenant, id); all or none."""

    now_ms: int
    refs: tuple              # tuple[tuple[tenant, id], ...]

    def fields(self) -> list:
        return [self.now_ms, [list(r) for r in self.refs]]

    @classmethod
    def from_fields(cls, now_ms, refs) -> "CancelTimers":
        if type(refs) is not tuple or any(type(r) is not tuple or len(r) != 2 for r in refs):
            raise InvalidCommand("cancel: refs must be an array of [tenant, id] pairs")
        return cls(now_ms, refs)


@record("reschedule", number=4, version=1)
class RescheduleTimer(_Record):
    """Move one timer's deadline to `fire_at`, or by `extend_by` ms (exactly one is set)."""

    now_ms: int
    tenant: str
    id: str
    fire_at: Optional[int] = None
    extend_by: Optional[int] = None


@record("ack", number=5, version=1)
class AckTimer(_Record):
    """Acknowledge fire `fire_id` of one timer."""

    now_ms: int
    tenant: str
    id: str
    fire_id: int


@dataclass(frozen=True, slots=True)
class _MemberAddress(_Record):
    node_id: str
    address: Optional[str]


@record("name", number=6, version=1)
class SetMemberName(_MemberAddress):
    """Node id -> Raft address (None removes the member's names)."""


@record("grpc", number=7, version=1)
class SetMemberGrpc(_MemberAddress):
    """A member's gRPC address (None forgets it); ignored for a non-member."""


@record("put_token", number=8, version=1)
class PutToken(_Record):
    """Add an API token (raft/tokens.py); the token itself is never in the log, only its hash."""

    token_id: str
    sha256: str
    name: str
    role: str
    tenants: tuple
    created_at_ms: int
    expires_at_ms: int


@record("revoke_token", number=9, version=1)
class RevokeToken(_Record):
    """Remove an API token; calls with it fail from then on."""

    token_id: str


@record("set_quota", number=10, version=1)
class SetQuota(_Record):
    """Set a tenant's quota (raft/quotas.py; tenant "*" is the default of tenants without
    one). 0 means unlimited; a None field keeps the tenant's current value."""

    tenant: str
    max_timers: Optional[int] = None
    max_payload_bytes: Optional[int] = None
    create_rate: Optional[int] = None
    create_burst: Optional[int] = None


@record("clear_quota", number=11, version=1)
class ClearQuota(_Record):
    """Remove a tenant's own quota: the default ("*") applies to it again."""

    tenant: str


@record("create_subscription", number=12, version=1)
class CreateSubscription(_Record):
    """A durable subscription (raft/subscriptions.py) starting at event `start`."""

    now_ms: int
    tenant: str
    name: str
    all_tenants: bool
    kinds: tuple            # event kind numbers, sorted; empty: every kind
    start: int


@record("commit_subscription", number=13, version=1)
class CommitSubscription(_Record):
    """Move a subscription's cursor forward: its subscriber processed every event below `cursor`."""

    tenant: str
    name: str
    cursor: int


@record("delete_subscription", number=14, version=1)
class DeleteSubscription(_Record):
    tenant: str
    name: str


@record("subscription_overrun", number=15, version=1)
class MarkSubscriptionOverrun(_Record):
    """Events expected..resume-1 were trimmed before the subscription committed them (the
    hard events budget, seen by the proposer): count them as lost, go on from `resume`."""

    tenant: str
    name: str
    expected: int
    resume: int


# ---- retention and schedules: numbers 16-23 ----------------------------------------


@record("set_retention", number=16, version=1)
class SetRetention(_Record):
    """Set how long a tenant's terminal timers stay (ms, 0: at once; raft/retention.py;
    tenant "*" is the default); None clears the tenant's own, so the default applies."""

    tenant: str
    retention_ms: Optional[int] = None


@record("delete", number=17, version=1)
class DeleteTimers(_Record):
    """Remove terminal timers named by (tenant, id) now; all or none."""

    now_ms: int
    refs: tuple              # tuple[tuple[tenant, id], ...]

    def fields(self) -> list:
        return [self.now_ms, [list(r) for r in self.refs]]

    @classmethod
    def from_fields(cls, now_ms, refs) -> "DeleteTimers":
        if type(refs) is not tuple or any(type(r) is not tuple or len(r) != 2 for r in refs):
            raise InvalidCommand("delete: refs must be an array of [tenant, id] pairs")
        return cls(now_ms, refs)
# ---- recurring timers' controls and policies: numbers 18-23 (kernel/recurrence.py) ---------


def _spec_fields_recurring(s: TimerSpec) -> list:
    return _spec_fields_v2(s) + [s.catch_up, s.overlap, s.flex_ms, s.flex_seed]


@record("create", number=18, version=1)
class CreateRecurringTimers(_Record):
    """CreateTimersV2 whose specs also carry a catch-up and an overlap policy (two strings,
    "" for the default), a flexible window (ms, 0: none) and the seed its offsets derive
    from (drawn by the node that accepted the create: kernel/recurrence.py): 18 fields. Its own number, so that create v1/v2 keep their
    meaning and no other create version can collide with it. Proposed only when some spec
    has a policy (`create_timers`)."""

    now_ms: int
    groups: tuple
    traceparents: Optional[tuple] = None

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields_recurring(s) for s in g] for g in self.groups],
                list(self.traceparents) if self.traceparents is not None else None]

    @classmethod
    def from_fields(cls, now_ms, groups, traceparents=None) -> "CreateRecurringTimers":
        if type(groups) is not tuple or any(type(g) is not tuple for g in groups):
            raise InvalidCommand("create_recurring: groups must be an array of arrays")
        out = []
        for g in groups:
            specs = []
            for f in g:
                if type(f) is not tuple or len(f) != 18:
                    raise InvalidCommand("create_recurring: a timer spec must be an array of 18 fields")
                specs.append(TimerSpec(*f[:14], catch_up=f[14], overlap=f[15], flex_ms=f[16], flex_seed=f[17]))
            out.append(tuple(specs))
        if traceparents is not None and (type(traceparents) is not tuple or len(traceparents) != len(out)):
            raise InvalidCommand("create: traceparents must be an array with one entry per group")
        return cls(now_ms, tuple(out), traceparents)


@record("pause", number=19, version=1)
class PauseTimer(_Record):
    """Pause a recurring timer: no occurrence fires until it is resumed."""

    now_ms: int
    tenant: str
    id: str


@record("resume", number=20, version=1)
class ResumeTimer(_Record):
    """Resume a paused timer at its next occurrence after `now_ms` (the leader's time)."""

    now_ms: int
    tenant: str
    id: str


@record("trigger", number=21, version=1)
class TriggerTimer(_Record):
    """Fire one extra occurrence of a recurring timer at `now_ms`; the schedule is unchanged."""

    now_ms: int
    tenant: str
    id: str


# ---- delivery (record numbers 24-39) -------------------------------------------------------


def _delivery_fields(d: Delivery) -> list:
    return [d.webhook.url, [list(h) for h in d.webhook.headers], list(d.policy)]


def _delivery(fields) -> Delivery:
    if type(fields) is not tuple or len(fields) != 3 or type(fields[1]) is not tuple \
            or type(fields[2]) is not tuple or len(fields[2]) != len(DeliveryPolicy._fields):
        raise InvalidCommand("create_delivery: a delivery must be [url, headers, policy]")
    return Delivery(Webhook(fields[0], fields[1]), DeliveryPolicy(*fields[2]))


@record("create_delivery", number=24, version=1)
class CreateDeliveryTimers(_Record):
    """Create groups of timers of which some have a delivery (a webhook): CreateTimers
    with a tenth spec field, the delivery ([url, [[name, value]...], policy fields]) or None.
    Kept apart from CreateTimers so that its v1 layout never changes meaning."""

    now_ms: int
    groups: tuple            # tuple[tuple[TimerSpec, ...], ...]

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields(s) + [_delivery_fields(s.delivery) if s.delivery else None]
                               for s in g] for g in self.groups]]

    @classmethod
    def from_fields(cls, now_ms, groups) -> "CreateDeliveryTimers":
        if type(groups) is not tuple or any(type(g) is not tuple for g in groups):
            raise InvalidCommand("create_delivery: groups must be an array of arrays")
        out = []
        for g in groups:
            specs = []
            for f in g:
                if type(f) is not tuple or len(f) != 10:
                    raise InvalidCommand("create_delivery: a timer spec must be an array of 10 fields")
                specs.append(TimerSpec(*f[:9], delivery=None if f[9] is None else _delivery(f[9])))
            out.append(tuple(specs))
        return cls(now_ms, tuple(out))


def _delivery_fields_v2(d: Delivery) -> list:
    wh = d.webhook
    return [wh.url if wh else None, [list(h) for h in wh.headers] if wh else [], list(d.policy), d.queue]


def _delivery_v2(fields) -> Delivery:
    if type(fields) is not tuple or len(fields) != 4 or type(fields[1]) is not tuple \
            or type(fields[2]) is not tuple or len(fields[2]) != len(DeliveryPolicy._fields):
        raise InvalidCommand("create_delivery v2: a delivery must be [url, headers, policy, queue]")
    url, headers, policy, queue = fields
    return Delivery(None if url is None else Webhook(url, headers), DeliveryPolicy(*policy), queue)


@record("create_delivery", number=24, version=2)
class CreateDeliveryTimersV2(_Record):
    """Version 2 of create_delivery: the delivery is [url or None, headers, policy, queue or
    None], so a timer may be delivered through a pull queue instead of a webhook."""

    now_ms: int
    groups: tuple

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields(s) + [_delivery_fields_v2(s.delivery) if s.delivery else None]
                               for s in g] for g in self.groups]]

    @classmethod
    def from_fields(cls, now_ms, groups) -> "CreateDeliveryTimersV2":
        if type(groups) is not tuple or any(type(g) is not tuple for g in groups):
            raise InvalidCommand("create_delivery: groups must be an array of arrays")
        out = []
        for g in groups:
            specs = []
            for f in g:
                if type(f) is not tuple or len(f) != 10:
                    raise InvalidCommand("create_delivery: a timer spec must be an array of 10 fields")
                specs.append(TimerSpec(*f[:9], delivery=None if f[9] is None else _delivery_v2(f[9])))
            out.append(tuple(specs))
        return cls(now_ms, tuple(out))


@record("lease", number=28, version=1)
class LeaseTimers(_Record):
    """Lease up to `max_timers` available timers of a tenant's queue for `visibility_ms`."""

    now_ms: int
    tenant: str
    queue: str
    max_timers: int
    visibility_ms: int


@record("ack_lease", number=29, version=1)
class AckLease(_Record):
    """The worker holding `lease_id` finished: the timer settles."""

    now_ms: int
    tenant: str
    id: str
    lease_id: str


@record("nack_lease", number=30, version=1)
class NackLease(_Record):
    """The worker gives the timer back; `next_at` is the leader's retry draw (None: last attempt)."""

    now_ms: int
    tenant: str
    id: str
    lease_id: str
    next_at: Optional[int] = None


@record("extend_lease", number=31, version=1)
class ExtendLease(_Record):
    """Keep a lease: it expires `visibility_ms` after `now_ms`."""

    now_ms: int
    tenant: str
    id: str
    lease_id: str
    visibility_ms: int


@record("delivery_attempt", number=25, version=1)
class DeliveryAttempt(_Record):
    """The outcome of one delivery attempt, as the leader saw it; `next_at` is the retry
    time the leader drew (exponential backoff, full jitter), None on success or last attempt."""

    now_ms: int
    tenant: str
    id: str
    fire_id: int
    attempt: int
    status: int
    latency_ms: int
    error: str
    body: bytes
    next_at: Optional[int] = None


@record("delivery_attempts", number=32, version=1)
class DeliveryAttempts(_Record):
    """Many attempt outcomes in one entry (the leader's group commit); each applies or is
    refused on its own, in order, exactly as that many DeliveryAttempt entries would."""

    outcomes: tuple          # tuple[DeliveryAttempt, ...]

    def fields(self) -> list:
        return [[o.fields() for o in self.outcomes]]

    @classmethod
    def from_fields(cls, outcomes) -> "DeliveryAttempts":
        if type(outcomes) is not tuple or any(type(o) is not tuple for o in outcomes):
            raise InvalidCommand("delivery_attempts: outcomes must be an array of arrays")
        try:
            return cls(tuple(DeliveryAttempt(*o) for o in outcomes))
        except TypeError:
            raise InvalidCommand("delivery_attempts: an outcome has the wrong number of fields") from None


@record("redrive", number=26, version=1)
class RedriveTimer(_Record):
    """Deliver a dead-lettered timer again with a fresh attempt budget."""

    now_ms: int
    tenant: str
    id: str


@record("put_webhook_secret", number=27, version=1)
class PutWebhookSecret(_Record):
    """A tenant's webhook signing secret (raft/webhook_secrets.py), replacing any earlier one."""

    tenant: str
    secret: str
    created_at_ms: int


# ---- timer graphs and bulk operations (record numbers 40-47) -----------------------------


def _graph_fields(g: Optional[GraphSpec]) -> Optional[list]:
    if g is None:
        return None
    return [list(g.after), g.on, g.mode, g.delay_ms, g.on_parent_cancel, [[a, b] for a, b in g.escalate]]


def _graph(fields) -> Optional[GraphSpec]:
    if fields is None:
        return None
    if type(fields) is not tuple or len(fields) != 6 or type(fields[0]) is not tuple or type(fields[5]) is not tuple:
        raise InvalidCommand("create_graph: a graph must be [after, on, mode, delay_ms, on_parent_cancel, escalate]")
    after, on, mode, delay, policy, steps = fields
    if any(type(st) is not tuple or len(st) != 2 for st in steps):
        raise InvalidCommand("create_graph: an escalation step must be [after_ms, action]")
    return GraphSpec(after, on, mode, delay, policy, steps)


@record("create_graph", number=40, version=1)
class CreateGraphTimers(_Record):
    """Create groups of timers of which some have dependencies or an escalation ladder
    (kernel/graph.py). A spec is the 14 fields of create v2 (recurrence included), the
    delivery as create_delivery v2 writes it (or None), then the graph ([after ids, on, mode,
    delay_ms, on_parent_cancel, [[after_ms, action], ...]] or None). Each group applies or
    fails as a whole. Proposed only for creates that use a graph, so other creates keep
    their records."""

    now_ms: int
    groups: tuple

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields_v2(s) + [_delivery_fields_v2(s.delivery) if s.delivery else None,
                                                     _graph_fields(s.graph)] for s in g] for g in self.groups]]

    @classmethod
    def from_fields(cls, now_ms, groups) -> "CreateGraphTimers":
        if type(groups) is not tuple or any(type(g) is not tuple for g in groups):
            raise InvalidCommand("create_graph: groups must be an array of arrays")
        out = []
        for g in groups:
            specs = []
            for f in g:
                if type(f) is not tuple or len(f) != 16:
                    raise InvalidCommand("create_graph: a timer spec must be an array of 16 fields")
                specs.append(TimerSpec(*f[:14], delivery=None if f[14] is None else _delivery_v2(f[14]),
                                       graph=_graph(f[15])))
            out.append(tuple(specs))
        return cls(now_ms, tuple(out))


def _check_ids(kind: str, ids, labels) -> None:
    if type(ids) is not tuple or any(type(i) is not str for i in ids):
        raise InvalidCommand(f"{kind}: ids must be an array of strings")
    if type(labels) is not tuple or any(type(p) is not tuple or len(p) != 2 for p in labels):
        raise InvalidCommand(f"{kind}: labels must be an array of [key, value] pairs")


@record("bulk_cancel", number=41, version=1)
class BulkCancelTimers(_Record):
    """Cancel the timers `ids` of `tenant` that (still) carry every label of `labels`, each
    on its own, with a result per timer (kernel/bulk.py). Not record 3 (CancelTimers), which
    is all-or-nothing over (tenant, id) pairs."""

    now_ms: int
    tenant: str
    ids: tuple
    labels: tuple = ()       # ((key, value), ...) sorted by key; () matches every timer

    def fields(self) -> list:
        return [self.now_ms, self.tenant, list(self.ids), [list(p) for p in self.labels]]

    @classmethod
    def from_fields(cls, now_ms, tenant, ids, labels=()) -> "BulkCancelTimers":
        _check_ids("bulk_cancel", ids, labels)
        return cls(now_ms, tenant, ids, labels)


@record("bulk_reschedule", number=42, version=1)
class BulkRescheduleTimers(_Record):
    """Move the deadline of the timers `ids` of `tenant` that carry every label of `labels`
    to `fire_at`, or by `extend_by` ms (exactly one is set), each on its own, a result per timer."""

    now_ms: int
    tenant: str
    ids: tuple
    labels: tuple = ()
    fire_at: Optional[int] = None
    extend_by: Optional[int] = None

    def fields(self) -> list:
        return [self.now_ms, self.tenant, list(self.ids), [list(p) for p in self.labels], self.fire_at,
                self.extend_by]

    @classmethod
    def from_fields(cls, now_ms, tenant, ids, labels=(), fire_at=None, extend_by=None) -> "BulkRescheduleTimers":
        _check_ids("bulk_reschedule", ids, labels)
        return cls(now_ms, tenant, ids, labels, fire_at, extend_by)


# ---- endpoints, delivery defaults and dead letters (record numbers 33-39) -------------------


def _refs(kind: str, refs) -> tuple:
    if type(refs) is not tuple or any(type(r) is not tuple or len(r) != 2 for r in refs):
        raise InvalidCommand(f"{kind}: refs must be an array of [tenant, id] pairs")
    return refs


@record("create_endpoint", number=33, version=1)
class CreateEndpoint(_Record):
    """A tenant's managed webhook endpoint (raft/endpoints.py) with its id and signing
    secret, both drawn by the API node and carried here as data."""

    tenant: str
    id: str
    url: str
    headers: tuple           # ((name, value), ...)
    timeout_ms: int
    secret: str
    created_at_ms: int

    def fields(self) -> list:
        return [self.tenant, self.id, self.url, [list(h) for h in self.headers], self.timeout_ms, self.secret,
                self.created_at_ms]

    @classmethod
    def from_fields(cls, tenant, id, url, headers, timeout_ms, secret, created_at_ms) -> "CreateEndpoint":
        if type(headers) is not tuple or any(type(h) is not tuple or len(h) != 2 for h in headers):
            raise InvalidCommand("create_endpoint: headers must be an array of [name, value] pairs")
        return cls(tenant, id, url, headers, timeout_ms, secret, created_at_ms)


@record("rotate_endpoint_secret", number=34, version=1)
class RotateEndpointSecret(_Record):
    """A new signing secret for an endpoint; the one it replaces keeps signing during the grace."""

    tenant: str
    id: str
    secret: str
    at_ms: int


@record("delete_endpoint", number=35, version=1)
class DeleteEndpoint(_Record):
    """Remove an endpoint; refused while a timer that has not ended uses it."""

    tenant: str
    id: str


@record("set_delivery_defaults", number=36, version=1)
class SetDeliveryDefaults(_Record):
    """A tenant's default delivery policy (raft/delivery_defaults.py: DeliveryPolicy's
    fields in order), or None to clear it."""

    tenant: str
    policy: Optional[tuple] = None

    def fields(self) -> list:
        return [self.tenant, None if self.policy is None else list(self.policy)]


def _request_fields(d: Delivery) -> list:
    wh = d.webhook
    return [wh.url if wh else None, [list(h) for h in wh.headers] if wh else [], list(d.policy), d.queue,
            d.endpoint]


def _request(fields) -> Delivery:
    if type(fields) is not tuple or len(fields) != 5 or type(fields[1]) is not tuple \
            or type(fields[2]) is not tuple or len(fields[2]) != len(DeliveryPolicy._fields):
        raise InvalidCommand("create_delivery v3: a delivery must be [url, headers, policy, queue, endpoint]")
    url, headers, policy, queue, endpoint = fields
    return Delivery(None if url is None else Webhook(url, headers), DeliveryPolicy(*policy), queue, endpoint)


@record("create_delivery", number=37, version=1)
class CreateDeliveryTimersV3(_Record):
    """Create groups of timers with deliveries as requested, resolved when applied
    (raft/fsm.py): a policy field that is None takes the tenant's delivery default, and
    a delivery naming an endpoint (url None) takes that endpoint's URL, headers and
    attempt timeout. Each spec is CreateTimersV2's 14 fields plus [url or None, headers,
    policy, queue or None, endpoint id or None] (or None: no delivery)."""

    now_ms: int
    groups: tuple

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields_v2(s) + [_request_fields(s.delivery) if s.delivery else None]
                               for s in g] for g in self.groups]]

    @classmethod
    def from_fields(cls, now_ms, groups) -> "CreateDeliveryTimersV3":
        if type(groups) is not tuple or any(type(g) is not tuple for g in groups):
            raise InvalidCommand("create_delivery v3: groups must be an array of arrays")
        out = []
        for g in groups:
            specs = []
            for f in g:
                if type(f) is not tuple or len(f) != 15:
                    raise InvalidCommand("create_delivery v3: a timer spec must be an array of 15 fields")
                specs.append(TimerSpec(*f[:14], delivery=None if f[14] is None else _request(f[14])))
            out.append(tuple(specs))
        return cls(now_ms, tuple(out))


# ---- schedules with deliveries, graphs with managed endpoints: numbers 43-47 (sched3) ------


@record("create_full", number=43, version=1)
class CreateFullTimers(_Record):
    """Create groups of timers whose specs may combine every create feature: a schedule
    with its policies (CreateRecurringTimers' 18 fields), a requested delivery
    (CreateDeliveryTimersV3's [url or None, headers, policy, queue or None, endpoint id or
    None], or None), resolved when applied (raft/delivery_requests.py), and a graph
    (CreateGraphTimers' [after, on, mode, delay_ms, on_parent_cancel, escalate], or None):
    20 fields. Proposed only for what the older records cannot say -- a recurring timer with
    a webhook or queue (kernel/occurrences.py), a graph timer with a managed endpoint -- so
    every other create keeps its record."""

    now_ms: int
    groups: tuple

    def fields(self) -> list:
        return [self.now_ms, [[_spec_fields_recurring(s) + [_request_fields(s.delivery) if s.delivery else None,
                                                            _graph_fields(s.graph)] for s in g]
                              for g in self.groups]]

    @classmethod
    def from_fields(cls, now_ms, groups) -> "CreateFullTimers":
        if type(groups) is not tuple or any(type(g) is not tuple for g in groups):
            raise InvalidCommand("create_full: groups must be an array of arrays")
        out = []
        for g in groups:
            specs = []
            for f in g:
                if type(f) is not tuple or len(f) != 20:
                    raise InvalidCommand("create_full: a timer spec must be an array of 20 fields")
                specs.append(TimerSpec(*f[:14], catch_up=f[14], overlap=f[15], flex_ms=f[16], flex_seed=f[17],
                                       delivery=None if f[18] is None else _request(f[18]), graph=_graph(f[19])))
            out.append(tuple(specs))
        return cls(now_ms, tuple(out))


@record("replay_dead_letters", number=38, version=1)
class ReplayDeadLetters(_Record):
    """Redrive many dead-lettered timers (attempts reset, history kept); each is replayed
    or refused on its own (per-timer results)."""

    now_ms: int
    refs: tuple              # tuple[tuple[tenant, id], ...]

    def fields(self) -> list:
        return [self.now_ms, [list(r) for r in self.refs]]

    @classmethod
    def from_fields(cls, now_ms, refs) -> "ReplayDeadLetters":
        return cls(now_ms, _refs("replay_dead_letters", refs))


@record("purge_dead_letters", number=39, version=1)
class PurgeDeadLetters(_Record):
    """Delete the named timers that are dead-lettered when this applies (others are
    skipped and reported): `minoots dlq purge`."""

    now_ms: int
    refs: tuple

    def fields(self) -> list:
        return [self.now_ms, [list(r) for r in self.refs]]

    @classmethod
    def from_fields(cls, now_ms, refs) -> "PurgeDeadLetters":
        return cls(now_ms, _refs("purge_dead_letters", refs))


@record("create", number=48, version=1)
class CreatePlainTimers(_Record):
    """Create groups of plain timers (raft/plain_record.py: one tenant, ids, deadlines,
    payloads and flags per group, as columns; no object per timer on a follower). Each
    group applies or fails as a whole, as in CreateTimers. Proposed by `create_timers`
    when every spec is plain and no group carries a traceparent."""

    now_ms: int
    groups: tuple            # tuple[PlainGroup, ...]

    @property
    def traceparents(self) -> None:
        """None: a group with a traceparent goes as CreateTimers (raft/tracing.py reads this)."""
        return None

    def fields(self) -> list:
        return [self.now_ms, [g.fields() for g in self.groups]]

    @classmethod
    def from_fields(cls, now_ms, groups) -> "CreatePlainTimers":
        if type(groups) is not tuple:
            raise InvalidCommand("create plain: groups must be an array")
        try:
            return cls(now_ms, tuple(_plain.PlainGroup.from_fields(g) for g in groups))
        except ValueError as exc:
            raise InvalidCommand(f"create plain: {exc}") from None


Command = Union[CreateTimers, Tick, CancelTimers, RescheduleTimer, AckTimer, SetMemberName, SetMemberGrpc,
                PutToken, RevokeToken, SetQuota, ClearQuota, CreateSubscription, CommitSubscription,
                DeleteSubscription, MarkSubscriptionOverrun, SetRetention, DeleteTimers, CreateTimersV2,
                CreateDeliveryTimers, DeliveryAttempt, RedriveTimer,
                PutWebhookSecret, CreateDeliveryTimersV2, LeaseTimers, AckLease, NackLease, ExtendLease,
                DeliveryAttempts, CreateGraphTimers, BulkCancelTimers, BulkRescheduleTimers, CreateEndpoint,
                RotateEndpointSecret, DeleteEndpoint, SetDeliveryDefaults, CreateDeliveryTimersV3, ReplayDeadLetters,
                PurgeDeadLetters,
                CreateRecurringTimers, PauseTimer, ResumeTimer, TriggerTimer, CreateFullTimers, CreatePlainTimers]

#: (KIND, VERSION) -> record class: every command this build can read.
RECORDS: dict[tuple[int, int], type] = {
    (c.KIND, c.VERSION): c
    for c in (CreateTimers, Tick, CancelTimers, RescheduleTimer, AckTimer, SetMemberName, SetMemberGrpc,
              PutToken, RevokeToken, SetQuota, ClearQuota, CreateSubscription, CommitSubscription,
              DeleteSubscription, MarkSubscriptionOverrun, SetRetention, DeleteTimers, CreateTimersV2,
              CreateDeliveryTimers, DeliveryAttempt, RedriveTimer,
              PutWebhookSecret, CreateDeliveryTimersV2, LeaseTimers, AckLease, NackLease, ExtendLease,
              DeliveryAttempts, CreateGraphTimers, BulkCancelTimers, BulkRescheduleTimers, CreateEndpoint,
              RotateEndpointSecret, DeleteEndpoint, SetDeliveryDefaults, CreateDeliveryTimersV3, ReplayDeadLetters,
              PurgeDeadLetters,
              CreateRecurringTimers, PauseTimer, ResumeTimer, TriggerTimer, CreateFullTimers, CreatePlainTimers)
}
_NAMES = {c.KIND: c.kind for c in RECORDS.values()}


def encode(command: Command) -> bytes:
    """The one way a command becomes log bytes."""
    return FORMAT + msgpack.packb([command.KIND, command.VERSION, *command.fields()], use_bin_type=True)


def decode(data: bytes) -> Command:
    """Log bytes back to a record; raises InvalidCommand or UnknownCommand, never anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or data[:1] != FORMAT:
        raise InvalidCommand("not a MINOOTS command (unknown format byte)")
    if len(data) > MAX_COMMAND_BYTES:
        raise InvalidCommand(f"command of {len(data)} bytes exceeds {MAX_COMMAND_BYTES}")
    try:
        body = msgpack.unpackb(memoryview(data)[1:], use_list=False, raw=False, strict_map_key=True)
    except Exception as exc:
        raise InvalidCommand(f"undecodable command: {type(exc).__name__}") from None
    if type(body) is not tuple or len(body) < 2 or type(body[0]) is not int or type(body[1]) is not int:
        raise InvalidCommand("a command must start with its kind and version numbers")
    kind, version = body[0], body[1]
    cls = RECORDS.get((kind, version))
    if cls is None:
        known = sorted(v for k, v in RECORDS if k == kind)
        name = _NAMES.get(kind, f"kind {kind}")
        raise UnknownCommand(
            f"command {name} version {version} is not known to this build"
            + (f" (it reads version {', '.join(map(str, known))})" if known else "")
            + "; upgrade every node before a newer one proposes it")
    try:
        return cls.from_fields(*body[2:])
    except KernelError:
        raise
    except TypeError:
        raise InvalidCommand(f"{cls.kind} v{version}: wrong number of fields ({len(body) - 2})") from None


def from_legacy(command: tuple) -> Command:
    """A v0 entry (the command tuple PySyncObj pickled before this schema) as today's record."""
    if type(command) is not tuple or not command or type(command[0]) is not str:
        raise InvalidCommand("not a v0 command tuple")
    kind = command[0]
    try:
        if kind == "create":
            groups = tuple(tuple(TimerSpec(*t) for t in g) for g in command[2])
            tps = tuple(command[3]) if len(command) > 3 and command[3] is not None else None
            return CreateTimers(command[1], groups, tps)
        if kind == "tick":
            return Tick(command[1])
        if kind == "cancel":
            return CancelTimers(command[1], tuple(tuple(r) for r in command[2]))
        if kind == "reschedule":
            _, now, tenant, tid, fire_at, extend_by = command
            return RescheduleTimer(now, tenant, tid, fire_at, extend_by)
        if kind == "ack":
            _, now, tenant, tid, fire_id = command
            return AckTimer(now, tenant, tid, fire_id)
        if kind == "name":
            return SetMemberName(command[1], command[2])
        if kind == "grpc":
            return SetMemberGrpc(command[1], command[2])
    except (TypeError, ValueError, IndexError):
        raise InvalidCommand(f"malformed v0 {kind} command") from None
    raise UnknownCommand(f"unknown v0 command {kind!r}")
