"""The leader's commit notice rides on the next AppendEntries (raft/pysyncobj_compat.py
CommitNoticeMixin), small frames go out stored (encode_frame), and a cluster still answers
writes sent to a follower and lets followers apply what the leader committed."""
from __future__ import annotations

import os
import pickle
import zlib

import pytest

from minoots.raft import pysyncobj_compat as compat

PERIOD = 0.05      # PySyncObj's appendEntriesPeriod in the fake


class _Base:
    """PySyncObj's apply step and heartbeat timer in miniature: applying up to the commit index
    returns True (PySyncObj's "send AppendEntries now" with appendEntriesUseBatch=False)."""

    def __init__(self, now: float, leader: bool = True) -> None:
        self._SyncObj__raftState = compat.LEADER if leader else 0
        self._SyncObj__raftCommitIndex = 1
        self._SyncObj__raftLastApplied = 1
        self._SyncObj__newAppendEntriesTime = now + PERIOD
        self.waits: list[float] = []

    def _SyncObj__applyLogEntries(self):
        if self._SyncObj__raftCommitIndex == self._SyncObj__raftLastApplied:
            return False
        self._SyncObj__raftLastApplied = self._SyncObj__raftCommitIndex
        return True

    def _onTick(self, timeToWait=0.0):
        self.waits.append(timeToWait)


class _Node(compat.CommitNoticeMixin, _Base):
    def commit(self, idx: int) -> bool:
        self._SyncObj__raftCommitIndex = idx
        return self._SyncObj__applyLogEntries()


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(compat, "_monotonic", lambda: now[0])
    return now


def test_an_apply_brings_the_heartbeat_forward_instead_of_sending_at_once(clock):
    n = _Node(clock[0])
    assert n.commit(2) is False                          # no extra AppendEntries now
    assert n._SyncObj__newAppendEntriesTime == clock[0] + compat.COMMIT_NOTICE_S
    assert compat.COMMIT_NOTICE_S < PERIOD


def test_the_tick_wakes_for_the_notice_and_an_overdue_one_changes_no_wait(clock):
    n = _Node(clock[0])
    n.commit(2)
    n._onTick(PERIOD)
    assert n.waits[-1] == pytest.approx(compat.COMMIT_NOTICE_S)
    n._onTick(compat.COMMIT_NOTICE_S / 10)               # a shorter wait asked for stays
    assert n.waits[-1] == compat.COMMIT_NOTICE_S / 10
    clock[0] += 1.0                                      # overdue: PySyncObj sends it in this tick,
    n._onTick(PERIOD)                                    # before its poll; no zero wait (no spin
    assert n.waits[-1] == PERIOD                         # while its transport is not ready)


def test_a_heartbeat_already_due_sooner_is_not_pushed_back(clock):
    n = _Node(clock[0])
    n._SyncObj__newAppendEntriesTime = clock[0] + compat.COMMIT_NOTICE_S / 2
    n.commit(2)
    assert n._SyncObj__newAppendEntriesTime == clock[0] + compat.COMMIT_NOTICE_S / 2


def test_a_forwarded_entry_is_announced_at_once_when_committed(clock):
    n = _Node(clock[0])
    n.cn_note_forwarded(3)
    n.cn_note_forwarded(5)
    assert n.commit(2) is False                          # 3 not committed yet
    assert n.commit(4) is True                           # 3 is: its follower waits for it
    assert list(n._cn_forwarded) == [5]
    assert n.commit(5) is True and not n._cn_forwarded
    assert n.commit(6) is False


def test_a_follower_is_left_alone_and_forgets_forwarded_indexes(clock):
    n = _Node(clock[0], leader=False)
    n.cn_note_forwarded(3)
    before = n._SyncObj__newAppendEntriesTime
    assert n.commit(4) is True                            # PySyncObj's own answer, unchanged
    assert n._SyncObj__newAppendEntriesTime == before and n._cn_forwarded is None
    n._onTick(PERIOD)
    assert n.waits[-1] == PERIOD


