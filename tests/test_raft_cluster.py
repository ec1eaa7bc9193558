"""Real node processes on loopback: replication, failover, recovery, snapshots, membership, CLI.

Every test starts its nodes through `LocalCluster` (free ports, a tmp dir) and
stops every process it started in a `finally`. Nothing here asserts on speed:
waits are bounded by generous timeouts only (the machine is small and shared).
Writes retry while an election is under way; they carry an idempotency key, so
a retried create whose first attempt did commit is not created twice.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from minoots.raft import snapshots
from minoots.raft.clock import now_ms
from minoots.raft.store import open_data_dir
from minoots.raft.testing import LocalCluster, LocalNode, free_ports
from minoots.v1 import cluster_pb2 as cpb
from minoots.v1 import timers_pb2 as pb

import support

pytestmark = pytest.mark.cluster     # every test here starts node processes

WAIT = 30.0          # seconds: upper bound for anything to happen on a loaded machine
FAR = 3_600_000      # ms: timers this far ahead never fire during a test
RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# ---------------------------------------------------------------- helpers

@contextmanager
def running(tmp_path: Path, size: int = 3, node_args: tuple = ()):
    cluster = LocalCluster(tmp_path / "cluster", size=size, node_args=node_args)
    try:
        cluster.start()
        cluster.leader(timeout=WAIT)
        yield cluster
    finally:
        cluster.stop()
        for node in cluster.nodes.values():
            assert not node.alive(), f"{node.node_id} still running"


def wire_spec(t: dict) -> pb.TimerSpec:
    """{"id", "in_ms" or "fire_at" (ms), "tenant"?}; the idempotency key is the id."""
    spec = pb.TimerSpec(id=t["id"], tenant=t.get("tenant", ""), idempotency_key=t["id"])
    if "in_ms" in t:
        spec.delay.FromMilliseconds(t["in_ms"])
    else:
        spec.fire_at.FromMilliseconds(t["fire_at"])
    return spec


def create(node: LocalNode, timers: list[dict], timeout: float = WAIT) -> pb.CreateTimersResponse:
    """Timers.CreateTimers through `node`, retrying while there is no leader (idempotent by key)."""
    req = pb.CreateTimersRequest(timers=[wire_spec(t) for t in timers])
    deadline = time.monotonic() + timeout
    while True:
        try:
            return node.timers().CreateTimers(req, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() not in RETRY_CODES or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def created(res: pb.CreateTimersResponse) -> list[bool]:
    return [r.created for r in res.results]


def get_timer(node: LocalNode, tid: str, tenant: str = "default") -> pb.Timer:
    """Timers.GetTimer on `node` itself (reads are local)."""
    return node.timers().GetTimer(pb.GetTimerRequest(tenant=tenant, id=tid), timeout=WAIT)


def state(t: pb.Timer) -> str:
    return pb.TimerState.Name(t.state).removeprefix("TIMER_STATE_").lower()


def snapshots_of(node: LocalNode) -> list:
    return node.cluster().ListSnapshots(cpb.ListSnapshotsRequest(), timeout=WAIT).snapshots


def converge(cluster: LocalCluster, nids=None, timeout: float = WAIT) -> str:
    """Wait until every node applied the leader's commit index with one digest; return it."""
    nids = list(nids or [n for n, node in cluster.nodes.items() if node.alive()])
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            leader = cluster.leader(timeout=max(1.0, deadline - time.monotonic()))
            commit = cluster.nodes[leader].status(timeout=5)["commit_index"]
            digests = {n: cluster.nodes[n].digest(timeout=5) for n in nids}
            seen = (leader, commit, digests)
            if all(d["applied_index"] == commit for d in digests.values()) \
                    and len({d["sha256"] for d in digests.values()}) == 1:
                return digests[nids[0]]["sha256"]
        except (grpc.RpcError, TimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"nodes {nids} did not converge within {timeout}s: {seen}")


# an RPC error (no leader yet, a node not answering) counts as "not yet"
wait_for = functools.partial(support.wait_for, timeout=WAIT, interval=0.1, retry_on=(grpc.RpcError,))


def followers(cluster: LocalCluster, leader: str) -> list[str]:
    return [n for n, node in cluster.nodes.items() if n != leader and node.alive()]


def member_ids(status: dict) -> set[str]:
    return {m["id"] for m in status["members"]}


