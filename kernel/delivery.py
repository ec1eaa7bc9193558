"""Delivery of a fired timer: its typed action (a webhook, or a pull queue), its retry
policy and the replicated record of every attempt.

A queue timer, once fired, is available on its named queue (per tenant) until a worker
leases it: the lease command (proposed by the leader with its `now`) hands out the
oldest available timers, each with a lease id and an expiry that waits in the wheel. Ack
settles it; Nack (with the leader's retry time) or an expired lease counts the attempt
as failed and makes it available again, or dead-letters it after the last attempt.

The kernel never performs an attempt and never picks a retry time. The leader
does both and proposes the outcome as data (raft/commands.py DeliveryAttempt):
the kernel only checks it against the timer and moves the lifecycle
FIRED -> DELIVERING -> SETTLED | DEAD_LETTERED, keeping each waiting retry in the
wheel like any other deadline. Everything here is an immutable value, so a
snapshot capture can share them with the live state.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from .errors import InvalidArgument
from .validate import _int, _str

__all__ = [
    "Webhook", "DeliveryPolicy", "Delivery", "Attempt", "DeliveryRecord", "check_delivery",
    "MAX_URL_LEN", "MAX_HEADERS", "MAX_HEADER_BYTES", "MAX_ATTEMPTS", "MAX_BODY_EXCERPT", "MAX_ATTEMPT_LOG",
    "MAX_ERROR_LEN", "MAX_BACKOFF_MS", "MAX_ATTEMPT_TIMEOUT_MS", "is_success", "check_queue",
    "MAX_QUEUE_LEN", "MAX_LEASE_BATCH", "check_endpoint_id", "check_policy", "MIN_VISIBILITY_MS", "MAX_VISIBILITY_MS",
]

MAX_URL_LEN = 2048
MAX_HEADERS = 16
MAX_HEADER_BYTES = 4096            # all extra header names and values together
MAX_ATTEMPTS = 50
MAX_BODY_EXCERPT = 1024            # bytes of the response body kept per attempt
MAX_ATTEMPT_LOG = 64               # attempts kept per timer (the oldest go first)
MAX_ERROR_LEN = 64
MAX_BACKOFF_MS = 24 * 3600 * 1000
MAX_ATTEMPT_TIMEOUT_MS = 120_000
MAX_QUEUE_LEN = 128
MAX_LEASE_BATCH = 100
MIN_VISIBILITY_MS = 1000
MAX_VISIBILITY_MS = 12 * 3600 * 1000
MAX_ENDPOINT_ID_LEN = 64
_ENDPOINT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_QUEUE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:~-")

#: Header names the dispatcher sets itself; a timer may not override them.
RESERVED_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                              "content-length", "host", "transfer-encoding", "connection"})


class Webhook(NamedTuple):
    """POST the timer's envelope to `url` (http or https) with these extra headers."""

    url: str
    headers: tuple = ()            # ((name, value), ...) sorted by name


class DeliveryPolicy(NamedTuple):
    """Retries: attempt n failing waits a leader-drawn uniform(0, min(cap, base * 2**(n-1))) ms."""

    max_attempts: int = 5
    backoff_base_ms: int = 1000
    backoff_cap_ms: int = 60_000
    attempt_timeout_ms: int = 10_000
    ack_deadline_ms: int = 30_000  # for queue deliveries (not used by webhooks)


DEFAULT_POLICY = DeliveryPolicy()


class Delivery(NamedTuple):
    """What a timer does when it fires (besides its events): exactly one of a webhook
    and a queue name. `endpoint` names the tenant's managed endpoint (raft/endpoints.py)
    a webhook was resolved from: it is signed with that endpoint's secret."""

    webhook: Optional[Webhook]
    policy: DeliveryPolicy = DEFAULT_POLICY
    queue: Optional[str] = None
    endpoint: Optional[str] = None


class Attempt(NamedTuple):
    """One attempt's outcome, as the leader proposed it. `next_at` is the retry time
    the leader drew (None on success or when it was the last attempt)."""

    attempt: int
    fire_id: int
    at_ms: int
    status: int            # HTTP status, 0 when there was no response
    latency_ms: int
    error: str             # "" on success; else a class: "http_status", "timeout", "connect", ...
    body: bytes            # the first MAX_BODY_EXCERPT bytes of the response
    next_at: Optional[int]


class DeliveryRecord(NamedTuple):
    """A timer's delivery state, replaced whole on every change.

    `attempt` counts resolved attempts of the current budget; `waiting` is True while
    the next attempt sits in the wheel at `next_at`; a DELIVERING timer that is not
    waiting has an attempt due (the leader dispatches it). `log` keeps the last
    MAX_ATTEMPT_LOG attempts across redrives."""

    spec: Delivery
    attempt: int = 0
    next_at: int = -1
    waiting: bool = False
    log: tuple = ()
    lease: str = ""        # queue timers: the live lease's id ("" when none); its expiry is next_at
    avail: int = 0         # queue timers: the seq at which it became available (0: not available)
    step: int = 0          # an escalation timer (kernel/occurrences.py): the ladder step it delivers


def is_success(status: int, error: str) -> bool:
    """The kernel's one rule for a successful webhook attempt: a 2xx and no error."""
    return not error and 200 <= status < 300


def _bounded(field: str, v: Any, lo: int, hi: int) -> int:
    n = _int(field, v)
    if not lo <= n <= hi:
        raise InvalidArgument(field, f"must be within {lo}..{hi}, got {n}")
    return n


