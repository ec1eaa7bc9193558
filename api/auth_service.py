"""The Auth service: API tokens (create, list, revoke) and WhoAmI.

A token is made at the node that takes the request (random, shown once in the
answer) and only its hash is proposed (raft/tokens.py), so the log, snapshots and
other nodes never hold it. Who may call these is api/auth.py's table.
"""
from __future__ import annotations

from minoots.kernel import InvalidArgument
from minoots.raft import commands
from minoots.raft.tokens import MAX_NAME_LEN, TENANT_ROLES, new_token, subject_binding, token_hash
from minoots.v1 import auth_pb2 as apb
from minoots.v1 import auth_pb2_grpc

from .auth import current_principal
from .convert import ms_timestamp
from .service import Writes, _unary

MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


def token_info(r) -> apb.TokenInfo:
    info = apb.TokenInfo(id=r.id, name=r.name, role=r.role, tenants=list(r.tenants),
                         created_at=ms_timestamp(r.created_at_ms))
    if r.expires_at_ms:
        info.expires_at.CopyFrom(ms_timestamp(r.expires_at_ms))
    return info


class AuthService(Writes, auth_pb2_grpc.AuthServicer):
    def __init__(self, node, bridge) -> None:
        self._node = node
        self._bridge = bridge
        self._machine = node.machine

    @_unary
    async def CreateToken(self, request, context):
        if request.ttl_seconds > MAX_TTL_SECONDS:
            raise InvalidArgument("ttl_seconds", f"at most {MAX_TTL_SECONDS} (10 years); 0 = never expires")
        now = self._node.clock.now_ms()
        if request.cert_subject:
            if len(request.cert_subject) > MAX_NAME_LEN:
                raise InvalidArgument("cert_subject", f"at most {MAX_NAME_LEN} characters")
            (tid, digest), token = subject_binding(request.cert_subject), ""
        else:
            tid, token = new_token()
            digest = token_hash(token)
        tenants = tuple(sorted(set(request.tenants))) if request.role in TENANT_ROLES else tuple(request.tenants)
        record = await self._write(commands.PutToken(
            tid, digest, request.name or request.cert_subject, request.role, tenants, now,
            now + request.ttl_seconds * 1000 if request.ttl_seconds else 0), context)
        return apb.CreateTokenResponse(token=token, info=token_info(record))

    @_unary
    async def ListTokens(self, request, context):
        return apb.ListTokensResponse(tokens=[token_info(r) for r in self._machine.tokens()])

    @_unary
    async def RevokeToken(self, request, context):
        record = await self._write(commands.RevokeToken(request.id), context)
        return apb.RevokeTokenResponse(revoked=token_info(record))

    @_unary
    async def WhoAmI(self, request, context):
        p = current_principal()
        return apb.WhoAmIResponse(principal=p.name, role=p.role, tenants=sorted(p.tenants or ()))
