"""Request validation: wire requests in, checked kernel arguments out.

Everything a request can get wrong is found here, before anything is proposed,
and reported as the kernel's own `InvalidArgument(field, rule)` naming the
field as the client spelled it (`timers[3].labels['a b']`, `page_token`). The
rules themselves are the kernel's (`minoots.kernel.validate`): this module only
decides which rule applies to which request field, and adds the few rules that
exist only on the wire (a deadline must be set, a delay is not negative,
enum values must be known, an empty batch is refused).

The kernel validates again when it applies a command (it is the authority, and
some checks need the state: an id already taken, a repeated id in one batch);
`rename_kernel_error` maps the kernel's field names (`specs[3].id`) back to the
request's (`timers[3].id`).
"""
from __future__ import annotations

import base64
import secrets
import binascii
import struct
from dataclasses import dataclass
from typing import Optional

from minoots.kernel import (
    DEFAULT_TENANT,
    MAX_ACTION_BYTES,
    MAX_BATCH,
    MAX_PAYLOAD_BYTES,
    AlreadyExists,
    EventKind,
    InvalidArgument,
    KernelError,
    TimerSpec,
    TimerState,
)
from minoots.kernel import validate as rules
from minoots.kernel.delivery import (DEFAULT_POLICY, MAX_LEASE_BATCH, MAX_VISIBILITY_MS, MIN_VISIBILITY_MS, Delivery,
                                     DeliveryPolicy, Webhook, check_delivery, check_endpoint_id, check_policy,
                                     check_queue)
from minoots.kernel.recurrence import CATCH_UP_NAMES, MAX_PREVIEW, OVERLAP_NAMES
from minoots.v1 import timers_pb2 as pb

from .graphs import graph_spec, has_graph
from .wirebase import BadTime, duration_ms, new_timer_id, new_timer_ids, timestamp_ms

