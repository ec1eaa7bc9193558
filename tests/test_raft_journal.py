"""Tests for minoots.raft.journal (LMDB-backed PySyncObj journal) and the §5.3 transport in minoots.raft.pysyncobj_compat."""
from __future__ import annotations

import logging
import pickle
import threading
import time

import lmdb
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.journal import MemoryJournal
from pysyncobj.transport import Transport

import minoots.raft.journal as journal_mod
from minoots.raft.journal import (
    JournalClosedError,
    JournalError,
    JournalFullError,
    JournalSlice,
    LmdbJournal,
    StaleSliceError,
)
from minoots.raft.pysyncobj_compat import (
    RaftConformantTCPTransport,
    RaftConformantTransportMixin,
    attach_journal,
    install_journal_hook,
    plan_append_entries,
)

from support import free_addresses, wait_for


def filled(path, n=10, term=1, first=1, **kw):
    j = LmdbJournal(path, **kw)
    for i in range(first, first + n):
        j.add(b"cmd%d" % i, i, term)
    return j


class CountingFsync:
    def __init__(self, journal):
        self.count = 0
        self._orig = journal._fsync
        journal._fsync = self

    def __call__(self):
        self.count += 1
        self._orig()


# --------------------------------------------------------------- basic API


def test_add_getitem_len(tmp_path):
    j = filled(tmp_path / "j", 5)
    assert len(j) == 5
    assert j[0] == (b"cmd1", 1, 1)
    assert j[4] == j[-1] == (b"cmd5", 5, 1)
    assert j[2] == (b"cmd3", 3, 1)
    assert j[-5] == j[0]
    assert isinstance(j[0][0], bytes)
    with pytest.raises(IndexError):
        j[5]
    with pytest.raises(IndexError):
        j[-6]
    assert list(j) == [(b"cmd%d" % i, i, 1) for i in range(1, 6)]
    assert (j.first_index, j.last_index) == (1, 5)
    j.close()


def test_empty_journal_defaults(tmp_path):
    j = LmdbJournal(tmp_path / "j")
    assert len(j) == 0
    assert list(j[:]) == []
    with pytest.raises(IndexError):
        j[0]
    assert j.getCurrentTerm() == 0
    assert j.getVotedForNodeId() is None
    assert j.getRaftCommitIndex() == 1  # as FileJournal / MemoryJournal
    j.add(b"x", 7, 3)  # any first index is accepted on an empty journal
    assert j[0] == j[-1] == (b"x", 7, 3)
    j.close()


def test_slices_are_lazy_views_with_list_semantics(tmp_path):
    j = filled(tmp_path / "j", 10)
    m = MemoryJournal()
    for i in range(1, 11):
        m.add(b"cmd%d" % i, i, 1)
    for sl in [slice(None), slice(3, None), slice(2, 5), slice(-3, None), slice(-100, 3),
               slice(8, 100), slice(5, 2), slice(None, None, 3), slice(None, None, -1), slice(7, 1, -2)]:
        got = j[sl]
        assert list(got) == m[sl], sl
        assert len(got) == len(m[sl])
    view = j[2:8]
    assert isinstance(view, JournalSlice)
    assert view[0] == (b"cmd3", 3, 1) and view[-1] == (b"cmd8", 8, 1)
    assert view[1:3] == [(b"cmd4", 4, 1), (b"cmd5", 5, 1)]  # a sub-slice is a list
    assert view == m[2:8] and m[2:8] == view
    assert bool(j[3:3]) is False and bool(view) is True
    assert list(reversed(view[1:])) == list(reversed(m[3:8]))
    assert pickle.loads(pickle.dumps(view)) == m[2:8]  # pickles as a plain list
    with pytest.raises(IndexError):
        view[6]
    j.close()


def test_slice_iterates_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "_READ_CHUNK", 3)
    j = filled(tmp_path / "j", 20)
    assert [e[1] for e in j[4:17]] == list(range(5, 18))
    j.close()


def test_slice_goes_stale_after_delete_but_not_after_add(tmp_path):
    j = filled(tmp_path / "j", 10)
    view = j[2:5]
    j.add(b"more", 11, 1)
    assert list(view) == [(b"cmd3", 3, 1), (b"cmd4", 4, 1), (b"cmd5", 5, 1)]
    j.deleteEntriesTo(1)
    with pytest.raises(StaleSliceError):
        list(view)
    view = j[:]
    j.deleteEntriesFrom(5)
    with pytest.raises(StaleSliceError):
        view[0]
    # Every deletion makes the journal newer than any slice taken before it: a compaction
    # after a truncation must not bring an older slice back to life.
    older = j[1:3]
    j.deleteEntriesFrom(3)
    j.deleteEntriesTo(1)
    with pytest.raises(StaleSliceError):
        list(older)
    j.close()


def test_delete_entries_from_and_to_mirror_list_semantics(tmp_path):
    for op, arg in [("deleteEntriesFrom", 0), ("deleteEntriesFrom", 3), ("deleteEntriesFrom", 10),
                    ("deleteEntriesFrom", 50), ("deleteEntriesFrom", -2), ("deleteEntriesTo", 0),
                    ("deleteEntriesTo", 4), ("deleteEntriesTo", 10), ("deleteEntriesTo", 99),
                    ("deleteEntriesTo", -3)]:
        j = filled(tmp_path / f"{op}{arg}", 10)
        m = MemoryJournal()
        for i in range(1, 11):
            m.add(b"cmd%d" % i, i, 1)
        getattr(j, op)(arg)
        getattr(m, op)(arg)
        assert list(j[:]) == m[:], (op, arg)
        assert len(j) == len(m)
        j.close()


def test_compaction_shifts_relative_indices(tmp_path):
    j = filled(tmp_path / "j", 10)
    j.deleteEntriesTo(4)  # what SyncObj.__deleteEntriesTo does after a snapshot
    assert len(j) == 6
    assert j[0] == (b"cmd5", 5, 1)
    assert j[2] == (b"cmd7", 7, 1)
    j.add(b"cmd11", 11, 2)
    assert j[-1] == (b"cmd11", 11, 2) and j[6] == j[-1]
    j.close()


def test_clear_then_restart_from_snapshot_indices(tmp_path):
    j = filled(tmp_path / "j", 10)
    j.clear()
    assert len(j) == 0
    j.add(b"s0", 41, 4)  # SyncObj.__loadDumpFile: clear(), add(prev), add(last)
    j.add(b"s1", 42, 4)
    assert list(j[:]) == [(b"s0", 41, 4), (b"s1", 42, 4)]
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert list(j[:]) == [(b"s0", 41, 4), (b"s1", 42, 4)]
    j.close()


def test_non_contiguous_and_invalid_adds_raise(tmp_path):
    j = filled(tmp_path / "j", 3)
    with pytest.raises(JournalError):
        j.add(b"gap", 5, 1)
    with pytest.raises(JournalError):
        j.add(b"dup", 3, 1)
    with pytest.raises(JournalError):
        j.add(b"neg", 4, -1)
    with pytest.raises(JournalError):
        j.add(12345, 4, 1)
    assert len(j) == 3 and j[-1] == (b"cmd3", 3, 1)
    j.add("text", 4, 1)  # str commands are stored as UTF-8, like FileJournal's to_bytes
    assert j[-1] == (b"text", 4, 1)
    j.close()


