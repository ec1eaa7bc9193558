"""Who is calling, and may they: authentication and authorization of every RPC.

Every call carries `authorization: Bearer <token>`. The token is checked against
the replicated token table (raft/tokens.py: hashes only) or the node's bootstrap
admin token (`--admin-token-file`, which `minoots up` writes), before a byte of
the request is decoded. The principal's role then decides which RPCs it may call,
by one table (`RULES`) that names every RPC of every service the server has (a
test fails when one is missing), and its tenants decide which tenants a request
may name. UNAUTHENTICATED: no, bad, expired or revoked token. PERMISSION_DENIED:
a role or tenant the token does not have.

Roles: admin (everything: tokens, membership, snapshots, every tenant), operator
(status, snapshots, digests, read every tenant), writer (create, cancel,
reschedule, ack, redrive, pause/resume/trigger, set the webhook secret, lease and read in its tenants), worker
(lease, ack, nack and extend queue timers in its tenants: agent workers), reader (get, list, watch in its tenants).
"""
from __future__ import annotations

import contextvars
import hmac
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import grpc

from minoots.kernel import DEFAULT_TENANT
from minoots.raft.tokens import TENANT_ROLES, subject_binding, token_hash, token_id_of

log = logging.getLogger("minoots.api.auth")

__all__ = ["Principal", "Authenticator", "AuthInterceptor", "RULES", "PERMISSIONS", "current_principal",
           "AuthError"]

# What each role may do. "status" is the cluster's shape (members, leader), which every
# client needs to route calls; "read"/"write" are bounded by the principal's tenants.
PERMISSIONS = {
    "admin": frozenset({"self", "status", "read", "write", "operate", "admin", "lease"}),
    "operator": frozenset({"self", "status", "read", "operate"}),
    "writer": frozenset({"self", "status", "read", "write", "lease"}),
    "worker": frozenset({"self", "status", "lease"}),
    "reader": frozenset({"self", "status", "read"}),
}

_principal: contextvars.ContextVar = contextvars.ContextVar("minoots_principal", default=None)


