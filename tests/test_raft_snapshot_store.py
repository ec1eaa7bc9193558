"""The snapshot store: its own LMDB environment, adoption of snapshots an older build kept
in the main one, and a snapshot write that never holds up a journal append."""
from __future__ import annotations

import struct
import threading

import lmdb
import pytest

from minoots.kernel import State
from minoots.raft import snapshots
from minoots.raft.journal import LmdbJournal
from minoots.raft.store import open_data_dir


def _snapshot(last_index: int) -> bytes:
    kernel = State().to_bytes()
    return snapshots.encode(snapshots.SnapshotMeta(last_index=last_index, last_term=1, kernel_size=len(kernel)),
                            kernel)


def test_store_lives_beside_the_log_and_keeps_the_last_n(tmp_path):
    env = open_data_dir(tmp_path / "n1", cluster="c", node_id="n1", init=True)
    store = snapshots.SnapshotStore.open(tmp_path / "n1", keep=2, legacy_env=env)
    try:
        for i in (5, 9, 12):
            store.put(_snapshot(i))
        assert [s.last_index for s in store.list()] == [9, 12]
        assert snapshots.decode(store.latest())[0].last_index == 12
        assert (tmp_path / "n1" / snapshots.SNAPSHOTS_SUBDIR / "data.mdb").is_file()
    finally:
        store.close()
        env.close()


def test_snapshots_an_older_build_kept_in_the_main_environment_are_adopted(tmp_path):
    env = open_data_dir(tmp_path / "n1", cluster="c", node_id="n1", init=True)
    snapshots.SnapshotStore(env).put(_snapshot(7))          # where they used to live
    store = snapshots.SnapshotStore.open(tmp_path / "n1", legacy_env=env)
    try:
        assert [s.last_index for s in store.list()] == [7]
        assert store.get(7) == _snapshot(7)
        with env.begin() as txn:                             # and no longer in the main environment
            assert txn.get(b"snapshots") is None
    finally:
        store.close()
        env.close()
    env = open_data_dir(tmp_path / "n1", cluster="c", node_id="n1")
    store = snapshots.SnapshotStore.open(tmp_path / "n1", legacy_env=env)   # a second start: nothing to adopt
    try:
        assert [s.last_index for s in store.list()] == [7]
    finally:
        store.close()
        env.close()


def test_a_snapshot_write_in_progress_does_not_hold_up_the_journal(tmp_path):
    env = open_data_dir(tmp_path / "n1", cluster="c", node_id="n1", init=True)
    journal = LmdbJournal(env)
    store = snapshots.SnapshotStore.open(tmp_path / "n1", legacy_env=env)
    done = threading.Event()

    def append() -> None:
        journal.add(b"cmd", 1, 1)
        done.set()

    try:
        with store._env.begin(write=True) as txn:            # a snapshot write that has not committed yet
            txn.put(b"k", b"v" * 1024, db=store._db)
            t = threading.Thread(target=append, daemon=True)
            t.start()
            # In one environment LMDB would make the append wait for this transaction: forever here.
            assert done.wait(30), "journal append blocked by a snapshot write"
        t.join(5)
        assert len(journal) == 1
    finally:
        store.close()
        env.close()


# ---------------------------------------------------------------- large snapshots kept in pieces (issue 15)

def _big(last_index: int, n: int = 2000) -> bytes:
    from minoots.kernel import TimerSpec
    s = State()
    s.create(1_764_000_000_000, [TimerSpec(id=f"t{i}", fire_at=1_764_000_100_000 + i, payload=b"%06d" % i)
                                 for i in range(n)])
    kernel = s.to_bytes()
    return snapshots.encode(snapshots.SnapshotMeta(last_index=last_index, last_term=2, timers=n,
                                                   kernel_size=len(kernel)), kernel)


def _pieces(store) -> set:
    with store._env.begin(db=store._chunk_db) as txn:
        return {bytes(k[:8]) for k in txn.cursor().iternext(keys=True, values=False)}


def test_a_large_snapshot_is_kept_in_pieces_and_reads_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshots, "STORE_CHUNK", 1000)
    monkeypatch.setattr(snapshots, "STORE_PAUSE", 0)
    store = snapshots.SnapshotStore.open(tmp_path, keep=2)
    try:
        store.put(_snapshot(3))                               # small: one value, as before
        big = _big(7)
        info = store.put(big)
        assert len(big) > 10 * 1000 and info.size == len(big)
        with store._env.begin(db=store._db) as txn:           # the main entry is a small manifest
            assert len(txn.get(struct.pack(">Q", 7))) < 100
        assert store.get(7) == big == store.latest() and store.get(3) == _snapshot(3)
        for off, size in ((0, 10), (995, 10), (1000, 1000), (1234, 5678), (len(big) - 5, 100), (len(big), 4)):
            assert store.read(7, off, size) == big[off:off + size]
        assert [(i.last_index, i.size) for i in store.list()] == [(3, len(_snapshot(3))), (7, len(big))]
        assert store.info(7) == snapshots.describe(big) == store.info()
        store.put(_big(9, 1500))
        store.put(_big(11, 1200))                              # keep=2: 7 goes, and its pieces with it
        assert [i.last_index for i in store.list()] == [9, 11]
        assert _pieces(store) == {struct.pack(">Q", 9), struct.pack(">Q", 11)}
        assert store.get(7) is None and store.read(7, 0, 10) is None
    finally:
        store.close()


def test_pieces_of_an_interrupted_put_are_not_a_snapshot_and_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshots, "STORE_CHUNK", 1000)
    monkeypatch.setattr(snapshots, "STORE_PAUSE", 0)
    store = snapshots.SnapshotStore.open(tmp_path, keep=3)
    try:
        store.put(_big(5))
        real_put = store._env.begin
        calls = []

        def crash_after_three(*a, **kw):                      # the process dies after 3 pieces
            if kw.get("db") is store._chunk_db and kw.get("write"):
                calls.append(1)
                if len(calls) > 3:
                    raise KeyboardInterrupt("crash")
            return real_put(*a, **kw)
        store._env = type("E", (), {"begin": staticmethod(crash_after_three),
                                     "__getattr__": lambda self, n: getattr(real_put.__self__, n)})()
        with pytest.raises(KeyboardInterrupt):
            store.put(_big(8))
        store._env = real_put.__self__
        assert [i.last_index for i in store.list()] == [5] and store.get(8) is None
        assert struct.pack(">Q", 8) in _pieces(store)         # left behind, but not listed
        store.put(_snapshot(12))                               # the next put removes them
        assert _pieces(store) == {struct.pack(">Q", 5)}
        assert store.get(5) == _big(5)
    finally:
        store.close()
