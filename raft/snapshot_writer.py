"""Writing one snapshot without stalling the node's Raft thread (issue 15).

The writer runs in its own thread, but in the node's process: whatever it does while
holding the GIL, and whatever dirty data it leaves for the disk to flush, the Raft
thread (journal appends with fdatasync, heartbeats) waits for. So it:

- never builds the whole container in memory: the kernel snapshot comes as the
  encoder's parts (SnapshotCapture.to_parts) and is written part by part between the
  container's head and its SHA-256 (computed as it goes; hashing and writing release
  the GIL), instead of being joined twice (kernel bytes, then container: ~180 MB copies
  made with the GIL held at a million timers);
- writes in chunks and fdatasyncs every ``CHUNK`` bytes, so at most one chunk of dirty
  pages sits in front of the journal's own fdatasync (one fsync of the whole file at
  the end queued a journal append behind the flush of all of it);
- sleeps ``PAUSE`` seconds after each chunk, so the Raft thread gets the GIL and the
  disk between them;
- the copy kept in the snapshot store (LMDB, for list/export/restore) is put from the
  finished file through a read-only mmap (SnapshotStore.put_file), not from a heap copy.

The file is complete and fsynced before the caller moves it into place (atomic rename),
so a crash during the write leaves the previous snapshot file untouched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

import time

from . import snapshots

CHUNK = 4 << 20          # bytes written (and fdatasynced) at a time
PAUSE = 0.001            # seconds between two chunks: the Raft thread runs


def write_file(fh, meta: snapshots.SnapshotMeta, parts: list, chunk: int = CHUNK, pause: float = PAUSE) -> tuple:
    """Write the container of `meta` and the kernel snapshot given as `parts` (byte strings
    whose join is the kernel snapshot: SnapshotCapture.to_parts) to the open file `fh`,
    fdatasyncing every `chunk` bytes; returns (meta with kernel_size set, bytes written)."""
    meta = dataclasses.replace(meta, kernel_size=sum(map(len, parts)))
    digest = hashlib.sha256()
    fd = fh.fileno()
    written = unsynced = 0
    for part in (snapshots.head_bytes(meta), *parts):
        mv = memoryview(part)
        for i in range(0, len(mv), chunk):
            piece = mv[i:i + chunk]
            digest.update(piece)
            fh.write(piece)
            written += len(piece)
            unsynced += len(piece)
            if unsynced >= chunk:
                fh.flush()
                os.fdatasync(fd)
                unsynced = 0
                if pause:
                    time.sleep(pause)
    tail = digest.digest()
    fh.write(tail)
    fh.flush()
    os.fsync(fd)
    return meta, written + len(tail)
