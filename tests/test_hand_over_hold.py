"""compat.HandOverMixin: while any holder holds proposals, a leader leaves them queued; a
transfer and a stop's hand-over may hold at once, and the first to finish must not release
the other's hold. A follower never holds (its queue is forwarded to the leader)."""
from __future__ import annotations

from minoots.raft.pysyncobj_compat import HandOverMixin


class _Queue:
    def __init__(self) -> None:
        self.processed = 0

    def _checkCommandsToApply(self):
        self.processed += 1


class _Node(HandOverMixin, _Queue):
    leader = True

    def _isLeader(self):
        return self.leader


def test_proposals_wait_while_any_holder_holds_and_only_on_a_leader():
    n = _Node()
    n._checkCommandsToApply()
    assert n.processed == 1
    n.hold_proposals(True)              # a transfer
    n.hold_proposals(True)              # a stop's hand-over, meanwhile
    n._checkCommandsToApply()
    n.hold_proposals(False)             # the transfer ends: the hand-over still holds
    n._checkCommandsToApply()
    assert n.processed == 1
    n.leader = False                    # stepped down: the queue goes to the new leader
    n._checkCommandsToApply()
    assert n.processed == 2
    n.leader = True
    n.hold_proposals(False)
    n.hold_proposals(False)             # one release too many is harmless
    n._checkCommandsToApply()
    assert n.processed == 3
    n.hold_proposals(True)
    n._checkCommandsToApply()
    assert n.processed == 3
