"""Raft-layer snapshots: the kernel's snapshot bytes wrapped with Raft metadata, kept in LMDB.

One container format serves three uses: the file PySyncObj streams to a follower
that fell behind the compacted log (its `fullDumpFile`), the history kept in LMDB
(the last N, for `minoots snapshot list/export`), and disaster-recovery restore.

Layout (all integers little-endian):
    magic  b"MNTSNAP1"
    u32    length of the metadata JSON, then the JSON (UTF-8)
    bytes  the kernel snapshot (kernel/snapshot.py's own versioned, checksummed format)
    32 B   SHA-256 of everything before it
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import mmap
import os
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lmdb

MAGIC = b"MNTSNAP1"
SNAPSHOTS_SUBDIR = "snapshots"
SNAPSHOT_MAP_SIZE = 64 << 30      # address space only: the file grows with what is kept
_DIGEST = 32
CHUNKS_DB = b"snapshot_chunks"
STORE_CHUNK = 4 << 20            # a kept snapshot larger than this is committed piece by piece
STORE_PAUSE = 0.001              # seconds between two pieces
MANIFEST_MAGIC = b"MNTSNAPC"     # a kept value that lists pieces (then size, count, piece size, SHA-256)
_MANIFEST = struct.Struct("<8sQII")


def _key(last_index: int) -> bytes:
    return struct.pack(">Q", last_index)


def _is_manifest(raw) -> bool:
    return bytes(raw[: len(MANIFEST_MAGIC)]) == MANIFEST_MAGIC


def _delete_pieces(txn, db, last_index: int) -> None:
    prefix = _key(last_index)
    cur = txn.cursor(db=db)
    if cur.set_range(prefix):
        while bytes(cur.key()[:8]) == prefix:
            if not cur.delete():
                break


class SnapshotFormatError(Exception):
    """Snapshot container bytes are truncated, corrupt or not a MINOOTS snapshot."""


@dataclass(frozen=True)
class SnapshotMeta:
    last_index: int              # last log index the snapshot includes
    last_term: int
    entries: tuple = ()          # PySyncObj's (command, index, term) of the last two applied entries
    cluster: tuple = ()          # Raft addresses of every member
    names: dict = field(default_factory=dict)  # node id -> Raft address
    grpc: dict = field(default_factory=dict)   # node id -> gRPC address (members that announced one)
    created_at_ms: int = 0
    kernel_size: int = 0
    timers: int = 0
    cluster_name: str = ""
    tokens: list = field(default_factory=list)  # API tokens (raft/tokens.py; hashes only)
    quotas: list = field(default_factory=list)  # tenant quotas (raft/quotas.py)
    subscriptions: list = field(default_factory=list)  # durable subscriptions (raft/subscriptions.py)
    webhook_secrets: list = field(default_factory=list)  # tenant webhook secrets (raft/webhook_secrets.py)
    retention: list = field(default_factory=list)  # tenant retention (raft/retention.py)
    endpoints: list = field(default_factory=list)  # managed webhook endpoints (raft/endpoints.py)
    delivery_defaults: list = field(default_factory=list)  # tenant delivery defaults (raft/delivery_defaults.py)

    def to_json(self) -> dict:
        out = asdict(self)
        out["entries"] = [[base64.b64encode(c).decode(), i, t] for c, i, t in self.entries]
        out["cluster"] = list(self.cluster)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "SnapshotMeta":
        obj = dict(obj)
        obj["entries"] = tuple((base64.b64decode(c), int(i), int(t)) for c, i, t in obj.get("entries", ()))
        obj["cluster"] = tuple(obj.get("cluster", ()))
        return cls(**obj)


def without_secrets(meta: SnapshotMeta) -> SnapshotMeta:
    """The metadata with every webhook signing secret left out (tenant secrets dropped,
    endpoint secrets None): what an operator's export holds unless it asks for secrets.
    Such a snapshot restores; its endpoints cannot sign until their secrets are rotated."""
    endpoints = [row[:5] + [None, row[6], None] + row[8:] for row in meta.endpoints]
    return dataclasses.replace(meta, webhook_secrets=[], endpoints=endpoints)


def has_secrets(meta: SnapshotMeta) -> bool:
    return bool(meta.webhook_secrets) or any(row[5] is not None or row[7] is not None for row in meta.endpoints)


def head_bytes(meta: SnapshotMeta) -> bytes:
    """A container's bytes before its kernel part (magic, length, metadata JSON)."""
    head = json.dumps(meta.to_json(), sort_keys=True).encode()
    return b"".join((MAGIC, struct.pack("<I", len(head)), head))


