"""A backlog is applied in bounded slices (raft/pysyncobj_compat.py BoundedApplyMixin): same
entries, same order, each once; the commit index PySyncObj reads is restored after every call;
and a follower restarted far behind catches up without an election."""
from __future__ import annotations

import pytest

from minoots.raft import pysyncobj_compat as compat


class _Base:
    """PySyncObj's apply step in miniature: fetch the entries from lastApplied+1 to the commit
    index (through __getEntries, as PySyncObj does) and apply each."""

    def __init__(self, commit: int, stuck_at: int | None = None) -> None:
        self._SyncObj__raftCommitIndex = commit
        self._SyncObj__raftLastApplied = 1
        self.applied: list = []
        self.fetched: list = []
        self.stuck_at = stuck_at

    def _SyncObj__getEntries(self, fromIDx, count=None, maxSizeBytes=None):
        return [(b"", i, 1) for i in range(fromIDx, fromIDx + count)]

    def _SyncObj__applyLogEntries(self):
        count = self._SyncObj__raftCommitIndex - self._SyncObj__raftLastApplied
        entries = self._SyncObj__getEntries(self._SyncObj__raftLastApplied + 1, count)
        self.fetched.append(len(entries))
        for _, idx, _ in entries:
            if idx == self.stuck_at:
                return True              # an entry that cannot be applied: no progress past it
            self.applied.append(idx)
            self._SyncObj__raftLastApplied += 1
        return True


class _Node(compat.BoundedApplyMixin, _Base):
    pass


def test_one_tick_applies_one_slice_when_the_budget_is_spent(monkeypatch):
    monkeypatch.setattr(compat, "APPLY_BUDGET_S", 0.0)     # every slice spends the whole budget
    n = _Node(commit=1 + 5 * compat.APPLY_SLICE + 3)
    ticks = 0
    while n.apply_backlog():
        assert n._SyncObj__applyLogEntries() is True
        ticks += 1
        assert n._SyncObj__raftCommitIndex == 1 + 5 * compat.APPLY_SLICE + 3   # never lowered
    assert n.applied == list(range(2, 5 * compat.APPLY_SLICE + 5))            # in order, each once
    assert ticks == 6
    # what PySyncObj's loop fetched: one slice per tick, then the small rest at once
    assert n.fetched == [compat.APPLY_SLICE] * 5 + [3]


def test_a_small_backlog_or_a_generous_budget_applies_everything_at_once(monkeypatch):
    n = _Node(commit=1 + compat.APPLY_SLICE)
    n._SyncObj__applyLogEntries()
    assert n.apply_backlog() == 0 and n.fetched == [compat.APPLY_SLICE]
    monkeypatch.setattr(compat, "APPLY_BUDGET_S", 60.0)
    n = _Node(commit=1000)
    n._SyncObj__applyLogEntries()
    assert n.applied == list(range(2, 1001)) and len(n.fetched) > 1 and max(n.fetched) == compat.APPLY_SLICE


def test_no_progress_ends_the_call_instead_of_spinning(monkeypatch):
    monkeypatch.setattr(compat, "APPLY_BUDGET_S", 60.0)
    n = _Node(commit=500, stuck_at=40)
    n._SyncObj__applyLogEntries()                            # returns (a hang would fail the test)
    assert n.applied == list(range(2, 40)) and n._SyncObj__raftCommitIndex == 500


@pytest.mark.cluster
def test_a_follower_restarted_far_behind_catches_up_without_an_election(fresh_cluster):
    from minoots.api.client import Client
    from minoots.api.types import TimerSpec

    c = fresh_cluster
    leader = c.leader(timeout=30)
    term = c.status(leader)["term"]
    follower = next(n for n in c.nodes if n != leader)
    c.kill(follower)
    far = 4_000_000_000_000
    with Client([c.nodes[leader].grpc], timeout=30) as cl:
        for b in range(300):                                 # 300 entries of 20 timers it will lack
            cl.create_many([TimerSpec(fire_at=far, id=f"x{b}-{i}", payload=b"p" * 32) for i in range(20)])
    commit = c.status(leader)["commit_index"]
    c.start_node(follower)
    c.wait_applied(commit, nids=[follower], timeout=120)
    assert c.status(leader)["term"] == term and c.leader(timeout=10) == leader    # no election
    lead, fol = c.nodes[leader].digest(), c.nodes[follower].digest()
    assert fol["applied_index"] == lead["applied_index"] and fol["sha256"] == lead["sha256"]
