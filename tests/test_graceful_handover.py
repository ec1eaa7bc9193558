"""A leader that gets SIGTERM hands leadership to a caught-up follower before it stops
(raft/node.py Node.hand_over, raft/pysyncobj_compat.py HandOverMixin), bounded in time.

Real node processes: clients keep creating timers while the leader is stopped; the new
leader must be the follower the old one chose, every acknowledged create must be there,
and the old leader must exit 0. When no follower can take over, the leader gives up,
says so in its log and still exits 0 (LocalCluster.terminate SIGKILLs after 10 s, which
would show as exit code -9)."""
from __future__ import annotations

import json
import os
import signal
import threading

import pytest

import minoots
from support import cluster_grpc, wait_for

pytestmark = pytest.mark.cluster

CLIENTS = 4


def log_records(node, event: str) -> list[dict]:
    out = []
    for line in node.log_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


class Creators:
    """CLIENTS threads creating timers (explicit ids, so SDK retries are idempotent) through
    every node; `acked` holds the ids whose create was acknowledged."""

    def __init__(self, cluster) -> None:
        self.addresses = cluster_grpc(cluster)
        self.acked: list[str] = []
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(CLIENTS)]

    def _run(self, k: int) -> None:
        addrs = self.addresses[k % len(self.addresses):] + self.addresses[:k % len(self.addresses)]
        with minoots.Client(addrs, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                tid = f"c{k}-{n}"
                try:
                    client.create(delay=3600, id=tid)
                    self.acked.append(tid)
                except minoots.MinootsError as exc:      # not acknowledged: no promise made
                    self.failed.append(f"{tid}: {exc}")

    def __enter__(self) -> "Creators":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_sigterm_leader_hands_over_to_the_chosen_follower_and_loses_nothing(fresh_cluster):
    c = fresh_cluster
    old = c.leader(timeout=30)
    with Creators(c) as load:
        wait_for(lambda: len(load.acked) >= 100, "100 acknowledged creates before the SIGTERM")
        assert c.terminate(old) == 0
        new = c.leader(timeout=30, exclude={old})
        after = len(load.acked)
        wait_for(lambda: len(load.acked) >= after + 100, "100 more acknowledged creates after it")
    chosen = log_records(c.nodes[old], "handing leadership over before stopping")
    done = log_records(c.nodes[old], "leadership handed over before stopping")
    assert chosen and done, c.nodes[old].log_file.read_text()[-3000:]
    assert done[-1]["to"] == new == done[-1]["chosen"] == chosen[-1]["to"]
    assert not log_records(c.nodes[old], "leadership not handed over before stopping; stopping anyway "
                                         "(the other members elect a leader after their election timeout)")
    with minoots.Client([c.nodes[new].grpc], timeout=30) as client:
        missing = []
        for tid in load.acked:
            try:
                if client.get(tid).state.name.lower() != "armed":
                    missing.append(tid)
            except minoots.NotFound:
                missing.append(tid)
    assert missing == [], f"{len(missing)} acknowledged creates lost, e.g. {missing[:5]}"


def test_a_leader_that_cannot_hand_over_stops_anyway_and_says_so(fresh_cluster):
    c = fresh_cluster
    leader = c.leader(timeout=30)
    followers = [nid for nid in c.nodes if nid != leader]
    stopped = []
    try:
        for nid in followers:
            os.kill(c.nodes[nid].pid, signal.SIGSTOP)
            stopped.append(nid)
        assert c.terminate(leader) == 0
    finally:
        for nid in stopped:
            os.kill(c.nodes[nid].pid, signal.SIGCONT)
    gave_up = log_records(c.nodes[leader], "leadership not handed over before stopping; stopping anyway "
                                           "(the other members elect a leader after their election timeout)")
    assert gave_up, c.nodes[leader].log_file.read_text()[-3000:]
    assert not log_records(c.nodes[leader], "leadership handed over before stopping")
    # The two others elect a leader among themselves and go on.
    assert c.leader(timeout=30, exclude={leader}) in followers


def test_requested_transfers_under_a_write_load_each_reach_the_named_member(fresh_cluster):
    """TransferLeadership while clients write: PySyncObj sends TimeoutNow only to a follower
    whose matchIndex is the leader's last index, which a leader appending every few ms
    rarely leaves true at the instant it checks (the clock-skew drill once saw every transfer
    away from one leader refused for 20 s). The leader holds new proposals while it hands
    over (Node._hand_leadership): six transfers in a row each reach the member named, the
    writes go on after them, and no acknowledged create is lost."""
    c = fresh_cluster
    with Creators(c) as load, minoots.Client(cluster_grpc(c), timeout=30) as admin:
        wait_for(lambda: len(load.acked) >= 100, "100 acknowledged creates before the transfers")
        for k in range(6):
            leader = c.leader(timeout=30)
            to = sorted(n for n in c.nodes if n != leader)[k % 2]
            assert admin.transfer_leadership(to) == to
            assert c.leader(timeout=30) == to
        after = len(load.acked)
        wait_for(lambda: len(load.acked) >= after + 100, "100 more acknowledged creates after the transfers")
    done = [r for n in c.nodes.values() for r in log_records(n, "leadership transferred")]
    assert len(done) == 6 and all(r["to"] == r["asked"] for r in done), done
    with minoots.Client([c.nodes[c.leader(timeout=30)].grpc], timeout=30) as client:
        missing = []
        for tid in load.acked:
            try:
                client.get(tid)
            except minoots.NotFound:
                missing.append(tid)
    assert missing == [], f"{len(missing)} acknowledged creates lost, e.g. {missing[:5]}"


def test_a_transfer_to_a_member_that_is_down_is_refused_at_once_and_holds_no_writes(fresh_cluster):
    """A named target that is not connected cannot catch up: the leader refuses with
    UNAVAILABLE naming it, holding no writes, and stays the leader."""
    c = fresh_cluster
    leader = c.leader(timeout=30)
    down = sorted(n for n in c.nodes if n != leader)[0]
    c.kill(down)
    with minoots.Client([c.nodes[leader].grpc], timeout=30) as client:
        def refused():
            try:
                client.transfer_leadership(down, timeout=3)
            except minoots.Unavailable as exc:
                return exc
            return None
        # The leader notices the closed connection within its reconnect interval.
        exc = wait_for(refused, f"the transfer to {down} refused as not connected")
        assert f"{down} is not connected to this leader" in str(exc)
        client.create(delay=3600, id="after-refusal")
    assert c.leader(timeout=30) == leader
