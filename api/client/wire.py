"""Wire conversion of the SDK: minoots.v1 protobuf messages <-> the SDK's values
(`minoots.api.types`), and the request messages built from a call's arguments.

Pure functions, no I/O, shared by `Client` and `AsyncClient`. Times on the wire
are `google.protobuf.Timestamp` / `Duration`; in the SDK they are aware UTC
datetimes or int ms since the epoch. (The server's conversions, to and from
the kernel's values, are `minoots.api.convert`.)
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Optional, Union

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from minoots.v1 import cluster_pb2, timers_pb2

from ..types import (
    EPOCH,
    BulkResult,
    CatchUpPolicy,
    OverlapPolicy,
    ClusterStatus,
    DeliveryAttempt,
    Event,
    Lease,
    EventKind,
    InvalidArgument,
    Member,
    MinootsError,
    SnapshotInfo,
    Timer,
    TimerSpec,
    TimerState,
    datetime_to_ms,
)
from ..wirebase import ms_timestamp as ms_to_timestamp
from ..wirebase import new_timer_id

__all__ = [
    "ms_to_timestamp", "time_to_ms", "duration_to_pb", "new_timer_id", "spec_to_pb", "as_spec",
    "timer_from_pb", "event_from_pb", "member_from_pb", "status_from_pb", "snapshot_from_pb",
    "create_many_request", "label_selector", "list_request", "page_size_for", "watch_request", "export_request",
]

# ---------------------------------------------------------------- values


def ts_to_datetime(ts: Timestamp) -> datetime:
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


def opt_ts(msg, name: str) -> Optional[datetime]:
    return ts_to_datetime(getattr(msg, name)) if msg.HasField(name) else None


def _enum(cls, value: int):
    try:
        return cls(value)
    except ValueError:  # a newer server's value: keep the number visible rather than fail
        return cls.UNSPECIFIED


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


def spec_to_pb(spec: TimerSpec) -> timers_pb2.TimerSpec:
    """TimerSpec -> wire spec, filling in the id and idempotency key (see `minoots.api.client`'s docstring)."""
    after = (spec.after,) if isinstance(spec.after, str) else tuple(spec.after or ())
    if not after and (spec.fire_at is None) == (spec.delay is None):
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
        pb.fire_at.CopyFrom(ms_to_timestamp(time_to_ms(spec.fire_at)))
    elif after:
        if spec.delay is not None:          # with parents: the delay after the condition
            pb.after_delay.CopyFrom(duration_to_pb(spec.delay))
    else:
        pb.delay.CopyFrom(duration_to_pb(spec.delay))
    if spec.fire_at is not None and after and spec.delay is not None:
        pb.after_delay.CopyFrom(duration_to_pb(spec.delay))
    _graph_to_pb(spec, after, pb)
    _delivery_to_pb(spec, pb)
    if spec.every is not None:
        pb.every.CopyFrom(duration_to_pb(spec.every))
    if spec.until is not None:
        pb.until.CopyFrom(ms_to_timestamp(time_to_ms(spec.until)))
    if spec.max_count:
        pb.max_count = spec.max_count
    if spec.cron:
        pb.cron = spec.cron
    if spec.tz:
        pb.time_zone = spec.tz
    if spec.catch_up:
        pb.catch_up = _policy_value("catch_up", spec.catch_up, CatchUpPolicy)
    if spec.overlap:
        pb.overlap = _policy_value("overlap", spec.overlap, OverlapPolicy)
    if spec.flex is not None:
        pb.flex.CopyFrom(duration_to_pb(spec.flex, "flex"))
    return pb


def _graph_to_pb(spec: TimerSpec, after: tuple, pb: timers_pb2.TimerSpec) -> None:
    if not after and (spec.on or spec.mode or spec.on_parent_cancel):
        raise InvalidArgument("on, mode and on_parent_cancel need `after` (the parent timers)")
    pb.after.extend(after)
    pb.on, pb.mode, pb.on_parent_cancel = spec.on or "", spec.mode or "", spec.on_parent_cancel or ""
    for k, step in enumerate(spec.escalate or ()):
        try:
            at, action = step
        except (TypeError, ValueError):
            raise InvalidArgument(f"escalate[{k}] must be an (after, action) pair") from None
        s = pb.escalate.add(action=_bytes(action, f"escalate[{k}].action"))
        s.after.CopyFrom(duration_to_pb(at, f"escalate[{k}].after"))
def _policy_value(what: str, name, cls) -> int:
    """A policy's lower-case name (the SDK's) as its wire value."""
    key = name.strip().upper().replace("-", "_") if isinstance(name, str) else ""
    if key not in cls.__members__ or key == "UNSPECIFIED":
        names = ", ".join(m.name.lower() for m in cls if m)
        raise InvalidArgument(f"{what} must be one of {names}, got {name!r}")
    return int(cls[key])


def _policy_name(value: int, cls) -> str:
    try:
        return cls(value).name.lower() if value else ""
    except ValueError:
        return ""


def next_request(id: str, tenant: Optional[str], count: int) -> timers_pb2.NextOccurrencesRequest:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        raise InvalidArgument(f"count must be an int within 1..100, got {count!r}")
    return timers_pb2.NextOccurrencesRequest(tenant=tenant or "", id=id, count=count)


def _delivery_to_pb(spec: TimerSpec, pb: timers_pb2.TimerSpec) -> None:
    policy = (spec.max_attempts, spec.backoff_base, spec.backoff_cap, spec.attempt_timeout)
    endpoint = getattr(spec, "endpoint", None)
    if sum(x is not None for x in (spec.webhook, spec.queue, endpoint)) > 1:
        raise InvalidArgument("give one of a webhook, an endpoint and a queue")
    if endpoint is not None:
        if spec.webhook_headers:
            raise InvalidArgument("webhook_headers need a webhook (an endpoint has its own headers)")
        if not isinstance(endpoint, str):
            raise InvalidArgument(f"endpoint must be an endpoint id string, not {type(endpoint).__name__}")
        pb.endpoint.id = endpoint
    elif spec.queue is not None:
        if spec.webhook_headers:
            raise InvalidArgument("webhook_headers need a webhook")
        pb.queue.queue = spec.queue
    elif spec.webhook is None:
        if spec.webhook_headers or any(v is not None for v in policy):
            raise InvalidArgument("webhook_headers, max_attempts, backoff_* and attempt_timeout need a webhook "
                                  "or a queue")
        return
    else:
        if not isinstance(spec.webhook, str):
            raise InvalidArgument(f"webhook must be a URL string, not {type(spec.webhook).__name__}")
        pb.webhook.url = spec.webhook
        try:
            for k, v in (spec.webhook_headers or {}).items():
                pb.webhook.headers[k] = v
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgument(f"webhook_headers must map str to str: {exc}") from None
    if any(v is not None for v in policy):
        p = pb.delivery_policy
        if spec.max_attempts is not None:
            if isinstance(spec.max_attempts, bool) or not isinstance(spec.max_attempts, int) \
                    or not 1 <= spec.max_attempts <= 2**32 - 1:
                raise InvalidArgument(f"max_attempts must be a positive int, got {spec.max_attempts!r}")
            p.max_attempts = spec.max_attempts
        for name in ("backoff_base", "backoff_cap", "attempt_timeout"):
            value = getattr(spec, name)
            if value is not None:
                getattr(p, name).CopyFrom(duration_to_pb(value, name))


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
        id=pb.id, tenant=pb.tenant, name=pb.name, fire_at=ts_to_datetime(pb.fire_at),
        state=_enum(TimerState, pb.state), revision=pb.revision, payload=pb.payload,
        labels=MappingProxyType(dict(pb.labels)), action=pb.action,
        idempotency_key=pb.idempotency_key or None, ack_required=pb.ack_required,
        created_at=opt_ts(pb, "created_at"), armed_at=opt_ts(pb, "armed_at"),
        fired_at=opt_ts(pb, "fired_at"), settled_at=opt_ts(pb, "settled_at"),
        attempts=pb.attempts, fire_id=pb.fire_id or None, created=created,
        every=pb.every.ToTimedelta() if pb.HasField("every") else None, until=opt_ts(pb, "until"),
        max_count=pb.max_count, cron=pb.cron, tz=pb.time_zone, paused=pb.paused,
        catch_up=_policy_name(pb.catch_up, CatchUpPolicy), overlap=_policy_name(pb.overlap, OverlapPolicy),
        triggered=pb.triggered, skipped=pb.skipped_occurrences,
        flex=pb.flex.ToTimedelta() if pb.HasField("flex") else None,
        pending_fire_ids=tuple(pb.pending_fire_ids), buffered=pb.buffered,
        **(_delivery_from_pb(pb) if pb.HasField("webhook") or pb.HasField("queue") else {}),
        **(_graph_from_pb(pb) if pb.after or pb.children or pb.escalate else {}))


