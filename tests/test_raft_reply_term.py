"""End to end, with five real PySyncObj nodes on the in-process bus (tests/raft_bus.py):
an AppendEntries reply of an older term must not count towards a commit.

PySyncObj's `next_node_idx` reply carries no term and its leader counts any success
it reads. The run: A leads term 1 and sends its entries 3..6 only to B, whose success
(next 7) stays on the B->A link (held, as on a slow link; TCP keeps it in order). C
wins term 2 with D and E, with a log that lacks A's 3..6, and cuts A back to its own.
A wins term 3 with D and E, commits its no-op at 4 with them, appends 5 and 6, and
loses E. Then B's old reply arrives. Unfixed, A takes it as "B holds 1..6" and
commits 5..6 held by A and D only: two of five, an acknowledged write a majority
(B, C, E) can elect a leader without. Fixed (raft/pysyncobj_compat.py: replies echo
the term of the append they answer; the leader drops other terms), nothing past 4
commits until B really holds it.
"""
from __future__ import annotations

import pytest
from raft_bus import ADDRS5, Cluster, NewNode, NewTransport, OldNode, OldTransport

from minoots.raft.pysyncobj_compat import raft_status

A, B, C, D, E = ADDRS5


class NoFixTransport(NewTransport):
    """The transport with the reply-term check gone: PySyncObj's own rule."""

    def _rc_reply_is_current(self, node, message):
        return True


def holders(c, index, term):
    return [a for a in c.addrs if (index, term) in c.log(a)]


def heartbeat(c, addr, rounds: int = 3):
    """addr, leading, sends its AppendEntries now (`rounds` times: a reject, a resend, ...)."""
    for _ in range(rounds):
        c.nodes[addr]._SyncObj__newAppendEntriesTime = 0
        c.tick(1)


def run(leader_transport, b_kind="new"):
    c = Cluster(("a", b_kind, "new", "new", "new"),
                classes={"a": (NewNode, leader_transport), "old": (OldNode, OldTransport)})
    try:
        c.elect(A)
        c.tick()
        assert all(c.log(x) == [(1, 0), (2, 1)] for x in c.addrs)
        # Term 1: A reaches only B; B's replies to A are held.
        for x in (C, D, E):
            c.bus.cut.add(frozenset((A, x)))
        c.bus.held.add((B, A))
        log = c.nodes[A]._SyncObj__raftLog
        for i in range(3, 7):
            log.add(b"\x01", i, 1)
        heartbeat(c, A)
        assert c.log(B)[-1] == (6, 1)
        # Term 2: C (no 3..6) wins with D and E, then reaches A and cuts it back.
        c.bus.cut.add(frozenset((B, C)))
        c.forget_leader(C, D, E)
        c.expire(C)
        c.tick(4)
        assert raft_status(c.nodes[C]).is_leader and raft_status(c.nodes[C]).term == 2
        c.bus.cut.discard(frozenset((A, C)))
        heartbeat(c, C)
        assert c.log(A) == [(1, 0), (2, 1), (3, 2)]              # A's 3..6 of term 1 are gone
        # Term 3: C is gone; A wins with D and E and commits its no-op at 4 with them.
        c.kill(C)
        for x in (D, E):
            c.bus.cut.discard(frozenset((A, x)))
        c.forget_leader(A, D, E)
        c.expire(A)
        c.tick(4)
        a = c.nodes[A]
        assert raft_status(a).is_leader and raft_status(a).term == 3
        assert raft_status(a).commit_index == 4 and holders(c, 4, 3) == [A, D, E]
        # A appends 5 and 6; E is cut off; D acknowledges them.
        c.bus.cut.add(frozenset((A, E)))
        log.add(b"\x01", 5, 3)
        log.add(b"\x01", 6, 3)
        heartbeat(c, A)
        assert holders(c, 6, 3) == [A, D] and c.log(B)[2:] == [(3, 1), (4, 1), (5, 1), (6, 1)]
        # B's term-1 reply arrives; A computes its commit index (the first thing its tick does).
        c.bus.held.clear()
        c.bus.deliver()
        a.doTick(0.0)
        return c, raft_status(a).commit_index
    except BaseException:
        c.destroy()
        raise


@pytest.mark.parametrize("b_kind", ["new", "old"], ids=["new-follower", "old-follower"])
def test_an_older_terms_reply_does_not_commit_what_a_majority_lacks(b_kind):
    c, commit = run(NewTransport, b_kind)
    try:
        assert commit == 4                                    # 5, 6: held by A and D only
        assert c.nodes[A]._SyncObj__transport.stale_replies_dropped >= 1
        # Replication goes on: once B really holds 5 and 6, they commit.
        heartbeat(c, A, 6)
        assert holders(c, 6, 3) == [A, B, D] and raft_status(c.nodes[A]).commit_index == 6
    finally:
        c.destroy()


def test_without_the_fix_the_leader_commits_an_entry_two_of_five_hold():
    c, commit = run(NoFixTransport)
    try:
        assert commit == 6 and holders(c, 6, 3) == [A, D]      # the safety violation the fix prevents
    finally:
        c.destroy()