def test_term_vote_commit_persist_across_reopen(tmp_path):
    j = filled(tmp_path / "j", 10)
    j.setCurrentTerm(7, "127.0.0.1:4321")
    j.setRaftCommitIndex(9)
    assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (7, "127.0.0.1:4321", 9)
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (7, "127.0.0.1:4321", 9)
    assert len(j) == 10 and j[-1] == (b"cmd10", 10, 1)
    j.setCurrentTerm(8, None)
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (8, None)
    j.setCurrentTerm(8, ("custom", 1))  # non-str Node ids survive too
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert j.getVotedForNodeId() == ("custom", 1)
    j.close()


def test_term_and_vote_are_committed_when_set_returns(tmp_path):
    # Read through a second, independent view of the file (a copy of the env made
    # right after the call) rather than the writer's caches.
    j = LmdbJournal(tmp_path / "j", sync_policy="relaxed")
    j.setCurrentTerm(3, "a:1")
    (tmp_path / "copy").mkdir()
    j.env.copy(str(tmp_path / "copy"))
    j.close()
    c = LmdbJournal(tmp_path / "copy")
    assert (c.getCurrentTerm(), c.getVotedForNodeId()) == (3, "a:1")
    c.close()


def test_commit_index_is_advisory_and_never_ahead_of_the_log(tmp_path):
    j = filled(tmp_path / "j", 10)
    j.setRaftCommitIndex(10)
    j.deleteEntriesFrom(5)  # log now ends at 5 before SyncObj lowers its commit index
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert j.getRaftCommitIndex() == 5
    # Truncate-and-reappend (what PySyncObj does on a resend): the clamped value must
    # not stick once the log has grown back under an unchanged commit index.
    j.setRaftCommitIndex(5)
    j.setRaftCommitIndex(9)
    j.deleteEntriesFrom(2)  # persists min(9, 2)
    for i in range(3, 10):
        j.add(b"again", i, 1)
    j.setRaftCommitIndex(9)  # unchanged: SyncObj calls it again with the same value
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert j.getRaftCommitIndex() == 9
    j.setRaftCommitIndex(4)
    j.onOneSecondTimer()  # persists a pending commit index
    (tmp_path / "copy").mkdir()
    j.env.copy(str(tmp_path / "copy"))
    j.close()
    c = LmdbJournal(tmp_path / "copy")
    assert c.getRaftCommitIndex() == 4
    c.close()


def test_reopen_after_compaction_truncation_and_many_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_mod, "_DELETE_CHUNK", 7)  # exercise chunked deletes
    j = filled(tmp_path / "j", 100)
    j.deleteEntriesTo(33)
    j.deleteEntriesFrom(50)
    j.add(b"new", 84, 2)
    expected = [(b"cmd%d" % i, i, 1) for i in range(34, 84)] + [(b"new", 84, 2)]
    assert list(j[:]) == expected
    j.close()
    j = LmdbJournal(tmp_path / "j")
    assert list(j[:]) == expected
    assert (j.first_index, j.last_index, len(j)) == (34, 84, 51)
    j.close()


def test_closed_journal_raises(tmp_path):
    j = filled(tmp_path / "j", 2)
    j._destroy()
    j._destroy()  # idempotent
    assert j.closed
    with pytest.raises(JournalClosedError):
        j.add(b"x", 3, 1)
    with pytest.raises(JournalClosedError):
        j[0]


def test_bad_policy_rejected(tmp_path):
    with pytest.raises(ValueError):
        LmdbJournal(tmp_path / "j", sync_policy="sometimes")


# ---------------------------------------------------- sync policy behaviour


def test_owned_env_flags_follow_policy(tmp_path):
    d = LmdbJournal(tmp_path / "d")
    r = LmdbJournal(tmp_path / "r", sync_policy="relaxed")
    assert d.sync_policy == "durable" and d.env.flags()["sync"] is True
    assert r.sync_policy == "relaxed" and r.env.flags()["sync"] is False
    # durable on an env that syncs every commit: no extra fsync needed
    fs = CountingFsync(d)
    d.add(b"a", 1, 1)
    assert fs.count == 0
    d.close()
    r.close()


def test_durable_on_nosync_shared_env_fsyncs_every_write(tmp_path):
    env = lmdb.open(str(tmp_path / "env"), max_dbs=8, sync=False)
    j = LmdbJournal(env)
    fs = CountingFsync(j)
    for i in range(1, 6):
        j.add(b"x", i, 1)
    assert fs.count == 5
    j.deleteEntriesFrom(3)
    j.deleteEntriesTo(1)
    assert fs.count == 7
    j.setCurrentTerm(2, "n")
    assert fs.count == 8
    j.setCurrentTerm(2, "n")  # unchanged: no write
    assert fs.count == 8
    j.flush()                 # every write was synced: nothing left
    j.onOneSecondTimer()
    assert fs.count == 8
    j.close()
    env.close()


def test_relaxed_defers_fsync_to_the_timer_but_not_votes(tmp_path):
    j = LmdbJournal(tmp_path / "j", sync_policy="relaxed", sync_interval=0.0)
    fs = CountingFsync(j)
    for i in range(1, 101):
        j.add(b"x", i, 1)
    j.deleteEntriesTo(10)
    j.setRaftCommitIndex(50)
    assert fs.count == 0
    j.setCurrentTerm(1, "me")  # votes are always synced before returning
    assert fs.count == 1
    j.add(b"y", 101, 1)
    j.onOneSecondTimer()
    assert fs.count == 2
    j.onOneSecondTimer()  # nothing new: no fsync
    assert fs.count == 2
    j.add(b"z", 102, 1)
    j.close()  # close flushes
    assert fs.count == 3
    j = LmdbJournal(tmp_path / "j", sync_policy="relaxed")
    assert len(j) == 92 and j[-1] == (b"z", 102, 1) and j.getRaftCommitIndex() == 50
    j.close()


def test_relaxed_timer_respects_interval(tmp_path):
    j = LmdbJournal(tmp_path / "j", sync_policy="relaxed", sync_interval=3600)
    fs = CountingFsync(j)
    j.add(b"x", 1, 1)
    j.onOneSecondTimer()
    assert fs.count == 0
    j.flush()
    assert fs.count == 1
    j.close()


# ------------------------------------------------------------- map full


def test_map_full_raises_typed_error_and_loses_nothing(tmp_path):
    j = LmdbJournal(tmp_path / "j", map_size=256 * 1024)
    payload = b"p" * 2000
    idx = 0
    with pytest.raises(JournalFullError) as info:
        while True:
            j.add(payload, idx + 1, 1)
            idx += 1
            assert idx < 10_000, "map never filled"
    assert isinstance(info.value.__cause__, lmdb.MapFullError)
    assert not isinstance(info.value, lmdb.Error)
    assert len(j) == idx and j[-1] == (payload, idx, 1)
    # the failed entry is not half-written: the next add must reuse its index
    with pytest.raises(JournalFullError):
        j.add(payload, idx + 1, 1)
    with pytest.raises(JournalError, match="non-contiguous"):
        j.add(payload, idx + 2, 1)
    j.close()
    j = LmdbJournal(tmp_path / "j", map_size=256 * 1024)
    assert len(j) == idx and j[-1] == (payload, idx, 1)
    assert list(j[:]) == [(payload, i, 1) for i in range(1, idx + 1)]
    j.close()


