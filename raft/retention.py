"""Tenant retention as replicated state: how long each tenant's terminal timers stay.

A tenant's retention (ms; 0: at once) is how long its settled, cancelled and
dead-lettered timers stay readable before the kernel removes them in a tick
(kernel/retention.py says how). The tenant "*" is the default of tenants without
their own; without a "*" entry the default is DEFAULT_RETENTION_MS (24 h).
Changed only by applying SetRetention (a None retention clears the tenant's
own), so every replica hands the kernel the same policy; a change applies to
timers that end after it.
"""
from __future__ import annotations

from typing import Optional

from minoots.kernel import InvalidArgument, KernelError
from minoots.kernel.retention import DEFAULT_RETENTION_MS, MAX_RETENTION_MS, RetentionPolicy, check_retention

from .quotas import DEFAULT_TENANT_QUOTA, check_quota_tenant

__all__ = ["RetentionTable", "RetentionNotFound", "MAX_RETENTIONS", "DEFAULT_RETENTION_MS", "MAX_RETENTION_MS"]

MAX_RETENTIONS = 100_000            # bounded state, like quotas


class RetentionNotFound(KernelError):
    code = "NOT_FOUND"


class RetentionTable:
    """Tenant ("*": the default) -> retention ms; `policy` is what the kernel applies."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, int] = {}
        self.policy = RetentionPolicy()

    def set(self, tenant: str, retention_ms: Optional[int]) -> int:
        """Set a tenant's retention, or clear it (None); returns its retention afterwards."""
        tenant = check_quota_tenant("retention.tenant", tenant)
        if retention_ms is None:
            if self._by_tenant.pop(tenant, None) is None:
                raise RetentionNotFound(f"tenant {tenant!r} has no retention of its own")
        else:
            ms = check_retention("retention_ms", retention_ms)
            if tenant not in self._by_tenant and len(self._by_tenant) >= MAX_RETENTIONS:
                raise InvalidArgument("retention", f"at most {MAX_RETENTIONS} tenant retentions; clear unused ones")
            self._by_tenant[tenant] = ms
        self._derive()
        return self.effective(tenant)[0]

    def _derive(self) -> None:
        default = self._by_tenant.get(DEFAULT_TENANT_QUOTA, DEFAULT_RETENTION_MS)
        self.policy = RetentionPolicy({t: v for t, v in self._by_tenant.items() if t != DEFAULT_TENANT_QUOTA},
                                      default)

    def effective(self, tenant: str) -> tuple[int, bool]:
        """(the retention that applies to `tenant`, whether it is inherited rather than its own)."""
        own = self._by_tenant.get(tenant)
        if own is not None:
            return own, False
        return self.policy.default, True

    def __len__(self) -> int:
        return len(self._by_tenant)

    def to_json(self) -> list[dict]:
        return [{"tenant": t, "retention_ms": v} for t, v in sorted(self._by_tenant.items())]

    @classmethod
    def from_json(cls, items) -> "RetentionTable":
        t = cls()
        for obj in items or ():
            tenant = check_quota_tenant("retention.tenant", obj["tenant"])
            t._by_tenant[tenant] = check_retention("retention_ms", obj["retention_ms"])
        if len(t._by_tenant) > MAX_RETENTIONS:
            raise InvalidArgument("retention", f"at most {MAX_RETENTIONS} tenant retentions")
        t._derive()
        return t
