"""The REST mapping of the Timers, Cluster and EndpointService services: which HTTP method and path call
which RPC, and how a request's path, query and JSON body become the RPC's request message.

No I/O and no aiohttp here (the server is api/gateway.py, the OpenAPI document
api/openapi.py): both read `routes()`, so the document and the live routes are one table.

Conventions (Google's API design guide, `google.api.http`):

* resource paths: `POST /v1/timers` (body: the TimerSpec), `GET /v1/timers/{id}`,
  `GET /v1/timers?...`, custom methods as `POST /v1/timers/{id}:cancel`;
* `body: "*"` takes every field not in the path from the JSON body; otherwise the
  fields outside the path and the body are query parameters, named as in proto3 JSON
  (`pageSize`) or as in the .proto (`page_size`), nested ones dotted, repeated ones
  repeated (`?states=TIMER_STATE_ARMED&states=TIMER_STATE_FIRED`);
* JSON is proto3 JSON (`google.protobuf.json_format`): int64 as strings, enums by name,
  Timestamps as RFC 3339, Durations as "1.5s", bytes as base64.

Fields are read from the message descriptors, never listed here: a field added to a
request reaches the RPC without touching this module. A unary RPC of either service
that has no explicit route gets the generic custom-method route `POST
/v1/{timers|cluster|endpoints}:{rpcName}` with the whole request as its body, so a new RPC is
reachable at once (and the RULES table of api/auth.py still decides who may call it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from minoots.v1 import cluster_pb2, delivery_pb2, timers_pb2

__all__ = ["Route", "RestError", "routes", "build_request", "to_json", "http_status", "SERVICES",
           "WELL_KNOWN_LEAVES", "PATH_PARAM", "json_names"]

SERVICES = {
    "timers": timers_pb2.DESCRIPTOR.services_by_name["Timers"],
    "cluster": cluster_pb2.DESCRIPTOR.services_by_name["Cluster"],
    "endpoints": delivery_pb2.DESCRIPTOR.services_by_name["EndpointService"],
}

# (resource, rpc) -> (HTTP method, path, body). Paths use OpenAPI's {field} form.
_EXPLICIT = {
    ("timers", "CreateTimer"): ("POST", "/v1/timers", "timer"),
    ("timers", "CreateTimers"): ("POST", "/v1/timers:batchCreate", "*"),
    ("timers", "ListTimers"): ("GET", "/v1/timers", None),
    ("timers", "GetTimer"): ("GET", "/v1/timers/{id}", None),
    ("timers", "CancelTimer"): ("POST", "/v1/timers/{id}:cancel", "*"),
    ("timers", "RescheduleTimer"): ("POST", "/v1/timers/{id}:reschedule", "*"),
    ("timers", "AckTimer"): ("POST", "/v1/timers/{id}:ack", "*"),
    ("timers", "WatchEvents"): ("GET", "/v1/events", None),       # Server-Sent Events
    ("cluster", "Status"): ("GET", "/v1/cluster/status", None),
    ("cluster", "GetDigest"): ("GET", "/v1/cluster/digest", None),
    ("cluster", "AddNode"): ("POST", "/v1/cluster/members", "*"),
    ("cluster", "RemoveNode"): ("DELETE", "/v1/cluster/members/{id}", None),
    ("cluster", "TakeSnapshot"): ("POST", "/v1/cluster/snapshots", "*"),
    ("cluster", "ListSnapshots"): ("GET", "/v1/cluster/snapshots", None),
    ("cluster", "TransferLeadership"): ("POST", "/v1/cluster:transferLeadership", "*"),
    ("endpoints", "CreateEndpoint"): ("POST", "/v1/endpoints", "*"),
    ("endpoints", "ListEndpoints"): ("GET", "/v1/endpoints", None),
    ("endpoints", "GetEndpoint"): ("GET", "/v1/endpoints/{id}", None),
    ("endpoints", "DeleteEndpoint"): ("DELETE", "/v1/endpoints/{id}", None),
    ("endpoints", "RotateEndpointSecret"): ("POST", "/v1/endpoints/{id}:rotateSecret", "*"),
    ("endpoints", "ListDeadLetters"): ("GET", "/v1/deadLetters", None),
    ("endpoints", "ReplayDeadLetters"): ("POST", "/v1/deadLetters:replay", "*"),
    ("endpoints", "PurgeDeadLetters"): ("POST", "/v1/deadLetters:purge", "*"),
    ("endpoints", "QueueStats"): ("GET", "/v1/queues:stats", None),
}

# Server-streaming RPCs the gateway does not map: the SSE stream of WatchEvents covers
# WatchEventBatches; snapshot export is binary (use the gRPC API or the CLI); a lease stream
# holds leases per connection, which HTTP workers get with the long poll of LeaseTimers.
UNMAPPED = {("timers", "WatchEventBatches"), ("cluster", "ExportSnapshot"), ("timers", "StreamLeases")}

# Messages proto3 JSON writes as one string: query parameters and path segments take them whole.
WELL_KNOWN_LEAVES = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration",
                               "google.protobuf.FieldMask"})

PATH_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class RestError(Exception):
    """A request the gateway refuses before calling the RPC (a bad path, query or body)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class Route:
    resource: str             # "timers" | "cluster" | "endpoints"
    rpc: str                  # "CreateTimer"
    http_method: str          # GET | POST | DELETE
    path: str                 # OpenAPI form, e.g. /v1/timers/{id}:cancel
    body: Optional[str]       # "*": the whole request; a field name: that field; None: no body
    method: MethodDescriptor

    @property
    def grpc_method(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def streaming(self) -> bool:
        return self.method.server_streaming

    @property
    def path_params(self) -> tuple:
        return tuple(PATH_PARAM.findall(self.path))

    @property
    def request_class(self):
        return GetMessageClass(self.method.input_type)

    @property
    def response_class(self):
        return GetMessageClass(self.method.output_type)

    def query_fields(self) -> list[tuple[str, FieldDescriptor]]:
        """(dotted proto name, field) of every field a query parameter may set."""
        if self.body == "*":
            return []
        skip = set(self.path_params) | ({self.body} if self.body else set())
        return [(name, f) for name, f in _leaves(self.method.input_type, "") if name.split(".")[0] not in skip]


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def routes() -> list[Route]:
    """Every REST route, explicit ones first, then the generic custom methods."""
    out = []
    for resource, service in SERVICES.items():
        for m in service.methods:
            key = (resource, m.name)
            if key in UNMAPPED:
                continue
            if key in _EXPLICIT:
                verb, path, body = _EXPLICIT[key]
            elif m.server_streaming or m.client_streaming:
                continue
            else:
                verb, path, body = "POST", f"/v1/{resource}:{_camel(m.name)}", "*"
            out.append(Route(resource, m.name, verb, path, body, m))
    return out


def _leaves(desc: Descriptor, prefix: str, depth: int = 0):
    """(dotted name, field) of the fields a query string can set: scalars, enums, repeated
    scalars and the well-known string-valued messages; nested messages by their fields."""
    for f in desc.fields:
        name = prefix + f.name
        msg = f.message_type
        if msg is None or msg.full_name in WELL_KNOWN_LEAVES:
            yield name, f
        elif not msg.GetOptions().map_entry and not f.is_repeated and depth < 3:
            yield from _leaves(msg, name + ".", depth + 1)


def _lookup(route: Route, key: str) -> Optional[tuple[str, FieldDescriptor]]:
    """A query parameter's field, by proto name or JSON name, dotted for nested fields."""
    for name, f in route.query_fields():
        if key == name:
            return name, f
        json_dotted = ".".join(json_names(route.method.input_type, name))
        if key == json_dotted:
            return name, f
    return None


def json_names(desc: Descriptor, dotted: str) -> list[str]:
    out = []
    for part in dotted.split("."):
        f = desc.fields_by_name[part]
        out.append(f.json_name)
        desc = f.message_type
    return out


def _query_value(name: str, f: FieldDescriptor, value: str):
    if f.type == FieldDescriptor.TYPE_BOOL:
        low = value.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise RestError(grpc.StatusCode.INVALID_ARGUMENT, f"query parameter {name}: expected true or false, "
                                                          f"got {value!r}")
    return value


def _set_dotted(target: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        target = target.setdefault(p, {})
    target[parts[-1]] = value


def build_request(route: Route, match: dict, query, body: Optional[object]):
    """The RPC's request message from the path parameters `match`, the query (a multidict:
    `getall`/`keys`) and the parsed JSON `body` (None when absent). RestError on anything
    that does not fit the message (unknown field, wrong type, a path and body that disagree)."""
    doc: dict = {}
    if route.body is not None and body is not None:
        if not isinstance(body, dict):
            raise RestError(grpc.StatusCode.INVALID_ARGUMENT, "the request body must be a JSON object")
        if route.body == "*":
            doc = dict(body)
        else:
            doc[route.body] = body
    elif route.body is None and body is not None:
        raise RestError(grpc.StatusCode.INVALID_ARGUMENT, f"{route.http_method} {route.path} takes no body")
    for key in set(query.keys()):
        found = _lookup(route, key)
        if found is None:
            names = ", ".join(n for n, _ in route.query_fields()) or "none"
            raise RestError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"unknown query parameter {key!r} (this route takes: {names})")
        name, f = found
        values = [_query_value(key, f, v) for v in query.getall(key)]
        if f.is_repeated:
            split = [p for v in values for p in (v.split(",") if isinstance(v, str) and f.message_type is None
                                                 and f.type != FieldDescriptor.TYPE_STRING else [v]) if p != ""]
            _set_dotted(doc, name, split)
        elif len(values) > 1:
            raise RestError(grpc.StatusCode.INVALID_ARGUMENT, f"query parameter {key!r} given more than once")
        else:
            _set_dotted(doc, name, values[0])
    msg = route.request_class()
    try:
        json_format.ParseDict(doc, msg, max_recursion_depth=32)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise RestError(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {exc}") from None
    for name in route.path_params:
        value = match[name]
        f = msg.DESCRIPTOR.fields_by_name[name]
        current = getattr(msg, name)
        if current not in ("", 0) and str(current) != value:
            raise RestError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"{name}: the path says {value!r}, the body says {current!r}")
        try:
            json_format.ParseDict({f.json_name: value}, msg, max_recursion_depth=32)
        except json_format.ParseError as exc:
            raise RestError(grpc.StatusCode.INVALID_ARGUMENT, f"path parameter {name}: {exc}") from None
    return msg


def to_json(message) -> dict:
    """A response message as proto3 JSON (every field, the unset ones with their defaults)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


# gRPC status -> HTTP status, as Google's APIs (and grpc-gateway) map them.
_HTTP = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
}


def http_status(code: grpc.StatusCode) -> int:
    return _HTTP.get(code.name, 500)
