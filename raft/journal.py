"""An LMDB-backed Raft log for PySyncObj.

PySyncObj keeps its Raft log in a ``Journal`` (``pysyncobj/journal.py``). Its
``FileJournal`` holds every entry in a Python list and rewrites the whole file on
compaction; ``LmdbJournal`` keeps the log on disk and only a handful of integers
and the first and last entries in memory.

Layout, inside one LMDB environment (shareable with snapshots and events):

``<namespace>.log``
    key: the entry's Raft index, 8 bytes big-endian (so byte order = index order);
    value: the entry's term, 8 bytes big-endian, followed by the command bytes.
``<namespace>.meta``
    ``format`` (4 bytes), ``current_term`` (8), ``voted_for`` (tagged, see
    ``_encode_node_id``), ``commit_index`` (8).

The first index is not stored separately: it is the log's first key, so the two
can never disagree.

Semantics mirror ``MemoryJournal`` exactly: ``journal[i]`` is the i-th entry
*currently held* (after ``deleteEntriesTo(n)`` the old entry ``n`` is at 0),
negative indices and slices follow list rules, and entries are ``(command: bytes,
idx: int, term: int)`` tuples. Two deliberate differences:

* Slices with step 1 return a ``JournalSlice``: a read-only, lazy ``Sequence``
  (``len``, indexing, iteration, ``list()``, pickles as a list) instead of a list,
  so that PySyncObj's ``log[diff:]`` (it asks for the whole tail on every
  AppendEntries and every send to a lagging follower) never loads the log into
  memory. Slicing a ``JournalSlice`` returns a plain list. A view is invalidated
  by any deletion from the journal; using it afterwards raises ``StaleSliceError``.
* Raft indices must be contiguous: ``add`` raises ``JournalError`` unless
  ``idx == last idx + 1`` (any index is accepted on an empty journal). PySyncObj
  always appends this way; a gap would be a bug that silently breaks its index
  arithmetic.

Durability:

``sync_policy="durable"`` (default)
    every ``add``/``delete*``/``clear`` is on disk before the call returns.
``sync_policy="relaxed"``
    writes are committed without fsync and flushed by ``onOneSecondTimer`` (which
    PySyncObj calls once a second from its tick thread) at most every
    ``sync_interval`` seconds, by ``flush()``, and on close. A machine crash can
    lose the last ~second of entries (and, on filesystems that do not preserve
    write order, LMDB's integrity: that is the trade-off of MDB_NOSYNC).

Deferred appends (``defer_appends(True)``; the node turns it on, see
``pysyncobj_compat.GroupSyncMixin``): ``add`` keeps the entry in memory (readable like
any other) and ``sync_appends()`` writes every pending entry in one transaction, with
one sync. The caller decides when: before anything acknowledges the entries (a
follower's AppendEntries reply), before the leader counts its own log towards a commit,
and right after the leader sent them to its followers, so its sync runs while theirs
do (Raft thesis §10.2.1) instead of before. Every other write, ``flush`` and ``close``
write the pending entries first. Near a full map (less than ``_DEFER_MARGIN`` plus twice
the pending bytes free past LMDB's last page) ``add`` writes at once, as without
deferral, so a full map is still reported by the ``add`` that hit it. A failed
``sync_appends`` keeps the entries pending and raises: nothing that needs them durable
may proceed (the caller's tick is aborted) until a later call succeeds.

Under both policies ``setCurrentTerm`` (term and vote) is synced before it returns:
PySyncObj sends its RequestVote / vote only after this call (syncobj.py:640/643,
921, 937/940), which is what Raft requires. The commit index is advisory (Raft
does not require it to persist; PySyncObj clamps it on load): it is written with
the next log write, or by ``onOneSecondTimer``/``flush``/close, never ahead of the
log on disk.

Durability is implemented for any environment: when the journal opens the
environment itself it sets ``sync=True`` (durable) or ``sync=False`` (relaxed);
for a shared environment opened with ``sync=False`` (or ``metasync=False`` or
``map_async``) a durable journal calls ``env.sync(True)`` after each commit. A
relaxed journal on an environment opened with ``sync=True`` is effectively
durable (LMDB syncs every commit; the flag is per environment).

A full map raises ``JournalFullError`` and nothing is changed (the transaction is
aborted, the cached state is untouched). Grow the map (``env.set_mapsize``) or
stop the node; never keep going as if the write happened.

Plugging into SyncObj: ``SyncObj.__init__`` creates its log with the module-level
``createJournal(conf.journalFile)`` and offers no parameter for a journal object.
``minoots.raft.pysyncobj_compat.attach_journal(conf, journal)`` installs (once, idempotently) a
wrapper around ``pysyncobj.syncobj.createJournal`` that returns ``conf.journalFile``
as-is when it is a ``Journal`` instance and otherwise defers to the original, so
SyncObjs built without a journal object are unaffected. Use one journal per
SyncObj (and so one conf per SyncObj); ``SyncObj.destroy()`` closes the journal.
"""
from __future__ import annotations