__all__ = [
    "create_spec",
    "create_batch",
    "rename_kernel_error",
    "timer_ref",
    "reschedule_args",
    "ack_args",
    "ListQuery",
    "list_query",
    "encode_page_token",
    "watch_filter",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

_TIMER_STATES = frozenset(s.value for s in TimerState)
_EVENT_KINDS = frozenset(k.value for k in EventKind)


def _tenant(field: str, value: str) -> str:
    return rules.check_tenant(field, value or DEFAULT_TENANT)


_FIELDS = pb.TimerSpec.DESCRIPTOR.fields_by_name
_F_ID, _F_TENANT, _F_FIRE_AT, _F_DELAY, _F_PAYLOAD, _F_KEY, _F_ACK, _F_NAME, _F_ACTION = (
    _FIELDS[n] for n in ("id", "tenant", "fire_at", "delay", "payload", "idempotency_key", "ack_required", "name",
                         "action"))


def create_spec(p: str, spec: pb.TimerSpec, now_ms: int, new_id=new_timer_id) -> TimerSpec:
    """One wire TimerSpec as a checked kernel TimerSpec; `p` is its field path (`timers[3]`).

    An empty id gets a fresh uuid4 hex id; an empty tenant is "default"; an empty
    idempotency key is none; a delay counts from `now_ms` (the accepting node's clock).
    `new_id` makes a generated id (create_batch draws a batch's ids at once).
    """
    # The common case (a deadline, no labels, schedule, action or graph, ASCII text) skips
    # the field-by-field checks, which cost most of a big batch's time on the leader; anything
    # else takes the full path below, which also names the first bad field. One ListFields()
    # call says which fields are set and gives their values.
    timer_id = tenant = name = key = ""
    payload = action = b""
    ack = False
    ts = delay_pb = None
    for fd, v in spec.ListFields():
        if fd is _F_ID:
            timer_id = v
        elif fd is _F_FIRE_AT:
            ts = v
        elif fd is _F_PAYLOAD:
            payload = v
        elif fd is _F_KEY:
            key = v
        elif fd is _F_TENANT:
            tenant = v
        elif fd is _F_DELAY:
            delay_pb = v
        elif fd is _F_ACK:
            ack = v
        elif fd is _F_NAME:
            name = v
        elif fd is _F_ACTION:
            action = v
        else:
            break                   # any other field set: the full path
    else:
        try:
            if ts is not None:
                fire_at = timestamp_ms(ts)
            elif delay_pb is not None:  # a delay the full path would accept: >= 0, fire_at within range
                delay = duration_ms(delay_pb)
                fire_at = now_ms + delay if delay >= 0 and now_ms + delay <= rules.MAX_TIME else None
            else:
                fire_at = None      # no deadline: the full path says so
        except BadTime:
            fire_at = None          # the full path names the field
        if fire_at is not None:
            timer_id = timer_id or new_id()
            tenant = tenant or DEFAULT_TENANT
            key = key or None
            if key == timer_id:
                key = timer_id     # one string object, not two (the SDK sends key == id)
            if rules.plain_spec(tenant, timer_id, fire_at, name, payload, None, action, key, ack):
                return TimerSpec(id=timer_id, fire_at=fire_at, tenant=tenant, name=name, payload=payload,
                                 labels=None, action=action, idempotency_key=key, ack_required=ack)
    return _checked_spec(p, spec, now_ms, new_id)


def _checked_spec(p: str, spec: pb.TimerSpec, now_ms: int, new_id=new_timer_id) -> TimerSpec:
    timer_id = rules.check_new_id(f"{p}.id", spec.id) if spec.id else new_id()
    tenant = _tenant(f"{p}.tenant", spec.tenant)
    which = spec.WhichOneof("deadline")
    if which == "fire_at":
        try:
            fire_at = timestamp_ms(spec.fire_at)
        except BadTime as exc:
            raise InvalidArgument(f"{p}.fire_at", str(exc)) from None
        fire_at = rules.check_time(f"{p}.fire_at", fire_at)
    elif which == "delay":
        try:
            delay = duration_ms(spec.delay)
        except BadTime as exc:
            raise InvalidArgument(f"{p}.delay", str(exc)) from None
        if delay < 0:
            raise InvalidArgument(f"{p}.delay", f"must not be negative, got {delay} ms")
        fire_at = now_ms + delay
        if fire_at > rules.MAX_TIME:
            raise InvalidArgument(f"{p}.delay", f"puts fire_at past {rules.MAX_TIME} ms since the epoch")
    elif spec.after:
        fire_at = 0           # a dependent timer: only its condition (and after_delay) counts
    else:
        raise InvalidArgument(f"{p}.deadline", "set exactly one of fire_at or delay")
    name = rules.check_name(f"{p}.name", spec.name)
    payload = rules.check_bytes(f"{p}.payload", spec.payload, MAX_PAYLOAD_BYTES)
    labels = rules.check_labels(f"{p}.labels", dict(spec.labels))
    action = rules.check_bytes(f"{p}.action", spec.action, MAX_ACTION_BYTES)
    key = rules.check_idempotency_key(f"{p}.idempotency_key", spec.idempotency_key or None)
    every_ms, until = 0, None
    if spec.HasField("every"):
        try:
            every_ms = duration_ms(spec.every)
        except BadTime as exc:
            raise InvalidArgument(f"{p}.every", str(exc)) from None
        if every_ms <= 0:
            raise InvalidArgument(f"{p}.every", f"must be positive, got {every_ms} ms")
    if spec.HasField("until"):
        try:
            until = timestamp_ms(spec.until)
        except BadTime as exc:
            raise InvalidArgument(f"{p}.until", str(exc)) from None
    # The kernel checks the schedule itself (kernel/schedule.py) and names the field.
    delivery = _delivery(p, spec)
    graph = graph_spec(p, spec)
    if delivery is not None and spec.ack_required and not (graph is not None and graph.escalate):
        raise InvalidArgument(f"{p}.ack_required", "a timer with a webhook or queue settles when it is delivered; "
                                                   "it cannot also require an ack (unless it has an escalation "
                                                   "ladder: then its steps are delivered there)")
    return TimerSpec(id=timer_id, fire_at=fire_at, tenant=tenant, name=name, payload=payload,
                     labels=dict(labels) if labels else None, action=action, idempotency_key=key,
                     ack_required=bool(spec.ack_required), delivery=delivery, every_ms=every_ms, until=until,
                     max_count=spec.max_count, cron=spec.cron, tz=spec.time_zone, graph=graph,
                     catch_up=_enum_name(f"{p}.catch_up", spec.catch_up, CATCH_UP_NAMES),
                     overlap=_enum_name(f"{p}.overlap", spec.overlap, OVERLAP_NAMES), **_flex(p, spec))


def _flex(p: str, spec: pb.TimerSpec) -> dict:
    """The flexible window and, with one, the seed its offsets derive from: drawn here, on the
    accepting node, and carried in the replicated create (replicas never draw)."""
    if not spec.HasField("flex"):
        return {}
    try:
        ms = duration_ms(spec.flex)
    except BadTime as exc:
        raise InvalidArgument(f"{p}.flex", str(exc)) from None
    if ms < 0:
        raise InvalidArgument(f"{p}.flex", f"must not be negative, got {ms} ms")
    return {"flex_ms": ms, "flex_seed": secrets.randbits(63)} if ms else {}


def _enum_name(field: str, value: int, names: tuple) -> str:
    """A policy enum as the kernel's name ("" for UNSPECIFIED: the default). The wire enums
    CatchUpPolicy / OverlapPolicy list the kernel's names in order, from value 1."""
    if not value:
        return ""
    if not 1 <= value <= len(names):
        raise InvalidArgument(field, f"unknown policy value {value}")
    return names[value - 1]


def next_args(request) -> tuple[str, str, int]:
    """NextOccurrences: (tenant, id, count); count 1..MAX_PREVIEW, else INVALID_ARGUMENT."""
    tenant, timer_id = timer_ref(request.tenant, request.id)
    if not 1 <= request.count <= MAX_PREVIEW:
        raise InvalidArgument("count", f"must be within 1..{MAX_PREVIEW}, got {request.count}")
    return tenant, timer_id, request.count


def _policy_ms(field: str, d, default: int, has: bool) -> int:
    if not has:
        return default
    try:
        ms = duration_ms(d)
    except BadTime as exc:
        raise InvalidArgument(field, str(exc)) from None
    return ms if ms else default


def _delivery(p: str, spec: pb.TimerSpec) -> Optional[Delivery]:
    """The spec's typed action and delivery policy, checked (address safety is checked
    later, asynchronously: api/ssrf.py)."""
    which = spec.WhichOneof("typed_action")
    if which is None:
        if spec.HasField("delivery_policy"):
            raise InvalidArgument(f"{p}.delivery_policy", "applies only to a timer with a webhook")
        return None
    wp = spec.delivery_policy
    has = spec.HasField("delivery_policy")
    pp = f"{p}.delivery_policy"
    d = DEFAULT_POLICY
    policy = DeliveryPolicy(
        (wp.max_attempts or d.max_attempts) if has else d.max_attempts,
        _policy_ms(f"{pp}.backoff_base", wp.backoff_base, d.backoff_base_ms, has and wp.HasField("backoff_base")),
        _policy_ms(f"{pp}.backoff_cap", wp.backoff_cap, d.backoff_cap_ms, has and wp.HasField("backoff_cap")),
        _policy_ms(f"{pp}.attempt_timeout", wp.attempt_timeout, d.attempt_timeout_ms,
                   has and wp.HasField("attempt_timeout")),
        _policy_ms(f"{pp}.ack_deadline", wp.ack_deadline, d.ack_deadline_ms, has and wp.HasField("ack_deadline")))
    if policy.backoff_cap_ms < policy.backoff_base_ms and not (has and wp.HasField("backoff_cap")):
        policy = policy._replace(backoff_cap_ms=policy.backoff_base_ms)
    elif policy.backoff_cap_ms < policy.backoff_base_ms and not (has and wp.HasField("backoff_base")):
        # The base comes from the tenant's defaults when the create applies (which check it
        # against this cap then): here only what was given is checked.
        policy = policy._replace(backoff_base_ms=policy.backoff_cap_ms)
    wh = spec.webhook
    try:
        if which == "endpoint":
            # Resolved when the create applies (raft/delivery_requests.py): URL, headers, timeout.
            return Delivery(None, check_policy(f"{p}.policy", policy), None,
                            check_endpoint_id(f"{p}.endpoint.id", spec.endpoint.id))
        if which == "queue":
            return check_delivery(p, Delivery(None, policy, spec.queue.queue))
        return check_delivery(p, Delivery(Webhook(wh.url, tuple(wh.headers.items())), policy))
    except InvalidArgument as exc:     # the kernel says `.policy.x_ms`, the wire `.delivery_policy.x`
        field = exc.field.replace(f"{p}.policy.", f"{pp}.")
        for suffix in ("_ms",):
            if field.startswith(pp) and field.endswith(suffix):
                field = field[:-len(suffix)]
        raise InvalidArgument(field, exc.rule) from None


_POLICY_WIRE = ("max_attempts", "backoff_base", "backoff_cap", "attempt_timeout", "ack_deadline")


def requested_delivery(spec: pb.TimerSpec, delivery: Delivery) -> Delivery:
    """The delivery as the client asked for it: a policy field it did not give (unset or
    zero) is None, to be taken from the tenant's defaults when the create applies."""
    has = spec.HasField("delivery_policy")
    wp = spec.delivery_policy
    given = [has and (bool(wp.max_attempts) if f == "max_attempts" else
                      (wp.HasField(f) and bool(duration_ms(getattr(wp, f))))) for f in _POLICY_WIRE]
    return delivery._replace(policy=DeliveryPolicy(*(v if g else None for v, g in zip(delivery.policy, given))))


def create_batch(specs, now_ms: int) -> list[TimerSpec]:
    """CreateTimersRequest.timers: 1..10,000 specs, each checked as `timers[i]`."""
    n = len(specs)
    if n == 0:
        raise InvalidArgument("timers", f"must hold 1..{MAX_BATCH} timers, got none")
    if n > MAX_BATCH:
        raise InvalidArgument("timers", f"must hold at most {MAX_BATCH} timers, got {n}")
    missing = sum(1 for s in specs if not s.id)
    if not missing:
        return [create_spec(f"timers[{i}]", s, now_ms) for i, s in enumerate(specs)]
    pool = new_timer_ids(missing)

    def new_id() -> str:
        return pool.pop() if pool else new_timer_id()
    return [create_spec(f"timers[{i}]", s, now_ms, new_id) for i, s in enumerate(specs)]


def rename_kernel_error(exc: KernelError, prefix: str) -> KernelError:
    """The kernel names specs `specs[i]`; say `timers[i]` (prefix "timers") or `timer`
    (prefix "timer", a single create) instead."""
    def rename(field: str) -> str:
        if not field.startswith("specs"):
            return field
        rest = field[len("specs"):]
        if prefix == "timer" and rest.startswith("[0]"):
            return "timer" + rest[len("[0]"):]
        return prefix + rest

    if isinstance(exc, InvalidArgument):
        new = InvalidArgument(rename(exc.field), exc.rule.replace("specs[", f"{prefix}[") if prefix != "timer"
                              else exc.rule.replace("specs[0]", "timer"))
        return new
    if isinstance(exc, AlreadyExists):
        return AlreadyExists(exc.tenant, exc.timer_id, rename(exc.field))
    return exc


def timer_ref(tenant: str, timer_id: str) -> tuple[str, str]:
    return _tenant("tenant", tenant), rules.check_id("id", timer_id)


def reschedule_args(req: pb.RescheduleTimerRequest) -> tuple[str, str, Optional[int], Optional[int]]:
    """(tenant, id, fire_at, extend_by) with exactly one of the last two set."""
    tenant, timer_id = timer_ref(req.tenant, req.id)
    which = req.WhichOneof("change")
    if which == "fire_at":
        try:
            ms = timestamp_ms(req.fire_at)
        except BadTime as exc:
            raise InvalidArgument("fire_at", str(exc)) from None
        return tenant, timer_id, rules.check_time("fire_at", ms), None
    if which == "extend_by":
        try:
            ms = duration_ms(req.extend_by)
        except BadTime as exc:
            raise InvalidArgument("extend_by", str(exc)) from None
        return tenant, timer_id, None, rules.check_delta("extend_by", ms)
    raise InvalidArgument("change", "set exactly one of fire_at or extend_by")


def ack_args(req: pb.AckTimerRequest) -> tuple[str, str, int]:
    tenant, timer_id = timer_ref(req.tenant, req.id)
    return tenant, timer_id, rules.check_seq("fire_id", req.fire_id)


MAX_LEASE_WAIT_MS = 20_000
DEFAULT_VISIBILITY_MS = 30_000


def _duration(field: str, d, default: int, has: bool) -> int:
    if not has:
        return default
    try:
        return duration_ms(d)
    except BadTime as exc:
        raise InvalidArgument(field, str(exc)) from None


def _visibility(req) -> int:
    """A lease request's visibility timeout in ms (default 30 s; 1 s .. 12 h)."""
    vis = _duration("visibility_timeout", req.visibility_timeout, DEFAULT_VISIBILITY_MS,
                    req.HasField("visibility_timeout"))
    if not MIN_VISIBILITY_MS <= vis <= MAX_VISIBILITY_MS:
        raise InvalidArgument("visibility_timeout", f"must be within {MIN_VISIBILITY_MS}..{MAX_VISIBILITY_MS} ms")
    return vis


def lease_args(req: pb.LeaseTimersRequest) -> tuple[str, str, int, int, float]:
    """(tenant, queue, max timers, visibility ms, long-poll wait in seconds)."""
    tenant = _tenant("tenant", req.tenant)
    queue = check_queue("queue", req.queue)
    n = req.max_timers or 1
    if n > MAX_LEASE_BATCH:
        raise InvalidArgument("max_timers", f"must be within 1..{MAX_LEASE_BATCH}, got {n}")
    vis = _visibility(req)
    wait = _duration("wait", req.wait, 0, req.HasField("wait"))
    if not 0 <= wait <= MAX_LEASE_WAIT_MS:
        raise InvalidArgument("wait", f"must be within 0..{MAX_LEASE_WAIT_MS} ms")
    return tenant, queue, n, vis, wait / 1000


def stream_lease_args(req: pb.StreamLeasesRequest) -> tuple[str, str, int, int]:
    """(tenant, queue, max outstanding leases, visibility ms)."""
    tenant = _tenant("tenant", req.tenant)
    queue = check_queue("queue", req.queue)
    n = req.max_outstanding or 1
    if n > MAX_LEASE_BATCH:
        raise InvalidArgument("max_outstanding", f"must be within 1..{MAX_LEASE_BATCH}, got {n}")
    vis = _visibility(req)
    return tenant, queue, n, vis


def lease_ref(req) -> tuple[str, str, str]:
    tenant, timer_id = timer_ref(req.tenant, req.id)
    if not req.lease_id or len(req.lease_id) > 32:
        raise InvalidArgument("lease_id", "must name a lease (what LeaseTimers returned)")
    return tenant, timer_id, req.lease_id


def extend_args(req: pb.ExtendLeaseRequest) -> tuple[str, str, str, int]:
    tenant, timer_id, lease_id = lease_ref(req)
    vis = _visibility(req)
    return tenant, timer_id, lease_id, vis


# ---- ListTimers -----------------------------------------------------------------

_TOKEN = struct.Struct(">BQ")     # version, next ordinal to scan
_TOKEN_VERSION = 1


def encode_page_token(next_position: int) -> str:
    return base64.urlsafe_b64encode(_TOKEN.pack(_TOKEN_VERSION, next_position)).decode().rstrip("=")


def _decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, position = _TOKEN.unpack(raw)
    except (binascii.Error, ValueError, struct.error):
        raise InvalidArgument("page_token", "is not a token this server issued") from None
    if version != _TOKEN_VERSION:
        raise InvalidArgument("page_token", "is not a token this server issued")
    return position


@dataclass(frozen=True)
class ListQuery:
    tenant: str
    states: frozenset            # TimerState values; empty = any
    labels: tuple                # ((key, value), ...) that must all match
    fire_from: Optional[int]     # inclusive, ms
    fire_to: Optional[int]       # exclusive, ms
    page_size: int
    start: int                   # position (ordinal) to resume the scan at
    fired_from: Optional[int] = None   # inclusive, ms: only timers whose latest fire is in range
    fired_to: Optional[int] = None     # exclusive, ms


def _label_selector(text: str) -> tuple:
    if not text.strip():
        return ()
    pairs = {}
    for i, term in enumerate(text.split(",")):
        key, sep, value = term.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise InvalidArgument("label_selector", f"term {i} ({term!r}) must be key=value; "
                                  "terms are separated by commas")
        if key in pairs and pairs[key] != value:
            raise InvalidArgument("label_selector", f"key {key!r} is given twice with different values")
        pairs[key] = value
    return rules.check_labels("label_selector", pairs)


def list_query(req: pb.ListTimersRequest) -> ListQuery:
    tenant = _tenant("tenant", req.tenant)
    states = set()
    for i, s in enumerate(req.states):
        if s not in _TIMER_STATES:
            raise InvalidArgument(f"states[{i}]", f"must be a known TimerState other than UNSPECIFIED, got {s}")
        states.add(s)
    bounds = {}
    for name in ("fire_at_from", "fire_at_to", "fired_at_from", "fired_at_to"):
        if req.HasField(name):
            try:
                bounds[name] = timestamp_ms(getattr(req, name))
            except BadTime as exc:
                raise InvalidArgument(name, str(exc)) from None
    fire_from, fire_to = bounds.get("fire_at_from"), bounds.get("fire_at_to")
    page_size = req.page_size or DEFAULT_PAGE_SIZE
    page_size = min(page_size, MAX_PAGE_SIZE)   # AIP-158: a larger page_size is coerced down
    start = _decode_page_token(req.page_token) if req.page_token else 0
    return ListQuery(tenant, frozenset(states), _label_selector(req.label_selector), fire_from, fire_to,
                     page_size, start, bounds.get("fired_at_from"), bounds.get("fired_at_to"))


# ---- WatchEvents ---------------------------------------------------------------

def watch_filter(req: pb.WatchEventsRequest) -> tuple[Optional[str], frozenset]:
    """(tenant or None for all, set of EventKind values or empty for all)."""
    tenant = rules.check_tenant("tenant", req.tenant) if req.tenant else None
    kinds = set()
    for i, k in enumerate(req.kinds):
        if k not in _EVENT_KINDS:
            raise InvalidArgument(f"kinds[{i}]", f"must be a known EventKind other than UNSPECIFIED, got {k}")
        kinds.add(k)
    return tenant, frozenset(kinds)
