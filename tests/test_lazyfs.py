"""The power-loss test's filesystem (tests/lazyfs.py) itself: what a running process reads,
and what survives the cut. If these fail, test_power_loss.py proves nothing.

Marked `chaos`: each test mounts a FUSE filesystem (Debian's fuse3, installed by .ci/run).
"""
from __future__ import annotations

import mmap
import os

import lmdb
import pytest

from lazyfs import PAGE, LazyMount, missing_requirements

pytestmark = pytest.mark.chaos


@pytest.fixture
def disk(tmp_path):
    """A lazy mount over tmp_path/backing; unmounted (its process stopped) after the test."""
    why = missing_requirements()
    assert why is None, f"lazyfs cannot run here: {why}"
    m = LazyMount(tmp_path / "backing", tmp_path / "mnt", tmp_path / "fs.log").mount()
    yield m
    m.unmount()
    assert m.proc.poll() is not None


def cut(m: LazyMount) -> None:
    m.crash()
    m.mount()


def test_unsynced_bytes_are_read_back_until_the_cut_and_synced_ones_survive_it(disk):
    path = disk.mountpoint / "f"
    with open(path, "wb") as f:
        f.write(b"a" * (PAGE + 10))
        f.flush()
        os.fsync(f.fileno())
        f.seek(PAGE - 5)
        f.write(b"B" * 10)                   # across a page boundary, not synced
        f.seek(3 * PAGE)
        f.write(b"tail")                     # grows the file, not synced
        f.flush()
        assert path.stat().st_size == 3 * PAGE + 4
        with open(path, "rb") as r:
            data = r.read()
        assert data[PAGE - 6:PAGE + 6] == b"a" + b"B" * 10 + b"a"
        assert data[PAGE + 10:3 * PAGE] == bytes(2 * PAGE - 10) and data.endswith(b"tail")
        with open(path, "rb") as r, mmap.mmap(r.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[PAGE - 5:PAGE + 5] == b"B" * 10          # what LMDB's mmap'd reads see
    assert (disk.backing / "f").read_bytes() == b"a" * (PAGE + 10)   # the disk has the synced bytes only
    cut(disk)
    assert path.read_bytes() == b"a" * (PAGE + 10)


def test_a_write_through_an_o_dsync_handle_is_durable_and_close_is_no_sync(disk):
    fd = os.open(disk.mountpoint / "meta", os.O_WRONLY | os.O_CREAT | os.O_DSYNC, 0o600)
    os.pwrite(fd, b"meta", 0)
    os.close(fd)
    (disk.mountpoint / "plain").write_bytes(b"gone")
    cut(disk)
    assert (disk.mountpoint / "meta").read_bytes() == b"meta"
    assert (disk.mountpoint / "plain").read_bytes() == b""     # created (names are durable), bytes lost


def test_a_truncate_then_regrow_reads_zeros_and_reverts_at_the_cut(disk):
    path = disk.mountpoint / "t"
    with open(path, "wb") as f:
        f.write(b"x" * 2 * PAGE)
        f.flush()
        os.fsync(f.fileno())
        f.truncate(100)
        f.seek(2 * PAGE - 1)
        f.write(b"y")
        f.flush()
        with open(path, "rb") as r:
            assert r.read() == b"x" * 100 + bytes(2 * PAGE - 101) + b"y"
    cut(disk)
    assert path.read_bytes() == b"x" * 2 * PAGE


def test_lmdb_keeps_synced_commits_and_loses_unsynced_ones(disk):
    envdir = disk.mountpoint / "env"
    env = lmdb.open(str(envdir), map_size=1 << 24, sync=True, metasync=True)
    with env.begin(write=True) as txn:
        txn.put(b"durable", b"1")
    env.close()
    env = lmdb.open(str(envdir), map_size=1 << 24, sync=False, metasync=False)
    for i in range(200):                     # enough to grow the file past the synced size
        with env.begin(write=True) as txn:
            txn.put(b"relaxed%d" % i, b"x" * 500)
    with env.begin() as txn:
        assert txn.get(b"relaxed199") == b"x" * 500            # the running process sees its commits
    cut(disk)                                # the power goes while the env is open
    env.close()                              # (on the old, detached mount)
    env = lmdb.open(str(envdir), map_size=1 << 24)
    try:
        with env.begin() as txn:
            assert txn.get(b"durable") == b"1"
            assert txn.get(b"relaxed0") is None and txn.get(b"relaxed199") is None
    finally:
        env.close()