# ---------------------------------------------------------- shared env


def test_shared_env_namespaces_and_ownership(tmp_path):
    env = lmdb.open(str(tmp_path / "env"), max_dbs=8, map_size=1 << 24)
    events = env.open_db(b"events")
    with env.begin(write=True) as txn:
        txn.put(b"k", b"v", db=events)
    a = LmdbJournal(env, namespace="a")
    b = LmdbJournal(env, namespace="b")
    a.add(b"a1", 1, 1)
    b.add(b"b1", 5, 2)
    assert list(a[:]) == [(b"a1", 1, 1)] and list(b[:]) == [(b"b1", 5, 2)]
    a.close()
    b.close()
    with env.begin() as txn:  # env still open: the journals did not own it
        assert txn.get(b"k", db=events) == b"v"
    a = LmdbJournal(env, namespace="a")
    assert list(a[:]) == [(b"a1", 1, 1)]
    a.close()
    env.close()


# ----------------------------------------- model check against MemoryJournal


class JournalVsMemory(RuleBasedStateMachine):
    """Random op sequences on LmdbJournal and MemoryJournal must agree exactly."""

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="lmdbjournal-")
        self.policy = "durable"
        self.lmdb = None
        self.mem = MemoryJournal()

    @initialize(policy=st.sampled_from(["durable", "relaxed"]), chunk=st.sampled_from([1, 3, 50_000]),
                defer=st.booleans())
    def setup(self, policy, chunk, defer):
        journal_mod._DELETE_CHUNK = chunk
        self.policy = policy
        self.defer = defer          # deferred appends (GroupSyncMixin): same contents, written later
        self.lmdb = LmdbJournal(self.dir, sync_policy=policy, map_size=1 << 24)
        self.lmdb.defer_appends(defer)

    def teardown(self):
        journal_mod._DELETE_CHUNK = 50_000
        if self.lmdb is not None:
            self.lmdb.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)

    def _next_idx(self, start):
        return self.mem[-1][1] + 1 if len(self.mem) else start

    @rule(cmd=st.binary(max_size=40), term=st.integers(0, 2**64 - 1), start=st.integers(0, 100))
    def add(self, cmd, term, start):
        idx = self._next_idx(start)
        self.lmdb.add(cmd, idx, term)
        self.mem.add(cmd, idx, term)

    @rule(n=st.integers(0, 20), cmd=st.binary(max_size=8))
    def add_many(self, n, cmd):
        for _ in range(n):
            idx = self._next_idx(1)
            self.lmdb.add(cmd, idx, 1)
            self.mem.add(cmd, idx, 1)

    @rule(k=st.integers(-30, 30))
    def delete_from(self, k):
        self.lmdb.deleteEntriesFrom(k)
        self.mem.deleteEntriesFrom(k)

    @rule(k=st.integers(-30, 30))
    def delete_to(self, k):
        self.lmdb.deleteEntriesTo(k)
        self.mem.deleteEntriesTo(k)

    @rule()
    def clear(self):
        self.lmdb.clear()
        self.mem.clear()

    @rule(term=st.integers(0, 1000), voted=st.one_of(st.none(), st.text(max_size=12)))
    def set_term(self, term, voted):
        self.lmdb.setCurrentTerm(term, voted)
        self.mem.setCurrentTerm(term, voted)

    @rule(c=st.integers(0, 500))
    def set_commit(self, c):
        self.lmdb.setRaftCommitIndex(c)

    @rule()
    def timer(self):
        self.lmdb.onOneSecondTimer()

    @rule()
    def reopen(self):
        self.lmdb.close()
        self.lmdb = LmdbJournal(self.dir, sync_policy=self.policy, map_size=1 << 24)
        self.lmdb.defer_appends(self.defer)

    @rule()
    def sync_appends(self):
        self.lmdb.sync_appends()
        assert self.lmdb.pending == 0

    @rule(i=st.integers(-40, 40))
    def get_item(self, i):
        try:
            expected = self.mem[i]
        except IndexError:
            with pytest.raises(IndexError):
                self.lmdb[i]
        else:
            assert self.lmdb[i] == expected

    @rule(a=st.one_of(st.none(), st.integers(-40, 40)), b=st.one_of(st.none(), st.integers(-40, 40)),
          step=st.sampled_from([None, 1, 2, -1, -3]))
    def get_slice(self, a, b, step):
        got = self.lmdb[a:b:step]
        exp = self.mem[a:b:step]
        assert len(got) == len(exp)
        assert list(got) == exp
        if exp:
            assert got[0] == exp[0] and got[-1] == exp[-1]

    @invariant()
    def same(self):
        if self.lmdb is None:
            return
        assert len(self.lmdb) == len(self.mem)
        assert list(self.lmdb[:]) == self.mem[:]
        assert self.lmdb.getCurrentTerm() == self.mem.getCurrentTerm()
        assert self.lmdb.getVotedForNodeId() == self.mem.getVotedForNodeId()


TestJournalVsMemory = JournalVsMemory.TestCase
TestJournalVsMemory.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --------------------------------------------------------- SyncObj seam


def test_journal_hook_is_idempotent_and_transparent(tmp_path):
    import pysyncobj.syncobj as so

    install_journal_hook()
    hooked = so.createJournal
    install_journal_hook()
    assert so.createJournal is hooked
    assert type(so.createJournal(None)) is MemoryJournal  # other SyncObjs unchanged
    j = LmdbJournal(tmp_path / "j")
    assert so.createJournal(j) is j
    conf = SyncObjConf()
    assert attach_journal(conf, j) is conf and conf.journalFile is j
    with pytest.raises(TypeError):
        attach_journal(SyncObjConf(), "not-a-journal")
    j.close()


class Counter(SyncObj):
    def __init__(self, self_addr, others, conf, **kw):
        super().__init__(self_addr, others, conf, **kw)
        self.value = 0

    @replicated
    def incr(self, by):
        self.value += by
        return self.value


FAST = dict(
    appendEntriesUseBatch=False,
    appendEntriesPeriod=0.05,
    raftMinTimeout=0.3,
    raftMaxTimeout=0.6,
    connectionTimeout=1.0,
    connectionRetryTime=0.2,
    autoTickPeriod=0.01,
)


def start_cluster(tmp_path, addrs, transport=None, **conf_kw):
    objs = []
    for addr in addrs:
        journal = LmdbJournal(tmp_path / addr.replace(":", "_"))
        conf = attach_journal(SyncObjConf(**{**FAST, **conf_kw}), journal)
        kw = {"transportClass": transport} if transport else {}
        objs.append(Counter(addr, [a for a in addrs if a != addr], conf, **kw))
    return objs


def stop_cluster(objs):
    for o in objs:
        o.destroy()
    for o in objs:
        o.destroy_synchronous()  # joins the tick thread, which closes the journal


def leader_of(objs):
    leaders = [o for o in objs if o._isLeader()]
    return leaders[0] if len(leaders) == 1 else None


