"""`minoots node run` (one node process) and `minoots up` (a local 3-node cluster)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from .common import LOCAL_CLUSTER_FILE, fail, parse_size

DEFAULT_DIR = "./minoots-data"


def _parse_peer(value: str) -> tuple[str, str]:
    nid, sep, addr = value.partition("=")
    if not sep or not nid or not addr:
        raise click.BadParameter(f"expected ID=HOST:PORT, got {value!r}", param_hint="--peer")
    return nid, addr


@click.group()
def node() -> None:
    """Run a MINOOTS node."""


@node.command("run")
@click.option("--id", "node_id", required=True, envvar="MINOOTS_NODE_ID", help="This node's id, e.g. n1.")
@click.option("--raft", required=True, envvar="MINOOTS_RAFT", help="Raft address HOST:PORT this node listens on.")
@click.option("--peer", "peers", multiple=True, help="Another member as ID=HOST:PORT (repeat).")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              envvar="MINOOTS_DATA_DIR", help="Where this node keeps its LMDB environment.")
@click.option("--admin", default=None, envvar="MINOOTS_ADMIN", help="Admin channel HOST:PORT (JSON over HTTP).")
@click.option("--cluster", default="minoots", show_default=True, envvar="MINOOTS_CLUSTER",
              help="Cluster name; a data dir from another cluster is refused.")
@click.option("--init", is_flag=True, help="Create a new node in a new or empty data dir.")
@click.option("--sync", type=click.Choice(["durable", "relaxed"]), default="durable", show_default=True,
              help="durable: fsync before acknowledging; relaxed: periodic sync.")
@click.option("--map-size", default="8GiB", show_default=True, help="LMDB map size (e.g. 512MiB, 8GiB).")
@click.option("--snapshot-keep", default=3, show_default=True, type=click.IntRange(1, 1000))
@click.option("--compaction-entries", default=50_000, show_default=True, type=click.IntRange(100))
@click.option("--compaction-seconds", default=300.0, show_default=True, type=click.FloatRange(1.0))
@click.option("--clock-offset-ms", default=0, show_default=True, type=int,
              help="Run this node's clock ahead (+) or behind (-); for chaos drills.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def run_cmd(node_id, raft, peers, data_dir, admin, cluster, init, sync, map_size, snapshot_keep,
            compaction_entries, compaction_seconds, clock_offset_ms, log_level) -> None:
    """Run one node until SIGTERM/SIGINT. Logs JSON lines on stderr."""
    from minoots.raft import jsonlog
    from minoots.raft.node import NodeConfig, run
    from minoots.raft.store import DataDirError

    peer_map: dict[str, str] = {}
    for p in peers:
        nid, addr = _parse_peer(p)
        if nid in peer_map:
            raise click.BadParameter(f"peer {nid} given twice", param_hint="--peer")
        peer_map[nid] = addr
    jsonlog.setup(node_id, log_level)
    try:
        cfg = NodeConfig(node_id=node_id, raft=raft, data_dir=data_dir, peers=peer_map, admin=admin,
                         cluster=cluster, init=init, sync=sync, map_size=parse_size(map_size),
                         snapshot_keep=snapshot_keep, compaction_entries=compaction_entries,
                         compaction_seconds=compaction_seconds, clock_offset_ms=clock_offset_ms)
        code = run(cfg)
    except (DataDirError, ValueError) as exc:
        fail(str(exc))
    sys.exit(code)


def node_command(python: str, nid: str, raft: str, admin: str, peers: dict[str, str], data_dir: Path,
                 init: bool, extra: tuple = ()) -> list[str]:
    cmd = [python, "-m", "minoots", "node", "run", "--id", nid, "--raft", raft, "--admin", admin,
           "--data-dir", str(data_dir), *extra]
    for pid, paddr in peers.items():
        cmd += ["--peer", f"{pid}={paddr}"]
    if init:
        cmd.append("--init")
    return cmd


@click.command()
@click.option("--dir", "data_root", default=DEFAULT_DIR, show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the nodes keep their data.")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--raft-port", default=7101, show_default=True, type=click.IntRange(1, 65000),
              help="First Raft port; node i uses raft-port+i-1.")
@click.option("--admin-port", default=7301, show_default=True, type=click.IntRange(1, 65000),
              help="First admin port; node i uses admin-port+i-1.")
@click.option("--sync", type=click.Choice(["durable", "relaxed"]), default="durable", show_default=True)
def up(data_root: Path, nodes: int, host: str, raft_port: int, admin_port: int, sync: str) -> None:
    """Start a local cluster on loopback; Ctrl-C stops every node."""
    from minoots.raft.admin import AdminClient, AdminError

    ids = [f"n{i}" for i in range(1, nodes + 1)]
    raft = {nid: f"{host}:{raft_port + i}" for i, nid in enumerate(ids)}
    admin = {nid: f"{host}:{admin_port + i}" for i, nid in enumerate(ids)}
    data_root.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def stop_all() -> None:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    try:
        for nid in ids:
            ddir = data_root / nid
            init = not ddir.exists()
            peers = {p: raft[p] for p in ids if p != nid}
            cmd = node_command(sys.executable, nid, raft[nid], admin[nid], peers, ddir, init,
                               ("--sync", sync))
            logf = open(data_root / f"{nid}.log", "ab")
            procs[nid] = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        (data_root / LOCAL_CLUSTER_FILE).write_text(json.dumps(
            {"nodes": [{"id": n, "raft": raft[n], "admin": admin[n], "pid": procs[n].pid} for n in ids]},
            indent=2))
        leader = None
        deadline = time.monotonic() + 30
        while leader is None and time.monotonic() < deadline:
            for nid, p in procs.items():
                if p.poll() is not None:
                    tail = (data_root / f"{nid}.log").read_text(errors="replace").strip().splitlines()[-3:]
                    raise click.ClickException(f"node {nid} exited with code {p.returncode}:\n" + "\n".join(tail))
            for nid in ids:
                try:
                    leader = AdminClient(admin[nid], timeout=1).call("GET", "/status")["leader"]
                except AdminError:
                    continue
                if leader:
                    break
            time.sleep(0.2)
        if leader is None:
            raise click.ClickException("no leader elected within 30 s; see the node logs in " + str(data_root))
        for nid in ids:
            click.echo(f"{nid}: raft {raft[nid]}  admin http://{admin[nid]}  data {data_root / nid}"
                       f"  log {data_root / (nid + '.log')}  pid {procs[nid].pid}")
        click.echo(f"leader: {leader}")
        click.echo("Ctrl-C stops the cluster.")
        while True:
            for nid, p in procs.items():
                if p.poll() is not None:
                    raise click.ClickException(f"node {nid} exited with code {p.returncode}; "
                                               f"see {data_root / (nid + '.log')}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("stopping...")
    finally:
        stop_all()
        try:
            os.remove(data_root / LOCAL_CLUSTER_FILE)
        except FileNotFoundError:
            pass