def check_delivery(field: str, d: Any) -> Optional[Delivery]:
    """A normalised Delivery (exact types, sorted headers) or InvalidArgument. URL
    syntax beyond scheme and length, and address safety, are the API's checks."""
    if d is None:
        return None
    if not isinstance(d, Delivery):
        raise InvalidArgument(field, f"must be a Delivery, not {type(d).__name__}")
    if (d.webhook is None) == (d.queue is None):
        raise InvalidArgument(field, "give exactly one of a webhook and a queue")
    policy = _check_policy(f"{field}.policy", d.policy)
    if d.queue is not None:
        if d.endpoint is not None:
            raise InvalidArgument(f"{field}.endpoint", "a queue delivery has no endpoint")
        return Delivery(None, policy, check_queue(f"{field}.queue", d.queue))
    endpoint = None if d.endpoint is None else check_endpoint_id(f"{field}.endpoint", d.endpoint)
    wh = d.webhook
    if not isinstance(wh, Webhook):
        raise InvalidArgument(f"{field}.webhook", f"must be a Webhook, not {type(wh).__name__}")
    url = _str(f"{field}.webhook.url", wh.url)
    if not url.startswith(("http://", "https://")) or len(url) > MAX_URL_LEN or not url.isascii() \
            or any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidArgument(f"{field}.webhook.url",
                              f"must be an http:// or https:// URL of at most {MAX_URL_LEN} ASCII characters "
                              "without spaces")
    headers = wh.headers or ()
    if not isinstance(headers, (tuple, list)) or len(headers) > MAX_HEADERS:
        raise InvalidArgument(f"{field}.webhook.headers", f"must be at most {MAX_HEADERS} (name, value) pairs")
    pairs: dict[str, str] = {}
    total = 0
    for i, pair in enumerate(headers):
        p = f"{field}.webhook.headers[{i}]"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidArgument(p, "must be a (name, value) pair")
        name = _str(f"{p}.name", pair[0]).lower()
        value = _str(f"{p}.value", pair[1])
        if not name or not name.isascii() or any(not (c.isalnum() or c in "-_") for c in name):
            raise InvalidArgument(f"{p}.name", "must be a non-empty header name of [A-Za-z0-9_-]")
        if name in RESERVED_HEADERS:
            raise InvalidArgument(f"{p}.name", f"{name!r} is set by MINOOTS itself")
        if not value.isascii() or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise InvalidArgument(f"{p}.value", "must be printable ASCII")
        if name in pairs:
            raise InvalidArgument(f"{p}.name", f"header {name!r} is given twice")
        pairs[name] = value
        total += len(name) + len(value)
    if total > MAX_HEADER_BYTES:
        raise InvalidArgument(f"{field}.webhook.headers", f"names and values exceed {MAX_HEADER_BYTES} bytes")
    return Delivery(Webhook(url, tuple(sorted(pairs.items()))), policy, None, endpoint)


def check_endpoint_id(field: str, v: Any) -> str:
    """An endpoint id: 1..64 characters of [A-Za-z0-9_-] (the API makes `ep_` + 16 hex)."""
    s = _str(field, v)
    if not 1 <= len(s) <= MAX_ENDPOINT_ID_LEN or not set(s) <= _ENDPOINT_CHARS:
        raise InvalidArgument(field, f"must be 1..{MAX_ENDPOINT_ID_LEN} characters of [A-Za-z0-9_-]")
    return s


def check_queue(field: str, v: Any) -> str:
    """A queue name: 1..128 characters of [A-Za-z0-9._:~-]."""
    s = _str(field, v)
    if not 1 <= len(s) <= MAX_QUEUE_LEN or not set(s) <= _QUEUE_CHARS:
        raise InvalidArgument(field, f"must be 1..{MAX_QUEUE_LEN} characters of [A-Za-z0-9._:~-]")
    return s


def _check_policy(p: str, pol: Any) -> DeliveryPolicy:
    if not isinstance(pol, DeliveryPolicy):
        raise InvalidArgument(p, f"must be a DeliveryPolicy, not {type(pol).__name__}")
    base = _bounded(f"{p}.backoff_base_ms", pol.backoff_base_ms, 1, MAX_BACKOFF_MS)
    cap = _bounded(f"{p}.backoff_cap_ms", pol.backoff_cap_ms, 1, MAX_BACKOFF_MS)
    if cap < base:
        raise InvalidArgument(f"{p}.backoff_cap_ms", f"must be >= backoff_base_ms ({base}), got {cap}")
    return DeliveryPolicy(
        _bounded(f"{p}.max_attempts", pol.max_attempts, 1, MAX_ATTEMPTS), base, cap,
        _bounded(f"{p}.attempt_timeout_ms", pol.attempt_timeout_ms, 1, MAX_ATTEMPT_TIMEOUT_MS),
        _bounded(f"{p}.ack_deadline_ms", pol.ack_deadline_ms, MIN_VISIBILITY_MS, MAX_VISIBILITY_MS))


def check_error_class(field: str, v: Any) -> str:
    s = _str(field, v)
    if len(s) > MAX_ERROR_LEN or not s.isascii() or any(not (c.isalnum() or c in "_-.") for c in s):
        raise InvalidArgument(field, f"must be at most {MAX_ERROR_LEN} characters of [A-Za-z0-9_.-]")
    return s


def check_policy(field: str, pol: Any) -> DeliveryPolicy:
    """A DeliveryPolicy with every field within its bounds, or InvalidArgument."""
    return _check_policy(field, pol)


def bounded_int(field: str, v: Any, lo: int, hi: int) -> int:
    return _bounded(field, v, lo, hi)
