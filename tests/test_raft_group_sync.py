"""Deferred journal appends and the sync points around them (raft/journal.py,
raft/pysyncobj_compat.py GroupSyncMixin): entries are readable at once, written in one
transaction later, and no AppendEntries reply leaves before the journal synced."""
from __future__ import annotations

import lmdb
import pytest

from minoots.raft.journal import JournalFullError, LmdbJournal
from minoots.raft.pysyncobj_compat import GroupSyncMixin, RaftConformantTransportMixin


def on_disk(j: LmdbJournal) -> int:
    with j.env.begin() as txn:
        return txn.stat(j._log_db)["entries"]


@pytest.fixture
def deferred(tmp_path):
    j = LmdbJournal(tmp_path / "j", map_size=1 << 24)
    j.defer_appends(True)
    yield j
    j.close()


def test_pending_entries_read_like_written_ones_and_go_out_in_one_sync(deferred):
    j = deferred
    j.add(b"a", 1, 1)
    j.sync_appends()
    fsyncs = []
    orig = j._fsync
    j._fsync = lambda: (fsyncs.append(1), orig())
    for i in range(2, 6):
        j.add(b"c%d" % i, i, 2)
    assert (j.pending, on_disk(j), len(j)) == (4, 1, 5)
    assert j[-1] == (b"c5", 5, 2) and j[2] == (b"c3", 3, 2)
    assert list(j[0:5]) == [(b"a", 1, 1)] + [(b"c%d" % i, i, 2) for i in range(2, 6)]
    assert list(j[3:]) == [(b"c4", 4, 2), (b"c5", 5, 2)]
    j.sync_appends()
    assert (j.pending, on_disk(j)) == (0, 5)
    assert len(fsyncs) <= 1                       # one transaction (owned durable env: synced by commit)


def test_other_writes_and_close_write_pending_entries_first(tmp_path):
    j = LmdbJournal(tmp_path / "j", map_size=1 << 24)
    j.defer_appends(True)
    for i in range(1, 4):
        j.add(b"x", i, 1)
    j.setCurrentTerm(2, "n1")
    assert (j.pending, on_disk(j)) == (0, 3)
    j.add(b"y", 4, 2)
    j.add(b"z", 5, 2)
    j.deleteEntriesFrom(4)                        # drops idx 5 (written first, then deleted)
    assert (j.pending, len(j), j[-1]) == (0, 4, (b"y", 4, 2))
    j.add(b"w", 5, 2)
    j.close()
    again = LmdbJournal(tmp_path / "j", map_size=1 << 24)
    assert list(again[:]) == [(b"x", 1, 1), (b"x", 2, 1), (b"x", 3, 1), (b"y", 4, 2), (b"w", 5, 2)]
    assert again.getCurrentTerm() == 2
    again.close()


def test_near_a_full_map_add_writes_at_once(tmp_path):
    j = LmdbJournal(tmp_path / "j", map_size=1 << 20)   # 1 MiB: less room than the deferral margin
    j.defer_appends(True)
    j.add(b"a", 1, 1)
    assert (j.pending, on_disk(j)) == (0, 1)
    with pytest.raises(JournalFullError):               # and a full map is reported by that add
        for i in range(2, 10_000):
            j.add(b"p" * 4096, i, 1)
    j.close()


def test_a_failed_sync_keeps_the_entries_pending_and_raises(deferred, monkeypatch):
    j = deferred
    j.add(b"a", 1, 1)
    j.add(b"b", 2, 1)

    def broken(txn):
        raise lmdb.MapFullError("simulated")

    real = j._write
    monkeypatch.setattr(j, "_write", lambda fn, **kw: real(lambda txn: broken(txn), **kw))
    with pytest.raises(JournalFullError):
        j.sync_appends()
    assert (j.pending, on_disk(j), j[-1]) == (2, 0, (b"b", 2, 1))
    monkeypatch.setattr(j, "_write", real)
    j.sync_appends()
    assert (j.pending, on_disk(j)) == (0, 2)


# ---------------------------------------------------------------- the sync points


class _Base:
    def __init__(self, syncObj, selfNode, otherNodes):
        self.sent = []

    def setOnMessageReceivedCallback(self, cb):
        pass

    def setOnNodeDisconnectedCallback(self, cb):
        pass

    def send(self, node, message):
        self.sent.append(message["type"])
        return True


class _Transport(RaftConformantTransportMixin, _Base):
    pass


class _Sync:
    def __init__(self, journal):
        self.conf = type("Conf", (), {"journalFile": journal})()

    def _isLeader(self):
        return False


class _Journal(LmdbJournal):
    """Records when it synced, next to what the transport sent meanwhile."""

    def __init__(self, path, log):
        super().__init__(path, map_size=1 << 24)
        self._log = log

    def sync_appends(self):
        self._log.append(("sync", self.pending))
        super().sync_appends()


class _Machine(GroupSyncMixin):
    def __init__(self, journal, transport):          # the state GroupSyncMixin.__init__ sets up
        self._gs_journal = journal
        self._SyncObj__transport = transport


def test_replies_are_held_until_the_journal_synced(tmp_path):
    log = []
    j = _Journal(tmp_path / "j", log)
    t = _Transport(_Sync(j), "self", ["peer"])
    t.send("peer", {"type": "next_node_idx", "next_node_idx": 1, "reset": False, "success": True})
    assert t.sent == ["next_node_idx"]               # not holding until told to
    t.hold_replies()
    j.defer_appends(True)
    j.add(b"a", 1, 1)
    j.add(b"b", 2, 1)
    t.send("peer", {"type": "next_node_idx", "next_node_idx": 3, "reset": False, "success": True})
    t.send("peer", {"type": "response_vote", "term": 1})
    assert t.sent == ["next_node_idx", "response_vote"]   # the reply waits; other messages do not
    m = _Machine(j, t)
    t.sent.clear()
    m._gs_sync()
    assert log == [("sync", 2)] and t.sent == ["next_node_idx"] and j.pending == 0
    j.close()


def test_a_failed_sync_sends_no_reply(tmp_path):
    log = []
    j = _Journal(tmp_path / "j", log)
    t = _Transport(_Sync(j), "self", ["peer"])
    t.hold_replies()
    j.defer_appends(True)
    j.add(b"a", 1, 1)
    t.send("peer", {"type": "next_node_idx", "next_node_idx": 2, "reset": False, "success": True})

    def fail():
        raise JournalFullError("simulated")

    j.sync_appends = fail
    with pytest.raises(JournalFullError):
        _Machine(j, t)._gs_sync()
    assert t.sent == [] and j.pending == 1
    del j.sync_appends
    _Machine(j, t)._gs_sync()
    assert t.sent == ["next_node_idx"]
    j.close()
