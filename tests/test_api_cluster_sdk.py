"""The SDK's cluster operations (add/remove members, transfer leadership, snapshots, export)
and `minoots cluster|snapshot` over them, against fake Cluster servers (fixture `membership`,
defined here: a Cluster service only, unlike the timer fake of fake_grpc.py): routing to the
leader, retries that never repeat a membership change, and exports that are complete
and verified or not written at all. The real thing: tests/test_raft_cluster.py."""
from __future__ import annotations

import io
import json
import threading
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner

import minoots
from minoots.api.client import SnapshotReceiver
from minoots.cli import main
from minoots.raft import snapshots
from minoots.v1 import cluster_pb2, cluster_pb2_grpc

CHUNK = 100


def container(timers: int = 3, last_index: int = 42, size: int = 1000) -> bytes:
    meta = snapshots.SnapshotMeta(last_index=last_index, last_term=2, created_at_ms=1_700_000_000_000,
                                  kernel_size=size, timers=timers)
    return snapshots.encode(meta, bytes(range(256)) * (size // 256) + b"k" * (size % 256))


class FakeMembership:
    """Ids -> addresses, a leader, and per-node, per-method faults:
    'refuse' (UNAVAILABLE before acting), 'drop' (act, then lose the answer),
    'not_leader' (FAILED_PRECONDITION, and leadership moves to the next node)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.members: dict[str, tuple[str, str]] = {}   # id -> (raft, grpc)
        self.leader: str | None = None
        self.faults: dict[tuple[str, str], list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.snaps: dict[str, list[bytes]] = {}        # node id -> containers kept
        self.break_stream: dict[str, list[str]] = {}   # node id -> 'cut' | 'corrupt' for the next exports

    def id_of(self, grpc_addr: str) -> str:
        return next(i for i, (_, g) in self.members.items() if g == grpc_addr)

    def fault(self, nid: str, method: str) -> str | None:
        q = self.faults.get((nid, method))
        return q.pop(0) if q else None


class FakeCluster(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, m: FakeMembership, nid: str) -> None:
        self.m = m
        self.nid = nid

    def _enter(self, context, method: str) -> str | None:
        with self.m.lock:
            self.m.calls.append((self.nid, method))
            fault = self.m.fault(self.nid, method)
        if fault == "refuse":
            context.abort(grpc.StatusCode.UNAVAILABLE, "no leader (missing_leader)")
        return fault

    def _member(self, nid: str) -> cluster_pb2.Member:
        raft, g = self.m.members[nid]
        return cluster_pb2.Member(id=nid, raft_address=raft, grpc_address=g,
                                  role="leader" if nid == self.m.leader else "follower", connected=True,
                                  match_index=7 if self.m.leader == self.nid and nid != self.nid else 0)

    def Status(self, request, context):
        self._enter(context, "Status")
        with self.m.lock:
            leader = self.m.leader or ""
            return cluster_pb2.StatusResponse(
                node=self.nid, cluster="fake", leader=leader,
                leader_grpc_address=self.m.members[leader][1] if leader else "", term=3, commit_index=7,
                applied_index=7, members=[self._member(n) for n in sorted(self.m.members)],
                timers={"armed": 5, "fired": 0})

    def _leader_only(self, context, fault):
        with self.m.lock:
            if fault == "not_leader" or self.m.leader != self.nid:
                if fault == "not_leader":
                    ids = sorted(self.m.members)
                    self.m.leader = ids[(ids.index(self.nid) + 1) % len(ids)]
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              "this node is not the leader; send the request to the leader")

    def AddNode(self, request, context):
        fault = self._enter(context, "AddNode")
        self._leader_only(context, fault)
        with self.m.lock:
            if request.id in self.m.members:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"node id {request.id!r} is already a member")
            self.m.members[request.id] = (request.raft_address, request.grpc_address)
        if fault == "drop":
            context.abort(grpc.StatusCode.UNAVAILABLE, "command not committed: leader_changed")
        return cluster_pb2.AddNodeResponse(member=cluster_pb2.Member(
            id=request.id, raft_address=request.raft_address, grpc_address=request.grpc_address, role="follower"))

    def RemoveNode(self, request, context):
        fault = self._enter(context, "RemoveNode")
        self._leader_only(context, fault)
        with self.m.lock:
            if request.id not in self.m.members:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no member with id {request.id!r}")
            raft, g = self.m.members.pop(request.id)
            if self.m.leader == request.id:
                self.m.leader = sorted(self.m.members)[0]
        if fault == "drop":
            context.abort(grpc.StatusCode.UNAVAILABLE, "socket closed")
        return cluster_pb2.RemoveNodeResponse(member=cluster_pb2.Member(id=request.id, raft_address=raft,
                                                                        grpc_address=g))

    def TransferLeadership(self, request, context):
        fault = self._enter(context, "TransferLeadership")
        self._leader_only(context, fault)
        with self.m.lock:
            if request.to and request.to not in self.m.members:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no member with id {request.to!r}")
            if request.to == self.nid:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.nid} is this node; name another member")
            self.m.leader = request.to or next(n for n in sorted(self.m.members) if n != self.nid)
            new = self.m.leader
        if fault == "drop":
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "not answered in time")
        return cluster_pb2.TransferLeadershipResponse(leader=new)

    def _snap_pb(self, data: bytes) -> cluster_pb2.Snapshot:
        info = snapshots.describe(data)
        pb = cluster_pb2.Snapshot(last_index=info.last_index, last_term=info.last_term, size=info.size,
                                  timers=info.timers, sha256=info.sha256, node=self.nid)
        pb.created_at.FromMilliseconds(info.created_at_ms)
        return pb

    def TakeSnapshot(self, request, context):
        self._enter(context, "TakeSnapshot")
        data = container(last_index=100 + len(self.m.snaps.get(self.nid, [])))
        self.m.snaps.setdefault(self.nid, []).append(data)
        return self._snap_pb(data)

    def ListSnapshots(self, request, context):
        self._enter(context, "ListSnapshots")
        return cluster_pb2.ListSnapshotsResponse(snapshots=[self._snap_pb(d) for d in self.m.snaps.get(self.nid, [])])

    def ExportSnapshot(self, request, context):
        self._enter(context, "ExportSnapshot")
        kept = self.m.snaps.get(self.nid, [])
        if request.last_index:
            kept = [d for d in kept if snapshots.describe(d).last_index == request.last_index]
        if not kept:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{self.nid} has no snapshot yet; take one first")
        data = kept[-1]
        with self.m.lock:
            q = self.m.break_stream.get(self.nid)
            trouble = q.pop(0) if q else None
        if trouble == "corrupt":
            data = data[:500] + bytes([data[500] ^ 1]) + data[501:]
        for off in range(0, len(data), CHUNK):
            if trouble == "cut" and off >= 3 * CHUNK:
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
            if trouble == "short" and off + CHUNK >= len(data):
                return
            yield cluster_pb2.SnapshotChunk(snapshot=self._snap_pb(kept[-1]) if off == 0 else None, offset=off,
                                            data=data[off:off + CHUNK])


@pytest.fixture
def membership():
    """Three fake Cluster servers n1..n3 over one FakeMembership; n1 leads."""
    m = FakeMembership()
    servers = []
    for i in range(3):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        port = server.add_insecure_port("127.0.0.1:0")
        nid = f"n{i + 1}"
        m.members[nid] = (f"127.0.0.1:{7100 + i}", f"127.0.0.1:{port}")
        cluster_pb2_grpc.add_ClusterServicer_to_server(FakeCluster(m, nid), server)
        server.start()
        servers.append(server)
    m.leader = "n1"
    yield m
    for s in servers:
        s.stop(grace=None)


def client(m: FakeMembership, seed: str = "n3", **kw) -> minoots.Client:
    kw.setdefault("timeout", 5)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return minoots.Client([m.members[seed][1]], **kw)


def calls(m: FakeMembership, method: str) -> list[str]:
    return [n for n, meth in m.calls if meth == method]


# ---------------------------------------------------------------- membership


def test_add_goes_to_the_leader_from_a_follower_seed(membership):
    with client(membership) as c:
        m = c.add_node("n4", "127.0.0.1:7999", "127.0.0.1:8999")
    assert (m.id, m.raft_address, m.grpc_address) == ("n4", "127.0.0.1:7999", "127.0.0.1:8999")
    assert calls(membership, "AddNode") == ["n1"]
    assert membership.members["n4"] == ("127.0.0.1:7999", "127.0.0.1:8999")


def test_add_whose_answer_was_lost_is_not_repeated(membership):
    membership.faults[("n1", "AddNode")] = ["drop"]
    with client(membership) as c:
        m = c.add_node("n4", "127.0.0.1:7999")
    assert m.id == "n4" and m.raft_address == "127.0.0.1:7999"
    assert calls(membership, "AddNode") == ["n1"]      # the status showed it in place: no second add


def test_add_of_an_existing_member_is_refused(membership):
    with client(membership) as c, pytest.raises(minoots.AlreadyExists):
        c.add_node("n2", "127.0.0.1:7999")


def test_transient_refusals_are_retried(membership):
    membership.faults[("n1", "AddNode")] = ["refuse", "refuse"]
    with client(membership) as c:
        assert c.add_node("n4", "127.0.0.1:7999").id == "n4"
    assert calls(membership, "AddNode") == ["n1", "n1", "n1"]


def test_a_refusal_from_a_node_that_stopped_leading_is_retried_at_the_new_leader(membership):
    membership.faults[("n1", "RemoveNode")] = ["not_leader"]     # and n2 leads from then on
    with client(membership) as c:
        m = c.remove_node("n3")
    assert m.id == "n3" and "n3" not in membership.members
    assert calls(membership, "RemoveNode") == ["n1", "n2"]


def test_removing_the_leader_through_a_follower(membership):
    with client(membership, seed="n2") as c:
        m = c.remove_node("n1")
    assert m.id == "n1" and calls(membership, "RemoveNode") == ["n1"]
    assert membership.leader != "n1" and "n1" not in membership.members


def test_remove_whose_answer_was_lost_returns_the_member(membership):
    membership.faults[("n1", "RemoveNode")] = ["drop"]
    with client(membership) as c:
        m = c.remove_node("n2")
    assert (m.id, m.raft_address) == ("n2", fake_raft(2))
    assert calls(membership, "RemoveNode") == ["n1"]


def fake_raft(i: int) -> str:
    return f"127.0.0.1:{7100 + i - 1}"


def test_remove_of_a_stranger_is_not_found(membership):
    with client(membership) as c, pytest.raises(minoots.NotFound):
        c.remove_node("n9")


def test_transfer_to_the_leader_is_answered_without_a_call(membership):
    with client(membership) as c:
        assert c.transfer_leadership("n1") == "n1"
    assert calls(membership, "TransferLeadership") == []


def test_transfer_whose_answer_was_lost_is_not_repeated(membership):
    membership.faults[("n1", "TransferLeadership")] = ["drop"]
    with client(membership) as c:
        assert c.transfer_leadership() == "n2"
    assert calls(membership, "TransferLeadership") == ["n1"] and membership.leader == "n2"
    with client(membership) as c:
        assert c.transfer_leadership("n3") == "n3"
    assert calls(membership, "TransferLeadership") == ["n1", "n2"] and membership.leader == "n3"


def test_no_leader_gives_up_at_the_deadline(membership):
    membership.leader = None
    with client(membership, timeout=0.5) as c, pytest.raises(minoots.Unavailable) as err:
        c.remove_node("n2")
    assert "no leader" in str(err.value)
    assert calls(membership, "RemoveNode") == []


# ---------------------------------------------------------------- snapshots


def test_take_and_list_snapshots(membership):
    with client(membership) as c:
        s = c.take_snapshot()
        assert isinstance(s, minoots.SnapshotInfo)
        assert (s.node, s.last_index, s.timers, s.size) == ("n1", 100, 3, len(container(last_index=100)))
        assert s.created_at_ms == 1_700_000_000_000
        c.take_snapshot()
        listed = c.list_snapshots()
    assert [x.last_index for x in listed] == [100, 101]
    assert listed[0].to_dict()["sha256"] == s.sha256


def test_export_to_a_path_in_chunks(membership, tmp_path):
    membership.snaps["n1"] = [container(last_index=5), container(last_index=9, size=2345)]
    dest = tmp_path / "out.snap"
    with client(membership) as c:
        info = c.export_snapshot(dest)
        assert info.last_index == 9 and info.node == "n1"
        assert dest.read_bytes() == membership.snaps["n1"][-1]
        older = c.export_snapshot(str(tmp_path / "older.snap"), last_index=5)
    assert older.last_index == 5 and (tmp_path / "older.snap").read_bytes() == membership.snaps["n1"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["older.snap", "out.snap"]


def test_export_restarts_after_a_broken_stream(membership, tmp_path):
    # The retry may go to another member: any member's snapshot is a valid backup.
    for nid in membership.members:
        membership.snaps[nid] = [container(size=2000)]
    membership.break_stream["n1"] = ["cut"]
    dest = tmp_path / "out.snap"
    with client(membership) as c:
        c.export_snapshot(dest)
    assert dest.read_bytes() == membership.snaps["n1"][0]
    assert len(calls(membership, "ExportSnapshot")) == 2


def test_export_into_a_file_object_rewinds_on_retry(membership):
    for nid in membership.members:
        membership.snaps[nid] = [container(size=2000)]
    membership.break_stream["n1"] = ["cut"]
    buf = io.BytesIO(b"head:")
    buf.seek(5)
    with client(membership) as c:
        c.export_snapshot(buf)
    assert buf.getvalue() == b"head:" + membership.snaps["n1"][0]


@pytest.mark.parametrize("trouble", ["corrupt", "short"])
def test_a_corrupt_or_short_export_is_an_error_and_leaves_no_file(membership, tmp_path, trouble):
    membership.snaps["n1"] = [container(size=2000)]
    membership.break_stream["n1"] = [trouble]
    dest = tmp_path / "out.snap"
    with client(membership) as c, pytest.raises(minoots.MinootsError) as err:
        c.export_snapshot(dest)
    assert err.value.code == "DATA_LOSS"
    assert list(tmp_path.iterdir()) == []


def test_export_without_a_snapshot_is_not_found(membership, tmp_path):
    with client(membership) as c, pytest.raises(minoots.NotFound):
        c.export_snapshot(tmp_path / "x.snap")
    assert list(tmp_path.iterdir()) == []


def test_receiver_checks_order_and_header():
    data = container()
    rx = SnapshotReceiver()
    with pytest.raises(minoots.MinootsError):
        rx.accept(cluster_pb2.SnapshotChunk(offset=0, data=data[:10]))      # no header first
    rx = SnapshotReceiver()
    info = snapshots.describe(data)
    head = cluster_pb2.Snapshot(last_index=info.last_index, size=info.size, sha256=info.sha256)
    rx.accept(cluster_pb2.SnapshotChunk(snapshot=head, offset=0, data=data[:10]))
    with pytest.raises(minoots.MinootsError):
        rx.accept(cluster_pb2.SnapshotChunk(offset=20, data=data[20:30]))   # a gap


# ---------------------------------------------------------------- the CLI over the fake


def cli(args, membership):
    return CliRunner().invoke(main, [*args, "--node", membership.members["n3"][1], "--timeout", "5"])


def test_cli_status_json(membership):
    res = cli(["cluster", "status", "--json"], membership)
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert {"leader", "term", "commit_index", "applied_index", "members", "timers"} <= set(st)
    assert st["leader"] == "n1" and st["node"] == "n1" and st["timers"]["armed"] == 5
    by_id = {m["id"]: m for m in st["members"]}
    assert by_id["n2"] == {"id": "n2", "address": fake_raft(2), "grpc_address": membership.members["n2"][1],
                           "role": "follower", "connected": True, "match_index": 7, "lag": 0}
    assert "lag" not in by_id["n1"] and by_id["n1"]["role"] == "leader"


def test_cli_add_remove_transfer(membership):
    res = cli(["cluster", "add", "n4=127.0.0.1:7999", "--grpc", "127.0.0.1:8999"], membership)
    assert res.exit_code == 0 and "added n4 (raft 127.0.0.1:7999, grpc 127.0.0.1:8999)" in res.output, res.output
    res = cli(["cluster", "transfer-leadership", "--to", "n2", "--json"], membership)
    assert res.exit_code == 0 and json.loads(res.output) == {"leader": "n2"}, res.output
    res = cli(["cluster", "transfer-leadership"], membership)
    assert res.exit_code == 0 and res.output == "leader: n1\n", res.output
    res = cli(["cluster", "remove", "n4"], membership)
    assert res.exit_code == 0 and "removed n4 (raft 127.0.0.1:7999)" in res.output, res.output
    assert "n4" not in membership.members


def test_cli_errors_are_one_line(membership, tmp_path):
    res = cli(["cluster", "remove", "n9"], membership)
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        "error: NOT_FOUND: no member with id 'n9'"], res.output
    res = cli(["snapshot", "export", str(tmp_path / "x.snap")], membership)
    assert res.exit_code == 1 and res.output.startswith("error: NOT_FOUND: n1 has no snapshot yet"), res.output
    assert list(tmp_path.iterdir()) == []
    membership.snaps["n1"] = [container()]
    res = cli(["snapshot", "export", "/nonexistent-dir/x.snap"], membership)
    assert res.exit_code == 1 and res.output.startswith("error: cannot write /nonexistent-dir/x.snap"), res.output
    assert len(res.output.strip().splitlines()) == 1


def test_cli_snapshot_take_list_export(membership, tmp_path):
    res = cli(["snapshot", "take"], membership)
    assert res.exit_code == 0 and "snapshot at index 100 (term 2) on n1" in res.output, res.output
    res = cli(["snapshot", "list", "--json"], membership)
    assert res.exit_code == 0 and [s["last_index"] for s in json.loads(res.output)["snapshots"]] == [100]
    res = cli(["snapshot", "list"], membership)
    assert "snapshots kept by n1" in res.output and "index        100" in res.output
    dest = tmp_path / "b.snap"
    res = cli(["snapshot", "export", str(dest)], membership)
    assert res.exit_code == 0 and f"wrote {dest.stat().st_size} bytes to {dest}" in res.output, res.output
    assert snapshots.decode(dest.read_bytes())[0].last_index == 100


def test_async_client_cluster_operations(membership, tmp_path):
    import asyncio

    for nid in membership.members:
        membership.snaps[nid] = [container(size=1500)]
    membership.break_stream["n1"] = ["cut"]
    membership.faults[("n1", "AddNode")] = ["drop"]

    async def run():
        async with minoots.AsyncClient([membership.members["n3"][1]], timeout=5, backoff_base=0.01,
                                       backoff_max=0.05) as c:
            m = await c.add_node("n4", "127.0.0.1:7999")
            assert m.id == "n4"
            assert await c.transfer_leadership("n1") == "n1"
            assert await c.transfer_leadership("n2") == "n2"
            removed = await c.remove_node("n4")
            assert removed.id == "n4"
            info = await c.export_snapshot(tmp_path / "a.snap")
            assert info.size == len(membership.snaps["n1"][0])
            s = await c.take_snapshot()
            assert s.node == "n2"
            assert [x.last_index for x in await c.list_snapshots()][-1] == s.last_index
            with pytest.raises(minoots.NotFound):
                await c.remove_node("n9")

    asyncio.run(run())
    assert calls(membership, "AddNode") == ["n1"]
    assert (tmp_path / "a.snap").read_bytes() == membership.snaps["n1"][0]


def test_cli_default_nodes_come_from_the_local_cluster_file(membership, tmp_path, monkeypatch):
    monkeypatch.delenv("MINOOTS_NODES", raising=False)
    monkeypatch.setenv("MINOOTS_DATA", str(tmp_path))
    (tmp_path / "cluster.json").write_text(json.dumps({"nodes": [
        {"id": nid, "raft": raft, "grpc": g}
        for nid, (raft, g) in membership.members.items()]}))
    res = CliRunner().invoke(main, ["cluster", "status", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["leader"] == "n1", res.output
    monkeypatch.setenv("MINOOTS_NODES", membership.members["n2"][1])
    res = CliRunner().invoke(main, ["snapshot", "list", "--json"])
    assert res.exit_code == 0 and json.loads(res.output) == {"snapshots": []}, res.output
    assert calls(membership, "ListSnapshots") == ["n1"]