import os
import pickle
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Iterator, Optional, Union

import lmdb
from .pysyncobj_compat import Journal

__all__ = [
    "DEFAULT_MAP_SIZE",
    "JournalClosedError",
    "JournalError",
    "JournalFullError",
    "JournalSlice",
    "LmdbJournal",
    "StaleSliceError",
    "SYNC_DURABLE",
    "SYNC_RELAXED",
]

SYNC_DURABLE = "durable"
SYNC_RELAXED = "relaxed"
_POLICIES = (SYNC_DURABLE, SYNC_RELAXED)

DEFAULT_MAP_SIZE = 1 << 30  # 1 GiB of address space; the file only grows as used
DEFAULT_MAX_DBS = 16
FORMAT_VERSION = 1

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_MAX_U64 = (1 << 64) - 1

_META_FORMAT = b"format"
_META_TERM = b"current_term"
_META_VOTED = b"voted_for"
_META_COMMIT = b"commit_index"

# Entries deleted per write transaction: keeps one transaction's dirty pages well
# under LMDB's limit even for huge compactions. A crash between chunks leaves a
# shorter but still contiguous log, which is a valid state for both deletions.
_DELETE_CHUNK = 50_000
# Entries read per read transaction while iterating a JournalSlice: no read
# transaction stays open across the caller's code (e.g. applying commands).
_READ_CHUNK = 512
# Deferred appends need at least this much room (plus twice the pending bytes) past the
# map's last used page; otherwise add() writes at once (see the module doc).
_DEFER_MARGIN = 4 << 20

Entry = tuple  # (command: bytes, idx: int, term: int)


class JournalError(Exception):
    """Base class for journal errors."""


class JournalFullError(JournalError):
    """The LMDB map is full; the write was not performed."""


class JournalClosedError(JournalError):
    """The journal was used after close()/_destroy()."""


class StaleSliceError(JournalError):
    """A JournalSlice was used after entries were deleted from its journal."""