def _graph_from_pb(pb: timers_pb2.Timer) -> dict:
    return {"after": tuple(pb.after), "on": pb.on, "mode": pb.mode, "on_parent_cancel": pb.on_parent_cancel,
            "after_delay": pb.after_delay.ToTimedelta() if pb.HasField("after_delay") else None,
            "waiting_on": tuple(pb.waiting_on), "dependency": pb.dependency, "children": tuple(pb.children),
            "escalate": tuple((s.after.ToTimedelta(), s.action) for s in pb.escalate), "escalated": pb.escalated}


def bulk_from_pb(resp: timers_pb2.BulkResponse) -> list[BulkResult]:
    return [BulkResult(r.id, r.code, r.message, timer_from_pb(r.timer) if r.HasField("timer") else None)
            for r in resp.results]


def lease_from_pb(pb: timers_pb2.Lease) -> Lease:
    return Lease(timer_from_pb(pb.timer), pb.lease_id, pb.attempt, ts_to_datetime(pb.expires_at))


def _delivery_from_pb(pb: timers_pb2.Timer) -> dict:
    return {
        "webhook": pb.webhook.url if pb.HasField("webhook") else None,
        "queue": pb.queue.queue if pb.HasField("queue") else None,
        "endpoint": pb.endpoint_id or None,
        "max_attempts": pb.delivery_policy.max_attempts,
        "delivery_attempts": tuple(
            DeliveryAttempt(a.attempt, a.fire_id, ts_to_datetime(a.at), a.status_code, a.latency_ms, a.error_class,
                            a.response_body, opt_ts(a, "next_attempt_at")) for a in pb.delivery_attempts),
        "next_attempt_at": opt_ts(pb, "next_attempt_at"),
    }