@pytest.mark.cluster
def test_three_syncobjs_restore_state_from_lmdb_journal(tmp_path):
    addrs = free_addresses(3)
    objs = start_cluster(tmp_path, addrs)
    try:
        wait_for(lambda: leader_of(objs) is not None, what="a leader")
        leader = leader_of(objs)
        for i in range(1, 51):
            leader.incr(i, sync=True, timeout=10)
        wait_for(lambda: all(o.value == 1275 for o in objs), what="replication")
        wait_for(lambda: len({o.raftCommitIndex for o in objs}) == 1, what="commit index")
        term = max(o.raftCurrentTerm for o in objs)
        commits = [o.raftCommitIndex for o in objs]
    finally:
        stop_cluster(objs)

    journals = [LmdbJournal(tmp_path / a.replace(":", "_")) for a in addrs]
    logs = [list(j[:]) for j in journals]
    assert logs[0] == logs[1] == logs[2]  # identical logs on all nodes
    assert sum(1 for e in logs[0] if e[0][:1] == b"\x00") == 50  # the 50 regular commands
    assert all(j.getCurrentTerm() >= term for j in journals)
    # persisted commit index = the in-memory one at shutdown (>= 1 + leader no-op + 50)
    assert [j.getRaftCommitIndex() for j in journals] == commits and min(commits) >= 52
    for j in journals:
        j.close()

    objs = start_cluster(tmp_path, addrs)  # same dirs: state comes back from the journal
    try:
        wait_for(lambda: all(o.value == 1275 for o in objs), what="state restored from journal")
        wait_for(lambda: leader_of(objs) is not None, what="a leader after restart")
        leader_of(objs).incr(1000, sync=True, timeout=10)
        wait_for(lambda: all(o.value == 2275 for o in objs), what="replication after restart")
        assert all(o.raftCurrentTerm >= term for o in objs)
    finally:
        stop_cluster(objs)


@pytest.mark.cluster
def test_three_syncobjs_with_compaction_and_snapshot_files(tmp_path):
    addrs = free_addresses(3)
    extra = dict(logCompactionMinEntries=20, logCompactionMinTime=3600, useFork=False)
    dumps = {a: str(tmp_path / (a.replace(":", "_") + ".dump")) for a in addrs}

    def start():
        objs = []
        for addr in addrs:
            journal = LmdbJournal(tmp_path / addr.replace(":", "_"))
            conf = attach_journal(SyncObjConf(fullDumpFile=dumps[addr], **{**FAST, **extra}), journal)
            objs.append(Counter(addr, [a for a in addrs if a != addr], conf))
        return objs

    objs = start()
    try:
        wait_for(lambda: leader_of(objs) is not None, what="a leader")
        for _ in range(120):
            leader_of(objs).incr(1, sync=True, timeout=10)
        wait_for(lambda: all(o.value == 120 for o in objs), what="replication")
        wait_for(lambda: all(o.getStatus()['log_len'] < 100 for o in objs), what="log compaction")
    finally:
        stop_cluster(objs)
    for a in addrs:
        j = LmdbJournal(tmp_path / a.replace(":", "_"))
        assert j.first_index > 1 and len(j) < 100  # compacted on disk, not only in memory
        j.close()
    objs = start()
    try:
        wait_for(lambda: all(o.value == 120 for o in objs), what="state from snapshot + journal")
    finally:
        stop_cluster(objs)


# ------------------------------------------------- AppendEntries patch


class FakeTransport(Transport):
    """Records sends; messages are injected with _onMessageReceived."""

    created = []

    def __init__(self, syncObj, selfNode, otherNodes):
        super().__init__(syncObj, selfNode, otherNodes)
        self.sent = []
        FakeTransport.created.append(self)

    def send(self, node, message):
        self.sent.append((node, message))
        return True


class PatchedFakeTransport(RaftConformantTransportMixin, FakeTransport):
    pass


class Follower(SyncObj):
    def __init__(self, conf, transport_class):
        super().__init__("127.0.0.1:2", ["127.0.0.1:1"], conf, transportClass=transport_class)


NOOP = b"\x01"  # _COMMAND_TYPE.NO_OP: applying it changes nothing


def make_follower(tmp_path, transport_class):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False)
    journal = LmdbJournal(tmp_path / "follower")
    follower = Follower(attach_journal(conf, journal), transport_class)
    transport = FakeTransport.created.pop()
    return follower, journal, next(iter(follower.otherNodes)), transport


def append(term, prev, prev_term, entries, commit):
    return {"type": "append_entries", "term": term, "commit_index": commit,
            "prevLogIdx": prev, "prevLogTerm": prev_term, "entries": entries}


@pytest.fixture
def critical_records():
    records = []

    class Grab(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.CRITICAL:
                records.append(record.getMessage())

    handler = Grab()
    logger = logging.getLogger("pysyncobj.syncobj")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize("patched", [False, True])
def test_resent_entries_truncate_applied_log_only_without_patch(tmp_path, critical_records, patched):
    transport_class = PatchedFakeTransport if patched else FakeTransport
    follower, journal, leader, transport = make_follower(tmp_path, transport_class)
    try:
        entries = [(NOOP, i, 1) for i in range(2, 12)]
        transport._onMessageReceived(leader, append(1, 1, 0, entries, commit=11))
        follower.doTick()
        assert follower.raftLastApplied == 11 and len(journal) == 11
        before = list(journal[:])

        # The leader's nextIndex fell back (stale success reply): it resends 6..11.
        transport.sent.clear()
        transport._onMessageReceived(leader, append(1, 5, 1, entries[4:], commit=11))
        # ...and heartbeats from the old nextIndex.
        transport._onMessageReceived(leader, append(1, 5, 1, [], commit=11))
        replies = [m for _, m in transport.sent if m["type"] == "next_node_idx"]
        if patched:
            assert critical_records == []
            assert list(journal[:]) == before
            assert [(r["success"], r["next_node_idx"]) for r in replies] == [(True, 12), (True, 12)]
        else:
            assert any("truncating already-applied log entries from index 6" in m for m in critical_records)
            assert journal.last_index == 5  # the heartbeat cut applied, committed entries
            assert follower.raftLastApplied == 11
    finally:
        follower.destroy()


def test_patch_truncates_from_first_real_conflict_only(tmp_path, critical_records):
    follower, journal, leader, transport = make_follower(tmp_path, PatchedFakeTransport)
    try:
        # Term-1 entries 2..11, of which only 2..6 are committed.
        transport._onMessageReceived(leader, append(1, 1, 0, [(NOOP, i, 1) for i in range(2, 12)], commit=6))
        follower.doTick()
        assert follower.raftLastApplied == 6
        # New leader (term 2) agrees up to 8, then has different entries 9..10.
        new = [(NOOP, 7, 1), (NOOP, 8, 1), (b"\x01new", 9, 2), (b"\x01new", 10, 2)]
        transport._onMessageReceived(leader, append(2, 6, 1, new, commit=6))
        assert [e[1:] for e in journal[:]][-5:] == [(6, 1), (7, 1), (8, 1), (9, 2), (10, 2)]
        assert journal[-1][0] == b"\x01new" and len(journal) == 10
        assert critical_records == []
    finally:
        follower.destroy()


def test_plan_keeps_unverified_older_term_tail_and_caps_reply():
    log = MemoryJournal()
    for i in range(1, 12):
        log.add(NOOP, i, 1)
    # Term-2 leader re-sends 4..6 (all present); we also hold 7..11 from term 1.
    msg = append(2, 3, 1, [(NOOP, 4, 1), (NOOP, 5, 1), (NOOP, 6, 1)], commit=11)
    out, cap = plan_append_entries(log, 2, msg)
    assert out["prevLogIdx"] == 11 and out["entries"] == []  # nothing truncated
    assert out["commit_index"] == 6 and cap == 7  # but vouch only for what the leader sent
    # Same situation inside the leader's own term: our whole log is the leader's prefix.
    out, cap = plan_append_entries(log, 1, append(1, 3, 1, [(NOOP, 4, 1)], commit=11))
    assert out["prevLogIdx"] == 11 and cap is None and out["commit_index"] == 11
    # Untouched: stale term, prev missing, prev mismatch, plain append.
    for m in [append(0, 3, 1, [], 1), append(1, 20, 1, [], 1), append(1, 3, 9, [], 1), append(1, 11, 1, [], 1)]:
        assert plan_append_entries(log, 1, m) == (m, None)


class TwoNode(SyncObj):
    def __init__(self, conf, transport_class):
        super().__init__("127.0.0.1:2", ["127.0.0.1:1"], conf, transportClass=transport_class)

    @replicated
    def touch(self):
        return None


def make_leader(tmp_path, transport_class):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, appendEntriesPeriod=0.01,
                       raftMinTimeout=0.05, raftMaxTimeout=0.06, connectionTimeout=1.0)
    obj = TwoNode(attach_journal(conf, LmdbJournal(tmp_path / "leader")), transport_class)
    transport = FakeTransport.created.pop()
    peer = next(iter(obj.otherNodes))
    transport._onNodeConnected(peer)
    wait_for(lambda: (obj.doTick(), transport.sent)[1], timeout=5, what="vote request")
    transport._onMessageReceived(peer, {"type": "response_vote", "term": obj.raftCurrentTerm})
    assert obj._isLeader()
    return obj, transport, peer


