"""How long terminal timers stay readable: the retention policy the kernel applies.

A timer that reaches a terminal state (settled, cancelled, dead-lettered) at
command time T gets a purge deadline T + its tenant's retention, and leaves the
table (id index, idempotency index and all) in the first tick at or after that
deadline: the deadline sits in the same timing wheel as fire deadlines, so no
scan ever looks for expired timers. Retention 0 removes the timer in the command
that ends it. Only committed command times enter the deadline, so every replica
purges the same timers in the same tick.

The policy is data the layer above passes in (the Raft layer replicates it per
tenant: raft/retention.py); a change applies to timers that end after it, a
timer already waiting keeps the deadline it got. Once purged, a timer's id and
idempotency key are free: a retried create with the same key makes a new timer.
"""
from __future__ import annotations

from typing import Mapping, Optional

from .errors import InvalidArgument

__all__ = ["DEFAULT_RETENTION_MS", "MAX_RETENTION_MS", "RetentionPolicy", "check_retention"]

DEFAULT_RETENTION_MS = 24 * 3600 * 1000      # tenants without a policy of their own
MAX_RETENTION_MS = 10 * 366 * 24 * 3600 * 1000   # ten years


def check_retention(field: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_RETENTION_MS:
        raise InvalidArgument(field, f"must be an integer number of ms in 0..{MAX_RETENTION_MS} (0: at once)")
    return int(v)


class RetentionPolicy:
    """Tenant -> retention (ms), plus the retention of every other tenant."""

    __slots__ = ("by_tenant", "default")

    def __init__(self, by_tenant: Optional[Mapping[str, int]] = None, default: int = DEFAULT_RETENTION_MS) -> None:
        self.by_tenant = {t: check_retention(f"retention[{t!r}]", v) for t, v in (by_tenant or {}).items()}
        self.default = check_retention("retention default", default)

    def of(self, tenant: str) -> int:
        return self.by_tenant.get(tenant, self.default)

    @property
    def is_default(self) -> bool:
        """True when every tenant has DEFAULT_RETENTION_MS (what snapshot format 1 implies)."""
        return self.default == DEFAULT_RETENTION_MS and all(
            v == DEFAULT_RETENTION_MS for v in self.by_tenant.values())

    def __eq__(self, other) -> bool:
        return (isinstance(other, RetentionPolicy) and self.default == other.default
                and self.by_tenant == other.by_tenant)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RetentionPolicy({self.by_tenant!r}, default={self.default})"