def test_nothing_applied_changes_nothing(clock):
    n = _Node(clock[0])
    before = n._SyncObj__newAppendEntriesTime
    assert n._SyncObj__applyLogEntries() is False
    assert n._SyncObj__newAppendEntriesTime == before


def test_the_transport_notes_forwarded_entries_it_answers():
    noted = []

    class _Sync:
        def cn_note_forwarded(self, idx):
            noted.append(idx)

    class _Sent:
        def send(self, node, message):
            return True

    class _T(compat.RaftConformantTransportMixin, _Sent):
        def __init__(self):   # only what send() reads
            self._rc_syncobj = _Sync()
            self._rc_caps_due, self._rc_reply_cap, self._rc_answering, self._rc_held = set(), None, None, None

    t = _T()
    t.send("n2", {"type": "apply_command_response", "request_id": 7, "log_idx": 42, "log_term": 3})
    t.send("n2", {"type": "apply_command_response", "request_id": 8, "error": 1})
    assert noted == [42]


@pytest.mark.parametrize("size", [0, 1, 300, compat.STORED_FRAME_MAX, compat.STORED_FRAME_MAX + 1, 200_000])
def test_frames_decode_with_plain_zlib_and_the_bounded_decoder(size):
    payload = pickle.dumps((b"k" * 32, {"type": "append_entries", "entries": [(os.urandom(size), 5, 2)]}), 2)
    frame = compat.encode_frame(payload)
    assert zlib.decompress(frame) == payload                  # what a PySyncObj peer does
    assert compat._bounded_decompress(frame, len(payload) + 1) == payload
    if size <= compat.STORED_FRAME_MAX - 100:
        assert len(frame) < len(payload) + 64                 # stored: the payload plus block headers
    compressible = compat.encode_frame(b"a" * (compat.STORED_FRAME_MAX + 1))
    assert len(compressible) < 1000                           # big frames still compressed


def test_a_connection_sends_length_prefixed_zlib_of_the_pickle():
    c = compat.BoundedTcpConnection(poller=None)
    sent = []
    c._TcpConnection__trySendBuffer = lambda: sent.append(bytes(c._TcpConnection__writeBuffer))
    c.send({"type": "next_node_idx", "next_node_idx": 9, "success": True})
    (n,) = compat._FRAME_LEN.unpack_from(sent[0])
    assert n == len(sent[0]) - 4
    assert compat.peer_loads(zlib.decompress(sent[0][4:])) == {"type": "next_node_idx", "next_node_idx": 9,
                                                                 "success": True}


@pytest.mark.cluster
def test_writes_to_a_follower_answer_and_followers_apply_the_leaders_commits(fresh_cluster):
    """A write through a follower is answered (its forwarded entry's commit is announced at
    once), and every follower reaches the leader's commit index without further traffic."""
    import time

    from minoots.api.client import Client

    c = fresh_cluster
    leader = c.leader(timeout=30)
    follower = next(n for n in c.nodes if n != leader)
    far = int(time.time() * 1000) + 3_600_000
    with Client([c.nodes[follower].grpc], timeout=10, token=c.admin_token()) as cl:
        for i in range(20):
            cl.create(far, id=f"via-follower-{i}")
    with Client([c.nodes[leader].grpc], timeout=10, token=c.admin_token()) as cl:
        cl.create(far, id="last-via-leader")
        assert cl.get("via-follower-19").id == "via-follower-19"
    commit = c.status(leader)["commit_index"]
    deadline = time.monotonic() + 10
    behind = set(c.nodes)
    while behind and time.monotonic() < deadline:
        behind = {n for n in c.nodes if c.status(n)["applied_index"] < commit}
        time.sleep(0.05)
    assert not behind, f"{behind} did not apply up to the leader's commit index {commit}"
