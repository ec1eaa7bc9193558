"""The snapshot write of issue 15: streamed parts, chunked and fdatasynced (raft/snapshot_writer.py),
the kept copy put from the finished file, and the kernel encode's bare-payload fast path --
all byte for byte what the one-piece path wrote, and a failed write changes nothing."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from minoots.kernel import State, TimerSpec
from minoots.kernel import snapshot as ks
from minoots.raft import snapshot_writer, snapshots
from minoots.raft.machine import SNAPSHOT_NEW_SUFFIX, TimerMachine
from minoots.raft.pysyncobj_compat import SERIALIZER_STATE

T0 = 1_764_000_000_000


def _state(kind: str) -> State:
    s = State()
    specs = []
    for i in range(300):
        if kind == "bare":
            specs.append(TimerSpec(id=f"t{i}", fire_at=T0 + 1000 + i, payload=b"p%d" % i))
        elif kind == "mixed":
            specs.append(TimerSpec(id=f"t{i}", fire_at=T0 + 1000 + i, payload=b"p" * (i % 3),
                                   name="n" if i % 5 == 0 else "", labels={"k": str(i)} if i % 7 == 0 else None))
        else:
            specs.append(TimerSpec(id=f"t{i}", fire_at=T0 + 1000 + i))
    s.create(T0, specs)
    s.tick(T0 + 1100)                 # some fired: every state column is exercised
    return s


def _general_bytes(state: State) -> bytes:
    """What the encoder wrote before the fast path: one Extra object per timer."""
    fast = ks._extra_blocks
    ks._extra_blocks = lambda table, ords: ks._extra_blocks_general([table.extra[o] for o in ords])
    try:
        return state.to_bytes()
    finally:
        ks._extra_blocks = fast


@pytest.mark.parametrize("kind", ["bare", "mixed", "none"])
def test_the_encode_fast_path_writes_the_same_bytes(kind):
    s = _state(kind)
    data = s.to_bytes()
    assert data == _general_bytes(s)
    cap = s.capture()
    assert b"".join(cap.to_parts()) == cap.to_bytes() == data
    assert State.from_bytes(data).to_bytes() == data
    back = State.from_bytes(data)
    assert back.get("default", "t0").payload == (b"p0" if kind == "bare" else b"")


@pytest.mark.parametrize("chunk", [7, 4096, snapshot_writer.CHUNK])
def test_a_streamed_container_is_the_one_piece_container(tmp_path, chunk):
    s = _state("mixed")
    kernel = s.to_bytes()
    meta = snapshots.SnapshotMeta(last_index=42, last_term=3, timers=300, cluster_name="c")
    path = tmp_path / "snap.bin"
    with open(path, "wb") as fh:
        meta2, n = snapshot_writer.write_file(fh, meta, s.capture().to_parts(), chunk=chunk, pause=0)
    data = path.read_bytes()
    assert n == len(data) and meta2.kernel_size == len(kernel)
    assert data == snapshots.encode(meta2, kernel)
    got_meta, got_kernel = snapshots.decode(data)
    assert got_meta == meta2 and State.from_bytes(got_kernel).to_bytes() == kernel
    store = snapshots.SnapshotStore.open(tmp_path, keep=2)
    try:
        info = store.put_file(path)
        assert store.latest() == data and info.last_index == 42 and info.size == len(data)
    finally:
        store.close()


def _machine(tmp_path, store):
    """The parts of a TimerMachine that `_write_snapshot` uses (the real method runs on it)."""
    said = []
    m = SimpleNamespace(_snapshot_store=store, _snap_error=None, _snap_lock=threading.Lock(),
                        _snap_state=SERIALIZER_STATE.SERIALIZING, _last_snapshot=None,
                        snapshot_written_listeners=[lambda *a: said.append(a)])
    return m, said


def test_the_machine_writes_file_and_kept_copy_and_a_failed_write_changes_neither(tmp_path):
    store = snapshots.SnapshotStore.open(tmp_path, keep=3)
    final = tmp_path / "snapshot.bin"
    new = tmp_path / ("snapshot.bin" + SNAPSHOT_NEW_SUFFIX)
    try:
        m, said = _machine(tmp_path, store)
        s = _state("bare")
        meta = snapshots.SnapshotMeta(last_index=10, last_term=1, timers=300)
        TimerMachine._write_snapshot(m, open(new, "wb"), meta, s.capture())
        assert m._snap_state == SERIALIZER_STATE.SUCCESS and said[-1][0] is True
        new.replace(final)                     # what _check_serialize does in the tick thread
        good = final.read_bytes()
        assert store.latest() == good and said[-1][1] == len(good)
        assert State.from_bytes(snapshots.decode(good)[1]).to_bytes() == s.to_bytes()

        class Torn:                            # the disk fails half way through the write
            def __init__(self, f, budget):
                self.f, self.budget, self.name = f, budget, f.name

            def write(self, b):
                if len(b) > self.budget:
                    self.f.write(bytes(b)[: self.budget])
                    raise OSError("disk gone")
                self.budget -= len(b)
                return self.f.write(b)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()
        m, said = _machine(tmp_path, store)
        torn = Torn(open(new, "wb"), len(good) // 2)
        TimerMachine._write_snapshot(m, torn, snapshots.SnapshotMeta(last_index=20, last_term=1), s.capture())
        assert new.stat().st_size == len(good) // 2             # it did write half
        assert m._snap_state == SERIALIZER_STATE.FAILED and said[-1][0] is False and "disk gone" in m._snap_error
        assert final.read_bytes() == good                       # the old snapshot is untouched
        assert [i.last_index for i in store.list()] == [10]     # and so is the kept copy
        with pytest.raises(snapshots.SnapshotFormatError):
            snapshots.decode(new.read_bytes())                  # what was written is never taken for one
    finally:
        store.close()


@pytest.mark.bench
def test_snapshot_stall_bench_runs_both_writers_and_reads_back():
    from minoots.bench import snapshot_stall
    rep = snapshot_stall.run(timers=3000, payload=16, repeat=1)
    assert [r["mode"] for r in rep["results"]] == ["legacy", "chunked"]
    assert rep["results"][0]["bytes"] == rep["results"][1]["bytes"] > 3000 * 16
    for r in rep["results"]:
        assert r["idle_append_ms"]["n"] > 0 and set(r["phases"]) == {"encode", "file", "store"}
    assert "worst stall" in snapshot_stall.format_table(rep)


@pytest.mark.parametrize("kind", ["bare", "mixed", "none"])
def test_encoding_in_slices_writes_the_same_bytes(monkeypatch, kind):
    s = _state(kind)
    whole = s.to_bytes()                           # 300 timers: one slice
    monkeypatch.setattr(ks, "SLICE", 7)            # 43 slices, the last one short
    cap = s.capture()
    assert s.to_bytes() == whole == b"".join(cap.to_parts()) == _general_bytes(s)
    assert len(cap.to_parts()) > 40                # the ids alone come in 43 pieces
