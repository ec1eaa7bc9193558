"""The audit ledger's gRPC side: the Audit service (Export, PublicKey), and the two feeds of
node-local facts that only the API sees: operator/admin calls and denied requests.

The ledger itself (raft/audit/) is opened by api/process.py; here nothing writes but through
its queue. `AuditCalls` is an interceptor placed after the AuthInterceptor, so it sees only
calls that passed authentication and the role check, with their principal; it records the
security-relevant ones (`AUDITED`, and every admin-only RPC) with their outcome. Denied calls never reach it: the
AuthInterceptor reports them to `DenialSampler`, which records at most `per_second` per
principal and second, each with the count of those it left out since the previous one.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from typing import Optional

import grpc

from minoots.v1 import audit_pb2 as apb
from minoots.v1 import audit_pb2_grpc

from .auth import RULES, current_principal

log = logging.getLogger("minoots.api.audit")

__all__ = ["AuditService", "AuditCalls", "DenialSampler", "AUDITED", "audited_op"]

#: RPCs whose every call (allowed by the role table) is a ledger record, by operation name;
#: besides these, every RPC that needs the admin role is recorded (op: "Service/Method").
AUDITED = {
    "/minoots.v1.Cluster/ExportSnapshot": "snapshot.export",
    "/minoots.v1.Cluster/TakeSnapshot": "snapshot.take",
    "/minoots.v1.Cluster/AddNode": "member.add",
    "/minoots.v1.Cluster/RemoveNode": "member.remove",
    "/minoots.v1.Cluster/TransferLeadership": "leader.transfer",
    "/minoots.v1.Auth/CreateToken": "token.create",
    "/minoots.v1.Auth/RevokeToken": "token.revoke",
    "/minoots.v1.Audit/Export": "audit.export",
    "/minoots.v1.Timers/RotateWebhookSecret": "webhook_secret.rotate",
    "/minoots.v1.EndpointService/CreateEndpoint": "endpoint.create",
    "/minoots.v1.EndpointService/RotateEndpointSecret": "endpoint.rotate_secret",
    "/minoots.v1.EndpointService/DeleteEndpoint": "endpoint.delete",
}


def audited_op(method: str) -> Optional[str]:
    """The operation name of an RPC the ledger records, or None."""
    op = AUDITED.get(method)
    if op is None:
        rule = RULES.get(method)
        if rule is not None and rule.permission == "admin":
            op = method.rsplit(".", 1)[-1]          # "/minoots.v1.Cluster/AddNode" -> "Cluster/AddNode"
    return op


def _code_name(code) -> str:
    return code.name if isinstance(code, grpc.StatusCode) else str(code or "OK")


class DenialSampler:
    """AuthInterceptor's on_denied: a `request.denied` record, at most `per_second` per principal."""

    MAX_PRINCIPALS = 10_000

    def __init__(self, ledger, per_second: int = 5, clock=time.monotonic) -> None:
        self._ledger = ledger
        self.per_second = per_second
        self._clock = clock
        self._windows: dict = {}        # principal -> [second, recorded in it, left out since last record]

    def __call__(self, method: str, who: Optional[str], code) -> None:
        principal = who or "unauthenticated"
        now = int(self._clock())
        w = self._windows.get(principal)
        if w is None:
            if len(self._windows) >= self.MAX_PRINCIPALS:
                self._windows.clear()
            w = self._windows[principal] = [now, 0, 0]
        if w[0] != now:
            w[0], w[1] = now, 0
        if w[1] >= self.per_second:
            w[2] += 1
            return
        w[1] += 1
        left_out, w[2] = w[2], 0
        self._ledger.append("request.denied", {"method": method, "principal": principal,
                                               "code": _code_name(code), "left_out": left_out})


class AuditCalls(grpc.aio.ServerInterceptor):
    """Records each call of an `AUDITED` RPC (principal, peer, outcome) as `operator.call`."""

    def __init__(self, ledger) -> None:
        self._ledger = ledger

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        op = audited_op(details.method)
        if handler is None or op is None:
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._wrap(handler.unary_unary, details.method, op))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._wrap(handler.unary_stream, details.method, op))
        return handler

    def _record(self, method: str, op: str, context, code) -> None:
        p = current_principal()
        try:
            peer = context.peer()
        except Exception:
            peer = None
        self._ledger.append("operator.call", {"op": op, "method": method,
                                              "principal": p.name if p is not None else None,
                                              "peer": peer, "code": _code_name(code)})

    @contextlib.contextmanager
    def _recording(self, method: str, op: str, context):
        """Records the call when it ends, with its status (an abort's code, or OK)."""
        code = None
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            self._record(method, op, context, code or context.code() or grpc.StatusCode.OK)

    def _wrap(self, behavior, method: str, op: str):
        if inspect.isasyncgenfunction(behavior):
            async def stream(request, context):
                with self._recording(method, op, context):
                    async for item in behavior(request, context):
                        yield item
            return stream

        async def unary(request, context):
            with self._recording(method, op, context):
                return await behavior(request, context)
        return unary


class AuditService(audit_pb2_grpc.AuditServicer):
    def __init__(self, node, ledger) -> None:
        self._node = node
        self._ledger = ledger

    def _node_id(self) -> str:
        return self._node.cfg.node_id

    async def _require(self, context):
        if self._ledger is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"node {self._node_id()} keeps no audit ledger")
        return self._ledger

    async def PublicKey(self, request, context):
        ledger = await self._require(context)
        first = await asyncio.get_running_loop().run_in_executor(None, lambda: ledger.first_seq)
        return apb.AuditPublicKeyResponse(node=self._node_id(), algorithm="ed25519",
                                          public_key=ledger.public_key or "", first_seq=first,
                                          last_seq=ledger.head_seq, signed_seq=ledger.signed_seq)

    async def Export(self, request, context):
        ledger = await self._require(context)
        loop = asyncio.get_running_loop()
        batches = ledger.export(request.from_seq or 1)
        try:
            while True:
                batch = await loop.run_in_executor(None, next, batches, None)
                if batch is None:
                    return
                yield apb.AuditRecordBatch(node=self._node_id(), lines=batch)
        except LookupError as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
        except (TimeoutError, RuntimeError) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the audit ledger did not answer: {exc}")
        finally:
            batches.close()
