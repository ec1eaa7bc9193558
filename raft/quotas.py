"""Tenant quotas as replicated state: what each tenant may hold and how fast it may create.

A quota has four numbers, each 0 for unlimited:

    max_timers          outstanding (scheduled, armed or fired) timers the tenant may hold
    max_payload_bytes   payload bytes those timers may hold together
    create_rate         timers per second the tenant may create (a token bucket at the API)
    create_burst        the bucket's size (0 with a rate: one second's worth)

The first two are enforced at apply by the kernel (kernel/quota.py), with the
limits passed in as data, so every replica refuses the same group; the last two
by the node that takes a create, before anything is proposed (api/quotas.py).

A quota for the tenant "*" is the cluster-wide default: it applies, as a whole,
to every tenant without a quota of its own. A tenant's own quota replaces the
default entirely (its zeros mean unlimited); clearing it brings the default back.
Quotas change only by applying commands (SetQuota, ClearQuota), deterministically:
a SetQuota field left None keeps the tenant's current value (0 when it had none).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from minoots.kernel import InvalidArgument, KernelError, TenantLimit
from minoots.kernel.validate import check_tenant

__all__ = ["DEFAULT_TENANT_QUOTA", "MAX_QUOTAS", "MAX_QUOTA_VALUE", "Quota", "QuotaTable", "QuotaNotFound",
           "check_quota_tenant"]

DEFAULT_TENANT_QUOTA = "*"          # the quota of tenants without their own
MAX_QUOTAS = 100_000                # bounded state, like tokens
MAX_QUOTA_VALUE = (1 << 63) - 1
FIELDS = ("max_timers", "max_payload_bytes", "create_rate", "create_burst")


class QuotaNotFound(KernelError):
    code = "NOT_FOUND"


def check_quota_tenant(field: str, tenant) -> str:
    """A tenant name, or "*" for the default."""
    if tenant == DEFAULT_TENANT_QUOTA:
        return tenant
    return check_tenant(field, tenant)


@dataclass(frozen=True)
class Quota:
    max_timers: int = 0
    max_payload_bytes: int = 0
    create_rate: int = 0           # timers per second
    create_burst: int = 0

    @property
    def limit(self) -> TenantLimit:
        """What the kernel checks at apply."""
        return TenantLimit(self.max_timers, self.max_payload_bytes)

    @property
    def burst(self) -> int:
        """The token bucket's size: create_burst, or one second's worth when it is 0."""
        return self.create_burst or self.create_rate

    def to_json(self) -> dict:
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_json(cls, obj: dict) -> "Quota":
        return cls(**{f: int(obj.get(f, 0)) for f in FIELDS})


def _check_value(field: str, v) -> int:
    if type(v) is not int or not 0 <= v <= MAX_QUOTA_VALUE:
        raise InvalidArgument(f"quota.{field}", f"an integer in 0..{MAX_QUOTA_VALUE} (0: unlimited)")
    return v


class QuotaTable:
    """Tenant -> Quota; mutated only by applying commands (deterministic, no clock).

    `kernel_limits` and `kernel_default` are what the FSM passes to State.create,
    kept up to date here so the create path does no work per call: every tenant
    with a quota of its own is in `kernel_limits` (so its zeros override the
    default), and `kernel_default` is None unless "*" limits timers or bytes.
    """

    def __init__(self) -> None:
        self._by_tenant: dict[str, Quota] = {}
        self.kernel_limits: dict[str, TenantLimit] = {}
        self.kernel_default: Optional[TenantLimit] = None
        self.has_rates = False           # some quota limits the create rate (the API's fast path)

    def set(self, tenant: str, max_timers: Optional[int] = None, max_payload_bytes: Optional[int] = None,
            create_rate: Optional[int] = None, create_burst: Optional[int] = None) -> Quota:
        tenant = check_quota_tenant("quota.tenant", tenant)
        old = self._by_tenant.get(tenant)
        if old is None and len(self._by_tenant) >= MAX_QUOTAS:
            raise InvalidArgument("quota", f"at most {MAX_QUOTAS} tenant quotas; clear unused ones")
        base = old or Quota()
        given = {"max_timers": max_timers, "max_payload_bytes": max_payload_bytes, "create_rate": create_rate,
                 "create_burst": create_burst}
        values = {f: getattr(base, f) if v is None else _check_value(f, v) for f, v in given.items()}
        q = Quota(**values)
        self._by_tenant[tenant] = q
        self._derive()
        return q

    def clear(self, tenant: str) -> Quota:
        tenant = check_quota_tenant("quota.tenant", tenant)
        q = self._by_tenant.pop(tenant, None)
        if q is None:
            raise QuotaNotFound(f"tenant {tenant!r} has no quota of its own")
        self._derive()
        return q

    def _derive(self) -> None:
        default = self._by_tenant.get(DEFAULT_TENANT_QUOTA)
        self.kernel_default = default.limit if default is not None and not default.limit.unlimited else None
        self.kernel_limits = {t: q.limit for t, q in self._by_tenant.items() if t != DEFAULT_TENANT_QUOTA}
        self.has_rates = any(q.create_rate for q in self._by_tenant.values())

    def get(self, tenant: str) -> Optional[Quota]:
        """The tenant's own quota (or the default's, for "*"), or None."""
        return self._by_tenant.get(tenant)

    def effective(self, tenant: str) -> tuple[Quota, bool]:
        """(the quota that applies to `tenant`, whether it is inherited from the default "*"
        rather than the tenant's own). No quota at all: an unlimited Quota()."""
        q = self._by_tenant.get(tenant)
        if q is not None:
            return q, False
        default = self._by_tenant.get(DEFAULT_TENANT_QUOTA)
        return (default if default is not None else Quota()), tenant != DEFAULT_TENANT_QUOTA

    def all(self) -> list[tuple[str, Quota]]:
        return sorted(self._by_tenant.items())

    def __len__(self) -> int:
        return len(self._by_tenant)

    def to_json(self) -> list[dict]:
        return [{"tenant": t, **q.to_json()} for t, q in self.all()]

    @classmethod
    def from_json(cls, items) -> "QuotaTable":
        t = cls()
        for obj in items or ():
            tenant = check_quota_tenant("quota.tenant", obj["tenant"])
            t._by_tenant[tenant] = Quota(**{f: _check_value(f, obj.get(f, 0)) for f in FIELDS})
        if len(t._by_tenant) > MAX_QUOTAS:
            raise InvalidArgument("quota", f"at most {MAX_QUOTAS} tenant quotas")
        t._derive()
        return t
