"""API token calls of the blocking `Client` (admin role): create, list, revoke, and WhoAmI.

A mixin of `Client`: it uses the client's routing and retries (`_call`). Creating
is not retried after an ambiguous failure (a second token would be made); the
error says so, and `list_tokens` shows what exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Sequence

from minoots.v1 import auth_pb2, auth_pb2_grpc

from . import wire

__all__ = ["TokenInfo", "WhoAmI", "TokenMethods"]


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: str
    tenants: tuple
    created_at: datetime
    expires_at: Optional[datetime]     # None: never expires


@dataclass(frozen=True)
class WhoAmI:
    principal: str
    role: str
    tenants: tuple                     # empty: every tenant


def token_from_pb(info: auth_pb2.TokenInfo) -> TokenInfo:
    return TokenInfo(info.id, info.name, info.role, tuple(info.tenants), wire.ts_to_datetime(info.created_at),
                     wire.opt_ts(info, "expires_at"))


class TokenMethods:
    def _auth(self, addr: str):
        return self.node_stub(addr, auth_pb2_grpc.AuthStub)

    def create_token(self, name: str, role: str, tenants: Sequence[str] = (), *, ttl_seconds: int = 0,
                     cert_subject: str = "", timeout: Optional[float] = None) -> tuple[str, TokenInfo]:
        """Make a token; returns (token, info). The token is shown only here: keep it.
        With `cert_subject` (mutual TLS) the role binds to client certificates with that
        subject instead, and the returned token is empty."""
        req = auth_pb2.CreateTokenRequest(name=name, role=role, tenants=list(tenants), ttl_seconds=ttl_seconds,
                                          cert_subject=cert_subject)
        resp, _ = self._call("create_token", lambda a, t: self._auth(a).CreateToken(req, timeout=t),
                             safe_only=True, timeout=timeout)
        return resp.token, token_from_pb(resp.info)

    def list_tokens(self, *, timeout: Optional[float] = None) -> list[TokenInfo]:
        resp, _ = self._call("list_tokens", lambda a, t: self._auth(a).ListTokens(
            auth_pb2.ListTokensRequest(), timeout=t), timeout=timeout)
        return [token_from_pb(i) for i in resp.tokens]

    def revoke_token(self, id: str, *, timeout: Optional[float] = None) -> TokenInfo:
        resp, _ = self._call("revoke_token", lambda a, t: self._auth(a).RevokeToken(
            auth_pb2.RevokeTokenRequest(id=id), timeout=t), timeout=timeout)
        return token_from_pb(resp.revoked)

    def whoami(self, *, timeout: Optional[float] = None) -> WhoAmI:
        resp, _ = self._call("whoami", lambda a, t: self._auth(a).WhoAmI(auth_pb2.WhoAmIRequest(), timeout=t),
                             timeout=timeout)
        return WhoAmI(resp.principal, resp.role, tuple(resp.tenants))
