"""A FUSE filesystem that forgets what was not fsynced: power loss for the tests (test tooling).

The idea of Jepsen's LazyFS, small enough to read: `LazyFS` passes every namespace
operation (mkdir, create, rename, unlink, chmod) straight to a backing directory, but
keeps the bytes written to a file in memory until that file is fsynced (fsync,
fdatasync, or a write through a handle opened O_SYNC/O_DSYNC, which is how LMDB writes
its meta page). Only then do they reach the backing file. While it runs, every reader
sees the latest bytes (reads merge the unsynced pages over the backing file, and
mmap'd readers such as LMDB fault their pages in through those reads). SIGKILL of
the filesystem's process is the power cut: the unsynced bytes die with it, the
backing directory holds each file as of its last fsync, and a new mount over it
starts with an empty page cache (the kernel drops a FUSE mount's cache at unmount).

What it does not model (each can only hide a loss, never invent one): directory
entries are durable at once (no fsync of the directory needed), a torn or reordered
write never happens (a file reverts to exactly its last synced bytes), and a
truncate is kept with the data until the next fsync.

`LazyMount` runs one filesystem process per mount point for a test and crashes,
unmounts and remounts it. Run by hand: `python tests/lazyfs.py BACKING MOUNTPOINT`
(needs Debian's `fuse3` and PyPI's `mfusepy`; `fusermount3 -u MOUNTPOINT` to stop).
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PAGE = 4096
FSNAME = "lazyfs"


class _Unsynced:
    """The bytes of one file not yet fsynced: its size, pages written, and `floor`, the
    offset below which the backing file's bytes still hold (a truncate lowers it)."""

    __slots__ = ("size", "floor", "pages")

    def __init__(self, size: int) -> None:
        self.size = size
        self.floor = size
        self.pages: dict[int, bytearray] = {}


