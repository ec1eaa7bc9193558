"""Disaster recovery: put a snapshot into a stopped node's data dir.

The node keeps its identity, term and vote; its log is emptied and the snapshot
becomes both its latest LMDB snapshot and the file PySyncObj loads at start, so
it restarts exactly at the snapshot's index. Refuses a data dir whose node is
running, unless forced.
"""
from __future__ import annotations

import os
from pathlib import Path

from minoots.kernel import KernelError, State

from . import snapshots
from .journal import LmdbJournal
from .node import PID_FILE, SNAPSHOT_FILE
from .store import DataDirError, open_data_dir, read_identity


class RestoreError(Exception):
    """The snapshot or the data dir cannot be used for a restore."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_snapshot(file: Path, data_dir: Path, force: bool = False) -> snapshots.SnapshotInfo:
    data = Path(file).read_bytes()
    try:
        meta, kernel = snapshots.decode(data)
        State.from_bytes(kernel)
    except (snapshots.SnapshotFormatError, KernelError) as exc:
        raise RestoreError(f"{file} is not a usable snapshot: {exc}") from exc
    pidfile = Path(data_dir) / PID_FILE
    if pidfile.exists() and not force:
        try:
            pid = int(pidfile.read_text().strip())
        except ValueError:
            pid = None
        if pid is None or _pid_alive(pid):
            raise RestoreError(f"a node seems to be running on {data_dir} (pid file {pidfile}); "
                               "stop it first, or pass --force")
    try:
        ident = read_identity(data_dir)
        if meta.cluster_name and meta.cluster_name != ident.cluster:
            raise RestoreError(f"snapshot is from cluster {meta.cluster_name!r}; {data_dir} belongs to "
                               f"{ident.cluster!r}")
        env = open_data_dir(data_dir, cluster=ident.cluster, node_id=ident.node_id)
    except DataDirError as exc:
        raise RestoreError(str(exc)) from exc
    store = None
    try:
        LmdbJournal(env).clear()
        store = snapshots.SnapshotStore.open(data_dir, legacy_env=env)
        info = store.put(data)
        tmp = Path(data_dir) / (SNAPSHOT_FILE + ".restore")
        tmp.write_bytes(data)
        os.replace(tmp, Path(data_dir) / SNAPSHOT_FILE)
        env.sync(True)
    finally:
        if store is not None:
            store.close()
        env.close()
    return info
