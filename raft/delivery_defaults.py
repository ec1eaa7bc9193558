"""Each tenant's default delivery policy, as replicated state.

A webhook or queue timer created without a policy field (max attempts, backoff base
and cap, attempt timeout, ack deadline) takes that field from its tenant's defaults,
else from the built-in DeliveryPolicy(). The choice is made when the create command
is applied (raft/fsm.py), from this committed table: every replica resolves the same
policy, and the timer keeps it (a later change of the defaults applies to timers
created after it). Changed only by applying SetDeliveryDefaults (None clears).
"""
from __future__ import annotations

from typing import Optional

from minoots.kernel import InvalidArgument, KernelError
from minoots.kernel.delivery import DEFAULT_POLICY, DeliveryPolicy, check_policy
from minoots.kernel.validate import check_tenant

__all__ = ["DeliveryDefaults", "DefaultsNotFound", "MAX_DEFAULTS", "resolve_policy"]

MAX_DEFAULTS = 100_000              # bounded state, like quotas


class DefaultsNotFound(KernelError):
    code = "NOT_FOUND"


def resolve_policy(given: tuple, defaults: DeliveryPolicy, timeout_ms: int = 0) -> DeliveryPolicy:
    """The policy of a new timer: each field as given, or (None) the tenant default's;
    an endpoint's non-zero attempt timeout stands in for a timeout not given. A cap
    inherited below an explicit base is raised to the base."""
    fields = list(given) + [None] * (len(DeliveryPolicy._fields) - len(given))
    if fields[3] is None and timeout_ms:
        fields[3] = timeout_ms
    out = DeliveryPolicy(*(d if g is None else g for g, d in zip(fields, defaults)))
    if fields[2] is None and out.backoff_cap_ms < out.backoff_base_ms:
        out = out._replace(backoff_cap_ms=out.backoff_base_ms)
    return out


class DeliveryDefaults:
    """tenant -> DeliveryPolicy."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, DeliveryPolicy] = {}

    def set(self, tenant: str, policy: Optional[tuple]) -> DeliveryPolicy:
        """Set (a full policy) or clear (None) a tenant's defaults; returns what applies afterwards."""
        tenant = check_tenant("tenant", tenant)
        if policy is None:
            if self._by_tenant.pop(tenant, None) is None:
                raise DefaultsNotFound(f"tenant {tenant!r} has no delivery defaults of its own")
            return DEFAULT_POLICY
        if not isinstance(policy, tuple) or len(policy) != len(DeliveryPolicy._fields):
            raise InvalidArgument("policy", f"must have {len(DeliveryPolicy._fields)} fields")
        pol = check_policy("policy", DeliveryPolicy(*policy))
        if tenant not in self._by_tenant and len(self._by_tenant) >= MAX_DEFAULTS:
            raise InvalidArgument("tenant", f"at most {MAX_DEFAULTS} tenants may hold delivery defaults")
        self._by_tenant[tenant] = pol
        return pol

    def effective(self, tenant: str) -> tuple[DeliveryPolicy, bool]:
        """(the defaults that apply to `tenant`, whether they are the built-in ones)."""
        own = self._by_tenant.get(tenant)
        return (DEFAULT_POLICY, True) if own is None else (own, False)

    def __len__(self) -> int:
        return len(self._by_tenant)

    def to_json(self) -> list:
        return [[t, list(p)] for t, p in sorted(self._by_tenant.items())]

    @classmethod
    def from_json(cls, rows) -> "DeliveryDefaults":
        table = cls()
        for tenant, policy in rows or ():
            table.set(tenant, tuple(policy))
        return table