class LazyFS:
    """The filesystem (see the module doc), as mfusepy operations (it registers the methods
    a class has; no base class needed). One lock serializes every operation."""

    use_ns = True

    def __init__(self, backing: str) -> None:
        self.root = os.path.realpath(backing)
        self._lock = threading.Lock()
        self._unsynced: dict[tuple[int, int], _Unsynced] = {}     # (st_dev, st_ino) -> bytes
        self._handles: dict[int, tuple[int, tuple[int, int], bool]] = {}   # fh -> (fd, key, sync)
        self._next_fh = 1

    # ---------------------------------------------------------------- helpers

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    @staticmethod
    def _key(st: os.stat_result) -> tuple[int, int]:
        return (st.st_dev, st.st_ino)

    def _state(self, fd: int, key) -> _Unsynced:
        st = self._unsynced.get(key)
        if st is None:
            st = self._unsynced[key] = _Unsynced(os.fstat(fd).st_size)
        return st

    def _base(self, fd: int, st: _Unsynced, offset: int, length: int) -> bytearray:
        """The synced bytes of [offset, offset+length): the backing file below `floor`, zeros above."""
        out = bytearray(length)
        valid = min(offset + length, st.floor) - offset
        if valid > 0:
            got = os.pread(fd, valid, offset)
            out[:len(got)] = got
        return out

    def _sync(self, fd: int, key) -> None:
        st = self._unsynced.pop(key, None)
        if st is None:
            return
        if os.fstat(fd).st_size > st.floor:
            os.ftruncate(fd, st.floor)
        for p, page in st.pages.items():
            start = p * PAGE
            if start < st.size:
                os.pwrite(fd, bytes(page[:min(PAGE, st.size - start)]), start)
        os.ftruncate(fd, st.size)

    def _handle(self, fh: int):
        try:
            return self._handles[fh]
        except KeyError:
            raise OSError(errno.EBADF, "unknown file handle") from None

    def _forget(self, real: str) -> None:
        """Drop the unsynced bytes of a file about to lose its last name (its inode may be reused)."""
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return
        if not os.path.isdir(real) and st.st_nlink <= 1:
            self._unsynced.pop(self._key(st), None)

    # ---------------------------------------------------------------- metadata

    def getattr(self, path, fh=None):
        with self._lock:
            if fh is not None and fh in self._handles:
                st = os.fstat(self._handles[fh][0])
            else:
                st = os.lstat(self._real(path))
            attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                                                 "st_ino", "st_blocks")}
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            pending = self._unsynced.get(self._key(st))
            if pending is not None:
                attrs["st_size"] = pending.size
                attrs["st_blocks"] = (pending.size + 511) // 512
            return attrs

    def readdir(self, path, fh):
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path, amode):
        if not os.access(self._real(path), amode):
            raise OSError(errno.EACCES, "access denied")
        return 0

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path):
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path):
        with self._lock:
            real = self._real(path)
            self._forget(real)
            os.unlink(real)
        return 0

    def rename(self, old, new):
        with self._lock:
            self._forget(self._real(new))
            os.rename(self._real(old), self._real(new))
        return 0

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path, uid, gid):
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path, times=None):
        os.utime(self._real(path), ns=times) if times else os.utime(self._real(path))
        return 0

    def statfs(self, path):
        sv = os.statvfs(self._real(path))
        return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                            "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")}

    # ---------------------------------------------------------------- files

    def _open(self, real: str, flags: int, create_mode: int | None = None) -> int:
        extra = os.O_CREAT if create_mode is not None else 0
        try:
            fd = os.open(real, os.O_RDWR | extra, create_mode or 0o600)
        except PermissionError:
            fd = os.open(real, os.O_RDONLY)
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            # Linux also follows each write through such a handle with an fsync; not relied upon.
            self._handles[fh] = (fd, self._key(os.fstat(fd)), bool(flags & (os.O_SYNC | os.O_DSYNC)))
        return fh

    def open(self, path, flags):
        return self._open(self._real(path), flags)

    def create(self, path, mode, flags=0):
        return self._open(self._real(path), flags, mode)

    def read(self, path, size, offset, fh):
        with self._lock:
            fd, key, _ = self._handle(fh)
            st = self._unsynced.get(key)
            if st is None:
                return os.pread(fd, size, offset)
            end = min(offset + size, st.size)
            if end <= offset:
                return b""
            out = self._base(fd, st, offset, end - offset)
            for p in range(offset // PAGE, (end - 1) // PAGE + 1):
                page = st.pages.get(p)
                if page is not None:
                    lo, hi = max(offset, p * PAGE), min(end, (p + 1) * PAGE)
                    out[lo - offset:hi - offset] = page[lo - p * PAGE:hi - p * PAGE]
            return bytes(out)

    def write(self, path, data, offset, fh):
        with self._lock:
            fd, key, sync = self._handle(fh)
            st = self._state(fd, key)
            end = offset + len(data)
            pos = offset
            while pos < end:
                p = pos // PAGE
                page = st.pages.get(p)
                if page is None:
                    page = st.pages[p] = self._base(fd, st, p * PAGE, PAGE)
                lo, hi = pos - p * PAGE, min(PAGE, end - p * PAGE)
                page[lo:hi] = data[pos - offset:pos - offset + hi - lo]
                pos = p * PAGE + hi
            st.size = max(st.size, end)
            if sync:
                self._sync(fd, key)
            return len(data)

    def truncate(self, path, length, fh=None):
        with self._lock:
            if fh is not None and fh in self._handles:
                fd, key, _ = self._handles[fh]
                opened = False
            else:
                fd = os.open(self._real(path), os.O_RDWR)
                key, opened = self._key(os.fstat(fd)), True
            try:
                st = self._state(fd, key)
                st.size = length
                st.floor = min(st.floor, length)
                for p in [p for p in st.pages if p * PAGE >= length]:
                    del st.pages[p]
                tail = st.pages.get(length // PAGE)
                if tail is not None:
                    tail[length % PAGE:] = bytes(PAGE - length % PAGE)
            finally:
                if opened:
                    os.close(fd)
        return 0

    def fsync(self, path, datasync, fh):
        with self._lock:
            fd, key, _ = self._handle(fh)
            self._sync(fd, key)
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0          # directory entries are durable at once (see the module doc)

    def flush(self, path, fh):
        return 0          # close() is no sync

    def release(self, path, fh):
        with self._lock:
            fd, _, _ = self._handles.pop(fh)
            os.close(fd)
        return 0


# -------------------------------------------------------------------- the test's side


def _mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def missing_requirements() -> str | None:
    """Why a lazy mount cannot work on this machine, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing: apt-get install fuse3 (.ci/run does)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse3 ({exc}): pip install -e '.[test]' and apt-get install fuse3"
    return None


class LazyMount:
    """One LazyFS process serving `mountpoint` from `backing`; every process it starts it stops by PID.

    The filesystem process dies with the thread that mounted it (PR_SET_PDEATHSIG), so a
    killed test leaves no server behind: mount from a thread that outlives the mount."""

    def __init__(self, backing: Path, mountpoint: Path, log_file: Path) -> None:
        self.backing, self.mountpoint, self.log_file = Path(backing), Path(mountpoint), Path(log_file)
        self.proc: subprocess.Popen | None = None

    def mount(self, timeout: float = 20.0) -> "LazyMount":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.mountpoint} is already served by pid {self.proc.pid}")
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, __file__, str(self.backing), str(self.mountpoint)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not _mounted(self.mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-10:]
                raise RuntimeError(f"lazyfs did not mount {self.mountpoint}:\n" + "\n".join(tail))
            time.sleep(0.02)
        return self

    def crash(self) -> None:
        """The power cut: SIGKILL the filesystem (its unsynced bytes are gone), then unmount."""
        self._kill()
        self._unmount()

    def unmount(self) -> None:
        """A clean unmount (what was not fsynced is dropped all the same), then the process ends."""
        if _mounted(self.mountpoint):
            self._unmount()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def _unmount(self) -> None:
        deadline = time.monotonic() + 10
        while _mounted(self.mountpoint):
            # -z: a dead filesystem with a process still inside is detached at once all the same
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot unmount {self.mountpoint}")
            time.sleep(0.02)


def _die_with_parent() -> None:
    """A test process killed outright must not leave a filesystem behind (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:
        os._exit(1)


def main(argv: list[str]) -> None:
    import mfusepy

    if len(argv) != 2:
        sys.exit("usage: lazyfs.py BACKING MOUNTPOINT")
    _die_with_parent()
    mfusepy.FUSE(LazyFS(argv[0]), argv[1], foreground=True, fsname=FSNAME, hard_remove=True)


if __name__ == "__main__":
    main(sys.argv[1:])
