"""A node's data dir: one LMDB environment (`lmdb/`) holding its identity and Raft log.

Snapshots (`snapshots/`, raft/snapshots.py) and events (`events/`, api/events.py)
live in LMDB environments of their own, so that writing either never holds up a
journal append.

A node must never start empty over a data dir it cannot read: an empty node would
vote, and a cluster that counts its vote can lose acknowledged timers. So a data
dir is created only when asked (`init=True`), and every later start checks that it
holds this node of this cluster.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import lmdb

from .journal import SYNC_DURABLE, SYNC_RELAXED

FORMAT = 1
LMDB_SUBDIR = "lmdb"
MAX_DBS = 16
SYNC_POLICIES = (SYNC_DURABLE, SYNC_RELAXED)   # what --sync accepts (see raft/journal.py)
DEFAULT_SYNC = SYNC_DURABLE
DEFAULT_MAP_SIZE = 8 << 30                      # a node's LMDB map (address space; the file grows as used)


class DataDirError(Exception):
    """The data dir is missing, foreign, corrupt, locked or from another node/cluster."""


@dataclass(frozen=True)
class Identity:
    cluster: str
    node_id: str
    format: int = FORMAT


def _open_env(path: Path, map_size: int, sync_policy: str) -> lmdb.Environment:
    if sync_policy not in SYNC_POLICIES:
        raise ValueError(f"sync policy must be one of {SYNC_POLICIES}, not {sync_policy!r}")
    # durable: every write transaction is fsynced before commit returns;
    # relaxed: the journal syncs the environment periodically instead.
    return lmdb.open(
        str(path),
        map_size=map_size,
        max_dbs=MAX_DBS,
        subdir=True,
        sync=sync_policy == SYNC_DURABLE,
        metasync=sync_policy == SYNC_DURABLE,
        readahead=False,
        lock=True,
    )


def open_data_dir(
    data_dir: str | os.PathLike,
    *,
    cluster: str,
    node_id: str,
    init: bool = False,
    map_size: int = DEFAULT_MAP_SIZE,
    sync_policy: str = DEFAULT_SYNC,
) -> lmdb.Environment:
    """Open (or, with init=True, create) a node's LMDB environment and check its identity."""
    root = Path(data_dir)
    envdir = root / LMDB_SUBDIR
    has_env = (envdir / "data.mdb").is_file()
    if init:
        if has_env:
            raise DataDirError(f"{root} already holds a MINOOTS node; refusing --init over it")
        if root.exists() and any(root.iterdir()):
            raise DataDirError(f"{root} is not empty; --init needs a new or empty directory")
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        envdir.mkdir(mode=0o700, exist_ok=True)
    elif not root.exists():
        raise DataDirError(
            f"data dir {root} does not exist; pass --init to create a new node there "
            "(a node never starts empty over a missing data dir)"
        )
    elif not has_env:
        what = "is empty" if not any(root.iterdir()) else "is not a MINOOTS data dir (no lmdb/data.mdb)"
        raise DataDirError(f"data dir {root} {what}; pass --init to create a new node in an empty dir")
    os.chmod(root, 0o700)      # the node's own user only: timers, payloads, the cluster secret
    try:
        env = _open_env(envdir, map_size, sync_policy)
    except lmdb.Error as exc:
        raise DataDirError(f"cannot open LMDB in {envdir}: {exc}") from exc
    try:
        meta = env.open_db(b"meta")
        with env.begin(db=meta, write=init) as txn:
            raw = txn.get(b"identity")
            if init:
                ident = Identity(cluster=cluster, node_id=node_id)
                txn.put(b"identity", json.dumps(ident.__dict__).encode())
                return env
        if raw is None:
            raise DataDirError(f"{envdir} has no MINOOTS identity: corrupt or foreign data dir")
        try:
            found = Identity(**json.loads(bytes(raw)))
        except (ValueError, TypeError) as exc:
            raise DataDirError(f"{envdir} has an unreadable identity record: {exc}") from exc
        if found.format != FORMAT:
            raise DataDirError(f"{root} has data format {found.format}; this build reads format {FORMAT}")
        if found.cluster != cluster:
            raise DataDirError(f"{root} belongs to cluster {found.cluster!r}, not {cluster!r}")
        if found.node_id != node_id:
            raise DataDirError(f"{root} belongs to node {found.node_id!r}, not {node_id!r}")
        return env
    except DataDirError:
        env.close()
        raise
    except lmdb.Error as exc:
        env.close()
        raise DataDirError(f"cannot read LMDB in {envdir}: {exc}") from exc


def read_identity(data_dir: str | os.PathLike) -> Identity:
    """The identity recorded in a data dir, without knowing it in advance (for `up` and restore)."""
    envdir = Path(data_dir) / LMDB_SUBDIR
    if not (envdir / "data.mdb").is_file():
        raise DataDirError(f"{data_dir} is not a MINOOTS data dir (no lmdb/data.mdb)")
    try:
        env = lmdb.open(str(envdir), max_dbs=MAX_DBS, readonly=True, lock=False)
    except lmdb.Error as exc:
        raise DataDirError(f"cannot open LMDB in {envdir}: {exc}") from exc
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            raw = txn.get(b"identity")
        if raw is None:
            raise DataDirError(f"{envdir} has no MINOOTS identity")
        return Identity(**json.loads(bytes(raw)))
    except lmdb.Error as exc:
        raise DataDirError(f"cannot read LMDB in {envdir}: {exc}") from exc
    finally:
        env.close()