def next_index(obj, peer):
    return obj.getStatus()["next_node_idx_server_" + peer.id]


@pytest.mark.parametrize("patched", [False, True])
def test_stale_success_reply_moves_leader_next_index_back_only_without_patch(tmp_path, patched):
    leader, transport, peer = make_leader(tmp_path, PatchedFakeTransport if patched else FakeTransport)
    try:
        for _ in range(3):
            leader.touch()
        leader.doTick()  # appends 3 entries, sending each at once (unbatched)
        last = leader.raftCommitIndex, len(leader.conf.journalFile)
        sent = [m for _, m in transport.sent if m["type"] == "append_entries" and m.get("entries")]
        top = sent[-1]["entries"][-1][1]
        assert next_index(leader, peer) == top + 1
        # The follower's reply to an early message arrives while later ones are in flight.
        transport._onMessageReceived(peer, {"type": "next_node_idx", "next_node_idx": 3,
                                            "reset": False, "success": True})
        assert leader.getStatus()["match_idx_server_" + peer.id] == 2  # matchIndex still advances
        assert next_index(leader, peer) == (top + 1 if patched else 3)
        # A reset (the follower disagrees) always wins.
        transport._onMessageReceived(peer, {"type": "next_node_idx", "next_node_idx": 2,
                                            "reset": True, "success": False})
        assert next_index(leader, peer) == 2
        assert last == (leader.raftCommitIndex, len(leader.conf.journalFile))
    finally:
        leader.destroy()


def test_leader_tracking_forgets_in_flight_entries_on_disconnect(tmp_path):
    leader, transport, peer = make_leader(tmp_path, PatchedFakeTransport)
    try:
        leader.touch()
        leader.doTick()
        transport._onNodeDisconnected(peer)
        transport._onNodeConnected(peer)      # a new connection; the reply comes on it
        transport._onMessageReceived(peer, {"type": "next_node_idx", "next_node_idx": 2,
                                            "reset": False, "success": True})
        assert next_index(leader, peer) == 2  # nothing restored: in-flight data was lost
    finally:
        leader.destroy()


def test_patched_transport_requires_attached_journal():
    with pytest.raises(ValueError):
        Follower(SyncObjConf(autoTick=False), PatchedFakeTransport)


@pytest.mark.cluster
def test_burst_with_patch_never_truncates(tmp_path, critical_records):
    """3 in-process nodes, unbatched, a burst of calls submitted at a follower."""
    addrs = free_addresses(3)
    objs = start_cluster(tmp_path, addrs, transport=RaftConformantTCPTransport,
                         raftMinTimeout=1.0, raftMaxTimeout=2.0, connectionTimeout=3.0)
    deletes = []
    try:
        wait_for(lambda: leader_of(objs) is not None, what="a leader")
        for o in objs:
            j = o.conf.journalFile
            orig = j.deleteEntriesFrom
            # (first index deleted, the node's commit index then, its term then)
            j.deleteEntriesFrom = lambda n, _orig=orig, _o=o: (
                deletes.append((n, _o.raftCommitIndex, _o.raftCurrentTerm)), _orig(n))
        follower = next(o for o in objs if not o._isLeader())
        n = 3000
        done = threading.Event()
        results = []

        def cb(res, err):
            results.append(err)
            if len(results) == n:
                done.set()

        for i in range(n):
            follower.incr(1, callback=cb)
            if i % 100 == 0:
                time.sleep(0.001)
        assert done.wait(60), f"only {len(results)} of {n} callbacks"
        ok = results.count(0)
        wait_for(lambda: len({o.value for o in objs}) == 1 and objs[0].value >= ok, what="convergence")
        # Never a committed entry, elections or not: Raft only ever truncates a follower's
        # uncommitted tail that conflicts with a new leader's log.
        assert all(first > commit for first, commit, _ in deletes), deletes
        # Within one term the leader's resends are all identical entries: nothing at all is
        # deleted. A delete can only come from a new leader (term > 1) cutting an old tail.
        assert all(term > 1 for _, _, term in deletes), deletes
        if max(o.raftCurrentTerm for o in objs) == 1:  # no election happened mid-burst
            assert deletes == []
        assert critical_records == []
    finally:
        stop_cluster(objs)


# ------------------------------------------------- the on-disk layout is a durable schema


def _raw(path):
    """Every record of a closed journal's LMDB, read without LmdbJournal."""
    env = lmdb.open(str(path), max_dbs=4, readonly=True, subdir=True)
    try:
        out = {}
        for name in (b"raft.log", b"raft.meta"):
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                out[name] = dict(txn.cursor())
        return out
    finally:
        env.close()


def test_on_disk_layout_is_the_documented_one(tmp_path):
    # Existing data dirs hold exactly this (module docstring): a change here must be a
    # new FORMAT_VERSION with a migration, never a silent reinterpretation.
    with LmdbJournal(tmp_path / "j") as j:
        j.add(b"\x01noop", 1, 0)
        j.add(b"cmd", 2, 7)
        j.setCurrentTerm(7, "127.0.0.1:7101")
        j.setRaftCommitIndex(2)
    raw = _raw(tmp_path / "j")
    assert raw[b"raft.log"] == {(1).to_bytes(8, "big"): (0).to_bytes(8, "big") + b"\x01noop",
                                (2).to_bytes(8, "big"): (7).to_bytes(8, "big") + b"cmd"}
    assert raw[b"raft.meta"] == {b"format": (1).to_bytes(4, "big"),
                                 b"current_term": (7).to_bytes(8, "big"),
                                 b"voted_for": b"\x01127.0.0.1:7101",
                                 b"commit_index": (2).to_bytes(8, "big")}


