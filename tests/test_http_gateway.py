"""The HTTP/JSON + SSE gateway (api/gateway.py, api/rest.py, api/openapi.py).

Fast tests check the route table, the request mapping and the OpenAPI document against
the aiohttp app in process. The `cluster` tests drive real 3-node clusters with plain
HTTP (urllib, http.client) and a small SSE client: create/get/list/cancel, 401/403 and
tenant isolation, the error mapping, the OpenAPI document against the live routes, and
an SSE stream that resumes with Last-Event-ID on another node after the leader's SIGKILL
with every sequence exactly once.
"""
from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.error
import urllib.request

import grpc
import pytest
from multidict import MultiDict

import minoots
from minoots.api import openapi, rest
from minoots.api.auth import RULES
from minoots.v1 import timers_pb2

from support import cluster_grpc, start_cluster, wait_for

# ---------------------------------------------------------------- helpers: a plain HTTP and SSE client


def call(node, method: str, path: str, body=None, token: str | None = "admin", raw: bytes | None = None,
         headers: dict | None = None):
    """(HTTP status, parsed JSON, headers) of one request to `node`'s gateway."""
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(f"http://{node.http}{path}", method=method, data=data, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


class SSE:
    """A Server-Sent Events client over http.client: `events()` yields (id, event, data)."""

    def __init__(self, node, path: str, token: str, last_event_id: int | None = None, timeout: float = 60):
        host, port = node.http.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", path, headers=headers)
        self.resp = self.conn.getresponse()

    def events(self):
        ev_id, kind, data = None, None, []
        while True:
            try:
                raw = self.resp.readline()
            except (OSError, http.client.HTTPException):
                return                    # the server went away
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if data:
                    yield ev_id, kind or "message", json.loads("\n".join(data))
                ev_id, kind, data = None, None, []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                ev_id = int(value)
            elif field == "event":
                kind = value
            elif field == "data":
                data.append(value)

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------- fast: the table, the mapping, the document


def test_every_unary_rpc_of_timers_and_cluster_has_a_route_and_an_auth_rule():
    mapped = {(r.resource, r.rpc) for r in rest.routes()}
    for resource, service in rest.SERVICES.items():
        for m in service.methods:
            if (resource, m.name) in rest.UNMAPPED:
                continue
            assert (resource, m.name) in mapped, m.full_name
    for r in rest.routes():
        assert r.grpc_method in RULES, r.grpc_method
    seen = [(r.http_method, r.path) for r in rest.routes()]
    assert len(seen) == len(set(seen))


def test_query_parameters_fill_the_request_by_json_or_proto_name():
    route = next(r for r in rest.routes() if r.rpc == "ListTimers")
    q = MultiDict([("states", "TIMER_STATE_ARMED,TIMER_STATE_FIRED"), ("states", "TIMER_STATE_SETTLED"),
                   ("label_selector", "team=a,x=y"), ("pageSize", "7"), ("fireAtFrom", "2026-01-01T00:00:00Z")])
    msg = rest.build_request(route, {}, q, None)
    assert list(msg.states) == [timers_pb2.TIMER_STATE_ARMED, timers_pb2.TIMER_STATE_FIRED,
                                timers_pb2.TIMER_STATE_SETTLED]
    assert msg.label_selector == "team=a,x=y"        # a string is never split
    assert msg.page_size == 7
    assert msg.fire_at_from.seconds == 1767225600


@pytest.mark.parametrize("query,fragment", [
    ([("bogus", "1")], "unknown query parameter 'bogus'"),
    ([("pageSize", "seven")], "page_size"),
    ([("pageSize", "1"), ("pageSize", "2")], "more than once"),
    ([("states", "NOPE")], "NOPE"),
])
def test_bad_query_parameters_are_invalid_argument(query, fragment):
    route = next(r for r in rest.routes() if r.rpc == "ListTimers")
    with pytest.raises(rest.RestError) as info:
        rest.build_request(route, {}, MultiDict(query), None)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in str(info.value)


def test_path_and_body_fill_the_request_and_must_agree():
    cancel = next(r for r in rest.routes() if r.rpc == "CancelTimer")
    msg = rest.build_request(cancel, {"id": "a:b"}, MultiDict(), {"tenant": "t1"})
    assert (msg.id, msg.tenant) == ("a:b", "t1")
    with pytest.raises(rest.RestError, match="the path says"):
        rest.build_request(cancel, {"id": "a"}, MultiDict(), {"id": "b"})
    with pytest.raises(rest.RestError, match="must be a JSON object"):
        rest.build_request(cancel, {"id": "a"}, MultiDict(), [1, 2])
    get = next(r for r in rest.routes() if r.rpc == "GetTimer")
    with pytest.raises(rest.RestError, match="takes no body"):
        rest.build_request(get, {"id": "a"}, MultiDict(), {"tenant": "x"})
    create = next(r for r in rest.routes() if r.rpc == "CreateTimer")
    msg = rest.build_request(create, {}, MultiDict(), {"delay": "1.5s", "payload": base64.b64encode(b"hi").decode(),
                                                       "labels": {"k": "v"}})
    assert msg.timer.delay.seconds == 1 and msg.timer.delay.nanos == 500_000_000
    assert msg.timer.payload == b"hi" and dict(msg.timer.labels) == {"k": "v"}
    with pytest.raises(rest.RestError, match="noSuchField"):
        rest.build_request(create, {}, MultiDict(), {"noSuchField": 1})


def test_status_mapping_follows_google():
    assert rest.http_status(grpc.StatusCode.UNAUTHENTICATED) == 401
    assert rest.http_status(grpc.StatusCode.PERMISSION_DENIED) == 403
    assert rest.http_status(grpc.StatusCode.NOT_FOUND) == 404
    assert rest.http_status(grpc.StatusCode.ALREADY_EXISTS) == 409
    assert rest.http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429
    assert rest.http_status(grpc.StatusCode.FAILED_PRECONDITION) == 400
    assert rest.http_status(grpc.StatusCode.UNAVAILABLE) == 503
    assert rest.http_status(grpc.StatusCode.DEADLINE_EXCEEDED) == 504


def _refs(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _refs(v)


def test_openapi_document_matches_the_apps_routes_and_its_refs_resolve():
    from minoots.api.gateway import Gateway

    doc = openapi.document()
    assert doc["openapi"].startswith("3.")
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    app = Gateway("unix:/nonexistent", "127.0.0.1:1").app
    live = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("formatter") or info.get("path")
        for r in resource:
            if r.method != "HEAD" and path not in ("/v1/openapi.json", "/ui"):
                live.add((path.replace(":[^/]+}", "}"), r.method))
    assert live == documented
    # A field of the .proto appears in the document under its JSON name.
    assert "ackRequired" in schemas["TimerSpec"]["properties"]
    params = {p["name"] for p in doc["paths"]["/v1/timers"]["get"]["parameters"]}
    assert {"tenant", "states", "labelSelector", "fireAtFrom", "pageSize", "pageToken"} <= params


# ---------------------------------------------------------------- against a real cluster


@pytest.fixture(scope="module")
def http_cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("http"), http=True, node_args=("--events-keep", "1000"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def tokens(http_cluster):
    """{"admin", "reader", "writer_a", "writer_b"}: tokens of the roles the tests need."""
    out = {"admin": http_cluster.admin_token()}
    with minoots.Client(cluster_grpc(http_cluster), timeout=60) as c:
        out["reader"], _ = c.create_token("http-reader", "reader", ["ta"])
        out["writer_a"], _ = c.create_token("http-writer-a", "writer", ["ta"])
        out["writer_b"], _ = c.create_token("http-writer-b", "writer", ["tb"])
    return out




@pytest.mark.cluster
def test_create_get_list_cancel_over_http(http_cluster, tokens):
    leader = http_cluster.nodes[http_cluster.leader()]
    follower = next(n for n in http_cluster.nodes.values() if n is not leader)
    admin = tokens["admin"]
    status, body, _ = call(follower, "POST", "/v1/timers",     # a follower forwards the write
                           {"delay": "3600s", "name": "h1", "labels": {"via": "http"},
                            "payload": base64.b64encode(b"hello").decode()}, token=admin)
    assert status == 200 and body["created"] is True
    timer = body["timer"]
    assert timer["state"] == "TIMER_STATE_ARMED" and timer["labels"] == {"via": "http"}
    assert base64.b64decode(timer["payload"]) == b"hello"
    tid = timer["id"]
    status, got, _ = call(follower, "GET", f"/v1/timers/{tid}", token=admin)
    assert status == 200 and got["id"] == tid and got["name"] == "h1"
    status, listed, _ = call(leader, "GET", "/v1/timers?labelSelector=via%3Dhttp&states=TIMER_STATE_ARMED",
                             token=admin)
    assert status == 200 and tid in [t["id"] for t in listed["timers"]]
    status, moved, _ = call(leader, "POST", f"/v1/timers/{tid}:reschedule", {"extendBy": "60s"}, token=admin)
    assert status == 200 and moved["fireAt"] > timer["fireAt"]
    status, cancelled, _ = call(leader, "POST", f"/v1/timers/{tid}:cancel", {}, token=admin)
    assert status == 200 and cancelled["state"] == "TIMER_STATE_CANCELLED"
    status, err, _ = call(leader, "POST", f"/v1/timers/{tid}:cancel", token=admin)
    assert status == 400 and err["error"]["status"] == "FAILED_PRECONDITION"
    # A timer id holding ':' still works with custom methods (the verb is the last ':...').
    status, body, _ = call(leader, "POST", "/v1/timers", {"id": "job:7", "delay": "3600s"}, token=admin)
    assert status == 200
    status, cancelled, _ = call(leader, "POST", "/v1/timers/job:7:cancel", token=admin)
    assert status == 200 and cancelled["id"] == "job:7" and cancelled["state"] == "TIMER_STATE_CANCELLED"
    status, st, _ = call(follower, "GET", "/v1/cluster/status", token=admin)
    assert status == 200 and st["leader"] == leader.node_id and len(st["members"]) == 3


@pytest.mark.cluster
def test_ack_over_http(http_cluster, tokens):
    node = http_cluster.nodes["n1"]
    admin = tokens["admin"]
    status, body, _ = call(node, "POST", "/v1/timers", {"delay": "0.2s", "ackRequired": True}, token=admin)
    assert status == 200
    tid = body["timer"]["id"]
    fired = wait_for(lambda: (t := call(node, "GET", f"/v1/timers/{tid}", token=admin)[1])["state"]
                     == "TIMER_STATE_FIRED" and t, "the timer to fire")
    status, acked, _ = call(node, "POST", f"/v1/timers/{tid}:ack", {"fireId": fired["fireId"]}, token=admin)
    assert status == 200 and acked["state"] == "TIMER_STATE_SETTLED"


@pytest.mark.cluster
def test_authentication_and_roles(http_cluster, tokens):
    node = http_cluster.nodes["n2"]
    status, err, headers = call(node, "GET", "/v1/timers", token=None)
    assert status == 401 and err["error"]["status"] == "UNAUTHENTICATED"
    assert headers["WWW-Authenticate"].lower().startswith("bearer")
    status, err, _ = call(node, "GET", "/v1/timers", token="mnt_nope_nope")
    assert status == 401
    status, err, _ = call(node, "GET", "/v1/timers", headers={"Authorization": "Basic eDp5"}, token=None)
    assert status == 401
    # A reader may read its tenant but not write; nobody but an admin may change membership.
    status, _, _ = call(node, "GET", "/v1/timers?tenant=ta", token=tokens["reader"])
    assert status == 200
    status, err, _ = call(node, "POST", "/v1/timers", {"delay": "60s", "tenant": "ta"}, token=tokens["reader"])
    assert status == 403 and err["error"]["status"] == "PERMISSION_DENIED"
    status, err, _ = call(node, "DELETE", "/v1/cluster/members/n3", token=tokens["writer_a"])
    assert status == 403
    assert http_cluster.status("n3")["role"] in ("leader", "follower")


@pytest.mark.cluster
def test_tenant_isolation(http_cluster, tokens):
    node = http_cluster.nodes["n3"]
    status, a, _ = call(node, "POST", "/v1/timers", {"delay": "3600s", "name": "mine"}, token=tokens["writer_a"])
    assert status == 200 and a["timer"]["tenant"] == "ta"        # an empty tenant is the token's only one
    status, b, _ = call(node, "POST", "/v1/timers", {"delay": "3600s", "tenant": "tb"}, token=tokens["writer_b"])
    assert status == 200
    status, err, _ = call(node, "GET", f"/v1/timers/{a['timer']['id']}?tenant=ta", token=tokens["writer_b"])
    assert status == 403 and "not one of this token's tenants" in err["error"]["message"]
    status, err, _ = call(node, "POST", "/v1/timers", {"delay": "60s", "tenant": "ta"}, token=tokens["writer_b"])
    assert status == 403
    status, err, _ = call(node, "POST", f"/v1/timers/{a['timer']['id']}:cancel", {"tenant": "ta"},
                          token=tokens["writer_b"])
    assert status == 403
    status, listed, _ = call(node, "GET", "/v1/timers", token=tokens["writer_b"])
    assert status == 200 and {t["tenant"] for t in listed["timers"]} == {"tb"}
    # Its own tenant's timer, unknown in tb: not found there.
    status, err, _ = call(node, "GET", f"/v1/timers/{a['timer']['id']}", token=tokens["writer_b"])
    assert status == 404
    # A tenant-bound token must name its tenant to watch (as over gRPC): 403 before any stream.
    sse = SSE(node, "/v1/events", tokens["reader"])
    try:
        assert sse.resp.status == 403
        assert json.loads(sse.resp.read())["error"]["status"] == "PERMISSION_DENIED"
    finally:
        sse.close()


@pytest.mark.cluster
def test_error_mapping(http_cluster, tokens):
    node = http_cluster.nodes["n1"]
    admin = tokens["admin"]
    status, err, _ = call(node, "GET", "/v1/timers/no-such-timer", token=admin)
    assert status == 404 and err["error"] == {"code": 404, "status": "NOT_FOUND", "message": err["error"]["message"]}
    assert "no-such-timer" in err["error"]["message"]
    status, _, _ = call(node, "POST", "/v1/timers", {"id": "dup-1", "delay": "3600s"}, token=admin)
    assert status == 200
    status, err, _ = call(node, "POST", "/v1/timers", {"id": "dup-1", "delay": "3600s"}, token=admin)
    assert status == 409 and err["error"]["status"] == "ALREADY_EXISTS"
    status, err, _ = call(node, "POST", "/v1/timers", {"delay": "-5s"}, token=admin)
    assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT"
    status, err, _ = call(node, "POST", "/v1/timers", raw=b"{not json", token=admin)
    assert status == 400 and "not JSON" in err["error"]["message"]
    status, err, _ = call(node, "POST", "/v1/timers", {"delay": "1s", "noSuchField": 1}, token=admin)
    assert status == 400 and "noSuchField" in err["error"]["message"]
    status, err, _ = call(node, "POST", "/v1/timers", raw=b'{"name": "' + b"x" * (17 << 20) + b'"}', token=admin)
    assert status == 413 and err["error"]["status"] == "RESOURCE_EXHAUSTED"
    status, err, _ = call(node, "GET", "/v1/nowhere", token=admin)
    assert status == 404 and "openapi" in err["error"]["message"]
    status, err, _ = call(node, "PUT", "/v1/timers", {}, token=admin)
    assert status == 405 and err["error"]["status"] == "UNIMPLEMENTED"
    status, err, _ = call(node, "GET", "/v1/events", token=admin, headers={"Last-Event-ID": "x1"})
    assert status == 400 and "Last-Event-ID" in err["error"]["message"]
    # The node is still fine.
    assert call(node, "GET", "/v1/cluster/status", token=admin)[0] == 200


@pytest.mark.cluster
def test_openapi_served_and_every_operation_is_live(http_cluster):
    node = http_cluster.nodes["n2"]
    status, doc, _ = call(node, "GET", "/v1/openapi.json", token=None)       # public, like reflection
    assert status == 200 and doc == json.loads(json.dumps(openapi.document()))
    for path, ops in doc["paths"].items():
        concrete = path.replace("{id}", "x1")
        for method in ops:
            # Unauthenticated: every documented operation exists and answers 401, not 404/405.
            status, err, _ = call(node, method.upper(), concrete, body={} if method == "post" else None,
                                  token=None)
            assert status == 401, (method, path, status, err)
            assert err["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.cluster
def test_sse_streams_and_refuses_a_cursor_the_node_no_longer_has(http_cluster, tokens):
    node = http_cluster.nodes["n1"]
    admin = tokens["admin"]
    status, st, _ = call(node, "POST", "/v1/timers:batchCreate",
                         {"timers": [{"delay": "3600s", "tenant": "sse"} for _ in range(600)]}, token=admin)
    assert status == 200 and len(st["results"]) == 600
    # Retention keeps 1,000 events (--events-keep): sequence 1 is gone on every node.
    sse = SSE(node, "/v1/events?fromSequence=1", admin)
    try:
        assert sse.resp.status == 410
        err = json.loads(sse.resp.read())["error"]
        assert err["status"] == "OUT_OF_RANGE" and "no longer available" in err["message"]
    finally:
        sse.close()
    # A live tenant-filtered stream: the next timer of tenant sse arrives, with id = its sequence.
    sse = SSE(node, "/v1/events?tenant=sse&kinds=EVENT_KIND_CREATED", admin)
    try:
        assert sse.resp.status == 200 and sse.resp.headers["Content-Type"].startswith("text/event-stream")
        status, made, _ = call(node, "POST", "/v1/timers", {"delay": "3600s", "tenant": "sse", "name": "live"},
                               token=admin)
        ev_id, kind, data = next(sse.events())
        assert kind == "message" and data["timerId"] == made["timer"]["id"]
        assert data["kind"] == "EVENT_KIND_CREATED" and int(data["sequence"]) == ev_id
    finally:
        sse.close()


@pytest.mark.cluster
def test_sse_resumes_on_another_node_after_a_leader_kill(tmp_path):
    c = start_cluster(tmp_path / "c", http=True)
    try:
        admin = c.admin_token()
        leader = c.leader()
        others = [n for n in c.nodes if n != leader]
        created: list[str] = []

        def create(n: int, names) -> None:
            for i in range(n):
                body = {"id": f"{names}-{i}", "idempotencyKey": f"{names}-{i}", "delay": "1s"}
                wait_for(lambda: call(c.nodes[others[i % 2]], "POST", "/v1/timers", body, token=admin)[0] == 200,
                         "a create through the gateway", timeout=60, retry_on=(OSError,))
                created.append(body["id"])

        seen: list[tuple[int, dict]] = []
        first = SSE(c.nodes[leader], "/v1/events?fromSequence=1", admin)
        assert first.resp.status == 200
        reader = threading.Thread(target=lambda: seen.extend((i, d) for i, _, d in first.events()), daemon=True)
        reader.start()
        create(20, "before")
        wait_for(lambda: any(d["kind"] == "EVENT_KIND_FIRED" for _, d in seen), "a FIRED event on the first stream")
        c.kill(leader)                                   # SIGKILL: the stream breaks mid-flight
        reader.join(60)
        assert not reader.is_alive()
        first.close()
        last = seen[-1][0]
        create(20, "after")                              # during and after the election
        want = {(tid, k) for tid in created for k in ("EVENT_KIND_CREATED", "EVENT_KIND_FIRED")}
        second = SSE(c.nodes[others[0]], "/v1/events", admin, last_event_id=last)
        assert second.resp.status == 200
        try:
            for ev_id, kind, data in second.events():
                assert kind == "message", data
                seen.append((ev_id, data))
                if want <= {(d["timerId"], d["kind"]) for _, d in seen}:
                    break
        finally:
            second.close()
        ids = [i for i, _ in seen]
        assert ids == list(range(1, len(ids) + 1)), "a gap or a duplicate across the reconnect"
        assert [int(d["sequence"]) for _, d in seen] == ids
        assert want <= {(d["timerId"], d["kind"]) for _, d in seen}
    finally:
        c.stop()


def test_sse_frames_carry_the_sequence_and_a_filtered_runs_progress():
    from minoots.api.gateway import _sse

    batch = timers_pb2.EventBatch(events=[timers_pb2.Event(sequence=7, kind=timers_pb2.EVENT_KIND_FIRED,
                                                           timer_id="t")], through=9)
    text = _sse(batch).decode()
    first, second, rest_ = text.split("\n\n", 2)
    assert first.startswith("id: 7\ndata: ") and json.loads(first.split("data: ", 1)[1])["timerId"] == "t"
    assert second == "id: 9" and rest_ == ""         # id alone: no event dispatched, the resume point moves
    assert _sse(timers_pb2.EventBatch(through=12)).decode() == "id: 12\n\n"
    assert _sse(timers_pb2.EventBatch(events=[timers_pb2.Event(sequence=3)], through=3)).decode().count("id:") == 1
