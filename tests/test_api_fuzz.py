"""Bytes from the network against every RPC: only documented status codes, never a
crash, and the node keeps SERVING. Garbled protobuf is INVALID_ARGUMENT."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minoots.raft.testing import Bearer
from minoots.v1 import auth_pb2, cluster_pb2, timers_pb2

pytestmark = pytest.mark.cluster

DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE,
              grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.DATA_LOSS}
# Bytes no protobuf parser accepts: a truncated varint, a field with wire type 7, a length past the end.
GARBLED = [b"\xff", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x0f\x00", b"\x0a\x7f\x00"]
# Membership and leadership changes are left out of the random phase: random bytes that
# decode would at worst be refused, but a test must not risk reshaping the shared cluster.
RISKY = {"AddNode", "RemoveNode", "TransferLeadership"}


def methods():
    out = []
    for module, name in ((timers_pb2, "Timers"), (cluster_pb2, "Cluster"), (auth_pb2, "Auth")):
        svc = module.DESCRIPTOR.services_by_name[name]
        out += [(f"/{svc.full_name}/{m.name}", m) for m in svc.methods]
    return out


def call(channel, path, method, data: bytes):
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(path)(data, timeout=1.0):
                pass
        else:
            channel.unary_unary(path)(data, timeout=5.0)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def channel(real_cluster):
    node = next(iter(real_cluster.nodes.values()))
    with grpc.intercept_channel(grpc.insecure_channel(node.grpc), Bearer()) as ch:
        yield ch


def serving(channel) -> bool:
    resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def test_garbled_protobuf_is_invalid_argument_on_every_rpc(channel):
    for path, method in methods():
        for data in GARBLED:
            code, details = call(channel, path, method, data)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, data, code, details)
            assert "Traceback" not in details and "DecodeError" not in details
    assert serving(channel)


SAFE = [(p, m) for p, m in methods() if m.name not in RISKY]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SAFE), st.binary(max_size=300))
def test_random_bytes_get_documented_codes(channel, target, data):
    path, method = target
    code, details = call(channel, path, method, data)
    assert code in DOCUMENTED, (path, data, code, details)
    assert "Traceback" not in details


def test_node_still_serving_after_the_fuzz(channel):
    assert serving(channel)