def event_from_pb(pb: timers_pb2.Event) -> Event:
    return Event(
        sequence=pb.sequence, kind=_enum(EventKind, pb.kind), tenant=pb.tenant, timer_id=pb.timer_id,
        at=ts_to_datetime(pb.at), revision=pb.revision, state=_enum(TimerState, pb.state),
        fire_at=ts_to_datetime(pb.fire_at), fire_id=pb.fire_id or None,
        escalation_step=pb.escalation_step, action=bytes(pb.action))


def member_from_pb(m: cluster_pb2.Member) -> Member:
    return Member(m.id, m.raft_address, m.grpc_address, m.role, m.connected, m.match_index, m.lag)


def status_from_pb(pb: cluster_pb2.StatusResponse) -> ClusterStatus:
    return ClusterStatus(
        node=pb.node, cluster=pb.cluster, leader=pb.leader or None,
        leader_grpc_address=pb.leader_grpc_address or None, term=pb.term,
        commit_index=pb.commit_index, applied_index=pb.applied_index,
        members=tuple(member_from_pb(m) for m in pb.members),
        timers=MappingProxyType(dict(pb.timers)), lagging=pb.lagging,
        webhook_circuits=MappingProxyType({e.endpoint: e.circuit for e in pb.webhook_endpoints}))


def snapshot_from_pb(pb: cluster_pb2.Snapshot) -> SnapshotInfo:
    return SnapshotInfo(last_index=pb.last_index, last_term=pb.last_term, created_at=opt_ts(pb, "created_at"),
                        size=pb.size, timers=pb.timers, sha256=pb.sha256, node=pb.node)


# ---------------------------------------------------------------- requests


def bulk_request(cls, tenant: Optional[str], ids, selector, **change):
    """CancelTimersRequest / RescheduleTimersRequest for `ids` or a label `selector` (a mapping or
    "k=v,k2=v2"); `change`: fire_at (datetime/ms), delay or extend_by (timedelta/seconds)."""
    if (ids is None) == (selector is None):
        raise InvalidArgument("give ids or a selector (not both)")
    req = cls(tenant=tenant or "")
    if ids is not None:
        req.ids.extend([ids] if isinstance(ids, str) else list(ids))
    else:
        req.label_selector = label_selector(selector)
    for name, value in change.items():
        if value is None:
            continue
        if name == "fire_at":
            req.fire_at.CopyFrom(ms_to_timestamp(time_to_ms(value)))
        else:
            getattr(req, name).CopyFrom(duration_to_pb(value, name))
    return req


def create_many_request(specs: Iterable[Union[TimerSpec, Mapping]], tenant: Optional[str], brief: bool = False
                        ) -> timers_pb2.CreateTimersRequest:
    """CreateTimers of `specs` (TimerSpecs or dicts); a spec naming no tenant gets `tenant`
    (the client's default) when that is set. `brief`: ask for ids and created flags only."""
    pbs = []
    for s in specs:
        s = as_spec(s)
        if s.tenant is None and tenant:
            s = TimerSpec(**{**s.__dict__, "tenant": tenant})
        pbs.append(spec_to_pb(s))
    return timers_pb2.CreateTimersRequest(timers=pbs, brief=brief)