def head_length(first: bytes) -> int:
    """From a container's first bytes (at least 4 past the magic): where its kernel part starts."""
    if len(first) < len(MAGIC) + 4 or not first.startswith(MAGIC):
        raise SnapshotFormatError("not a MINOOTS snapshot (bad magic or too short)")
    (hlen,) = struct.unpack_from("<I", first, len(MAGIC))
    return len(MAGIC) + 4 + hlen


def encode(meta: SnapshotMeta, kernel: bytes) -> bytes:
    body = head_bytes(meta) + kernel
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> tuple[SnapshotMeta, bytes]:
    """Split a container into its metadata and kernel bytes, verifying the checksum."""
    data = bytes(data)
    if len(data) < len(MAGIC) + 4 + _DIGEST or not data.startswith(MAGIC):
        raise SnapshotFormatError("not a MINOOTS snapshot (bad magic or too short)")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotFormatError("snapshot checksum mismatch: the file is corrupt or truncated")
    (hlen,) = struct.unpack_from("<I", body, len(MAGIC))
    start = len(MAGIC) + 4
    if start + hlen > len(body):
        raise SnapshotFormatError("snapshot metadata runs past the end of the file")
    try:
        meta = SnapshotMeta.from_json(json.loads(body[start:start + hlen]))
    except (ValueError, TypeError, KeyError) as exc:
        raise SnapshotFormatError(f"snapshot metadata is unreadable: {exc}") from exc
    kernel = body[start + hlen:]
    if len(kernel) != meta.kernel_size:
        raise SnapshotFormatError(f"kernel snapshot is {len(kernel)} bytes, metadata says {meta.kernel_size}")
    return meta, kernel


def read_meta(data: bytes) -> SnapshotMeta:
    """Metadata only, without hashing the whole snapshot (for listings)."""
    if not bytes(data[: len(MAGIC)]) == MAGIC:
        raise SnapshotFormatError("not a MINOOTS snapshot")
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    return SnapshotMeta.from_json(json.loads(bytes(data[start:start + hlen])))


@dataclass(frozen=True)
class SnapshotInfo:
    last_index: int
    last_term: int
    created_at_ms: int
    size: int
    timers: int
    sha256: str