def minoots(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minoots", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def bad_log_lines(cluster: LocalCluster) -> list[str]:
    out = []
    for node in cluster.nodes.values():
        if node.log_file.exists():
            for line in node.log_file.read_text(errors="replace").splitlines():
                if "truncating already-applied" in line or "diverged" in line:
                    out.append(f"{node.node_id}: {line}")
    return out


# ---------------------------------------------------------------- replication

def test_creates_replicate_to_every_node_with_one_digest(tmp_path):
    with running(tmp_path) as c:
        leader = c.leader()
        for i in range(5):
            res = create(c.nodes[leader], [{"id": f"l{i}.{j}", "in_ms": FAR} for j in range(4)])
            assert created(res) == [True] * 4
        # A follower's gRPC address works too: PySyncObj forwards the command to the leader.
        f = followers(c, leader)[0]
        res = create(c.nodes[f], [{"id": "via-follower", "in_ms": FAR, "tenant": "t2"}])
        assert created(res) == [True] and state(res.results[0].timer) == "armed"

        digest = converge(c)
        for nid, node in c.nodes.items():
            assert state(get_timer(node, "via-follower", "t2")) == "armed", nid
            assert state(get_timer(node, "l4.3")) == "armed", nid
            st = node.status(WAIT)
            assert st["timers"]["armed"] == 21, nid
            assert node.digest(WAIT)["sha256"] == digest


# ---------------------------------------------------------------- failover

def test_leader_sigkill_while_timers_are_due(tmp_path):
    with running(tmp_path) as c:
        leader = c.leader()
        lnode = c.nodes[leader]
        create(lnode, [{"id": f"keep{i}", "in_ms": FAR} for i in range(10)])
        due_at = now_ms() + 2000
        due = [f"due{i}" for i in range(30)]
        for k in range(0, 30, 10):
            create(lnode, [{"id": t, "fire_at": due_at + i} for i, t in enumerate(due[k:k + 10])])
        converge(c)
        # Kill the leader right before the timers come due (no timing assertion:
        # on a stalled machine the old leader may fire them first, which must
        # still be exactly once).
        time.sleep(max(0.0, (due_at - 300 - now_ms()) / 1000))
        c.kill(leader)
        survivors = followers(c, leader)

        new = c.leader(timeout=WAIT, exclude={leader})
        assert new != leader
        nnode = c.nodes[new]
        wait_for(lambda: nnode.status(WAIT)["timers"]["settled"] == 30, "the overdue timers to fire")
        # A follower applies what the leader committed once it learns the commit index (with the
        # next AppendEntries, raft CommitNoticeMixin): read the survivors after they caught up.
        converge(c)
        for nid in survivors:
            for t in due:
                timer = get_timer(c.nodes[nid], t)
                assert state(timer) == "settled", (nid, timer)
                assert timer.attempts == 1, (nid, timer)
                assert timer.fired_at.ToMilliseconds() >= timer.fire_at.ToMilliseconds(), (nid, timer)
            for i in range(10):
                assert state(get_timer(c.nodes[nid], f"keep{i}")) == "armed"
        converge(c)
        for nid in survivors:
            st = c.nodes[nid].status(WAIT)
            # Survivors lived through every fire: each applied each FIRED event once.
            assert st["fired_total"] == 30, (nid, st)
            assert st["timers"] == {"scheduled": 0, "armed": 10, "fired": 0, "settled": 30,
                                    "cancelled": 0, "dead_lettered": 0, "delivering": 0}

        # The killed node comes back and catches up to the same state.
        c.start_node(leader)
        digest = converge(c)
        assert c.nodes[leader].digest(WAIT)["sha256"] == digest
        assert get_timer(c.nodes[leader], "due7").attempts == 1


# ---------------------------------------------------------------- recovery

def test_restart_all_recovers_identical_state_and_kill9_keeps_acked_creates(tmp_path):
    with running(tmp_path) as c:
        leader = c.leader()
        create(c.nodes[leader], [{"id": f"far{i}", "in_ms": FAR} for i in range(20)])
        create(c.nodes[leader], [{"id": f"soon{i}", "in_ms": 200} for i in range(5)])
        wait_for(lambda: c.nodes[leader].status(WAIT)["timers"]["settled"] == 5, "soon timers")
        before = converge(c)

        # SIGTERM every node, start them again: LMDB (log + snapshot) gives back the same kernel.
        c.stop()
        assert all(not n.alive() for n in c.nodes.values())
        c.start()
        c.leader(timeout=WAIT)
        assert converge(c) == before

        # kill -9 everything right after an acknowledged create: the create survives.
        leader = c.leader()
        res = create(c.nodes[leader], [{"id": "acked", "in_ms": FAR}])
        assert created(res) == [True]
        for nid in c.nodes:
            c.kill(nid)
        c.start()
        leader = c.leader(timeout=WAIT)
        after = converge(c)
        assert after != before
        for node in c.nodes.values():
            assert state(get_timer(node, "acked")) == "armed"
            assert state(get_timer(node, "far19")) == "armed"
            assert get_timer(node, "soon4").attempts == 1


# ---------------------------------------------------------------- snapshots

def test_snapshot_compaction_and_wiped_node_catches_up_by_snapshot(tmp_path):
    with running(tmp_path, node_args=("--compaction-entries", "100")) as c:
        leader = c.leader()
        lnode = c.nodes[leader]
        # One log entry each, 2 timers each: 1200 timers. One writer, one request at a time: the
        # API's group commit would merge concurrent requests into one entry.
        requests = 600
        writers_n = 1
        max_log_len = {n: 0 for n in c.nodes}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                for nid in c.nodes:
                    s = c.status(nid)
                    if s:
                        max_log_len[nid] = max(max_log_len[nid], s["log_len"])
                stop.wait(0.2)

        errors = []

        def writer(k):
            try:
                for r in range(k, requests, writers_n):
                    create(lnode, [{"id": f"s{r}.{j}", "in_ms": FAR} for j in range(2)])
            except Exception as exc:  # reported below
                errors.append(exc)

        sampler = threading.Thread(target=sample)
        sampler.start()
        writers = [threading.Thread(target=writer, args=(k,)) for k in range(writers_n)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        stop.set()
        sampler.join()
        assert not errors, errors

        took = minoots("snapshot", "take", "--node", lnode.grpc, "--json")
        assert took.returncode == 0, took.stderr
        snap = json.loads(took.stdout)["snapshot"]
        assert snap["timers"] == 1200
        digest = converge(c)
        listed = snapshots_of(lnode)
        assert snap["last_index"] in [s.last_index for s in listed]
        for nid in c.nodes:
            st = c.nodes[nid].status(WAIT)
            assert st["commit_index"] > requests
            assert max_log_len[nid] < requests // 2, (nid, max_log_len)
            assert st["log_len"] < requests // 2, (nid, st["log_len"])
        assert lnode.status(WAIT)["log_len"] <= 10  # just compacted

        # Wipe a follower: stop it, delete its data dir, start it with --init under the same id.
        victim = followers(c, leader)[0]
        vnode = c.nodes[victim]
        assert c.terminate(victim) == 0
        shutil.rmtree(vnode.data_dir)
        assert "--init" in c.command(vnode)
        c.start_node(victim)
        assert converge(c) == digest
        assert vnode.digest(WAIT)["sha256"] == digest
        # It got there by snapshot transfer: it holds the leader's compacted log's
        # snapshot and never saw the early entries.
        assert snapshots_of(vnode), "no snapshot on the wiped node"
        assert "snapshot loaded" in vnode.log_file.read_text()
        assert state(get_timer(vnode, "s0.0")) == "armed"


def test_lagging_follower_catches_up_by_snapshot_install_under_a_live_watch(tmp_path):
    """A follower that is not wiped but frozen (SIGSTOP) while the leader compacts past its
    log catches up by snapshot install after SIGCONT: same applied index and kernel digest
    as the others. A watch streaming from that follower across the install sees every
    sequence once, in order: the follower ends the live stream with DATA_LOSS (the install
    skipped its next events) and the SDK resumes on another member from its cursor. After
    the install the follower serves its events from the snapshot's seq on, the same as
    the leader's; older ones are OUT_OF_RANGE there."""
    import signal

    import minoots     # the SDK (here, the module-level `minoots` is the CLI helper)

    with running(tmp_path, node_args=("--compaction-entries", "100")) as c:
        leader = c.leader()
        lnode = c.nodes[leader]
        lag = followers(c, leader)[0]
        fnode = c.nodes[lag]
        ids = [f"w{i}" for i in range(20)]
        for i in ids:                            # one log entry each
            create(lnode, [{"id": i, "in_ms": FAR}])
        converge(c)
        events, errors, stop = [], [], threading.Event()
        # The watch starts on the lagging follower: seeded with it first, and the router told it
        # has just discovered the cluster with no leader known (else it would pick the leader).
        # No liveness check, so it stays there while the follower is frozen: it must be the
        # install that moves it.
        seeds = [fnode.grpc] + [c.nodes[n].grpc for n in c.nodes if n != lag]
        with minoots.Client(seeds, timeout=WAIT, refresh_interval=600) as client:
            client.router.discovered_at, client.router.incomplete = time.monotonic(), False
            w = client.watch(from_sequence=1, stall_timeout=None, reconnect_timeout=WAIT)
            th = threading.Thread(target=support.collect_watch, args=(w, events, stop, errors), daemon=True)
            th.start()
            support.wait_for(lambda: {e.timer_id for e in events} >= set(ids) or errors, "the first events")
            assert w.node == fnode.grpc and w.reconnects == 0 and not errors
            behind = fnode.status(WAIT)["applied_index"]
            installs = fnode.log_file.read_text().count("snapshot loaded")

            os.kill(fnode.pid, signal.SIGSTOP)
            try:
                # Until the leader drops its connection to the frozen follower (PySyncObj's
                # connection timeout), its appends still land in the follower's socket buffer
                # and would be read on SIGCONT: write only once it is disconnected.
                support.wait_for(lambda: not next(m for m in lnode.status(WAIT)["members"]
                                                  if m["id"] == lag).get("connected", False),
                                 f"the leader to see {lag} disconnected", timeout=WAIT)
                more = [f"x{i}" for i in range(250)]
                for i in more:                   # 250 entries: the leader compacts (every 100) past `behind`
                    create(lnode, [{"id": i, "in_ms": FAR}])
                leader = c.leader(exclude={lag})
                lnode = c.nodes[leader]
                past = max(s.last_index for s in snapshots_of(lnode))
                assert past > behind, (past, behind)
                assert lnode.status(WAIT)["log_len"] < 200
            finally:
                os.kill(fnode.pid, signal.SIGCONT)

            digest = converge(c)
            assert fnode.digest(WAIT)["sha256"] == digest
            assert fnode.status(WAIT)["applied_index"] >= past
            text = fnode.log_file.read_text()
            assert text.count("snapshot loaded") > installs, "the follower did not install a snapshot"
            assert "snapshot installed past this node's events" in text

            create(lnode, [{"id": "last", "in_ms": FAR}])
            support.wait_for(lambda: any(e.timer_id == "last" for e in events) or errors, "the last event")
            stop.set()
            w.close()
            th.join(timeout=WAIT)
        assert not errors, errors
        seqs = [e.sequence for e in events]
        assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate"
        created_ids = [e.timer_id for e in events if e.kind == minoots.EventKind.CREATED]
        assert sorted(created_ids) == sorted(ids + more + ["last"])
        # The watch left the follower because of the install (DATA_LOSS), for another member.
        assert w.reconnects >= 1 and w.node != fnode.grpc
        assert w._policy.last_error is not None and w._policy.last_error.code() == grpc.StatusCode.DATA_LOSS

        # On the follower after the install: older events are OUT_OF_RANGE, its history from
        # the floor on is the leader's.
        with pytest.raises(grpc.RpcError) as err:
            next(iter(fnode.timers().WatchEvents(pb.WatchEventsRequest(from_sequence=1), timeout=WAIT)))
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        floor = int(err.value.details().split("starts at ")[1].split()[0])
        assert 1 < floor <= seqs[-1]

        def history(node, start):
            out = []
            call = node.timers().WatchEvents(pb.WatchEventsRequest(from_sequence=start), timeout=WAIT)
            for e in call:
                out.append((e.sequence, e.kind, e.timer_id))
                if e.sequence >= seqs[-1]:
                    call.cancel()
                    break
            return out

        theirs = history(fnode, floor)
        assert theirs == history(lnode, floor)
        assert [s for s, _, _ in theirs] == list(range(floor, seqs[-1] + 1))


# ---------------------------------------------------------------- membership

def test_add_a_fourth_node_then_remove_a_follower_and_the_leader(tmp_path):
    with running(tmp_path) as c:
        leader = c.leader()
        create(c.nodes[leader], [{"id": f"m{i}", "in_ms": FAR} for i in range(5)])
        converge(c)

        n4 = c.new_node("n4")
        c.start_node("n4", members=list(c.nodes.values()))
        wait_for(lambda: c.status("n4"), "n4's gRPC API")
        res = c.nodes[c.leader()].cluster().AddNode(cpb.AddNodeRequest(id="n4", raft_address=n4.raft), timeout=WAIT)
        assert (res.member.id, res.member.raft_address, res.member.role) == ("n4", n4.raft, "follower")
        wait_for(lambda: member_ids(c.status(c.leader()) or {"members": []}) == {"n1", "n2", "n3", "n4"},
                 "the leader to list n4")
        digest = converge(c, ["n1", "n2", "n3", "n4"])
        assert n4.digest(WAIT)["sha256"] == digest
        assert state(get_timer(n4, "m4")) == "armed"
        st = c.status(c.leader())
        assert {m["id"]: m["raft_address"] for m in st["members"]}["n4"] == n4.raft

        # Remove a follower.
        leader = c.leader()
        gone = next(n for n in followers(c, leader) if n != "n4")
        res = c.nodes[leader].cluster().RemoveNode(cpb.RemoveNodeRequest(id=gone), timeout=WAIT)
        assert res.member.id == gone
        wait_for(lambda: gone not in member_ids(c.status(c.leader())), f"{gone} to leave the status")
        assert c.terminate(gone) == 0

        # A node removes the leader only when it is the leader itself (the SDK routes there)...
        leader = c.leader()
        other = next(n for n in followers(c, leader) if n != gone)
        with pytest.raises(grpc.RpcError) as err:
            c.nodes[other].cluster().RemoveNode(cpb.RemoveNodeRequest(id=leader), timeout=WAIT)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # ... where it steps down first, then is removed.
        res = c.nodes[leader].cluster().RemoveNode(cpb.RemoveNodeRequest(id=leader), timeout=WAIT)
        assert res.member.id == leader
        rest = sorted(set(c.nodes) - {gone, leader})
        new = c.leader(timeout=WAIT, exclude={leader, gone})
        assert new in rest
        wait_for(lambda: member_ids(c.status(new)) == set(rest), "the new leader's member list")
        assert c.terminate(leader) == 0

        # The two remaining members still commit and agree.
        create(c.nodes[new], [{"id": "after-removals", "in_ms": FAR}])
        converge(c, rest)
        for nid in rest:
            assert state(get_timer(c.nodes[nid], "after-removals")) == "armed"
            assert member_ids(c.status(nid)) == set(rest)


# ---------------------------------------------------------------- start-up errors

def _node_run(data_dir: Path, node_id: str = "n1", raft: str | None = None, *extra: str):
    if raft is None:
        raft = f"127.0.0.1:{free_ports(1)[0]}"
    return minoots("node", "run", "--id", node_id, "--raft", raft, "--data-dir", str(data_dir), *extra)


def _assert_clean_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]


def _init_dir(path: Path, node_id: str = "n1", cluster: str = "minoots") -> Path:
    env = open_data_dir(path, cluster=cluster, node_id=node_id, init=True)
    env.close()
    return path


def test_node_run_refuses_bad_data_dirs_ports_and_peers(tmp_path):
    _assert_clean_error(_node_run(tmp_path / "missing"), "does not exist; pass --init")

    d = _init_dir(tmp_path / "n1")
    _assert_clean_error(_node_run(d, "n1", None, "--init"), "already holds a MINOOTS node")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x").write_text("x")
    _assert_clean_error(_node_run(junk, "n1", None, "--init"), "not empty")
    _assert_clean_error(_node_run(d, "n2"), "belongs to node 'n1', not 'n2'")
    _assert_clean_error(_node_run(d, "n1", None, "--cluster", "other"),
                        "belongs to cluster 'minoots', not 'other'")

    corrupt = _init_dir(tmp_path / "corrupt")
    (corrupt / "snapshot.bin").write_bytes(b"MNTSNAP1 this is not a snapshot at all, just bytes....")
    _assert_clean_error(_node_run(corrupt), "is unreadable")

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        _assert_clean_error(_node_run(d, "n1", f"127.0.0.1:{port}"), "not available")

    _assert_clean_error(_node_run(d, "n1", None, "--peer", "n2"), "expects ID=HOST:PORT")
    p1, p2 = free_ports(2)
    _assert_clean_error(_node_run(d, "n1", None, "--peer", f"n2=127.0.0.1:{p1}", "--peer", f"n2=127.0.0.1:{p2}"),
                        "given twice")
    _assert_clean_error(_node_run(d, "n1", None, "--peer", f"n3=127.0.0.1:{p1}", "--peer", f"n2=127.0.0.1:{p1}"),
                        "two peers share one Raft address")
    _assert_clean_error(_node_run(d, "n1", None, "--peer", f"n1=127.0.0.1:{p1}"), "names this node itself")
    _assert_clean_error(_node_run(d, "n1", f"127.0.0.1:{p1}", "--peer", f"n2=127.0.0.1:{p1}"),
                        "this node's own Raft address")
    _assert_clean_error(_node_run(d, "n1", None, "--peer", "n2=localhost"), "HOST:PORT")
    # None of these touched the good data dir: it still starts (checked by identity only).
    assert not (d / "node.pid").exists()


# ---------------------------------------------------------------- CLI

def cli_status(node: LocalNode, *more: str) -> dict:
    out = minoots("cluster", "status", "--node", node.grpc, "--json", *more)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_grpc_announced(cluster: LocalCluster, via: LocalNode, nids=None) -> dict:
    """`cluster status --json` once a leader is known and every member's gRPC address is there
    (members announce it through Raft shortly after they start)."""
    want = {n: cluster.nodes[n].grpc for n in (nids or cluster.nodes)}
    return wait_for(lambda: (st := cli_status(via))["leader"]
                    and {m["id"]: m["grpc_address"] for m in st["members"]} == want and st,
                    "every member's gRPC address in the status")


def assert_cli_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


def test_cli_status_snapshot_export_and_restore(tmp_path):
    with running(tmp_path) as c:
        leader = c.leader()
        lnode = c.nodes[leader]
        create(lnode, [{"id": f"kept{i}", "in_ms": FAR} for i in range(30)])
        converge(c)
        # Any member's gRPC address will do: ask a follower.
        fnode = c.nodes[followers(c, leader)[0]]

        st = wait_grpc_announced(c, fnode)
        assert {"leader", "term", "commit_index", "applied_index", "members", "timers"} <= set(st)
        assert st["leader"] == leader and st["leader_grpc_address"] == lnode.grpc
        assert st["timers"]["armed"] == 30
        assert len(st["members"]) == 3
        for m in st["members"]:
            assert {"id", "address", "grpc_address", "role"} <= set(m)
            assert m["address"] == c.nodes[m["id"]].raft and m["grpc_address"] == c.nodes[m["id"]].grpc
            if m["id"] != leader and st["node"] == leader:
                assert {"lag", "match_index"} <= set(m)
        assert {m["id"]: m["role"] for m in st["members"]}[leader] == "leader"
        human = minoots("cluster", "status", "--node", fnode.grpc)
        assert human.returncode == 0 and f"leader {leader}" in human.stdout
        assert fnode.grpc in human.stdout and "armed 30" in human.stdout
        # Several seeds (a dead one among them, comma-separated or repeated) and $MINOOTS_NODES work too.
        dead = f"127.0.0.1:{free_ports(1)[0]}"
        out = minoots("cluster", "status", "--node", f"{dead},{fnode.grpc}", "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["leader"] == leader, out.stderr
        env_run = subprocess.run([sys.executable, "-m", "minoots", "cluster", "status", "--json"],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "MINOOTS_NODES": f"{dead}, {fnode.grpc}"})
        assert env_run.returncode == 0 and json.loads(env_run.stdout)["leader"] == leader, env_run.stderr

        took = minoots("snapshot", "take", "--node", fnode.grpc)
        assert took.returncode == 0 and "snapshot at index" in took.stdout, took.stderr
        assert f"on {leader}" in took.stdout        # the SDK sends it to the leader
        # Again, with (barring an election's no-op) nothing applied since: PySyncObj
        # writes no new snapshot, and the node answers with the last one at once.
        again = minoots("snapshot", "take", "--node", fnode.grpc)
        assert again.returncode == 0 and "snapshot at index" in again.stdout, again.stderr
        listed = minoots("snapshot", "list", "--node", fnode.grpc, "--json")
        assert listed.returncode == 0, listed.stderr
        snaps = json.loads(listed.stdout)["snapshots"]
        assert snaps and snaps[-1]["timers"] == 30 and snaps[-1]["node"] == leader
        file = tmp_path / "backup.snap"
        exported = minoots("snapshot", "export", str(file), "--node", fnode.grpc)
        assert exported.returncode == 0, exported.stderr
        assert f"wrote {file.stat().st_size} bytes to {file}" in exported.stdout
        assert not file.with_name(file.name + ".part").exists()
        meta, kernel = snapshots.decode(file.read_bytes())
        assert meta.timers == 30 and snaps[-1]["sha256"] == file.read_bytes()[-32:].hex()
        snap_digest = hashlib.sha256(kernel).hexdigest()
        # One snapshot by its index; an index the node does not keep is NOT_FOUND, in one line.
        pick = tmp_path / "picked.snap"
        picked = minoots("snapshot", "export", str(pick), "--last-index", str(snaps[0]["last_index"]),
                         "--node", fnode.grpc, "--json")
        assert picked.returncode == 0, picked.stderr
        assert json.loads(picked.stdout)["snapshot"]["last_index"] == snaps[0]["last_index"]
        assert snapshots.decode(pick.read_bytes())[0].last_index == snaps[0]["last_index"]
        missing = minoots("snapshot", "export", str(tmp_path / "none.snap"), "--last-index", "999999",
                          "--node", fnode.grpc)
        assert_cli_error(missing, "NOT_FOUND", "999999")
        assert not (tmp_path / "none.snap").exists() and not (tmp_path / "none.snap.part").exists()

        # A running node is refused.
        refused = minoots("snapshot", "restore", str(file), "--data-dir", str(lnode.data_dir))
        assert refused.returncode != 0
        assert refused.stderr.startswith("error: ") and "running" in refused.stderr
        assert "Traceback" not in refused.stderr

        # Later writes are undone by the restore.
        create(lnode, [{"id": "after-backup", "in_ms": FAR}])
        assert converge(c) != snap_digest

        c.stop()
        for node in c.nodes.values():
            done = minoots("snapshot", "restore", str(file), "--data-dir", str(node.data_dir))
            assert done.returncode == 0, done.stderr
            assert f"to index {meta.last_index}" in done.stdout
        c.start()
        leader = c.leader(timeout=WAIT)
        assert converge(c) == snap_digest
        for node in c.nodes.values():
            assert state(get_timer(node, "kept29")) == "armed"
            with pytest.raises(grpc.RpcError) as err:
                get_timer(node, "after-backup")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # And the restored cluster takes writes, and answers the CLI over gRPC again.
        create(c.nodes[leader], [{"id": "after-restore", "in_ms": FAR}])
        converge(c)
        st = wait_grpc_announced(c, c.nodes[followers(c, leader)[0]])
        assert st["leader"] == leader and st["timers"]["armed"] == 31


def test_cli_membership_and_leadership_over_grpc(tmp_path):
    """`cluster add/remove/transfer-leadership` through any member's gRPC address: the SDK
    takes each change to the leader, also when the leader itself is removed."""
    with running(tmp_path) as c:
        leader = c.leader()
        create(c.nodes[leader], [{"id": f"g{i}", "in_ms": FAR} for i in range(5)])
        seed = c.nodes[followers(c, leader)[0]]
        wait_grpc_announced(c, seed)

        # Errors are one line, exit 1.
        assert_cli_error(minoots("cluster", "remove", "nosuch", "--node", seed.grpc), "NOT_FOUND", "nosuch")
        assert_cli_error(minoots("cluster", "transfer-leadership", "--to", "nosuch", "--node", seed.grpc),
                         "NOT_FOUND", "nosuch")
        bad = minoots("cluster", "add", "n4", "--node", seed.grpc)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "ID=HOST:PORT" in bad.stderr

        # Add a fourth node (started first, with every member as a peer).
        n4 = c.new_node("n4")
        c.start_node("n4", members=list(c.nodes.values()))
        wait_for(lambda: c.status("n4"), "n4's gRPC API")
        added = minoots("cluster", "add", f"n4={n4.raft}", "--grpc", n4.grpc, "--node", seed.grpc, "--json")
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout) == {"added": {"id": "n4", "address": n4.raft, "grpc_address": n4.grpc}}
        again = minoots("cluster", "add", f"n4={n4.raft}", "--node", seed.grpc)
        assert_cli_error(again, "ALREADY_EXISTS")
        st = wait_grpc_announced(c, seed)
        assert {m["id"] for m in st["members"]} == {"n1", "n2", "n3", "n4"}
        converge(c, ["n1", "n2", "n3", "n4"])

        # Hand leadership to n4 by name, then to whoever is most caught up.
        moved = minoots("cluster", "transfer-leadership", "--to", "n4", "--node", seed.grpc, "--json")
        assert moved.returncode == 0, moved.stderr
        assert json.loads(moved.stdout) == {"leader": "n4"}
        assert c.leader(timeout=WAIT) == "n4"
        same = minoots("cluster", "transfer-leadership", "--to", "n4", "--node", seed.grpc)
        assert same.returncode == 0 and "leader: n4" in same.stdout, same.stderr
        away = minoots("cluster", "transfer-leadership", "--node", n4.grpc)
        assert away.returncode == 0, away.stderr
        new = away.stdout.split("leader:")[1].strip()
        assert new in {"n1", "n2", "n3"} and c.leader(timeout=WAIT, exclude={"n4"}) == new

        # Remove a follower, through the leader's address.
        gone = next(n for n in ("n1", "n2", "n3") if n != new and c.nodes[n] is not seed)
        removed = minoots("cluster", "remove", gone, "--node", c.nodes[new].grpc)
        assert removed.returncode == 0 and f"removed {gone}" in removed.stdout, removed.stderr
        wait_for(lambda: gone not in {m["id"] for m in cli_status(seed)["members"]}, f"{gone} to leave")
        assert c.terminate(gone) == 0

        # Remove the leader, through a follower's address: it steps down first.
        leader = c.leader(timeout=WAIT)
        via = next(node for n, node in c.nodes.items() if n not in (leader, gone))
        removed = minoots("cluster", "remove", leader, "--node", via.grpc, "--json")
        assert removed.returncode == 0, removed.stderr
        assert json.loads(removed.stdout)["removed"]["id"] == leader
        rest = sorted(set(c.nodes) - {gone, leader})
        new = c.leader(timeout=WAIT, exclude={leader, gone})
        assert new in rest
        wait_for(lambda: {m["id"] for m in cli_status(via)["members"]} == set(rest), "the two remaining members")
        assert c.terminate(leader) == 0

        # The two remaining members still commit and agree.
        create(c.nodes[new], [{"id": "after-cli-removals", "in_ms": FAR}])
        converge(c, rest)
        st = cli_status(via)
        assert st["leader"] == new and st["timers"]["armed"] == 6