def _write_raw(path, log: dict, meta: dict):
    env = lmdb.open(str(path), max_dbs=4, subdir=True)
    try:
        for name, records in ((b"raft.log", log), (b"raft.meta", meta)):
            db = env.open_db(name)
            with env.begin(write=True, db=db) as txn:
                for k, v in records.items():
                    txn.put(k, v)
    finally:
        env.close()


def test_a_data_dir_in_the_documented_layout_opens_with_its_state(tmp_path):
    u64 = lambda n: n.to_bytes(8, "big")  # noqa: E731
    _write_raw(tmp_path / "j", {u64(5): u64(2) + b"five", u64(6): u64(3) + b"six"},
               {b"format": (1).to_bytes(4, "big"), b"current_term": u64(3), b"voted_for": b"\x00",
                b"commit_index": u64(5)})
    with LmdbJournal(tmp_path / "j") as j:
        assert list(j) == [(b"five", 5, 2), (b"six", 6, 3)]
        assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (3, None, 5)
    # A custom (non-str) node id is stored tagged \x02 + pickle, and read back.
    with LmdbJournal(tmp_path / "j") as j:
        j.setCurrentTerm(4, ("host", 1))
    assert _raw(tmp_path / "j")[b"raft.meta"][b"voted_for"] == b"\x02" + pickle.dumps(("host", 1), protocol=4)
    with LmdbJournal(tmp_path / "j") as j:
        assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (4, ("host", 1))


@pytest.mark.parametrize("meta, error", [
    ({b"format": (2).to_bytes(4, "big")}, "unsupported journal format 2"),
    ({b"voted_for": b"\x07?"}, "corrupt voted_for"),
])
def test_an_unknown_format_or_a_corrupt_vote_is_refused(tmp_path, meta, error):
    _write_raw(tmp_path / "j", {}, meta)
    with pytest.raises(JournalError, match=error):
        LmdbJournal(tmp_path / "j")


def test_u64_fields_take_exactly_0_to_2_64_minus_1(tmp_path):
    with LmdbJournal(tmp_path / "j", sync_policy="relaxed") as j:
        for idx, term, what in [(2**64, 1, "idx"), (-1, 1, "idx"), (5, 2**64, "term")]:
            with pytest.raises(JournalError, match=rf"{what} must be an int in \[0, 2\*\*64\)"):
                j.add(b"y", idx, term)
        assert len(j) == 0
        with pytest.raises(JournalError, match="term must be an int"):
            j.setCurrentTerm(2**64, None)
        j.add(b"x", 2**64 - 1, 2**64 - 1)
        assert j[-1] == (b"x", 2**64 - 1, 2**64 - 1)


def test_the_default_map_holds_far_more_than_lmdbs_own_default(tmp_path):
    # LMDB's own default map is 10 MiB; the journal's default is 1 GiB of address space.
    with LmdbJournal(tmp_path / "j", sync_policy="relaxed") as j:
        big = b"x" * (1 << 20)
        for i in range(1, 25):                # 24 MiB of entries
            j.add(big, i, 1)
        assert len(j) == 24


def test_empty_slices_of_a_slice_are_empty(tmp_path):
    with filled(tmp_path / "j", 10) as j:
        view = j[2:8]
        assert view[3:3] == [] and view[5:1] == [] and view[6:] == []
        assert view[4:6] == [(b"cmd7", 7, 1), (b"cmd8", 8, 1)]


@pytest.mark.parametrize("bad", [True, 1.5, "3", None])
def test_an_index_or_term_that_is_not_an_int_is_a_journal_error(tmp_path, bad):
    with LmdbJournal(tmp_path / "j", sync_policy="relaxed") as j:
        with pytest.raises(JournalError, match="must be an int"):
            j.add(b"x", bad, 1)
        with pytest.raises(JournalError, match="must be an int"):
            j.add(b"x", 1, bad)
        assert len(j) == 0


def test_relaxed_syncs_about_once_a_second_by_default(tmp_path, monkeypatch):
    # Module docstring: a machine crash can lose about the last second of entries.
    now = [1000.0]
    monkeypatch.setattr(journal_mod.time, "monotonic", lambda: now[0])
    with LmdbJournal(tmp_path / "j", sync_policy="relaxed") as j:
        fs = CountingFsync(j)
        j.add(b"x", 1, 1)
        now[0] += 0.999
        j.onOneSecondTimer()
        assert fs.count == 0
        now[0] += 0.001
        j.onOneSecondTimer()
        assert fs.count == 1


def test_durable_on_a_map_async_writemap_env_fsyncs_every_write(tmp_path):
    # LMDB's sync flag alone does not make commits durable with writemap + map_async.
    env = lmdb.open(str(tmp_path / "env"), max_dbs=8, writemap=True, map_async=True)
    j = LmdbJournal(env)
    fs = CountingFsync(j)
    for i in range(1, 4):
        j.add(b"x", i, 1)
    assert fs.count == 3
    j.close()
    env.close()


# ------------------------------------------ edges found by surviving mutants (docs/mutation.md)

def test_a_full_map_is_reported_to_on_full_before_it_is_raised(tmp_path):
    j = LmdbJournal(tmp_path / "j", map_size=256 * 1024)
    seen = []
    j.on_full = lambda err: seen.append((err, len(j)))
    with pytest.raises(JournalFullError) as info:
        for idx in range(1, 10_000):
            j.add(b"p" * 2000, idx, 1)
    assert seen == [(info.value, len(j))] and "map is full" in str(info.value)
    j.close()


def test_a_log_with_a_hole_is_refused_on_open(tmp_path):
    u64 = lambda n: n.to_bytes(8, "big")  # noqa: E731
    _write_raw(tmp_path / "j", {u64(1): u64(1) + b"a", u64(2): u64(1) + b"b", u64(4): u64(1) + b"d"},
               {b"format": (1).to_bytes(4, "big")})
    with pytest.raises(JournalError, match="not contiguous"):
        LmdbJournal(tmp_path / "j")


def test_a_read_only_environment_is_refused(tmp_path):
    LmdbJournal(tmp_path / "j").close()
    env = lmdb.open(str(tmp_path / "j"), max_dbs=4, readonly=True, subdir=True)
    try:
        with pytest.raises(JournalError, match="read-only"):
            LmdbJournal(env)
        assert env.stat()["psize"] > 0               # a shared env is never closed by a refusal
    finally:
        env.close()


def test_reprs_name_the_range_and_state(tmp_path):
    # What log lines and debuggers show: the Raft indices a slice covers, a journal's policy and size.
    j = filled(tmp_path / "j", 5)
    assert repr(j[:0]) == "JournalSlice([])"
    assert repr(j[1:4]) == "JournalSlice(idx 2..4)"
    assert repr(j) == "<LmdbJournal durable 5 entries first=1 last=5>" and j.closed is False
    j.close()
    assert repr(j) == "<LmdbJournal durable closed first=1 last=5>" and j.closed is True


