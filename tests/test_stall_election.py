"""A follower whose process was stopped for longer than the election timeout does not
depose the healthy leader when it resumes (raft/pysyncobj_compat.py StallGuardMixin).

Without the guard this test fails every round on this machine: the resumed follower
campaigns at once with a higher term (measured 4 of 4 rounds disrupted before the fix)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from minoots.raft.config import RaftTiming

pytestmark = pytest.mark.cluster

ROUNDS = 2


def test_stopped_follower_does_not_depose_the_leader(fresh_cluster):
    c = fresh_cluster
    stall = 2 * RaftTiming().raft_max_timeout
    for _ in range(ROUNDS):
        leader = c.leader(timeout=30)
        term = c.status(leader)["term"]
        follower = next(n for n in c.nodes if n != leader)
        pid = c.nodes[follower].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(stall)
        finally:
            os.kill(pid, signal.SIGCONT)
        # Give it the time it would need to campaign and win (a few election timeouts).
        time.sleep(3 * RaftTiming().raft_max_timeout)
        assert c.leader(timeout=30) == leader
        assert c.status(leader)["term"] == term
        log = c.nodes[follower].log_file.read_text()
        assert "election deadline restarted" in log


def test_follower_stopped_twice_in_a_row_does_not_depose_the_leader(fresh_cluster):
    """The stall guard restarts the election deadline once per stall, but not again within
    2x the election timeout (on a machine where every tick is late it would never campaign).
    A second stop right after the first is then PreVote's to handle: the resumed follower
    asks, hears "no" from the leader and the other follower, and the term stays."""
    c = fresh_cluster
    timing = RaftTiming()
    leader = c.leader(timeout=30)
    term = c.status(leader)["term"]
    follower = next(n for n in c.nodes if n != leader)
    pid = c.nodes[follower].pid
    for stall in (2 * timing.raft_max_timeout, 1.5 * timing.raft_max_timeout):
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(stall)
        finally:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.1)
    time.sleep(3 * timing.raft_max_timeout)
    assert c.leader(timeout=30) == leader
    assert c.status(leader)["term"] == term
    assert c.status(follower)["term"] == term


def _term_and_leader(c, nid):
    st = c.status(nid)
    return st["term"], st.get("leader")


def test_partitioned_follower_does_not_depose_the_leader_when_healed(tmp_path):
    """A follower cut off from every peer (a black hole: its connections stay up, or are
    re-accepted and ignored, so it keeps trying to campaign) comes back after several
    election timeouts. With PreVote it never raised its term and is refused at once."""
    from minoots.chaos.netproxy import proxy_cluster
    from support import start_cluster

    nets = []
    c = start_cluster(tmp_path / "cluster", prepare=lambda cl: nets.append(proxy_cluster(cl)))
    net = nets[0]
    try:
        timing = RaftTiming()
        leader = c.leader(timeout=30)
        term = c.status(leader)["term"]
        follower = next(n for n in c.nodes if n != leader)
        net.isolate(follower)
        # Past its connection timeout and several election deadlines.
        time.sleep(timing.connection_timeout + 4 * timing.raft_max_timeout)
        assert c.status(follower)["term"] == term            # pre-votes only, no term raised
        net.heal()
        time.sleep(3 * timing.raft_max_timeout + timing.connection_retry_time)
        assert c.leader(timeout=30) == leader
        assert c.status(leader)["term"] == term
        assert _term_and_leader(c, follower) == (term, leader)    # back as its follower
        # While cut off its election deadline kept passing: it asked for pre-votes each time
        # (whether it asks again on its return or hears a heartbeat first is a race).
        from test_telemetry import scrape, value
        assert value(scrape(c.nodes[follower].metrics_url), "minoots_raft_pre_vote_rounds_total") >= 2
    finally:
        c.stop()
        net.close()
