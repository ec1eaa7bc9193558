"""Snapshot export on the SDK side: checking the ExportSnapshot stream
(`SnapshotReceiver`) and writing it where the caller asked (`SnapshotSink`).
No network I/O; shared by `Client` and `AsyncClient`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from minoots.v1 import cluster_pb2

from ..types import InvalidArgument, MinootsError, SnapshotInfo, Unavailable
from .wire import snapshot_from_pb

__all__ = ["SNAPSHOT_DIGEST", "SnapshotReceiver", "SnapshotSink"]

SNAPSHOT_DIGEST = 32   # a snapshot container ends with the SHA-256 of everything before it


class SnapshotReceiver:
    """Checks an ExportSnapshot stream chunk by chunk (no I/O; shared by Client and AsyncClient).

    `accept(chunk)` returns the bytes to write; `finish()` returns the
    SnapshotInfo once the whole container arrived and its checksum holds, and
    raises MinootsError(DATA_LOSS) otherwise: a truncated or corrupt export is
    never reported as a success.
    """

    def __init__(self) -> None:
        self.info: Optional[SnapshotInfo] = None
        self.received = 0
        self._hash = hashlib.sha256()
        self._tail = b""          # the last (up to) 32 bytes seen: not hashed yet

    def accept(self, chunk: cluster_pb2.SnapshotChunk) -> bytes:
        if chunk.HasField("snapshot"):
            if self.info is not None:
                raise self._bad("a second header in the middle of the stream")
            self.info = snapshot_from_pb(chunk.snapshot)
        if self.info is None:
            raise self._bad("the stream did not start with the snapshot's description")
        if chunk.offset != self.received:
            raise self._bad(f"chunk at offset {chunk.offset}, expected {self.received}")
        data = chunk.data
        self.received += len(data)
        if self.received > self.info.size:
            raise self._bad(f"more than the announced {self.info.size} bytes")
        buf = self._tail + data
        cut = max(0, len(buf) - SNAPSHOT_DIGEST)
        self._hash.update(buf[:cut])
        self._tail = buf[cut:]
        return data

    def finish(self) -> SnapshotInfo:
        if self.info is None:
            raise self._bad("the node sent no snapshot")
        if self.received != self.info.size:
            raise self._bad(f"got {self.received} of {self.info.size} bytes")
        if self._hash.digest() != self._tail or self._tail.hex() != self.info.sha256:
            raise self._bad("checksum mismatch")
        return self.info

    @staticmethod
    def _bad(what: str) -> MinootsError:
        return MinootsError(f"snapshot export is corrupt: {what}", code="DATA_LOSS")


class SnapshotSink:
    """Where an export goes: a path (written to PATH.part, renamed when complete) or a
    binary file object (rewound between attempts when it can seek)."""

    def __init__(self, dest) -> None:
        self.path: Optional[Path] = None
        self.file = None
        self.start: Optional[int] = None
        self.dirty = False
        if isinstance(dest, (str, os.PathLike)):
            self.path = Path(dest)
            self.part = self.path.with_name(self.path.name + ".part")
        elif hasattr(dest, "write"):
            self.file = dest
            try:
                self.start = dest.tell() if dest.seekable() else None
            except (AttributeError, OSError, ValueError):
                self.start = None
        else:
            raise InvalidArgument("dest must be a path or a binary file object, "
                                  f"not {type(dest).__name__}")

    def open(self):
        """A writable binary file for one attempt (truncated: a retry starts over)."""
        if self.path is not None:
            self.file = open(self.part, "wb")
            return self.file
        if self.dirty:
            if self.start is None:
                raise Unavailable("the export failed part-way into a file object that cannot seek; retry")
            self.file.seek(self.start)
            self.file.truncate()
        self.dirty = True
        return self.file

    def close_attempt(self) -> None:
        if self.path is not None and self.file is not None:
            self.file.close()
            self.file = None

    def commit(self) -> None:
        if self.path is not None:
            os.replace(self.part, self.path)
        else:
            self.file.flush()

    def discard(self) -> None:
        if self.path is not None:
            self.close_attempt()
            try:
                self.part.unlink()
            except FileNotFoundError:
                pass