@pytest.mark.parametrize("writemap, map_async", [(True, False), (False, True)])
def test_durable_on_an_env_that_syncs_every_commit_adds_no_fsync(tmp_path, writemap, map_async):
    # Only writemap AND map_async together make LMDB's commits asynchronous; either alone
    # (with sync on) still syncs each commit, so the journal must not fsync again.
    env = lmdb.open(str(tmp_path / "env"), max_dbs=8, writemap=writemap, map_async=map_async)
    j = LmdbJournal(env)
    fs = CountingFsync(j)
    for i in range(1, 4):
        j.add(b"x", i, 1)
    j.flush()
    assert fs.count == 0
    j.close()
    env.close()


def test_a_reopened_relaxed_journal_has_nothing_to_fsync_until_it_writes(tmp_path):
    filled(tmp_path / "j", 3, sync_policy="relaxed").close()
    j = LmdbJournal(tmp_path / "j", sync_policy="relaxed", sync_interval=0.0)
    fs = CountingFsync(j)
    j.onOneSecondTimer()
    j.flush()
    assert fs.count == 0
    j.add(b"x", 4, 1)
    j.flush()
    assert fs.count == 1
    j.close()


def test_a_commit_index_of_zero_is_persisted_as_zero(tmp_path):
    j = filled(tmp_path / "j", 3)
    j.setRaftCommitIndex(0)
    j.flush()
    fs = CountingFsync(j)
    j.flush()                                     # written: nothing left to write
    assert fs.count == 0
    j.close()
    with LmdbJournal(tmp_path / "j") as j:
        assert j.getRaftCommitIndex() == 0


def test_reads_across_deferred_entries_are_every_slice_of_the_list(tmp_path, monkeypatch):
    """With entries 1-4 written and 5-8 deferred (pending, not on disk yet), every read —
    an entry, a slice, a slice of a slice, a chunked iteration — is the list's, wherever it
    starts and stops relative to the first pending entry."""
    monkeypatch.setattr(journal_mod, "_READ_CHUNK", 3)
    j = filled(tmp_path / "j", 4, map_size=1 << 24)
    j.defer_appends(True)
    for i in range(5, 9):
        j.add(b"cmd%d" % i, i, 2)
    model = [(b"cmd%d" % i, i, 1 if i <= 4 else 2) for i in range(1, 9)]
    assert j.pending == 4 and len(j) == 8
    for i in range(-8, 8):
        assert j[i] == model[i], i
    for a in range(0, 9):
        for b in range(0, 10):
            view = j[a:b]
            assert list(view) == model[a:b], (a, b)
            assert len(view) == len(model[a:b])
            for c in range(0, len(model[a:b]) + 1):
                for d in range(c, len(model[a:b]) + 2):
                    assert view[c:d] == model[a:b][c:d], (a, b, c, d)
            for k in range(len(model[a:b])):
                assert view[k] == model[a:b][k], (a, b, k)
    j.sync_appends()
    assert j.pending == 0 and list(j[:]) == model
    j.close()


def test_a_non_contiguous_append_names_both_indices(tmp_path):
    j = filled(tmp_path / "j", 3, term=7)
    with pytest.raises(JournalError, match=r"^non-contiguous append: idx 5 after last idx 3$"):
        j.add(b"gap", 5, 7)
    j.close()


def test_appends_are_deferred_exactly_while_twice_the_pending_bytes_fit_above_the_margin(tmp_path, monkeypatch):
    """The room rule: defer while free > _DEFER_MARGIN + 2 x (pending bytes + this entry),
    free = map size - (last page + 1) x page size. With the margin set 600 bytes below
    what is free, two 100-byte entries (92 + an 8-byte term) defer and the third, landing
    exactly on the limit, writes all three at once."""
    j = LmdbJournal(tmp_path / "j", map_size=1 << 24)
    j.add(b"a", 1, 1)
    info, psize = j.env.info(), j.env.stat()["psize"]
    free = info["map_size"] - (info["last_pgno"] + 1) * psize
    monkeypatch.setattr(journal_mod, "_DEFER_MARGIN", free - 600)
    j.defer_appends(True)
    seen = []                                   # (pending, entries on disk) after each add
    for i in (2, 3, 4):
        j.add(b"x" * 92, i, 1)
        with j.env.begin() as txn:
            seen.append((j.pending, txn.stat(j._log_db)["entries"]))
    assert seen == [(1, 1), (2, 1), (0, 4)]
    assert list(j[:]) == [(b"a", 1, 1)] + [(b"x" * 92, i, 1) for i in (2, 3, 4)]
    j.close()


def _stored_commit(j):
    with j.env.begin() as txn:
        raw = txn.get(journal_mod._META_COMMIT, db=j._meta_db)
    return None if raw is None else journal_mod._U64.unpack(raw)[0]


def test_writing_deferred_entries_persists_the_commit_index_up_to_their_last_index(tmp_path):
    """sync_appends clamps the commit index to the last entry it writes (an index, not a term)."""
    j = LmdbJournal(tmp_path / "j", map_size=1 << 24)
    j.defer_appends(True)
    for i in range(1, 6):
        j.add(b"c", i, 1)                       # term 1 < every index but the first
    j.setRaftCommitIndex(4)
    assert j.pending == 5
    j.sync_appends()
    assert (j.pending, _stored_commit(j)) == (0, 4)
    j.close()


def test_after_deferred_entries_are_written_the_room_rule_starts_from_nothing_pending(tmp_path, monkeypatch):
    j = LmdbJournal(tmp_path / "j", map_size=1 << 24)
    j.defer_appends(True)
    j.add(b"a", 1, 1)
    j.sync_appends()
    info, psize = j.env.info(), j.env.stat()["psize"]
    free = info["map_size"] - (info["last_pgno"] + 1) * psize
    # 601 below: three 100-byte entries fit (2 x 300 < 601), one byte more counted would not
    monkeypatch.setattr(journal_mod, "_DEFER_MARGIN", free - 601)
    for i in (2, 3, 4):
        j.add(b"x" * 92, i, 1)
    assert j.pending == 3
    j.close()


def test_every_clear_makes_the_slices_taken_before_it_stale(tmp_path):
    j = filled(tmp_path / "j", 3)
    j.clear()
    j.add(b"n", 10, 2)
    view = j[:]                                 # taken between two clears
    j.clear()
    j.add(b"m", 10, 3)                          # the same index again, another entry
    with pytest.raises(StaleSliceError):
        list(view)
    assert list(j[:]) == [(b"m", 10, 3)]
    j.close()


