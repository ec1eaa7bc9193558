"""The OpenAPI 3 document of the HTTP gateway, generated from the proto descriptors and the
route table (api/rest.py): what /v1/openapi.json serves. A field or RPC added to the
.proto appears here without an edit.

Schemas follow proto3 JSON: 64-bit integers are strings, enums their value names,
Timestamps RFC 3339 strings, Durations strings like "1.5s", bytes base64, maps objects.
"""
from __future__ import annotations

import functools

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from . import rest

__all__ = ["document", "schema_name"]

_T = FieldDescriptor
_SCALARS = {
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_INT64: {"type": "string", "format": "int64"},
    _T.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _T.TYPE_SINT64: {"type": "string", "format": "int64"},
    _T.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _T.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _T.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
                                 "description": "seconds with up to 9 decimals and an 's', e.g. \"90s\", \"1.5s\""},
    "google.protobuf.FieldMask": {"type": "string"},
}


def schema_name(desc) -> str:
    return desc.full_name.replace("minoots.v1.", "")


def _field_schema(f: FieldDescriptor, seen: dict) -> dict:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        value = f.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, seen)}
    one = _single(f, seen)
    return {"type": "array", "items": one} if f.is_repeated else one


def _single(f: FieldDescriptor, seen: dict) -> dict:
    if f.enum_type is not None:
        _enum(f.enum_type, seen)
        return {"$ref": f"#/components/schemas/{schema_name(f.enum_type)}"}
    if f.message_type is not None:
        if f.message_type.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[f.message_type.full_name])
        _message(f.message_type, seen)
        return {"$ref": f"#/components/schemas/{schema_name(f.message_type)}"}
    return dict(_SCALARS[f.type])


def _enum(desc, seen: dict) -> None:
    name = schema_name(desc)
    if name not in seen:
        seen[name] = {"type": "string", "enum": [v.name for v in desc.values]}


def _message(desc: Descriptor, seen: dict) -> None:
    name = schema_name(desc)
    if name in seen:
        return
    seen[name] = {}          # placeholder: recursive messages
    props = {f.json_name: _field_schema(f, seen) for f in desc.fields}
    schema = {"type": "object", "properties": props, "additionalProperties": False}
    oneofs = [o for o in desc.oneofs if not o.name.startswith("_")]
    if oneofs:
        schema["description"] = "; ".join(
            f"at most one of {', '.join(f.json_name for f in o.fields)}" for o in oneofs)
    seen[name] = schema


def _parameter(name: str, f: FieldDescriptor, seen: dict, where: str) -> dict:
    schema = _field_schema(f, seen)
    p = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if f.is_repeated:
        p["explode"] = True
    return p


def _json_dotted(route: rest.Route, dotted: str) -> str:
    return ".".join(rest.json_names(route.method.input_type, dotted))


@functools.lru_cache(maxsize=1)
def document() -> dict:
    schemas: dict = {}
    paths: dict = {}
    schemas["Error"] = {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "status", "message"], "properties": {
            "code": {"type": "integer", "description": "the HTTP status"},
            "status": {"type": "string", "description": "the gRPC status name, e.g. NOT_FOUND"},
            "message": {"type": "string"}}}}}
    for route in rest.routes():
        inp = route.method.input_type
        _message(inp, schemas)
        _message(route.method.output_type, schemas)
        params = [_parameter(n, inp.fields_by_name[n], schemas, "path") for n in route.path_params]
        params += [_parameter(_json_dotted(route, name), f, schemas, "query") for name, f in route.query_fields()]
        op = {
            "operationId": f"{route.method.containing_service.name}_{route.rpc}",
            "summary": f"{route.method.containing_service.full_name}.{route.rpc}",
            "tags": [route.resource],
            "parameters": params,
            "responses": {"default": {"description": "an error (the gRPC status mapped to HTTP)",
                                      "content": {"application/json": {
                                          "schema": {"$ref": "#/components/schemas/Error"}}}}},
        }
        out_ref = {"$ref": f"#/components/schemas/{schema_name(route.method.output_type)}"}
        if route.streaming:
            params.append({"name": "Last-Event-ID", "in": "header", "required": False,
                           "schema": {"type": "string", "pattern": "^[0-9]+$"},
                           "description": "resume after this event sequence (sent by SSE clients on reconnect)"})
            op["description"] = ("Server-Sent Events: each event has `id:` = its sequence and `data:` = the "
                                 "event as JSON (schema " + schema_name(route.method.output_type) + "); a stream "
                                 "that fails after it started ends with `event: error`. 410 (OUT_OF_RANGE) "
                                 "when this node no longer retains the cursor.")
            op["responses"]["200"] = {"description": "an event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}},
                                                  "application/json": {"schema": out_ref}}}
        else:
            op["responses"]["200"] = {"description": "OK", "content": {"application/json": {"schema": out_ref}}}
        if route.body is not None:
            if route.body == "*":
                body_ref = {"$ref": f"#/components/schemas/{schema_name(inp)}"}
            else:
                f = inp.fields_by_name[route.body]
                body_ref = _field_schema(f, schemas)
            op["requestBody"] = {"required": route.body != "*",
                                 "content": {"application/json": {"schema": body_ref}}}
        paths.setdefault(route.path, {})[route.http_method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "MINOOTS HTTP API", "version": "v1",
                 "description": "The REST mapping of minoots.v1 Timers and Cluster (proto3 JSON), generated "
                                "from the .proto. Authenticate with `Authorization: Bearer <token>`."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
