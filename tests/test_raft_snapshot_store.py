"""The snapshot store: its own LMDB environment, adoption of snapshots an older build kept
in the main one, and a snapshot write that never holds up a journal append."""
from __future__ import annotations

import threading

import lmdb

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