@pytest.mark.parametrize("chunk", [1, 2, 3, 50_000])
def test_deletions_in_any_chunk_size_are_the_lists_and_survive_a_reopen(tmp_path, monkeypatch, chunk):
    """Every deleteEntriesFrom / deleteEntriesTo argument on a log starting at index 5
    (terms distinct from indices), in chunks of 1, 2, 3 and the default: the same entries as
    PySyncObj's MemoryJournal, the same first/last, a contiguous append after it, the same
    after a reopen, and the persisted commit index clamped to the log's new end."""
    monkeypatch.setattr(journal_mod, "_DELETE_CHUNK", chunk)
    for op in ("deleteEntriesFrom", "deleteEntriesTo"):
        for arg in range(-11, 12):
            path = tmp_path / f"{op}{arg}"
            j = LmdbJournal(path, map_size=1 << 24)
            m = MemoryJournal()
            for i in range(5, 14):
                j.add(b"c%d" % i, i, 100 + i)
                m.add(b"c%d" % i, i, 100 + i)
            j.setRaftCommitIndex(13)
            getattr(j, op)(arg)
            getattr(m, op)(arg)
            case = (op, arg)
            assert list(j[:]) == m[:] and len(j) == len(m), case
            if len(m):
                assert (j[0], j[-1], j.first_index, j.last_index) == (m[0], m[-1], m[0][1], m[-1][1]), case
                # a deletion writes the commit index clamped to the new end (13 is past it)
                assert _stored_commit(j) == (m[-1][1] if len(m) < 9 else None), case
                nxt = m[-1][1] + 1
            else:
                assert (j.first_index, j.last_index) == (None, None), case
                nxt = 99
            j.add(b"n", nxt, 200)
            m.add(b"n", nxt, 200)
            assert list(j[:]) == m[:] and j[-1] == m[-1] and j[0] == m[0], case
            j.close()
            j = LmdbJournal(path, map_size=1 << 24)
            assert list(j[:]) == m[:] and (j.first_index, j.last_index) == (m[0][1], m[-1][1]), case
            j.close()


@pytest.mark.parametrize("op, arg, hole", [("deleteEntriesFrom", 2, 6), ("deleteEntriesFrom", 3, 3),
                                           ("deleteEntriesTo", 6, 4), ("deleteEntriesTo", 3, 2)])
def test_a_deletion_that_meets_a_vanished_entry_is_a_journal_error(tmp_path, monkeypatch, op, arg, hole):
    """Entries 1-8; entry `hole` removed behind the journal's back (a damaged store): a
    deletion that must remove it, or must read it as the new last entry, refuses."""
    monkeypatch.setattr(journal_mod, "_DELETE_CHUNK", 2)
    j = filled(tmp_path / "j", 8)
    with j.env.begin(write=True) as txn:
        assert txn.delete(journal_mod._U64.pack(hole), db=j._log_db)
    with pytest.raises(JournalError, match=rf"^journal entry {hole} is missing$"):
        getattr(j, op)(arg)
    j.close()


@pytest.mark.parametrize("chunk, drop, hole", [(2, 5, 6), (2, 4, 5), (50_000, 5, 6), (50_000, 1, 2),
                                              (2, 5, 3), (2, 5, 4), (50_000, 8, 8), (50_000, 9, 1)])
def test_a_compaction_over_a_vanished_entry_is_refused_and_deletes_nothing(
        tmp_path, monkeypatch, chunk, drop, hole):
    """Entries 1-8; one removed behind the journal's back (a damaged store): the entry that
    should become the new first one (hole = drop + 1), one read as a chunk's next first
    entry (3 with chunks of 2), or one to delete. deleteEntriesTo refuses before deleting
    anything, rather than reading no new first entry and emptying the journal."""
    monkeypatch.setattr(journal_mod, "_DELETE_CHUNK", chunk)
    j = filled(tmp_path / "j", 8)
    with j.env.begin(write=True) as txn:
        assert txn.delete(journal_mod._U64.pack(hole), db=j._log_db)
    with pytest.raises(JournalError, match=rf"^journal entry {hole} is missing$"):
        j.deleteEntriesTo(drop)
    with j.env.begin(db=j._log_db) as txn:
        stored = [journal_mod._U64.unpack(k)[0] for k, _ in txn.cursor()]
    assert stored == [i for i in range(1, 9) if i != hole]
    assert (len(j), j.first_index, j.last_index) == (8, 1, 8)
    assert j[-1] == (b"cmd8", 8, 1) and (hole == 1 or j[0] == (b"cmd1", 1, 1))
    j.close()


def test_a_chunked_deletion_fsyncs_once_durable_and_never_relaxed(tmp_path, monkeypatch):
    """Deletions are written unsynced chunk by chunk; a durable journal then syncs once."""
    monkeypatch.setattr(journal_mod, "_DELETE_CHUNK", 2)
    env = lmdb.open(str(tmp_path / "env"), max_dbs=8, sync=False)
    j = LmdbJournal(env)
    for i in range(1, 11):
        j.add(b"x", i, 1)
    fs = CountingFsync(j)
    j.deleteEntriesFrom(3)                       # 7 entries: 4 chunks
    assert fs.count == 1
    j.deleteEntriesTo(2)                         # 2 entries: 1 chunk
    assert fs.count == 2 and list(j[:]) == [(b"x", 3, 1)]
    j.close()
    env.close()
    r = filled(tmp_path / "r", 10, sync_policy="relaxed")
    fs = CountingFsync(r)
    r.setRaftCommitIndex(10)
    r.deleteEntriesFrom(3)
    assert _stored_commit(r) == 3                # clamped to the new end by the last chunk itself
    r.deleteEntriesTo(2)
    r.deleteEntriesFrom(0)                       # emptied: nothing to clamp the commit index to
    assert (_stored_commit(r), len(r)) == (10, 0)
    assert fs.count == 0
    r.flush()
    assert fs.count == 1
    r.close()


def test_every_compaction_makes_the_slices_taken_before_it_stale(tmp_path):
    """Even when the slice's own entries survive: positions shifted under it."""
    j = filled(tmp_path / "j", 10)
    j.deleteEntriesTo(2)
    view = j[5:8]                               # idx 8-10, taken between two compactions
    assert [e[1] for e in view] == [8, 9, 10]
    j.deleteEntriesTo(1)
    with pytest.raises(StaleSliceError):
        list(view)
    j.close()


def test_relaxed_commit_index_writes_follow_the_timer_flush_and_compaction_rules(tmp_path):
    """Relaxed: the timer writes a changed commit index unsynced, flush writes and fsyncs
    it; a compaction keeping entries clamps it to the log's end, one emptying the log does not."""
    j = filled(tmp_path / "j", 10, sync_policy="relaxed", sync_interval=3600)
    fs = CountingFsync(j)
    j.flush()
    fs.count = 0
    j.setRaftCommitIndex(7)
    j.onOneSecondTimer()                          # written, not synced (the interval is an hour)
    assert (_stored_commit(j), fs.count) == (7, 0)
    j.setRaftCommitIndex(8)
    j.flush()
    assert (_stored_commit(j), fs.count) == (8, 1)
    j.add(b"more", 11, 1)
    j.flush()                                     # nothing dirty: just the fsync
    assert fs.count == 2
    j.add(b"more", 12, 1)
    j.onOneSecondTimer()                          # the interval is measured from that last fsync
    assert fs.count == 2
    j.setRaftCommitIndex(20)
    j.deleteEntriesTo(11)                         # keeps idx 12 only: the last chunk ends at the last entry
    assert (_stored_commit(j), len(j)) == (12, 1)
    j.deleteEntriesTo(1)                          # empties the log
    assert (_stored_commit(j), len(j)) == (20, 0)
    j.close()