def brief_results(resp: timers_pb2.CreateTimersResponse, n: int) -> list[tuple[str, bool]]:
    """(id, created) per spec of a brief CreateTimers answer (or of a full one: a server that
    predates `brief` answers with the records)."""
    if not resp.ids and resp.results:
        return [(r.timer.id, r.created) for r in resp.results]
    ids, created = list(resp.ids), list(resp.created)
    if len(ids) != n or len(created) != n:
        raise MinootsError(f"a brief CreateTimers answer holds {len(ids)} ids and {len(created)} flags "
                           f"for {n} timers")
    return list(zip(ids, created))


def lease_request(queue: str, tenant: Optional[str], max_timers: int, visibility, wait
                  ) -> tuple[timers_pb2.LeaseTimersRequest, float]:
    """LeaseTimers and the seconds its long poll may add to the call's deadline."""
    w = duration_to_pb(wait, "wait")
    req = timers_pb2.LeaseTimersRequest(tenant=tenant or "", queue=queue, max_timers=max_timers,
                                        visibility_timeout=duration_to_pb(visibility, "visibility"), wait=w)
    return req, w.ToMilliseconds() / 1000


def stream_leases_request(queue: str, tenant: Optional[str], max_outstanding: int, visibility
                          ) -> timers_pb2.StreamLeasesRequest:
    return timers_pb2.StreamLeasesRequest(tenant=tenant or "", queue=queue, max_outstanding=max_outstanding,
                                          visibility_timeout=duration_to_pb(visibility, "visibility"))


def lease_ref(lease: Lease) -> timers_pb2.LeaseRef:
    return timers_pb2.LeaseRef(tenant=lease.timer.tenant, id=lease.timer.id, lease_id=lease.lease_id)


def extend_request(lease: Lease, visibility) -> timers_pb2.ExtendLeaseRequest:
    return timers_pb2.ExtendLeaseRequest(tenant=lease.timer.tenant, id=lease.timer.id, lease_id=lease.lease_id,
                                         visibility_timeout=duration_to_pb(visibility, "visibility"))


def label_selector(labels: Union[Mapping[str, str], str, None]) -> str:
    if labels is None:
        return ""
    if isinstance(labels, str):
        return labels
    return ",".join(f"{k}={v}" for k, v in labels.items())


def list_request(tenant, states, labels, fire_at_from, fire_at_to, page_size, fired_at_from=None,
                 fired_at_to=None) -> timers_pb2.ListTimersRequest:
    req = timers_pb2.ListTimersRequest(tenant=tenant or "", label_selector=label_selector(labels),
                                       page_size=page_size or 0)
    if states:
        if isinstance(states, (str, int, TimerState)):
            states = [states]
        req.states.extend(int(TimerState.parse(s)) for s in states)
    if fire_at_from is not None:
        req.fire_at_from.CopyFrom(ms_to_timestamp(time_to_ms(fire_at_from, "fire_at_from")))
    if fire_at_to is not None:
        req.fire_at_to.CopyFrom(ms_to_timestamp(time_to_ms(fire_at_to, "fire_at_to")))
    if fired_at_from is not None:
        req.fired_at_from.CopyFrom(ms_to_timestamp(time_to_ms(fired_at_from, "fired_at_from")))
    if fired_at_to is not None:
        req.fired_at_to.CopyFrom(ms_to_timestamp(time_to_ms(fired_at_to, "fired_at_to")))
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
    return timers_pb2.WatchEventsRequest(from_sequence=from_sequence, tenant=tenant or "", kinds=event_kinds(kinds))


def event_kinds(kinds) -> list[int]:
    """EventKinds, names or numbers (one or several; None: none) as wire values."""
    if not kinds:
        return []
    if isinstance(kinds, (str, int, EventKind)):
        kinds = [kinds]
    return [int(EventKind.parse(k)) for k in kinds]


def export_request(last_index: Optional[int], include_secrets: bool = False) -> cluster_pb2.ExportSnapshotRequest:
    """ExportSnapshot of the snapshot at `last_index` (None: the node's latest); webhook
    signing secrets only with `include_secrets`."""
    if last_index is not None and (isinstance(last_index, bool) or not isinstance(last_index, int)
                                   or last_index < 1):
        raise InvalidArgument(f"last_index must be an int >= 1, got {last_index!r}")
    return cluster_pb2.ExportSnapshotRequest(last_index=last_index or 0, include_secrets=bool(include_secrets))
