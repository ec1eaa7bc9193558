"""Limits the API enforces on the node that takes a request (issue 12).

What a tenant may hold (outstanding timers, payload bytes) is replicated and
checked at apply, in the kernel (raft/quotas.py, kernel/quota.py). What is
about load rather than state is checked here, before anything is proposed:

- the create rate of a tenant: a token bucket per tenant, filled at the
  replicated quota's `create_rate` timers per second up to `create_burst`
  (`CreateRateLimiter`); a create that would overdraw it is refused with
  RESOURCE_EXHAUSTED and proposes nothing. The SDK sends writes to the leader,
  so its buckets are the ones that count; a client that writes through
  followers meets each node's buckets apart (at most members x the rate).
- watch streams per principal (`WatcherCap`),
- and, configured per node (`ApiLimits`): concurrent RPCs (grpc's
  maximum_concurrent_rpcs) and the create batcher's queue (api/batcher.py).
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Callable, Iterator, Optional

from minoots.kernel import KernelError

__all__ = ["ApiLimits", "Overloaded", "CreateRateExceeded", "TokenBucket", "CreateRateLimiter", "WatcherCap",
           "DEFAULT_MAX_CONCURRENT_RPCS", "DEFAULT_MAX_WATCHERS", "DEFAULT_MAX_QUEUED_CREATES",
           "DEFAULT_MAX_QUEUED_TIMERS"]

DEFAULT_MAX_CONCURRENT_RPCS = 1000      # watch streams count too
DEFAULT_MAX_WATCHERS = 64               # open WatchEvents/WatchEventBatches streams per principal
DEFAULT_MAX_QUEUED_CREATES = 4096       # create requests waiting for the next batch
DEFAULT_MAX_QUEUED_TIMERS = 200_000     # timers in those requests (~100 MB of specs)


class Overloaded(KernelError):
    """This node is at one of its caps (RESOURCE_EXHAUSTED); the request did nothing. A
    KernelError so every layer reports it like a typed refusal; it never comes from the kernel."""

    code = "RESOURCE_EXHAUSTED"


class CreateRateExceeded(Overloaded):
    """A create would overdraw its tenant's rate; nothing was proposed."""

    def __init__(self, tenant: str, rate: int, burst: int, asked: int, retry_after: float) -> None:
        self.tenant, self.rate, self.burst, self.asked, self.retry_after = tenant, rate, burst, asked, retry_after
        if asked > burst:
            detail = f"a request of {asked} timers is more than its burst of {burst}: send smaller batches"
        else:
            detail = f"burst {burst}; retry in {retry_after:.2f} s"
        super().__init__(f"create rate of tenant {tenant!r} exceeds {rate}/s ({detail})")


@dataclass(frozen=True)
class ApiLimits:
    """A node's caps (cli/node.py flags)."""

    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    max_watchers_per_principal: int = DEFAULT_MAX_WATCHERS
    max_queued_creates: int = DEFAULT_MAX_QUEUED_CREATES
    max_queued_timers: int = DEFAULT_MAX_QUEUED_TIMERS

    def validate(self) -> None:
        for name in ("max_concurrent_rpcs", "max_watchers_per_principal", "max_queued_creates",
                     "max_queued_timers"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")


class TokenBucket:
    """`rate` tokens per second up to `burst`; starts full."""

    __slots__ = ("rate", "burst", "level", "stamp")

    def __init__(self, rate: int, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = float(burst)
        self.stamp = now

    def refill(self, now: float) -> float:
        if now > self.stamp:
            self.level = min(float(self.burst), self.level + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        return self.level

    def retune(self, rate: int, burst: int) -> None:
        """The quota changed: keep what is in the bucket, up to the new size."""
        self.rate = rate
        self.burst = burst
        self.level = min(self.level, float(burst))

    def full(self, now: float) -> bool:
        return self.refill(now) >= self.burst


_TENANT = attrgetter("tenant")


class CreateRateLimiter:
    """Token buckets per tenant, sized by the replicated quotas (`machine.quotas`).

    `check(specs)` takes one token per timer from each tenant's bucket, all or
    nothing, and raises CreateRateExceeded when some tenant's bucket cannot pay.
    Nothing is done (no counting either) while no quota sets a rate. Buckets of
    idle tenants (full again) are dropped once there are more than `max_buckets`.
    Called from the event loop; a lock makes it safe from threads too.
    """

    def __init__(self, machine, clock: Callable[[], float] = time.monotonic, max_buckets: int = 10_000) -> None:
        self._machine = machine
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self.max_buckets = max_buckets
        self.refused = 0

    def check(self, specs) -> None:
        quotas = self._machine.quotas
        if not quotas.has_rates:
            return
        wanted = Counter(map(_TENANT, specs))
        with self._lock:
            now = self._clock()
            paying = []
            for tenant, n in wanted.items():
                q, _ = quotas.effective(tenant)
                if not q.create_rate:
                    continue
                b = self._bucket(tenant, q.create_rate, q.burst, now)
                if b.refill(now) < n:
                    self.refused += 1
                    retry = (n - b.level) / b.rate if n <= b.burst else float("inf")
                    raise CreateRateExceeded(tenant, q.create_rate, b.burst, n, retry)
                paying.append((b, n))
            for b, n in paying:
                b.level -= n

    def _bucket(self, tenant: str, rate: int, burst: int, now: float) -> TokenBucket:
        b = self._buckets.get(tenant)
        if b is None:
            if len(self._buckets) >= self.max_buckets:
                self._buckets = {t: x for t, x in self._buckets.items() if not x.full(now)}
            b = self._buckets[tenant] = TokenBucket(rate, burst, now)
        elif (b.rate, b.burst) != (rate, burst):
            b.refill(now)
            b.retune(rate, burst)
        return b


class TooManyWatchers(Overloaded):
    pass


class WatcherCap:
    """At most `limit` open watch streams per principal on this node."""

    def __init__(self, limit: int = DEFAULT_MAX_WATCHERS) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def open(self, principal: Optional[str]) -> int:
        return self._open.get(principal or "", 0)

    @contextmanager
    def hold(self, principal: Optional[str]) -> Iterator[None]:
        who = principal or ""
        with self._lock:
            n = self._open.get(who, 0)
            if n >= self.limit:
                raise TooManyWatchers(f"{who or 'this caller'} has {n} watch streams open on this node, "
                                      f"the most it may (--max-watchers-per-principal {self.limit}); "
                                      "close one or share a stream")
            self._open[who] = n + 1
        try:
            yield
        finally:
            with self._lock:
                n = self._open[who] - 1
                if n:
                    self._open[who] = n
                else:
                    del self._open[who]
