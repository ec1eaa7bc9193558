"""The Tenants service: tenant quotas and retention (SetQuota, SetRetention: admin;
GetQuota, GetRetention: admin, operator, and a writer or reader for its own tenants:
api/auth.py's table decides).

A quota change is a replicated command (raft/commands.py SetQuota / ClearQuota)
applied the same way on every node; what a quota means is raft/quotas.py's
docstring. GetQuota answers from this node's applied state, with what the tenant
holds now (its outstanding timers and their payload bytes).
"""
from __future__ import annotations

from minoots.kernel import InvalidArgument
from minoots.raft import commands
from minoots.raft.quotas import DEFAULT_TENANT_QUOTA, FIELDS, MAX_QUOTA_VALUE, check_quota_tenant
from minoots.raft.retention import MAX_RETENTION_MS
from minoots.v1 import tenants_pb2 as tpb
from minoots.v1 import tenants_pb2_grpc

from .service import Writes, _unary

__all__ = ["TenantsService"]


class TenantsService(Writes, tenants_pb2_grpc.TenantsServicer):
    def __init__(self, node, bridge) -> None:
        self._node = node
        self._bridge = bridge
        self._machine = node.machine

    @_unary
    async def SetQuota(self, request, context):
        tenant = check_quota_tenant("tenant", request.tenant)
        given = {f: getattr(request, f) if request.HasField(f) else None for f in FIELDS}
        if request.clear:
            if any(v is not None for v in given.values()):
                raise InvalidArgument("clear", "clears the tenant's quota: give no limits with it")
            await self._write(commands.ClearQuota(tenant), context)
        else:
            for f, v in given.items():
                if v is not None and v > MAX_QUOTA_VALUE:
                    raise InvalidArgument(f, f"at most {MAX_QUOTA_VALUE} (0: unlimited)")
            await self._write(commands.SetQuota(tenant, **given), context)
        return tpb.SetQuotaResponse(quota=await self._tenant_quota(tenant))

    @_unary
    async def GetQuota(self, request, context):
        tenant = check_quota_tenant("tenant", request.tenant)
        return tpb.GetQuotaResponse(quota=await self._tenant_quota(tenant))

    async def _tenant_quota(self, tenant: str) -> tpb.TenantQuota:
        quota, inherited = self._machine.quota(tenant)
        out = tpb.TenantQuota(tenant=tenant, inherited=inherited,
                              quota=tpb.Quota(**{f: getattr(quota, f) for f in FIELDS}))
        if tenant != DEFAULT_TENANT_QUOTA:
            usage = await self._bridge.read(lambda k: k.usage(tenant))
            out.timers, out.payload_bytes = usage.timers, usage.payload_bytes
        return out

    @_unary
    async def SetRetention(self, request, context):
        tenant = check_quota_tenant("tenant", request.tenant)
        if request.clear == request.HasField("retention_ms"):
            raise InvalidArgument("retention_ms", "give a retention or clear, exactly one")
        if request.HasField("retention_ms") and request.retention_ms > MAX_RETENTION_MS:
            raise InvalidArgument("retention_ms", f"at most {MAX_RETENTION_MS} ms (ten years)")
        ms = None if request.clear else request.retention_ms
        await self._write(commands.SetRetention(tenant, ms), context)
        return tpb.SetRetentionResponse(retention=self._tenant_retention(tenant))

    @_unary
    async def GetRetention(self, request, context):
        tenant = check_quota_tenant("tenant", request.tenant)
        return tpb.GetRetentionResponse(retention=self._tenant_retention(tenant))

    def _tenant_retention(self, tenant: str) -> tpb.TenantRetention:
        ms, inherited = self._machine.retention(tenant)
        return tpb.TenantRetention(tenant=tenant, retention_ms=ms, inherited=inherited)
