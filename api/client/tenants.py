"""Tenant quota and retention calls of the blocking `Client`: set_quota, set_retention
(admin), get_quota, get_retention.

A mixin of `Client`: it uses the client's routing and retries (`_call`). Setting
a quota is idempotent (the same request twice leaves the same quota), so it is
retried like any safe write. Limits are 0 for unlimited; a limit not given to
`set_quota` keeps its current value. Tenant "*" is the default of tenants without
a quota of their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from minoots.v1 import tenants_pb2, tenants_pb2_grpc

__all__ = ["Quota", "TenantQuota", "TenantRetention", "TenantMethods", "DEFAULT_QUOTA_TENANT"]

DEFAULT_QUOTA_TENANT = "*"


@dataclass(frozen=True)
class Quota:
    max_timers: int = 0            # outstanding (scheduled, armed or fired) timers
    max_payload_bytes: int = 0     # payload bytes of those timers
    create_rate: int = 0           # timers created per second
    create_burst: int = 0          # 0: one second's worth


@dataclass(frozen=True)
class TenantQuota:
    tenant: str
    quota: Quota                   # the quota that applies to the tenant
    inherited: bool                # True: the default's ("*"); the tenant has none of its own
    timers: int                    # outstanding timers it holds now
    payload_bytes: int             # their payload bytes


@dataclass(frozen=True)
class TenantRetention:
    tenant: str
    retention_ms: int              # how long its terminal timers stay readable; 0: removed at once
    inherited: bool                # True: the default's ("*", or the built-in 24 h)


def tenant_quota_from_pb(pb: tenants_pb2.TenantQuota) -> TenantQuota:
    q = pb.quota
    return TenantQuota(pb.tenant, Quota(q.max_timers, q.max_payload_bytes, q.create_rate, q.create_burst),
                       pb.inherited, pb.timers, pb.payload_bytes)


class TenantMethods:
    def _tenants(self, addr: str):
        return self.node_stub(addr, tenants_pb2_grpc.TenantsStub)

    def set_quota(self, tenant: str, *, max_timers: Optional[int] = None, max_payload_bytes: Optional[int] = None,
                  create_rate: Optional[int] = None, create_burst: Optional[int] = None, clear: bool = False,
                  timeout: Optional[float] = None) -> TenantQuota:
        """Set `tenant`'s quota (admin); returns the quota that applies afterwards.

        `clear=True` removes the tenant's own quota (the default "*" applies again) and
        takes no limits."""
        req = tenants_pb2.SetQuotaRequest(tenant=tenant, clear=clear)
        for name, value in (("max_timers", max_timers), ("max_payload_bytes", max_payload_bytes),
                            ("create_rate", create_rate), ("create_burst", create_burst)):
            if value is not None:
                setattr(req, name, value)
        resp, _ = self._call("set_quota", lambda a, t: self._tenants(a).SetQuota(req, timeout=t), timeout=timeout)
        return tenant_quota_from_pb(resp.quota)

    def get_quota(self, tenant: Optional[str] = None, *, timeout: Optional[float] = None) -> TenantQuota:
        """The quota that applies to `tenant` (default: the client's tenant) and what it holds."""
        req = tenants_pb2.GetQuotaRequest(tenant=self._tenant(tenant))
        resp, _ = self._call("get_quota", lambda a, t: self._tenants(a).GetQuota(req, timeout=t), timeout=timeout)
        return tenant_quota_from_pb(resp.quota)

    def set_retention(self, tenant: str, retention_ms: Optional[int] = None, *, clear: bool = False,
                      timeout: Optional[float] = None) -> TenantRetention:
        """Set how long `tenant`'s settled, cancelled and dead-lettered timers stay
        readable (ms; 0: removed in the command that ends them; tenant "*": the default)
        (admin). `clear=True` removes the tenant's own so the default applies. Applies to
        timers that end from then on."""
        req = tenants_pb2.SetRetentionRequest(tenant=tenant, clear=clear)
        if retention_ms is not None:
            req.retention_ms = retention_ms
        resp, _ = self._call("set_retention", lambda a, t: self._tenants(a).SetRetention(req, timeout=t),
                             timeout=timeout)
        r = resp.retention
        return TenantRetention(r.tenant, r.retention_ms, r.inherited)

    def get_retention(self, tenant: Optional[str] = None, *, timeout: Optional[float] = None) -> TenantRetention:
        """The retention that applies to `tenant` (default: the client's tenant)."""
        req = tenants_pb2.GetRetentionRequest(tenant=self._tenant(tenant))
        resp, _ = self._call("get_retention", lambda a, t: self._tenants(a).GetRetention(req, timeout=t),
                             timeout=timeout)
        r = resp.retention
        return TenantRetention(r.tenant, r.retention_ms, r.inherited)
