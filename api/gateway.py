"""The HTTP/JSON + Server-Sent Events gateway of one node (`--http HOST:PORT`), on aiohttp in
the node's own event loop.

One code path: every HTTP request becomes a call of the node's own gRPC service over a
private local channel (a unix socket in the data dir, no TLS, reachable by the node's
user only), carrying the request's `Authorization` header as gRPC metadata. So the same
interceptor (api/auth.py: tokens, the RULES table, tenant checks), the same caps, audit,
metrics and leader routing apply to HTTP as to gRPC, by construction. The routes and the
JSON mapping are api/rest.py's; the OpenAPI document at /v1/openapi.json is
api/openapi.py's, from the same table.

Errors are JSON, never a traceback: `{"error": {"code": HTTP, "status": "NOT_FOUND",
"message": ...}}`, the gRPC status mapped to HTTP as Google's APIs do (401 without a
valid token, 403 for a role or tenant the token lacks, 404, 409, 429, 503, ...).

`GET /v1/events` is a Server-Sent Events stream of WatchEvents: each event is `id:
<sequence>` and `data: <proto3 JSON of the Event>`. A client that reconnects, to this
node or any other, sends `Last-Event-ID` and the stream resumes at the next sequence
(events are retained on every node: no gap, no duplicate); a filtered stream also sends a
bare `id:` for the events its filter hid, so a resume skips them. A cursor this node no longer
retains is refused before the stream starts with 410 Gone (status OUT_OF_RANGE: resume
on another node or from a later sequence); a failure after it started ends the stream
with an `event: error` message carrying the same JSON error. A comment line every
HEARTBEAT_S keeps idle streams alive through proxies and finds closed connections.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Optional

import grpc
import grpc.aio
from aiohttp import web

from minoots.v1 import timers_pb2, timers_pb2_grpc

from . import openapi, rest
from .rest import RestError, Route

log = logging.getLogger("minoots.api.gateway")

__all__ = ["Gateway", "MAX_BODY_BYTES", "HEARTBEAT_S", "server_ssl_context"]

MAX_BODY_BYTES = 16 << 20       # as the gRPC receive limit (api/server.py MAX_RECEIVE_BYTES)
CALL_TIMEOUT_S = 30.0           # a unary call's deadline (writes wait at most 15 s for their commit)
HEARTBEAT_S = 15.0
SSE_QUEUE = 4                   # event batches buffered between the gRPC stream and a slow HTTP client
FORWARDED = ("authorization", "traceparent", "tracestate")
UI_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                            "img-src 'self' data:; frame-ancestors 'none'",
              "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", MAX_BODY_BYTES)]


def server_ssl_context(cert, key, client_ca=None) -> ssl.SSLContext:
    """HTTPS with the node's gRPC certificate; with a client CA, a client must present a
    certificate it signed (the principal still comes from the bearer token)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def error_response(http: int, status: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="minoots"'} if http == 401 else None
    return web.json_response({"error": {"code": http, "status": status, "message": message}}, status=http,
                             headers=headers)


def _rpc_error(exc: grpc.aio.AioRpcError) -> tuple[int, str, str]:
    code = exc.code()
    return rest.http_status(code), code.name, exc.details() or code.name


def _metadata(request: web.Request) -> tuple:
    return tuple((k, request.headers[k]) for k in FORWARDED if k in request.headers)


@web.middleware
async def _errors(request: web.Request, handler):
    """Every failure as a JSON error; nothing unexpected leaks a traceback."""
    try:
        return await handler(request)
    except RestError as exc:
        return error_response(rest.http_status(exc.code), exc.code.name, str(exc))
    except grpc.aio.AioRpcError as exc:
        return error_response(*_rpc_error(exc))
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "RESOURCE_EXHAUSTED", f"the request body is over {MAX_BODY_BYTES} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(exc.status, "INVALID_ARGUMENT")
        message = {404: f"no route {request.method} {request.path} (see /v1/openapi.json)",
                   405: f"{request.method} is not allowed on {request.path} (see /v1/openapi.json)"}
        resp = error_response(exc.status, status, message.get(exc.status, exc.reason))
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("HTTP request failed unexpectedly", extra={"path": request.path})
        return error_response(500, "INTERNAL", "internal error (logged by the node)")


async def _json_body(request: web.Request) -> Optional[object]:
    if not request.can_read_body:
        return None
    raw = await request.read()          # bounded by client_max_size (413 past it)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RestError(grpc.StatusCode.INVALID_ARGUMENT, f"the request body is not JSON: {exc}") from None


class Gateway:
    """The HTTP server of one node, calling its gRPC service at `grpc_target`."""

    def __init__(self, grpc_target: str, address: str, *, ssl_context: Optional[ssl.SSLContext] = None,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self._target = grpc_target
        self.address = address
        self._ssl = ssl_context
        self.heartbeat_s = heartbeat_s
        self._channel: Optional[grpc.aio.Channel] = None
        self._runner: Optional[web.AppRunner] = None
        self._streams: set[asyncio.Task] = set()
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/v1/openapi.json", self._openapi)
        app.router.add_get("/ui", self._ui)
        for route in rest.routes():
            handler = self._events if route.streaming else self._unary_handler(route)
            app.router.add_route(route.http_method, _aiohttp_path(route.path), handler)
        return app

    # ---- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        from minoots.raft.net import split_address

        host, port = split_address(self.address)
        self._channel = grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS)
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl, shutdown_timeout=1.0,
                           reuse_address=True)
        await site.start()
        log.info("HTTP gateway serving", extra={"http": self.address, "https": self._ssl is not None})

    async def stop(self) -> None:
        for task in list(self._streams):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()

    # ---- unary RPCs --------------------------------------------------------------------

    def _unary_handler(self, route: Route):
        async def handle(request: web.Request) -> web.Response:
            msg = rest.build_request(route, request.match_info, request.query, await _json_body(request))
            call = self._channel.unary_unary(route.grpc_method, request_serializer=type(msg).SerializeToString,
                                             response_deserializer=route.response_class.FromString)
            resp = await call(msg, metadata=_metadata(request), timeout=CALL_TIMEOUT_S)
            return web.json_response(rest.to_json(resp))
        handle.__name__ = f"rest_{route.rpc}"
        return handle

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document())

    async def _ui(self, request: web.Request) -> web.Response:
        """The timeline explorer (api/explorer.py): a static page, public like the schema; its
        data comes from the API with the token the user gives it."""
        from .explorer import PAGE

        return web.Response(text=PAGE, content_type="text/html", headers=UI_HEADERS)

    # ---- events (SSE) ----------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        route = _events_route()
        req: timers_pb2.WatchEventsRequest = rest.build_request(route, request.match_info, request.query,
                                                                await _json_body(request))
        last = request.headers.get("Last-Event-ID", "").strip()
        if last:
            if not last.isdigit() or len(last) > 20:
                raise RestError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"Last-Event-ID must be an event sequence (a number), got {last!r}")
            req.from_sequence = int(last) + 1
        stub = timers_pb2_grpc.TimersStub(self._channel)
        call = stub.WatchEventBatches(req, metadata=_metadata(request))
        task = asyncio.current_task()
        self._streams.add(task)
        try:
            # The service sends its headers once the subscription stands (api/service.py);
            # a refusal (no token, a tenant not its own, a cursor gone) ends the call first.
            await call.initial_metadata()
            if call.done():
                code = await call.code()
                http = 410 if code == grpc.StatusCode.OUT_OF_RANGE else rest.http_status(code)
                return error_response(http, code.name, await call.details() or code.name)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
            await resp.prepare(request)
            await resp.write(b"retry: 1000\n\n")
            await self._pump(call, resp)
            return resp
        finally:
            self._streams.discard(task)
            call.cancel()

    async def _pump(self, call, resp: web.StreamResponse) -> None:
        queue: asyncio.Queue = asyncio.Queue(SSE_QUEUE)

        async def read() -> None:
            try:
                async for batch in call:
                    await queue.put(batch)
                await queue.put(grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None,
                                                     "the event stream ended (the node is stopping)"))
            except grpc.aio.AioRpcError as exc:
                await queue.put(exc)

        reader = asyncio.create_task(read())
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.heartbeat_s)
                except asyncio.TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if isinstance(item, grpc.aio.AioRpcError):
                    http, status, message = _rpc_error(item)
                    body = json.dumps({"error": {"code": http, "status": status, "message": message}})
                    await resp.write(f"event: error\ndata: {body}\n\n".encode())
                    return
                await resp.write(_sse(item))
        except (ConnectionResetError, ConnectionError):
            return                                    # the client went away
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def _sse(batch) -> bytes:
    """A batch's events; then, when a filter hid later events of the run, an `id:` alone (no
    data: nothing is dispatched, but a reconnecting client resumes after what was examined)."""
    parts = []
    last = 0
    for ev in batch.events:
        parts.append(f"id: {ev.sequence}\ndata: {json.dumps(rest.to_json(ev), separators=(',', ':'))}\n\n")
        last = ev.sequence
    through = getattr(batch, "through", 0)
    if through > last:
        parts.append(f"id: {through}\n\n")
    return "".join(parts).encode()


def _events_route() -> Route:
    return next(r for r in rest.routes() if r.streaming and r.rpc == "WatchEvents")


def _aiohttp_path(path: str) -> str:
    """OpenAPI's /v1/timers/{id}:cancel as an aiohttp pattern: a segment parameter takes
    anything but '/', and a custom method is the last ':verb' (timer ids may hold ':')."""
    return rest.PATH_PARAM.sub(lambda m: "{" + m.group(1) + ":[^/]+}", path)
