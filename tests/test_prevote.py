"""PreVote (raft/pysyncobj_compat.py PreVoteMixin): real PySyncObj nodes on an in-process bus.

Three SyncObjs with the RaftConformant transport over a bus that delivers their messages
when the test says so (and drops those on cut links, like the chaos proxy's black hole:
the nodes still think they are connected). Ticks are driven by hand and election
deadlines are forced, so every run is the same: no sleeps, no timing.

The unfixed comparison (`PreVoteMixin` left out) shows what each test would catch: the
partitioned node raises its term while cut off and deposes the leader when the link heals.
"""
from __future__ import annotations

import pytest
from raft_bus import ADDRS, Cluster

from minoots.raft.pysyncobj_compat import CAPS, PRE_VOTE


@pytest.fixture
def cluster(request):
    c = Cluster(getattr(request, "param", ("new", "new", "new")))
    yield c
    c.destroy()


def sent_types(bus, src):
    return [t for s, _, t in bus.log if s == src]


def test_an_election_asks_for_pre_votes_first(cluster):
    c = cluster
    c.forget_leader(*ADDRS)
    c.expire(ADDRS[0])
    c.tick(1)
    first = [t for t in sent_types(c.bus, ADDRS[0]) if t != CAPS]
    assert first[:2] == [PRE_VOTE, PRE_VOTE]             # not request_vote: no term raised yet
    assert c.status(ADDRS[0]).term == 0 and "request_vote" not in first     # granted, campaigns next tick
    c.tick(3)
    assert c.leaders() == [ADDRS[0]] and c.terms() == {a: 1 for a in ADDRS}


def test_a_partitioned_follower_does_not_depose_the_leader_when_it_heals(cluster):
    c = cluster
    c.elect(ADDRS[0])
    terms = c.terms()
    lone = ADDRS[2]
    c.isolate(lone)
    for _ in range(5):                       # its election deadline passes again and again
        c.expire(lone)
        c.tick()
    assert c.status(lone).term == terms[lone]   # pre-votes only: its term never moved
    c.heal()
    c.expire(lone)                           # the moment it is back, before any heartbeat
    c.tick(4)
    assert c.leaders() == [ADDRS[0]] and c.terms() == terms
    assert c.nodes[ADDRS[0]].pre_votes_refused + c.nodes[ADDRS[1]].pre_votes_refused >= 2


def test_without_pre_vote_the_healed_follower_deposes_the_leader():
    # The same run with PreVoteMixin left out of the partitioned node: what the test above catches.
    c = Cluster()
    try:
        c.elect(ADDRS[0])
        terms = c.terms()
        lone = ADDRS[2]
        c.nodes[lone]._pv_before_election_check = lambda: None      # PySyncObj's own election path
        c.isolate(lone)
        for _ in range(5):
            c.expire(lone)
            c.tick()
        assert c.status(lone).term > terms[lone]
        c.heal()
        c.expire(lone)
        c.tick(4)
        assert c.terms()[ADDRS[0]] > terms[ADDRS[0]]                # the healthy leader lost its term
    finally:
        c.destroy()


def test_a_stalled_follower_is_refused_while_the_leader_is_heard(cluster):
    c = cluster
    c.elect(ADDRS[0])
    terms = c.terms()
    c.expire(ADDRS[1])                        # resumed after a stall: deadline long past
    c.tick(4)
    assert c.leaders() == [ADDRS[0]] and c.terms() == terms
    assert c.nodes[ADDRS[1]].pre_vote_rounds >= 1


def test_when_the_leader_is_gone_a_pre_vote_majority_elects_a_new_one(cluster):
    c = cluster
    c.elect(ADDRS[0])
    c.isolate(ADDRS[0])
    c.forget_leader(ADDRS[1], ADDRS[2])      # a whole timeout without the leader
    c.expire(ADDRS[1])
    c.tick(4)
    assert c.status(ADDRS[1]).is_leader and c.status(ADDRS[1]).term == 2


def test_a_follower_with_a_shorter_log_gets_no_pre_vote(cluster):
    c = cluster
    c.elect(ADDRS[0])
    c.isolate(ADDRS[2])
    leader = c.nodes[ADDRS[0]]
    leader._SyncObj__raftLog.add(b"\x01", c.status(ADDRS[0]).log_len + 1, 1)   # a no-op C misses
    leader._SyncObj__newAppendEntriesTime = 0                                  # heartbeat now
    c.tick()
    assert c.status(ADDRS[1]).log_len == c.status(ADDRS[2]).log_len + 1
    c.isolate(ADDRS[0])
    c.bus.cut.discard(frozenset((ADDRS[1], ADDRS[2])))
    c.forget_leader(ADDRS[1], ADDRS[2])
    c.expire(ADDRS[2])
    c.tick(4)
    assert not c.status(ADDRS[2]).is_leader and c.status(ADDRS[2]).term == 1
    c.expire(ADDRS[1])                       # the up-to-date follower wins instead
    c.tick(4)
    assert c.status(ADDRS[1]).is_leader