def _u64(value: int, what: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_U64:
        raise JournalError(f"{what} must be an int in [0, 2**64): {value!r}")
    return _U64.pack(value)


def _to_bytes(command: Union[bytes, bytearray, memoryview, str]) -> bytes:
    # FileJournal stores to_bytes(command): str commands (never produced by
    # PySyncObj on Python 3) are stored as UTF-8 and read back as bytes.
    if isinstance(command, bytes):
        return command
    if isinstance(command, (bytearray, memoryview)):
        return bytes(command)
    if isinstance(command, str):
        return command.encode("utf-8")
    raise JournalError(f"command must be bytes, got {type(command).__name__}")


def _encode_entry(command: bytes, term: int) -> bytes:
    return _u64(term, "term") + command


def _decode_entry(key: bytes, value: bytes) -> Entry:
    return (value[8:], _U64.unpack(key)[0], _U64.unpack_from(value)[0])


def _encode_node_id(node_id: Any) -> bytes:
    # PySyncObj votes with Node.id: the "host:port" string for TCPNode.
    if node_id is None:
        return b"\x00"
    if isinstance(node_id, str):
        return b"\x01" + node_id.encode("utf-8")
    return b"\x02" + pickle.dumps(node_id, protocol=4)  # custom Node ids only


def _decode_node_id(raw: Optional[bytes]) -> Any:
    if raw is None or raw[:1] == b"\x00":
        return None
    if raw[:1] == b"\x01":
        return raw[1:].decode("utf-8")
    if raw[:1] == b"\x02":
        return pickle.loads(raw[1:])
    raise JournalError(f"corrupt voted_for record: {raw!r}")


class JournalSlice(Sequence):
    """A lazy, read-only view of consecutive journal entries (see module doc)."""

    __slots__ = ("_journal", "_start", "_len", "_epoch")

    def __init__(self, journal: "LmdbJournal", start_idx: int, length: int, epoch: int):
        self._journal = journal
        self._start = start_idx  # Raft index of the first entry in the view
        self._len = length
        self._epoch = epoch

    def _check(self) -> None:
        if self._journal._epoch != self._epoch:
            raise StaleSliceError("journal entries were deleted after this slice was taken")

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, item):
        self._check()
        if isinstance(item, slice):
            start, stop, step = item.indices(self._len)
            if step == 1:
                return self._journal._read_range(self._start + start, max(0, stop - start))
            return [self[i] for i in range(start, stop, step)]
        i = item.__index__()
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("journal slice index out of range")
        return self._journal._read_one(self._start + i)

    def __iter__(self) -> Iterator[Entry]:
        done = 0
        while done < self._len:
            self._check()
            chunk = self._journal._read_range(self._start + done, min(_READ_CHUNK, self._len - done))
            if not chunk:  # cannot happen while the epoch is unchanged
                raise StaleSliceError("journal entries vanished under a slice")
            yield from chunk
            done += len(chunk)

    def __eq__(self, other):
        if isinstance(other, (list, JournalSlice)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # like list

    def __reduce__(self):
        return (list, (list(self),))

    def __repr__(self) -> str:
        if not self._len:
            return "JournalSlice([])"
        return f"JournalSlice(idx {self._start}..{self._start + self._len - 1})"


class LmdbJournal(Journal):
    """PySyncObj ``Journal`` stored in LMDB. See the module docstring.

    :param path_or_env: a directory (the journal opens and owns an environment
        there) or an open ``lmdb.Environment`` (shared; never closed here; needs
        free named-DB slots, i.e. ``max_dbs`` >= 2 + whatever else uses it).
    :param sync_policy: ``"durable"`` or ``"relaxed"``.
    :param map_size: map size when the journal opens the environment itself.
    :param namespace: prefix of the two named DBs (``<ns>.log``, ``<ns>.meta``).
    :param sync_interval: relaxed policy: minimum seconds between periodic syncs.
    :param max_dbs: ``max_dbs`` when the journal opens the environment itself.
    """

    def __init__(
        self,
        path_or_env: Union[str, os.PathLike, lmdb.Environment],
        sync_policy: str = SYNC_DURABLE,
        map_size: int = DEFAULT_MAP_SIZE,
        *,
        namespace: str = "raft",
        sync_interval: float = 1.0,
        max_dbs: int = DEFAULT_MAX_DBS,
    ):
        if sync_policy not in _POLICIES:
            raise ValueError(f"sync_policy must be one of {_POLICIES}, got {sync_policy!r}")
        self._policy = sync_policy
        self._sync_interval = float(sync_interval)
        #: called with the JournalFullError (in the writing thread) before it is raised,
        #: so the node can refuse writes and hand leadership away
        self.on_full: Optional[Callable[[JournalFullError], None]] = None
        self._closed = True
        if isinstance(path_or_env, lmdb.Environment):
            self._env = path_or_env
            self._owns_env = False
        else:
            path = os.fspath(path_or_env)
            os.makedirs(path, exist_ok=True)
            self._env = lmdb.open(
                path,
                map_size=map_size,
                max_dbs=max_dbs,
                subdir=True,
                sync=(sync_policy == SYNC_DURABLE),
                metasync=True,
            )
            self._owns_env = True
        try:
            flags = self._env.flags()
            if flags["readonly"]:
                raise JournalError("the LMDB environment is read-only")
            # Does every commit already reach the disk (data and meta page)?
            self._commit_is_synced = bool(
                flags["sync"] and flags["metasync"] and not (flags["writemap"] and flags["map_async"])
            )
            self._write_lock = threading.Lock()
            self._defer = False
            self._pending: list = []          # deferred entries, contiguous after the last one on disk
            self._pending_bytes = 0
            self._psize = self._env.stat()["psize"]
            self._epoch = 0  # bumped by every deletion; invalidates JournalSlices
            self._unsynced = False  # committed writes not yet fsynced (relaxed)
            self._last_sync = time.monotonic()
            ns = namespace.encode("utf-8")
            try:
                self._log_db = self._env.open_db(ns + b".log")
                self._meta_db = self._env.open_db(ns + b".meta")
            except lmdb.MapFullError as e:
                raise JournalFullError(f"LMDB map full while creating the journal DBs: {e}") from e
            self._load()
        except BaseException:
            if self._owns_env:
                self._env.close()
            raise
        self._closed = False

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        with self._env.begin() as txn:
            fmt = txn.get(_META_FORMAT, db=self._meta_db)
            term = txn.get(_META_TERM, db=self._meta_db)
            voted = txn.get(_META_VOTED, db=self._meta_db)
            commit = txn.get(_META_COMMIT, db=self._meta_db)
            cur = txn.cursor(db=self._log_db)
            first = _decode_entry(*cur.item()) if cur.first() else None
            last = _decode_entry(*cur.item()) if cur.last() else None
        if fmt is not None and _U32.unpack(fmt)[0] != FORMAT_VERSION:
            raise JournalError(f"unsupported journal format {_U32.unpack(fmt)[0]} (expected {FORMAT_VERSION})")
        self._term = _U64.unpack(term)[0] if term is not None else 0
        self._voted = _decode_node_id(voted)
        # Defaults as FileJournal: term 0, vote None, commit index 1.
        self._commit = _U64.unpack(commit)[0] if commit is not None else 1
        self._commit_dirty = False
        self._first = first
        self._last = last
        if first is not None and last[1] - first[1] + 1 != self._count_entries():
            raise JournalError("journal keys are not contiguous; refusing to open a corrupt log")
        if fmt is None:
            self._write(lambda txn: txn.put(_META_FORMAT, _U32.pack(FORMAT_VERSION), db=self._meta_db))

    def _count_entries(self) -> int:
        with self._env.begin() as txn:
            return txn.stat(self._log_db)["entries"]

    @property
    def env(self) -> lmdb.Environment:
        return self._env

    @property
    def sync_policy(self) -> str:
        return self._policy

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def first_index(self) -> Optional[int]:
        """Raft index of the first entry held, or None when empty."""
        return None if self._first is None else self._first[1]

    @property
    def last_index(self) -> Optional[int]:
        """Raft index of the last entry held, or None when empty."""
        return None if self._last is None else self._last[1]

    # ------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosedError("journal is closed")

    def _write(
        self,
        fn: Callable[[lmdb.Transaction], Any],
        sync: Optional[bool] = None,
        log_end: Any = "current",
    ) -> Any:
        """Run fn in one write transaction (+ pending commit index), then sync per policy.

        sync=None follows the policy; True forces an fsync (term/vote); False skips it.
        log_end is the last Raft index once fn is applied (None: empty log), used to
        keep the persisted commit index within the log; "current" = unchanged.
        """
        if log_end == "current":
            log_end = self.last_index
        with self._write_lock:
            commit_written = None
            try:
                with self._env.begin(write=True) as txn:
                    result = fn(txn)
                    if self._commit_dirty:
                        commit = self._commit if log_end is None else min(self._commit, log_end)
                        commit_written = max(commit, 0)
                        txn.put(_META_COMMIT, _u64(commit_written, "commit index"), db=self._meta_db)
            except lmdb.MapFullError as e:
                err = JournalFullError(
                    f"LMDB map is full (map_size={self._env.info()['map_size']}); "
                    "the journal write was not performed"
                )
                if self.on_full is not None:
                    self.on_full(err)
                raise err from e
            if commit_written is not None and commit_written == self._commit:
                self._commit_dirty = False  # stays dirty if it was clamped to the log end
            if sync is None:
                sync = self._policy == SYNC_DURABLE
            if sync:
                if not self._commit_is_synced:
                    self._fsync()
                self._unsynced = False
                self._last_sync = time.monotonic()
            elif not self._commit_is_synced:
                self._unsynced = True
            return result

    def _fsync(self) -> None:
        self._env.sync(True)

    def _read_one(self, idx: int) -> Entry:
        pending = self._pending
        if pending and idx >= pending[0][1]:
            return pending[idx - pending[0][1]]
        with self._env.begin() as txn:
            value = txn.get(_U64.pack(idx), db=self._log_db)
        if value is None:
            raise StaleSliceError(f"journal entry {idx} is missing")
        return (value[8:], idx, _U64.unpack_from(value)[0])

    def _read_range(self, start_idx: int, count: int) -> list:
        if count <= 0:
            return []
        pending = self._pending
        if pending:
            p0 = pending[0][1]
            if start_idx >= p0:
                return pending[start_idx - p0:start_idx - p0 + count]
            if start_idx + count > p0:
                head = self._read_range_disk(start_idx, p0 - start_idx)
                return head + pending[:start_idx + count - p0]
        return self._read_range_disk(start_idx, count)

    def _read_range_disk(self, start_idx: int, count: int) -> list:
        out = []
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._log_db)
            if not cur.set_key(_U64.pack(start_idx)):
                return out
            for key, value in cur:
                out.append(_decode_entry(key, value))
                if len(out) == count:
                    break
        return out

    def _position(self, item: int) -> int:
        n = len(self)
        i = item.__index__()
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("journal index out of range")
        return i

    # -------------------------------------------------------- Journal API

    def add(self, command, idx, term) -> None:
        self._check_open()
        command = _to_bytes(command)
        key = _u64(idx, "idx")
        value = _encode_entry(command, term)
        if self._last is not None and idx != self._last[1] + 1:
            raise JournalError(
                f"non-contiguous append: idx {idx} after last idx {self._last[1]}"
            )

        entry = (command, idx, term)
        if self._defer and self._room_for(len(value)):
            self._pending.append(entry)
            self._pending_bytes += len(value)
        else:
            self.sync_appends()

            def put(txn):
                txn.put(key, value, append=True, db=self._log_db)

            self._write(put, log_end=idx)
        if self._first is None:
            self._first = entry
        self._last = entry

    # ------------------------------------------------------ deferred appends

    def defer_appends(self, enabled: bool) -> None:
        """Turn deferred appends on or off (see the module doc); off writes what is pending."""
        if not enabled:
            self.sync_appends()
        self._defer = bool(enabled)

    @property
    def pending(self) -> int:
        """Entries added but not written yet."""
        return len(self._pending)

    def _room_for(self, nbytes: int) -> bool:
        info = self._env.info()
        free = info["map_size"] - (info["last_pgno"] + 1) * self._psize
        return free > _DEFER_MARGIN + 2 * (self._pending_bytes + nbytes)

    def sync_appends(self) -> None:
        """Write every pending entry in one transaction, synced per the policy. On failure
        they stay pending (and readable) and the error is raised; retry later."""
        pending = self._pending
        if not pending:
            return
        self._check_open()

        def put(txn):
            for command, idx, term in pending:
                txn.put(_U64.pack(idx), _encode_entry(command, term), append=True, db=self._log_db)

        self._write(put, log_end=pending[-1][1])
        self._pending = []
        self._pending_bytes = 0

    def clear(self) -> None:
        self._check_open()
        self.sync_appends()
        self._epoch += 1

        def drop(txn):
            txn.drop(self._log_db, delete=False)

        self._write(drop, log_end=None)
        self._first = self._last = None

    def deleteEntriesFrom(self, entryFrom) -> None:
        """Keep only the first ``entryFrom`` entries (``del log[entryFrom:]``)."""
        self._check_open()
        self.sync_appends()
        n = len(self)
        keep = slice(entryFrom, None).indices(n)[0]
        if keep >= n:
            return
        self._epoch += 1
        first_idx = self._first[1]
        new_last_idx = first_idx + keep - 1  # < first_idx when everything goes
        while self._last is not None and self._last[1] > new_last_idx:
            stop = self._last[1]
            lo = max(new_last_idx + 1, stop - _DELETE_CHUNK + 1)

            def delete_tail(txn, lo=lo, stop=stop):
                for idx in range(stop, lo - 1, -1):
                    if not txn.delete(_U64.pack(idx), db=self._log_db):
                        raise JournalError(f"journal entry {idx} is missing")
                if lo > first_idx:
                    value = txn.get(_U64.pack(lo - 1), db=self._log_db)
                    if value is None:
                        raise JournalError(f"journal entry {lo - 1} is missing")
                    return (value[8:], lo - 1, _U64.unpack_from(value)[0])
                return None

            new_last = self._write(delete_tail, sync=False, log_end=lo - 1 if lo > first_idx else None)
            self._last = new_last
            if new_last is None:
                self._first = None
        self._after_bulk_write()

    def deleteEntriesTo(self, entryTo) -> None:
        """Drop the first ``entryTo`` entries (``log = log[entryTo:]``), i.e. compaction."""
        self._check_open()
        self.sync_appends()
        n = len(self)
        drop = slice(entryTo, None).indices(n)[0]
        if drop <= 0:
            return
        new_first_idx = self._first[1] + drop  # may be past the end: all dropped
        # A damaged store (an entry to delete or the new first one missing): refuse before
        # deleting anything; a chunk reading no new first entry would empty the journal.
        self._check_stored(self._first[1], min(new_first_idx, self._last[1]))
        self._epoch += 1
        while self._first is not None and self._first[1] < new_first_idx:
            lo = self._first[1]
            hi = min(new_first_idx, lo + _DELETE_CHUNK, self._last[1] + 1)

            def delete_head(txn, lo=lo, hi=hi):
                for idx in range(lo, hi):
                    if not txn.delete(_U64.pack(idx), db=self._log_db):
                        raise JournalError(f"journal entry {idx} is missing")
                value = txn.get(_U64.pack(hi), db=self._log_db)
                return None if value is None else (value[8:], hi, _U64.unpack_from(value)[0])

            everything = hi > self._last[1]
            new_first = self._write(delete_head, sync=False, log_end=None if everything else "current")
            self._first = new_first
            if new_first is None:
                self._last = None
        self._after_bulk_write()

    def _check_stored(self, lo: int, hi: int) -> None:
        """Raise JournalError naming the first index of lo..hi that has no stored entry."""
        expect = lo
        with self._env.begin(db=self._log_db) as txn:
            cur = txn.cursor()
            if cur.set_range(_U64.pack(lo)):
                for key in cur.iternext(values=False):
                    if _U64.unpack(key)[0] != expect:
                        break
                    if expect == hi:
                        return
                    expect += 1
        raise JournalError(f"journal entry {expect} is missing")

    def _after_bulk_write(self) -> None:
        if self._policy == SYNC_DURABLE:
            self.flush()

    def __getitem__(self, item):
        self._check_open()
        if isinstance(item, slice):
            n = len(self)
            start, stop, step = item.indices(n)
            if step == 1:
                length = max(0, stop - start)
                first_idx = self._first[1] if self._first is not None else 0
                return JournalSlice(self, first_idx + start, length, self._epoch)
            return [self[i] for i in range(start, stop, step)]
        i = self._position(item)
        if i == 0:
            return self._first
        if i == len(self) - 1:
            return self._last
        return self._read_one(self._first[1] + i)

    def __len__(self) -> int:
        # Safe from any thread (getStatus() calls it): reads two cached tuples.
        first, last = self._first, self._last
        if first is None or last is None:
            return 0
        return last[1] - first[1] + 1

    def __iter__(self) -> Iterator[Entry]:
        return iter(self[:])

    def setRaftCommitIndex(self, raftCommitIndex) -> None:
        # Advisory (see module doc): persisted with the next write or by the timer.
        if raftCommitIndex != self._commit:
            self._commit = raftCommitIndex
            self._commit_dirty = True

    def getRaftCommitIndex(self) -> int:
        return self._commit

    def setCurrentTerm(self, term, votedForNodeId) -> None:
        """Persist term and vote, synced under every policy, before returning."""
        self._check_open()
        if term == self._term and votedForNodeId == self._voted:
            return
        self.sync_appends()
        term_bytes = _u64(term, "term")
        voted_bytes = _encode_node_id(votedForNodeId)

        def put(txn):
            txn.put(_META_TERM, term_bytes, db=self._meta_db)
            txn.put(_META_VOTED, voted_bytes, db=self._meta_db)

        self._write(put, sync=True)
        self._term = term
        self._voted = votedForNodeId

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self):
        return self._voted

    def onOneSecondTimer(self) -> None:
        """Called by SyncObj once a second from its tick thread."""
        if self._closed:
            return
        self.sync_appends()
        if self._commit_dirty:
            self._write(lambda txn: None, sync=False)
        if self._unsynced and time.monotonic() - self._last_sync >= self._sync_interval:
            self.flush()

    def flush(self) -> None:
        """Write pending entries and the commit index and fsync everything committed so far."""
        self._check_open()
        self.sync_appends()
        if self._commit_dirty:
            self._write(lambda txn: None, sync=True)
        elif self._unsynced:
            self._fsync()
            self._unsynced = False
            self._last_sync = time.monotonic()

    def close(self) -> None:
        """Flush and close (closes the environment only if the journal opened it)."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self._owns_env:
                self._env.close()

    def _destroy(self) -> None:
        # SyncObj._doDestroy() (syncobj.py:344-348) calls this from its tick thread.
        self.close()

    def __enter__(self) -> "LmdbJournal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} entries"
        return f"<LmdbJournal {self._policy} {state} first={self.first_index} last={self.last_index}>"
