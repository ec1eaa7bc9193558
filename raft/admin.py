"""The node's admin channel: small JSON over HTTP on loopback, until the gRPC Cluster service lands.

It carries the operator commands (status, membership, snapshots) and a minimal
timer surface (create/get/cancel) that tests and `minoots up` use before the
gRPC API exists. Handlers validate input and answer typed JSON errors; nothing
here raises into the HTTP server.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from minoots.kernel import KernelError, TimerSpec

from .machine import CommandFailed, spec_to_wire

log = logging.getLogger("minoots.raft.admin")

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 412,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "DATA_LOSS": 500,
    "INTERNAL": 500,
}


class AdminError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def timer_to_json(t) -> dict:
    return {
        "tenant": t.tenant, "id": t.id, "name": t.name, "fire_at": t.fire_at,
        "payload_b64": base64.b64encode(t.payload).decode(), "labels": dict(t.labels),
        "idempotency_key": t.idempotency_key, "ack_required": t.ack_required,
        "state": t.state.name.lower(), "created_at": t.created_at, "armed_at": t.armed_at,
        "fired_at": t.fired_at, "settled_at": t.settled_at, "attempts": t.attempts,
        "fire_id": t.fire_id, "revision": t.revision,
    }


def spec_from_json(obj: dict, now_ms: int) -> TimerSpec:
    if not isinstance(obj, dict):
        raise AdminError("INVALID_ARGUMENT", "each timer must be a JSON object")
    known = {"id", "fire_at", "in_ms", "tenant", "name", "payload_b64", "labels",
             "idempotency_key", "ack_required"}
    unknown = set(obj) - known
    if unknown:
        raise AdminError("INVALID_ARGUMENT", f"unknown timer fields: {sorted(unknown)}")
    if ("fire_at" in obj) == ("in_ms" in obj):
        raise AdminError("INVALID_ARGUMENT", "give exactly one of fire_at (ms since epoch) or in_ms")
    fire_at = obj.get("fire_at")
    if "in_ms" in obj:
        delay = obj["in_ms"]
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise AdminError("INVALID_ARGUMENT", "in_ms must be a non-negative integer")
        fire_at = now_ms + delay
    try:
        payload = base64.b64decode(obj.get("payload_b64", ""), validate=True)
    except (ValueError, TypeError) as exc:
        raise AdminError("INVALID_ARGUMENT", f"payload_b64 is not base64: {exc}") from exc
    return TimerSpec(
        id=obj.get("id"), fire_at=fire_at, tenant=obj.get("tenant", "default"),
        name=obj.get("name", ""), payload=payload, labels=obj.get("labels"),
        idempotency_key=obj.get("idempotency_key"), ack_required=obj.get("ack_required", False),
    )


class _Handler(BaseHTTPRequestHandler):
    server_version = "minoots-admin"
    node = None  # set per server class

    def log_message(self, fmt, *args):  # route http.server's chatter to debug logs
        log.debug("admin request", extra={"line": fmt % args})

    def _reply(self, status: int, body, content_type="application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > 64 << 20:
            raise AdminError("INVALID_ARGUMENT", "request body over 64 MiB")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise AdminError("INVALID_ARGUMENT", f"body is not JSON: {exc}") from exc

    def _handle(self, method: str) -> None:
        try:
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            status, body = self.node.admin_route(method, parts, self._body if method == "POST" else None)
            if isinstance(body, bytes):
                self._reply(status, body, "application/octet-stream")
            else:
                self._reply(status, body)
        except AdminError as exc:
            self._reply(HTTP_STATUS.get(exc.code, 500), {"error": exc.code, "message": str(exc)})
        except KernelError as exc:
            self._reply(HTTP_STATUS.get(exc.code, 500), {"error": exc.code, "message": str(exc)})
        except CommandFailed as exc:
            self._reply(503, {"error": "UNAVAILABLE", "message": str(exc)})
        except TimeoutError as exc:
            self._reply(504, {"error": "DEADLINE_EXCEEDED", "message": str(exc)})
        except Exception as exc:
            log.exception("admin handler failed")
            self._reply(500, {"error": "INTERNAL", "message": repr(exc)})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")


class AdminServer:
    """Serves `node.admin_route(method, path_parts, body_fn)` on host:port in a thread."""

    def __init__(self, node, address: str) -> None:
        host, port = split_address(address)
        handler = type("Handler", (_Handler,), {"node": node})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="admin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host, int(port)


class AdminClient:
    """Talks to one node's admin channel; raises AdminError with the node's code."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        split_address(address)
        self.address = address
        self.timeout = timeout

    def call(self, method: str, path: str, body=None, raw: bool = False):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.address}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
                raise AdminError(err.get("error", "INTERNAL"), err.get("message", str(exc))) from None
            except ValueError:
                raise AdminError("INTERNAL", str(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError("UNAVAILABLE", f"cannot reach node admin at {self.address}: {reason}") from None
        return payload if raw else json.loads(payload)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