def test_leadership_transfer_skips_the_pre_vote(cluster):
    c = cluster
    c.elect(ADDRS[0])
    before = len(c.bus.log)
    c.bus.transports[ADDRS[0]].send(c.bus.transports[ADDRS[0]].node_by_addr[ADDRS[1]], {"type": "timeout_now", "term": 1})
    c.bus.deliver()
    c.tick(4)
    after = [t for s, _, t in c.bus.log[before:] if s == ADDRS[1]]
    assert "request_vote" in after and PRE_VOTE not in after
    assert c.leaders() == [ADDRS[1]]


def test_a_mixed_cluster_still_elects_when_only_the_new_node_can_win():
    # Rolling upgrade, one node upgraded (A), the old leader (C) gone. The old follower
    # (B) misses C's last entry, so only A can win; B ignores pre-votes, but it keeps
    # campaigning (it is heard), so when A's round runs out B counts as a grant.
    c = Cluster(("new", "old", "old"))
    try:
        a, b, old_leader = ADDRS
        c.elect(old_leader)
        c.bus.cut.add(frozenset((old_leader, b)))
        node = c.nodes[old_leader]
        node._SyncObj__raftLog.add(b"\x01", c.status(old_leader).log_len + 1, c.status(old_leader).term)
        node._SyncObj__newAppendEntriesTime = 0
        c.tick()
        assert c.status(a).log_len == c.status(b).log_len + 1
        c.kill(old_leader)
        c.forget_leader(a, b)
        c.expire(b)
        c.tick(2)                                 # B campaigns; A refuses its vote (shorter log)
        assert not c.leaders()
        c.expire(a)
        c.tick(2)                                 # A asks for pre-votes; B does not answer
        assert not c.leaders()
        c.expire(a)                               # the round ran out: B, heard and silent, counts
        c.tick(4)
        assert c.leaders() == [a]
    finally:
        c.destroy()


def test_a_mixed_cluster_of_two_new_nodes_uses_pre_votes():
    c = Cluster(("new", "new", "old"))
    try:
        a, b, old_leader = ADDRS
        c.elect(old_leader)
        c.kill(old_leader)
        c.forget_leader(a, b)
        before = len(c.bus.log)
        c.expire(a)
        c.tick(4)
        assert c.leaders() == [a]
        assert (a, b, PRE_VOTE) in c.bus.log[before:]
    finally:
        c.destroy()


def test_a_silent_link_is_not_taken_for_an_old_peer(cluster):
    # A partitioned node whose links went dark (connected, nothing heard on them) has no
    # majority: peers that never spoke on the connection do not count as old.
    c = cluster
    c.elect(ADDRS[0])
    lone = ADDRS[2]
    t = c.bus.transports[lone]
    c.isolate(lone)
    for node in t.node_by_addr.values():          # its connections dropped and came back, dark
        t._onNodeDisconnected(node)
        t._onNodeConnected(node)
    for _ in range(4):
        c.expire(lone)
        c.tick()
    assert c.status(lone).term == 1 and c.nodes[lone].pre_vote_rounds >= 4


def test_new_nodes_announce_themselves_and_old_ones_ignore_it():
    c = Cluster(("new", "new", "old"))
    try:
        t = c.bus.transports
        assert t[ADDRS[0]].prevote_peers == {t[ADDRS[0]].node_by_addr[ADDRS[1]]}
        assert (ADDRS[0], ADDRS[2], CAPS) in c.bus.log        # sent to the old node too: harmless
    finally:
        c.destroy()


@pytest.mark.parametrize("bad", [{"round": "1"}, {"last_log_index": None}, {"term": 2.0}, {"last_log_term": [1]}])
def test_a_malformed_pre_vote_is_ignored(cluster, bad):
    c = cluster
    c.elect(ADDRS[0])
    c.forget_leader(ADDRS[1])
    message = {"type": PRE_VOTE, "term": 2, "round": 1, "last_log_index": 99, "last_log_term": 9}
    t = c.bus.transports[ADDRS[2]]
    before = len(c.bus.log)
    t.send(t.node_by_addr[ADDRS[1]], dict(message, **bad))
    c.tick()
    assert (ADDRS[1], ADDRS[2], "pre_vote_response") not in c.bus.log[before:]
    t.send(t.node_by_addr[ADDRS[1]], message)             # the well-formed one is answered
    c.tick()
    assert (ADDRS[1], ADDRS[2], "pre_vote_response") in c.bus.log[before:]


def test_a_refusal_for_a_recent_heartbeat_says_when_to_ask_again(cluster):
    # The leader died just now: B heard it a moment ago and refuses A's pre-vote, saying
    # when it will grant; A asks again then instead of a whole election timeout later.
    import time

    c = cluster
    a, b, gone = ADDRS
    c.elect(gone)
    c.kill(gone)
    c.forget_leader(a)
    c.bus.transports[b].leader_heard_at = time.monotonic() - 99.9     # min timeout here: 100 s
    c.expire(a)
    c.tick(1)
    assert c.nodes[b].pre_votes_refused == 1 and not c.leaders()
    deadline = c.nodes[a]._SyncObj__raftElectionDeadline
    assert deadline - time.monotonic() < 1.0                           # not ~100 s away
    c.forget_leader(b)                                                  # ... and then B grants
    c.expire(a)
    c.tick(4)
    assert c.leaders() == [a]