# ---------------------------------------------------------------- burst

def test_burst_from_many_threads_no_truncation_and_identical_digests(tmp_path):
    with running(tmp_path) as c:
        leader = c.leader()
        lnode = c.nodes[leader]
        threads, per_thread = 8, 400   # 3200 single-timer creates
        errors = []

        def writer(k):
            try:
                for i in range(per_thread):
                    # Every 10th is due soon, so ticks interleave with the creates.
                    in_ms = 50 + (i % 7) * 10 if i % 10 == 0 else FAR
                    create(lnode, [{"id": f"b{k}.{i}", "in_ms": in_ms}])
            except Exception as exc:
                errors.append(exc)

        ws = [threading.Thread(target=writer, args=(k,)) for k in range(threads)]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
        assert not errors, errors[:3]
        total = threads * per_thread
        soon = threads * (per_thread // 10)
        wait_for(lambda: c.nodes[c.leader()].status(WAIT)["timers"]["settled"] == soon,
                 "the short timers to fire")
        digest = converge(c)
        for nid, node in c.nodes.items():
            st = node.status(WAIT)
            assert sum(st["timers"].values()) == total, (nid, st["timers"])
            assert st["timers"]["settled"] == soon
            assert node.digest(WAIT)["sha256"] == digest
        assert bad_log_lines(c) == []


# ---------------------------------------------------------------- crash safety of snapshots

def _single(tmp_path: Path, name: str) -> LocalCluster:
    return LocalCluster(tmp_path / name, size=1, node_args=("--compaction-entries", "100000"))


def _up(c: LocalCluster) -> dict:
    c.start()
    c.leader(timeout=WAIT)
    return wait_for(lambda: (lambda s: s if s and s["applied_index"] == s["commit_index"] else None)(c.status("n1")),
                    "n1 to apply its log")


def test_crash_during_a_snapshot_write_leaves_a_startable_node(tmp_path):
    """A crash while a snapshot is written leaves an empty snapshot.bin (PySyncObj moves the
    writer's file into place first) and a partial snapshot.bin.new: the node starts from
    the snapshot kept in LMDB plus its log, and loses nothing."""
    c = _single(tmp_path, "one")
    n = c.nodes["n1"]
    try:
        _up(c)
        create(n, [{"id": f"a{i}", "in_ms": FAR} for i in range(5)])
        n.cluster().TakeSnapshot(cpb.TakeSnapshotRequest(), timeout=WAIT)
        create(n, [{"id": f"b{i}", "in_ms": FAR} for i in range(5)])
        before = n.digest(WAIT)["sha256"]
        c.kill("n1")
        (n.data_dir / "snapshot.bin").write_bytes(b"")            # the placeholder, moved into place
        (n.data_dir / "snapshot.bin.new").write_bytes(b"MNTSNAP1\x00")  # the write, cut short
        _up(c)
        assert n.digest(WAIT)["sha256"] == before
        assert state(get_timer(n, "b4")) == "armed"
        assert not (n.data_dir / "snapshot.bin.new").exists()
        assert "a snapshot write was interrupted" in n.log_file.read_text()
    finally:
        c.stop()


def test_crash_between_snapshot_and_log_compaction_keeps_later_entries(tmp_path):
    """PySyncObj clears the whole log at start unless it begins with the snapshot's last two
    entries; a crash after a snapshot became durable but before the log was compacted must
    not lose the acknowledged entries after the snapshot."""
    c = _single(tmp_path, "one")
    n = c.nodes["n1"]
    try:
        _up(c)
        create(n, [{"id": f"a{i}", "in_ms": FAR} for i in range(5)])
        c.stop()
        shutil.copytree(n.data_dir, tmp_path / "at-a")
        _up(c)   # a restart appends a no-op of the next term: the same entry on both copies
        create(n, [{"id": f"b{i}", "in_ms": FAR} for i in range(5)])
        full = n.digest(WAIT)["sha256"]
        c.stop()
        shutil.move(n.data_dir, tmp_path / "full-log")
        # The same history up to the no-op, snapshotted there (and compacted, on this copy).
        shutil.copytree(tmp_path / "at-a", n.data_dir)
        _up(c)
        snap = n.cluster().TakeSnapshot(cpb.TakeSnapshotRequest(), timeout=WAIT)
        c.stop()
        data = (n.data_dir / "snapshot.bin").read_bytes()
        assert snapshots.decode(data)[0].last_index == snap.last_index
        # The crash state: the full log (uncompacted) with that snapshot file in place.
        shutil.rmtree(n.data_dir)
        shutil.move(tmp_path / "full-log", n.data_dir)
        (n.data_dir / "snapshot.bin").write_bytes(data)
        st = _up(c)
        assert state(get_timer(n, "b4")) == "armed"
        assert st["timers"]["armed"] == 10
        assert n.digest(WAIT)["sha256"] == full
        assert "finished an interrupted log compaction" in n.log_file.read_text()
    finally:
        c.stop()
