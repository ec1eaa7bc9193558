"""Snapshot exports without secrets, unless the operator asks for them.

A kept snapshot holds every webhook signing secret (tenants' and endpoints'): members
need them. An export to an operator (`minoots snapshot export`) leaves them out unless
`--include-secrets` is given: the container is rewritten with its metadata stripped
(raft/snapshots.without_secrets) and the kernel bytes as they are. The stream still
holds one chunk in memory at a time: a first pass hashes the rewritten container (its
size and SHA-256 go in the first message), a second sends it.
"""
from __future__ import annotations

import hashlib
import json
from typing import AsyncIterator

from minoots.raft import snapshots

__all__ = ["export_chunks"]

_DIGEST = 32


async def export_chunks(bridge, node, info, include_secrets: bool, chunk: int) -> AsyncIterator[tuple]:
    """(SnapshotInfo-like dict of what is sent, offset, bytes) for each message of the export."""
    def read(offset: int, size: int):
        return bridge.call(node.snapshot_chunk, info.last_index, offset, size)

    first = await read(0, chunk)
    start = snapshots.head_length(first)
    if start > len(first):
        first = first + await read(len(first), start - len(first))
    meta = snapshots.SnapshotMeta.from_json(json.loads(first[len(snapshots.MAGIC) + 4:start]))
    if include_secrets or not snapshots.has_secrets(meta):
        for offset in range(0, info.size, chunk):
            yield info.__dict__, offset, first[:chunk] if offset == 0 else await read(offset, chunk)
        return
    head = snapshots.head_bytes(snapshots.without_secrets(meta))
    kernel_end = info.size - _DIGEST
    digest = hashlib.sha256(head)
    for offset in range(start, kernel_end, chunk):                 # pass 1: the new checksum
        digest.update(await read(offset, min(chunk, kernel_end - offset)))
    tail = digest.digest()
    size = len(head) + (kernel_end - start) + _DIGEST
    sent = dict(info.__dict__, size=size, sha256=tail.hex())
    yield sent, 0, head
    pos = len(head)
    for offset in range(start, kernel_end, chunk):                 # pass 2: the bytes
        data = await read(offset, min(chunk, kernel_end - offset))
        yield sent, pos, data
        pos += len(data)
    yield sent, pos, tail