def current_principal() -> Optional["Principal"]:
    """The principal of the call being handled (set by the interceptor)."""
    return _principal.get()


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    tenants: Optional[frozenset]     # None: every tenant

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, ())

    def sees(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


class AuthError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(message)


def _deny(message: str) -> AuthError:
    return AuthError(grpc.StatusCode.PERMISSION_DENIED, message)


# ---- tenant rules: what tenant(s) a request names, checked (and an empty one filled) in place


def _fill(principal: Principal, tenant: str) -> str:
    """The tenant a request means: an empty one is the principal's only tenant, else "default"."""
    if tenant:
        return tenant
    if principal.tenants is not None and len(principal.tenants) == 1:
        return next(iter(principal.tenants))
    return DEFAULT_TENANT


def _check(principal: Principal, tenant: str) -> str:
    tenant = _fill(principal, tenant)
    if not principal.sees(tenant):
        raise _deny(f"tenant {tenant!r} is not one of this token's tenants")
    return tenant


def _top(principal: Principal, req) -> None:
    req.tenant = _check(principal, req.tenant)


def _one_spec(principal: Principal, req) -> None:
    req.timer.tenant = _check(principal, req.timer.tenant)


def _many_specs(principal: Principal, req) -> None:
    for spec in req.timers:
        spec.tenant = _check(principal, spec.tenant)


def _watch(principal: Principal, req) -> None:
    # No filling in here: an unnamed tenant means "every event" to the client, which then
    # checks that sequences have no gaps; a tenant-bound token must name its tenant.
    if not req.tenant and principal.tenants is not None:
        raise _deny(f"this token sees tenants {', '.join(sorted(principal.tenants))} only: "
                    "name the tenant to watch (watch(tenant=...), --tenant)")
    if req.tenant and not principal.sees(req.tenant):
        raise _deny(f"tenant {req.tenant!r} is not one of this token's tenants")


def _subscription(principal: Principal, req) -> None:
    _top(principal, req)
    if req.all_tenants and principal.tenants is not None:
        raise _deny("a subscription to every tenant's events needs a token that sees every tenant")


def _none(principal: Principal, req) -> None:
    pass


@dataclass(frozen=True)
class Rule:
    permission: str                                  # "public" needs no token at all
    tenants: Callable[[Principal, object], None] = _none


#: Every RPC the server has. A method not here is refused (PERMISSION_DENIED).
RULES: dict[str, Rule] = {
    "/minoots.v1.Timers/CreateTimer": Rule("write", _one_spec),
    "/minoots.v1.Timers/CreateTimers": Rule("write", _many_specs),
    "/minoots.v1.Timers/GetTimer": Rule("read", _top),
    "/minoots.v1.Timers/ListTimers": Rule("read", _top),
    "/minoots.v1.Timers/CancelTimer": Rule("write", _top),
    "/minoots.v1.Timers/RescheduleTimer": Rule("write", _top),
    "/minoots.v1.Timers/AckTimer": Rule("write", _top),
    "/minoots.v1.Timers/DeleteTimer": Rule("write", _top),
    "/minoots.v1.Timers/WatchEvents": Rule("read", _watch),
    "/minoots.v1.Timers/WatchEventBatches": Rule("read", _watch),
    "/minoots.v1.Timers/RedriveTimer": Rule("write", _top),
    # A tenant's writers own its webhooks, so they may set its signing secret (shown once).
    "/minoots.v1.Timers/RotateWebhookSecret": Rule("write", _top),
    "/minoots.v1.Timers/LeaseTimers": Rule("lease", _top),
    "/minoots.v1.Timers/StreamLeases": Rule("lease", _top),
    "/minoots.v1.Timers/AckLease": Rule("lease", _top),
    "/minoots.v1.Timers/NackLease": Rule("lease", _top),
    "/minoots.v1.Timers/ExtendLease": Rule("lease", _top),
    "/minoots.v1.Timers/CancelTimers": Rule("write", _top),
    "/minoots.v1.Timers/RescheduleTimers": Rule("write", _top),
    "/minoots.v1.Timers/PauseTimer": Rule("write", _top),
    "/minoots.v1.Timers/ResumeTimer": Rule("write", _top),
    "/minoots.v1.Timers/TriggerTimer": Rule("write", _top),
    "/minoots.v1.Timers/NextOccurrences": Rule("read", _top),
    "/minoots.v1.Cluster/Status": Rule("status"),
    "/minoots.v1.Cluster/GetDigest": Rule("operate"),
    "/minoots.v1.Cluster/ListSnapshots": Rule("operate"),
    "/minoots.v1.Cluster/TakeSnapshot": Rule("operate"),
    "/minoots.v1.Cluster/ExportSnapshot": Rule("operate"),
    "/minoots.v1.Cluster/AddNode": Rule("admin"),
    "/minoots.v1.Cluster/RemoveNode": Rule("admin"),
    "/minoots.v1.Cluster/TransferLeadership": Rule("admin"),
    "/minoots.v1.Auth/CreateToken": Rule("admin"),
    "/minoots.v1.Auth/ListTokens": Rule("admin"),
    "/minoots.v1.Auth/RevokeToken": Rule("admin"),
    "/minoots.v1.Auth/WhoAmI": Rule("self"),
    "/minoots.v1.Tenants/SetQuota": Rule("admin"),
    "/minoots.v1.Tenants/GetQuota": Rule("read", _top),
    "/minoots.v1.Subscriptions/CreateSubscription": Rule("write", _subscription),
    "/minoots.v1.Subscriptions/GetSubscription": Rule("read", _top),
    "/minoots.v1.Subscriptions/ListSubscriptions": Rule("read", _top),
    "/minoots.v1.Subscriptions/CommitSubscription": Rule("read", _top),     # consumers commit
    "/minoots.v1.Subscriptions/DeleteSubscription": Rule("write", _top),
    "/minoots.v1.Subscriptions/SkipLostEvents": Rule("read", _top),
    "/minoots.v1.Tenants/SetRetention": Rule("admin"),
    "/minoots.v1.Tenants/GetRetention": Rule("read", _top),
    # Managed endpoints, delivery defaults, dead letters (api/endpoints_service.py): a
    # tenant's writers own its endpoints (a secret is shown once, to them); readers see
    # endpoints without secrets, dead letters and queue counts.
    "/minoots.v1.EndpointService/CreateEndpoint": Rule("write", _top),
    "/minoots.v1.EndpointService/ListEndpoints": Rule("read", _top),
    "/minoots.v1.EndpointService/GetEndpoint": Rule("read", _top),
    "/minoots.v1.EndpointService/RotateEndpointSecret": Rule("write", _top),
    "/minoots.v1.EndpointService/DeleteEndpoint": Rule("write", _top),
    "/minoots.v1.EndpointService/SetDeliveryDefaults": Rule("write", _top),
    "/minoots.v1.EndpointService/GetDeliveryDefaults": Rule("read", _top),
    "/minoots.v1.EndpointService/ListDeadLetters": Rule("read", _top),
    "/minoots.v1.EndpointService/ReplayDeadLetters": Rule("write", _top),
    "/minoots.v1.EndpointService/PurgeDeadLetters": Rule("write", _top),
    "/minoots.v1.EndpointService/QueueStats": Rule("read", _top),
    "/minoots.v1.Audit/Export": Rule("operate"),
    "/minoots.v1.Audit/PublicKey": Rule("operate"),
    # Health checks (load balancers) and the schema (reflection) are public.
    "/grpc.health.v1.Health/Check": Rule("public"),
    "/grpc.health.v1.Health/Watch": Rule("public"),
    "/grpc.health.v1.Health/List": Rule("public"),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Rule("public"),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Rule("public"),
}


class Authenticator:
    """Maps a bearer token to a principal, from the replicated table or the bootstrap token."""

    MAX_TOKEN_LEN = 256

    def __init__(self, machine, bootstrap_token: Optional[str] = None, clock_ms=None, mtls: bool = False) -> None:
        self._machine = machine
        # With mutual TLS every connection carries a client certificate the server verified
        # during the handshake: a call without a token is its certificate's subject.
        self.mtls = mtls
        self._bootstrap = token_hash(bootstrap_token) if bootstrap_token else None
        self._now_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    @staticmethod
    def has_token(metadata) -> bool:
        return any(key == "authorization" for key, _ in metadata or ())

    def authenticate_subject(self, auth_context) -> Principal:
        """The principal bound to the verified client certificate's subject (mutual TLS)."""
        subjects = (auth_context or {}).get("x509_subject") or []
        if not subjects:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "no credentials: no token and no client certificate")
        subject = subjects[0].decode("utf-8", "replace")
        tid, digest = subject_binding(subject)
        record = self._machine.token(tid)
        if record is None or not hmac.compare_digest(digest, record.sha256):
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED,
                            f"client certificate {subject!r} is bound to no role "
                            "(minoots token create --cert-subject)")
        return self._principal(record, f"cert:{subject}")

    def _principal(self, record, name: str) -> Principal:
        if record.expires_at_ms and record.expires_at_ms <= self._now_ms():
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, f"token {record.id} expired")
        tenants = frozenset(record.tenants) if record.role in TENANT_ROLES else None
        return Principal(name, record.role, tenants)

    def authenticate(self, metadata) -> Principal:
        header = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value
                break
        if header is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED,
                            "no credentials: send 'authorization: Bearer <token>' (minoots token create; "
                            "MINOOTS_TOKEN for the SDK and CLI)")
        if isinstance(header, bytes) or header[:7].lower() != "bearer " or len(header) > self.MAX_TOKEN_LEN:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "malformed authorization header: 'Bearer <token>'")
        token = header[7:].strip()
        digest = token_hash(token)
        if self._bootstrap is not None and hmac.compare_digest(digest, self._bootstrap):
            return Principal("bootstrap-admin", "admin", None)
        tid = token_id_of(token)
        record = self._machine.token(tid) if tid else None
        if record is None or not hmac.compare_digest(digest, record.sha256):
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token")
        return self._principal(record, f"token:{tid}:{record.name}")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call against `RULES` before the request is decoded."""

    def __init__(self, authenticator: Authenticator, on_denied: Optional[Callable] = None) -> None:
        self._auth = authenticator
        self._on_denied = on_denied        # (method, principal name or None, code) for metrics/audit

    async def intercept_service(self, continuation, details):
        method = details.method
        rule = RULES.get(method)
        # Looking the handler up reads nothing of the request; it says whether the call streams.
        handler = await continuation(details)
        if handler is None or (rule is not None and rule.permission == "public"):
            return handler
        try:
            if rule is None:
                raise _deny(f"{method} is not in the authorization table")
            if self._auth.mtls and not self._auth.has_token(details.invocation_metadata):
                principal = None        # the verified client certificate decides, in the call (below)
            else:
                principal = self._auth.authenticate(details.invocation_metadata)
                _check_permission(principal, rule, method)
        except AuthError as exc:
            self._denied(method, None, exc.code)
            return _refusal(exc, streaming=handler.unary_stream is not None or handler.stream_stream is not None)
        handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, rule, principal, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, rule, principal, method))
        return _refusal(_deny("streaming requests are not served"), streaming=True)

    def _denied(self, method: str, who: Optional[str], code) -> None:
        if self._on_denied is not None:
            try:
                self._on_denied(method, who, code)
            except Exception:
                log.exception("denied-call listener failed")

    async def _admit(self, request, context, rule: Rule, principal: Optional[Principal], method: str) -> Principal:
        """The principal, once the request decoded and names only its tenants; else the call is aborted.
        (A TLS-verified client certificate authenticated the connection before any byte of it.)"""
        try:
            if principal is None:
                principal = self._auth.authenticate_subject(context.auth_context())
                _check_permission(principal, rule, method)
            if isinstance(request, _Garbled):
                raise AuthError(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            rule.tenants(principal, request)
        except AuthError as exc:
            self._denied(method, principal.name if principal else None, exc.code)
            await context.abort(exc.code, str(exc))
        return principal

    def _unary(self, behavior, rule: Rule, principal: Principal, method: str):
        async def call(request, context):
            token = _principal.set(await self._admit(request, context, rule, principal, method))
            try:
                return await behavior(request, context)
            finally:
                _principal.reset(token)
        return call

    def _stream(self, behavior, rule: Rule, principal: Principal, method: str):
        if not inspect.isasyncgenfunction(behavior):       # a handler that writes with context.write
            return self._unary(behavior, rule, principal, method)

        async def call(request, context):
            token = _principal.set(await self._admit(request, context, rule, principal, method))
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                _principal.reset(token)
        return call


def _check_permission(principal: Principal, rule: Rule, method: str) -> None:
    if not principal.may(rule.permission):
        raise _deny(f"role {principal.role} may not call {method.rsplit('/', 1)[-1]}")


class _Garbled:
    """Stands in for a request whose bytes are not a valid message (answered INVALID_ARGUMENT)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(deserializer):
    if deserializer is None:
        return None

    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    what = f"a valid {descriptor.full_name}" if descriptor is not None else "a valid protobuf"

    def decode(data: bytes):
        try:
            return deserializer(data)
        except Exception:
            return _Garbled(f"the request is not {what} message ({len(data)} bytes)")
    return decode


def _refusal(exc: AuthError, streaming: bool):
    """A handler that refuses the call without decoding its request (no deserializer)."""
    async def unary(request, context):
        await context.abort(exc.code, str(exc))

    async def stream(request, context):
        await context.abort(exc.code, str(exc))
        yield  # pragma: no cover  (abort raises)

    if streaming:
        return grpc.unary_stream_rpc_method_handler(stream)
    return grpc.unary_unary_rpc_method_handler(unary)