class SnapshotStore:
    """The last `keep` snapshots of one node, keyed by their last included log index.

    A node keeps them in an LMDB environment of their own (`open`): LMDB lets one
    write transaction run per environment, and writing a snapshot of a million
    timers (~180 MB, fsynced) inside the Raft log's environment held every journal
    append, and so the node's Raft thread, for as long as a second: long enough
    for a follower to miss heartbeats and start a needless election.
    """

    def __init__(self, env: lmdb.Environment, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._env = env
        self._db = env.open_db(b"snapshots")
        self._chunk_db = None           # a store of its own keeps large snapshots in pieces (see put)
        self._writing: set = set()      # last indexes whose pieces a put is writing now
        self.keep = keep
        self._owned = False

    @classmethod
    def open(cls, data_dir: str | os.PathLike, keep: int = 3,
             legacy_env: lmdb.Environment | None = None) -> "SnapshotStore":
        """The store in `<data_dir>/snapshots` (created if absent; always fsynced:
        a snapshot must be durable before the log it replaces is dropped). Snapshots
        that an older build kept in the node's main environment (`legacy_env`) are
        moved over first."""
        path = Path(data_dir) / SNAPSHOTS_SUBDIR
        path.mkdir(exist_ok=True)
        env = lmdb.open(str(path), map_size=SNAPSHOT_MAP_SIZE, max_dbs=2, subdir=True, sync=True,
                        metasync=True, readahead=False)
        try:
            store = cls(env, keep)
            store._owned = True
            store._chunk_db = env.open_db(CHUNKS_DB)    # before any transaction (LMDB's rule)
            if legacy_env is not None:
                store._adopt(legacy_env)
        except BaseException:
            env.close()
            raise
        return store

    def _adopt(self, legacy: lmdb.Environment) -> None:
        try:
            old = legacy.open_db(b"snapshots", create=False)
        except lmdb.NotFoundError:
            return
        with legacy.begin(db=old) as txn:
            items = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        if items:
            with self._env.begin(db=self._db, write=True) as txn:
                for k, v in items:
                    txn.put(k, v, overwrite=False)
        with legacy.begin(write=True) as txn:    # only once they are durable here
            txn.drop(old, delete=True)

    def close(self) -> None:
        if self._owned:
            self._env.close()
            self._owned = False

    # A snapshot larger than STORE_CHUNK is kept in pieces (issue 15): its bytes in the
    # `chunks` database under (last index, piece number), each piece committed (and so
    # fsynced) in a transaction of its own, with a pause between them; then, in a last
    # transaction, a small manifest under its last index in the main database (older
    # snapshots there hold the whole container). One transaction of ~180 MB made the disk
    # flush all of it at once, and the journal's fsync, in another file, waited behind it.
    # Until the manifest is committed the pieces are not a snapshot: a crash leaves pieces
    # without a manifest, which the next put removes.

    def _chunks(self):
        return self._chunk_db

    def put(self, data) -> SnapshotInfo:
        """Keep the snapshot container `data` (bytes-like)."""
        with memoryview(data) as mv:
            meta = read_meta(mv)
            if len(mv) <= STORE_CHUNK or self._chunk_db is None:
                with self._env.begin(db=self._db, write=True) as txn:
                    txn.put(_key(meta.last_index), mv)
                    self._prune(txn)
                return self._info(mv)
            return self._put_chunked(meta.last_index, mv)

    def put_file(self, path: str | os.PathLike) -> SnapshotInfo:
        """Keep the snapshot container in file `path` (complete and synced), read through a
        read-only mmap: no copy of it on the Python heap (raft/snapshot_writer.py)."""
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return self.put(mm)

    def _put_chunked(self, last_index: int, mv: memoryview) -> SnapshotInfo:
        chunks = self._chunks()
        self._writing.add(last_index)
        try:
            with self._env.begin(write=True) as txn:     # pieces of an interrupted earlier put
                _delete_pieces(txn, chunks, last_index)
            count = 0
            for off in range(0, len(mv), STORE_CHUNK):
                with self._env.begin(db=chunks, write=True) as txn:
                    txn.put(_key(last_index) + struct.pack(">I", count), mv[off:off + STORE_CHUNK])
                count += 1
                if STORE_PAUSE:
                    time.sleep(STORE_PAUSE)
            manifest = _MANIFEST.pack(MANIFEST_MAGIC, len(mv), count, STORE_CHUNK) + bytes(mv[-_DIGEST:])
            with self._env.begin(db=self._db, write=True) as txn:
                txn.put(_key(last_index), manifest)
                self._prune(txn)
        finally:
            self._writing.discard(last_index)
        return self._info(mv)

    def _prune(self, txn) -> None:
        """Drop all but the newest `keep` snapshots, and pieces without a manifest."""
        keys = [bytes(k) for k in txn.cursor(db=self._db).iternext(keys=True, values=False)]
        for old in keys[: max(0, len(keys) - self.keep)]:
            txn.delete(old, db=self._db)
        if self._chunk_db is None:
            return
        kept = set(keys[max(0, len(keys) - self.keep):])
        stale = {bytes(k[:8]) for k in txn.cursor(db=self._chunks()).iternext(keys=True, values=False)} - kept
        stale -= {_key(i) for i in set(self._writing)}     # another thread's put in progress
        for k in stale:
            _delete_pieces(txn, self._chunks(), struct.unpack(">Q", k)[0])

    def list(self) -> list[SnapshotInfo]:
        with self._env.begin(db=self._db, buffers=True) as txn:
            return [self._describe(txn, k, v) for k, v in txn.cursor()]

    def latest(self) -> bytes | None:
        with self._env.begin(db=self._db, buffers=True) as txn:
            cur = txn.cursor()
            return self._whole(txn, cur.key(), cur.value()) if cur.last() else None

    def get(self, last_index: int) -> bytes | None:
        with self._env.begin(db=self._db, buffers=True) as txn:
            raw = txn.get(_key(last_index))
            return self._whole(txn, _key(last_index), raw) if raw is not None else None

    def info(self, last_index: int | None = None) -> SnapshotInfo | None:
        """What `list` says about the snapshot at `last_index` (None: the latest), without
        copying it; None when no such snapshot is kept."""
        with self._env.begin(db=self._db, buffers=True) as txn:
            if last_index is None:
                cur = txn.cursor()
                return self._describe(txn, cur.key(), cur.value()) if cur.last() else None
            raw = txn.get(_key(last_index))
            return self._describe(txn, _key(last_index), raw) if raw is not None else None

    def read(self, last_index: int, offset: int, size: int) -> bytes | None:
        """Bytes offset..offset+size of the snapshot at `last_index` (fewer at its end), or
        None when it is no longer kept. Each call is one short read transaction that copies
        only the slice asked for: an export streams a snapshot of any size in bounded memory
        and never holds a transaction (and so old pages) open between chunks."""
        if offset < 0 or size < 0:
            raise ValueError("offset and size must be >= 0")
        with self._env.begin(db=self._db, buffers=True) as txn:
            raw = txn.get(_key(last_index))
            if raw is None:
                return None
            if not _is_manifest(raw):
                return bytes(raw[offset:offset + size])
            _, total, count, chunk = _MANIFEST.unpack_from(raw)
            out, pos, end = [], offset, min(total, offset + size)
            while pos < end:
                piece = txn.get(_key(last_index) + struct.pack(">I", pos // chunk), db=self._chunks())
                lo = pos % chunk
                take = bytes(piece[lo:lo + end - pos])
                out.append(take)
                pos += len(take)
            return b"".join(out)

    def _whole(self, txn, key, raw) -> bytes:
        if not _is_manifest(raw):
            return bytes(raw)
        _, total, count, chunk = _MANIFEST.unpack_from(raw)
        return b"".join(bytes(txn.get(bytes(key) + struct.pack(">I", n), db=self._chunks())) for n in range(count))

    def _describe(self, txn, key, raw) -> SnapshotInfo:
        if not _is_manifest(raw):
            return self._info(raw)
        _, total, count, chunk = _MANIFEST.unpack_from(raw)
        first = txn.get(bytes(key) + struct.pack(">I", 0), db=self._chunks())
        meta = read_meta(first)
        return SnapshotInfo(last_index=meta.last_index, last_term=meta.last_term, created_at_ms=meta.created_at_ms,
                            size=total, timers=meta.timers, sha256=bytes(raw[-_DIGEST:]).hex())

    @staticmethod
    def _info(data) -> SnapshotInfo:
        return describe(data)


def describe(data) -> SnapshotInfo:
    """What `SnapshotStore.list` says about a container (metadata only; no full hash)."""
    meta = read_meta(data)
    return SnapshotInfo(
        last_index=meta.last_index,
        last_term=meta.last_term,
        created_at_ms=meta.created_at_ms,
        size=len(data),
        timers=meta.timers,
        sha256=bytes(data[-_DIGEST:]).hex(),
    )
