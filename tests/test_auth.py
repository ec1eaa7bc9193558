"""Authentication and authorization of every RPC (api/auth.py), and tenant isolation.

The table test is pure; the rest runs against a real cluster with the session's admin
token ($MINOOTS_TOKEN, see conftest.py) and tokens made through the Auth service.
"""
from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import minoots
from minoots.api.auth import RULES, Authenticator, AuthError, Principal
from minoots.raft.tokens import TokenRecord, new_token, token_hash
from minoots.v1 import audit_pb2, auth_pb2, cluster_pb2, tenants_pb2, timers_pb2

from support import cluster_grpc, wait_for



def _proto_modules():
    """Every generated module of minoots.v1 (a new .proto is covered without editing this)."""
    import minoots.v1
    return [importlib.import_module(f"minoots.v1.{m.name}") for m in pkgutil.iter_modules(minoots.v1.__path__)
            if m.name.endswith("_pb2")]


SERVICES = [(m, svc) for m in (*_proto_modules(), health_pb2) for svc in m.DESCRIPTOR.services_by_name.values()]


def all_methods():
    out = []
    for _, svc in SERVICES:
        for m in svc.methods:
            out.append((f"/{svc.full_name}/{m.name}", m))
    return out


def test_every_rpc_is_in_the_table_and_the_table_names_only_real_rpcs():
    names = {name for name, _ in all_methods()}
    names |= {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
              "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}
    assert names - set(RULES) == set(), "RPCs missing from api/auth.py RULES"
    assert set(RULES) - names == set(), "RULES names RPCs that do not exist"
    assert reflection_pb2  # the reflection service is real (imported above)


class FakeMachine:
    def __init__(self, *records):
        self._by_id = {r.id: r for r in records}

    def token(self, tid):
        return self._by_id.get(tid)


def record(token, tid, role="writer", tenants=("a",), expires=0):
    return TokenRecord(tid, token_hash(token), "t", role, tuple(tenants), 1, expires)


def test_authenticator_maps_tokens_to_principals():
    tid, tok = new_token()
    tid2, tok2 = new_token()
    auth = Authenticator(FakeMachine(record(tok, tid), record(tok2, tid2, expires=1000)),
                         bootstrap_token="boot" * 8, clock_ms=lambda: 5000)
    p = auth.authenticate([("authorization", f"Bearer {tok}")])
    assert p.role == "writer" and p.tenants == frozenset({"a"}) and tid in p.name
    assert auth.authenticate([("authorization", "Bearer " + "boot" * 8)]) == \
        Principal("bootstrap-admin", "admin", None)
    for md, text in (([], "no credentials"), ([("authorization", tok)], "malformed"),
                     ([("authorization", f"Bearer {tok}x")], "unknown"),
                     ([("authorization", f"Bearer {tok[:-1]}A" if tok[-1] != "A" else f"Bearer {tok[:-1]}B")],
                      "unknown"),
                     ([("authorization", f"Bearer {tok2}")], "expired"),
                     ([("authorization", "Bearer " + "x" * 300)], "malformed")):
        with pytest.raises(AuthError, match=text) as info:
            auth.authenticate(md)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def _raw_call(channel, path, method, metadata=()):
    """Call `path` with an empty request, the raw way (no SDK); returns the status code."""
    empty = b""
    try:
        if method.server_streaming:
            for _ in channel.unary_stream(path)(empty, timeout=10, metadata=metadata):
                pass
        else:
            channel.unary_unary(path)(empty, timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


pytestmark_cluster = pytest.mark.cluster


@pytest.mark.cluster
def test_every_rpc_without_credentials_is_unauthenticated(real_cluster):
    node = next(iter(real_cluster.nodes.values()))
    with grpc.insecure_channel(node.grpc) as ch:
        for path, method in all_methods():
            code = _raw_call(ch, path, method)
            if RULES[path].permission == "public":
                assert code != grpc.StatusCode.UNAUTHENTICATED, path
            else:
                assert code == grpc.StatusCode.UNAUTHENTICATED, (path, code)
            code = _raw_call(ch, path, method, metadata=(("authorization", "Bearer nope"),))
            if RULES[path].permission != "public":
                assert code == grpc.StatusCode.UNAUTHENTICATED, (path, code)


@pytest.mark.cluster
def test_roles_and_tenants(real_cluster, tmp_path):
    addrs = cluster_grpc(real_cluster)
    with minoots.Client(addrs, timeout=60) as admin:
        reader_a, _ = admin.create_token("reader-a", "reader", ["tenant-a"])
        writer_a, info_wa = admin.create_token("writer-a", "writer", ["tenant-a"])
        writer_b, _ = admin.create_token("writer-b", "writer", ["tenant-b"])
        operator, _ = admin.create_token("ops", "operator")
        assert {t.name for t in admin.list_tokens()} >= {"reader-a", "writer-a", "writer-b", "ops"}
        with pytest.raises(minoots.InvalidArgument):
            admin.create_token("bad", "reader")          # a reader needs a tenant
        with pytest.raises(minoots.InvalidArgument):
            admin.create_token("bad", "root")

    def client(token, **kw):
        return minoots.Client(addrs, token=token, timeout=30, **kw)

    def wait_known(token):        # a new token is usable on a node once applied there
        def ok():
            try:
                with client(token) as c:
                    c.whoami()
                return True
            except minoots.MinootsError:
                return False
        wait_for(ok, "the new token to be known")

    for t in (reader_a, writer_a, writer_b, operator):
        wait_known(t)

    with client(writer_a) as wa, client(writer_b) as wb, client(reader_a) as ra, client(operator) as op:
        assert wa.whoami().tenants == ("tenant-a",)
        t = wa.create(delay=3600, id="a1")                 # empty tenant: the token's only tenant
        assert t.tenant == "tenant-a"
        wb.create(delay=3600, id="b1")
        with pytest.raises(minoots.PermissionDenied):
            wa.create(delay=3600, id="x", tenant="tenant-b")
        with pytest.raises(minoots.PermissionDenied):
            wa.get("b1", tenant="tenant-b")
        with pytest.raises(minoots.PermissionDenied):
            wa.cancel("b1", tenant="tenant-b")
        with pytest.raises(minoots.PermissionDenied):
            wa.create_many([{"id": "m1", "delay": 3600}, {"id": "m2", "delay": 3600, "tenant": "tenant-b"}])
        assert ra.get("a1").id == "a1"
        assert [x.id for x in ra.list()] == ["a1"]
        for write in (lambda: ra.create(delay=3600), lambda: ra.cancel("a1"), lambda: ra.extend("a1", 5)):
            with pytest.raises(minoots.PermissionDenied):
                write()
        with pytest.raises(minoots.PermissionDenied):
            list(ra.list(tenant="tenant-b"))
        with pytest.raises(minoots.PermissionDenied):
            ra.add_node("n9", "127.0.0.1:1")
        with pytest.raises(minoots.PermissionDenied):
            wa.take_snapshot()
        with pytest.raises(minoots.PermissionDenied):
            op.create_token("x", "admin")
        assert op.get("b1", tenant="tenant-b").id == "b1"    # operators read every tenant
        assert ra.status().leader                             # everyone may see the cluster's shape

        # A watcher of tenant A never sees tenant B's events, whatever interleaves.
        seen, stop = [], threading.Event()

        def watch():
            with client(reader_a) as c:
                with pytest.raises(minoots.PermissionDenied, match="name the tenant"):
                    next(iter(c.watch(from_sequence=1)))
                for e in c.watch(from_sequence=1, tenant="tenant-a"):
                    seen.append(e)
                    if stop.is_set():
                        return

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        for i in range(10):
            (wa if i % 2 else wb).create(delay=0.05 * (i % 3), id=f"i{i}")
        wait_for(lambda: {e.timer_id for e in seen} >= {"a1", "i1", "i3", "i5", "i7", "i9"}, "tenant A's events")
        stop.set()
        wa.create(delay=3600, id="last")
        th.join(timeout=30)
        assert seen and all(e.tenant == "tenant-a" for e in seen)

    with minoots.Client(addrs, timeout=60) as admin:
        admin.revoke_token(info_wa.id)

    def revoked():
        try:
            with client(writer_a) as c:
                c.get("a1")
            return False
        except minoots.Unauthenticated:
            return True
    wait_for(revoked, "the revoked token to be refused")


@pytest.mark.cluster
def test_expired_token_is_refused(real_cluster):
    addrs = cluster_grpc(real_cluster)
    with minoots.Client(addrs, timeout=60) as admin:
        tok, info = admin.create_token("short", "reader", ["t"], ttl_seconds=1)
        assert info.expires_at is not None
    time.sleep(1.5)
    with minoots.Client(addrs, token=tok, timeout=10) as c:
        with pytest.raises(minoots.Unauthenticated, match="expired|unknown"):
            c.get("x")


@pytest.mark.cluster
def test_cli_token_commands(real_cluster):
    env_nodes = ",".join(cluster_grpc(real_cluster))

    def run(*args, token=None):
        import os
        env = dict(os.environ, MINOOTS_NODES=env_nodes)
        if token is not None:
            env["MINOOTS_TOKEN"] = token
        return subprocess.run([sys.executable, "-m", "minoots", "token", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    r = run("create", "--name", "cli", "--role", "writer", "--tenant", "cli-t", "--expires", "30d")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("mnt_") and "shown once" in r.stderr
    r = run("list", "--json")
    assert r.returncode == 0 and '"cli"' in r.stdout and token not in r.stdout
    wait_for(lambda: run("whoami", token=token).returncode == 0, "the CLI token to be known")
    r = run("whoami", "--json", token=token)
    assert '"writer"' in r.stdout and "cli-t" in r.stdout
    r = run("create", "--name", "x", "--role", "reader")
    assert r.returncode == 2 and "needs at least one --tenant" in r.stderr
    r = run("create", "--name", "x", "--role", "admin", token=token)
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr and "Traceback" not in r.stderr
    tid = token.split("_")[1]
    assert run("revoke", tid).returncode == 0
    r = run("revoke", tid)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr
    r = run("whoami", token="mnt_" + "0" * 16 + "_" + "A" * 43)
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr


def test_sdk_bounds_what_it_receives():
    from minoots.api.client.policy import CHANNEL_OPTIONS

    opts = dict(CHANNEL_OPTIONS)
    assert 0 < opts["grpc.max_receive_message_length"] <= 64 << 20
    assert 0 < opts["grpc.max_send_message_length"] <= 16 << 20


@pytest.mark.cluster
def test_watcher_of_one_tenant_never_sees_another_hypothesis_interleavings(real_cluster):
    """Creates of two tenants interleaved as hypothesis draws them (order, due now or later,
    cancelled or not); the watcher of tenant A sees exactly A's events, whatever the order."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    addrs = cluster_grpc(real_cluster)
    with minoots.Client(addrs, timeout=60) as admin:
        wa, _ = admin.create_token("iso-a", "writer", ["iso-a"])
        wb, _ = admin.create_token("iso-b", "writer", ["iso-b"])
        ra, _ = admin.create_token("iso-reader", "reader", ["iso-a"])
    clients = {t: minoots.Client(addrs, token=t, timeout=30) for t in (wa, wb, ra)}
    wait_for(lambda: all(_known(c) for c in clients.values()), "the new tokens to be known")
    ops = st.lists(st.tuples(st.sampled_from("AB"), st.sampled_from([0.0, 0.2, 3600.0]), st.booleans()),
                   min_size=1, max_size=8)
    counter = iter(range(10**6))

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops)
    def run(plan):
        mine = {clients[wa].create(delay=3600, id=f"h{next(counter)}").id}   # A always has one
        for tenant, delay, cancel in plan:
            c = clients[wa if tenant == "A" else wb]
            t = c.create(delay=delay, id=f"h{next(counter)}")
            if tenant == "A":
                mine.add(t.id)
            if cancel and delay > 1:
                c.cancel(t.id)
        seen = []
        w = clients[ra].watch(from_sequence=1, tenant="iso-a")
        guard = threading.Timer(60, w.close)        # a watch that never delivers must not hang the test
        guard.start()
        try:
            for e in w:
                seen.append(e)
                if mine <= {x.timer_id for x in seen}:
                    break
        finally:
            guard.cancel()
            w.close()
        assert mine <= {e.timer_id for e in seen}, "tenant A's own events are all delivered"
        assert seen and all(e.tenant == "iso-a" for e in seen), "nothing of tenant B"

    try:
        run()
    finally:
        for c in clients.values():
            c.close()


def _known(client) -> bool:
    try:
        client.whoami()
        return True
    except minoots.MinootsError:
        return False
