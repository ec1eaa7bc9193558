"""Operator commands: `minoots cluster status|add|remove|transfer-leadership` and
`minoots snapshot take|list|export|restore`.

Thin over the SDK's Cluster calls (gRPC): `--node HOST:PORT` is any member's gRPC
address (repeatable; default $MINOOTS_NODES, comma-separated, else the cluster
`minoots up` runs in ./minoots-data or $MINOOTS_DATA), exactly as for `minoots
timer`. Changes go to the leader wherever the seeds point; status and snapshots
are answered by the leader when one is known (snapshots are per node: the output
names the node). `snapshot restore` is offline: it writes a stopped node's data
dir and talks to no one.

Errors print one line, `error: …`, and exit non-zero; never a traceback.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from .common import ca_option, fail, node_option, sdk_call, sdk_client, timeout_option, tls_option

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def connection(default_timeout: float = 30.0):
    """--node/--timeout/--tls/--ca, handed to the command bundled as `conn`."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, nodes, timeout, tls, ca, **kw):
            return fn(*args, conn={"nodes": nodes, "timeout": timeout, "tls": tls, "ca": ca}, **kw)

        for opt in (ca_option, tls_option, timeout_option(default_timeout), node_option):
            wrapper = opt(wrapper)
        return wrapper
    return decorate


def _sdk(conn: dict, fn):
    """fn(client) with one clean error line on failure."""
    with sdk_client(conn) as client:
        return sdk_call(lambda: fn(client))


def _out(obj, as_json: bool, human) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True))
    else:
        human(obj)


def status_json(st) -> dict:
    """`cluster status --json`: the cluster as the answering node sees it.

    Members carry `match_index` and `lag` only where known: when the answering
    node leads, for each of its followers.
    """
    leads = st.leader is not None and st.node == st.leader
    members = []
    for m in sorted(st.members, key=lambda m: m.id):
        member = {"id": m.id, "address": m.raft_address, "grpc_address": m.grpc_address or None,
                  "role": m.role, "connected": m.connected}
        if leads and m.id != st.leader:
            member["match_index"] = m.match_index
            member["lag"] = m.lag
        members.append(member)
    return {"node": st.node, "cluster": st.cluster, "leader": st.leader,
            "leader_grpc_address": st.leader_grpc_address, "term": st.term,
            "commit_index": st.commit_index, "applied_index": st.applied_index,
            "members": members, "timers": dict(st.timers), "lagging": st.lagging,
            "webhook_circuits": dict(st.webhook_circuits)}


def _member_json(m) -> dict:
    return {"id": m.id, "address": m.raft_address, "grpc_address": m.grpc_address or None}


@click.group()
def cluster() -> None:
    """Inspect and change cluster membership."""


@cluster.command("status")
@connection(10.0)
@json_option
def status(conn, as_json) -> None:
    """Leader, term, commit/applied index, members with role and lag, timer counts."""
    def human(s):
        click.echo(f"cluster {s['cluster']}  leader {s['leader'] or '-'}  term {s['term']}  "
                   f"commit {s['commit_index']}  applied {s['applied_index']}  (answered by {s['node']})")
        for m in s["members"]:
            extra = ""
            if "lag" in m:
                extra = f"  match {m['match_index']}  lag {m['lag']}"
            if m["connected"] is False:
                extra += "  (disconnected)"
            click.echo(f"  {m['id']:<6} raft {m['address']:<22} grpc {m['grpc_address'] or '-':<22} "
                       f"{m['role']}{extra}")
        counts = ", ".join(f"{k} {v}" for k, v in s["timers"].items() if v) or "none"
        click.echo(f"timers: {counts}")
        paused = [k for k, v in s["webhook_circuits"].items() if v == "open"]
        if s["webhook_circuits"]:
            click.echo(f"webhook endpoints: {len(s['webhook_circuits'])}"
                       + (f", paused (circuit open): {', '.join(paused)}" if paused else ""))
        if s["lagging"]:
            click.echo(f"lagging: a watcher on {s['node']} is within 10% of the event retention floor while the "
                       "events budget trims (see minoots_watchers_near_trim; raise --events-budget)")
    _out(status_json(_sdk(conn, lambda c: c.status())), as_json, human)


@cluster.command("add")
@click.argument("member", metavar="ID=HOST:PORT")
@click.option("--grpc", "grpc_address", default="", metavar="HOST:PORT",
              help="The new node's gRPC address, if it serves one (it also announces it itself).")
@connection(60.0)
@json_option
def add(member, grpc_address, conn, as_json) -> None:
    """Add a node: ID=HOST:PORT is its id and Raft address. Start it first with --peer for every member."""
    nid, sep, addr = member.partition("=")
    if not sep or not nid or not addr:
        fail(f"expected ID=HOST:PORT, got {member!r}", code=2)
    m = _sdk(conn, lambda c: c.add_node(nid, addr, grpc_address))
    _out({"added": _member_json(m)}, as_json,
         lambda r: click.echo(f"added {m.id} (raft {m.raft_address}"
                              + (f", grpc {m.grpc_address})" if m.grpc_address else ")")))


@cluster.command("remove")
@click.argument("node_id", metavar="ID")
@connection(60.0)
@json_option
def remove(node_id, conn, as_json) -> None:
    """Remove a node by id. The leader too: it hands leadership to another member first."""
    m = _sdk(conn, lambda c: c.remove_node(node_id))
    _out({"removed": _member_json(m)}, as_json,
         lambda r: click.echo(f"removed {m.id} (raft {m.raft_address})"))


@cluster.command("transfer-leadership")
@click.option("--to", "to", default=None, metavar="ID",
              help="The member to hand leadership to (default: the most caught-up follower).")
@connection(60.0)
@json_option
def transfer_leadership(to, conn, as_json) -> None:
    """Hand leadership to another member, say before maintenance on the leader's machine."""
    leader = _sdk(conn, lambda c: c.transfer_leadership(to))
    _out({"leader": leader}, as_json, lambda r: click.echo(f"leader: {leader}"))


@click.group()
def snapshot() -> None:
    """Take, list, export and restore snapshots."""


@snapshot.command("take")
@connection(120.0)
@json_option
def take(conn, as_json) -> None:
    """Snapshot the node now (the leader when known) and compact its log."""
    s = _sdk(conn, lambda c: c.take_snapshot())
    _out({"snapshot": s.to_dict()}, as_json,
         lambda r: click.echo(f"snapshot at index {s.last_index} (term {s.last_term}) on {s.node or '?'}: "
                              f"{s.size} bytes, {s.timers} timers"))


@snapshot.command("list")
@connection(10.0)
@json_option
def list_(conn, as_json) -> None:
    """Snapshots kept by the node (the leader when known), oldest first."""
    snaps = _sdk(conn, lambda c: c.list_snapshots())

    def human(r):
        if not snaps:
            click.echo("no snapshots yet")
            return
        click.echo(f"snapshots kept by {snaps[0].node or '?'}:")
        for s in snaps:
            click.echo(f"index {s.last_index:>10}  term {s.last_term:>4}  {s.size:>12} bytes  {s.timers:>9} timers  "
                       f"sha256 {s.sha256:.16}")
    _out({"snapshots": [s.to_dict() for s in snaps]}, as_json, human)


@snapshot.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--last-index", default=None, type=click.IntRange(1),
              help="Which snapshot (see `snapshot list`); default: the latest.")
@click.option("--include-secrets", is_flag=True,
              help="Keep the webhook signing secrets (tenants' and endpoints') in the file; without it "
                   "they are left out, and a cluster restored from the file needs its secrets rotated.")
@connection(300.0)
@json_option
def export(file: Path, last_index, include_secrets, conn, as_json) -> None:
    """Write a snapshot of the node (the leader when known) to FILE, for `snapshot restore`.
    Webhook signing secrets are left out unless --include-secrets is given."""
    def run(c):
        try:
            return c.export_snapshot(file, last_index=last_index, include_secrets=include_secrets)
        except OSError as exc:
            fail(f"cannot write {file}: {exc.strerror or exc}")
    s = _sdk(conn, run)
    _out({"file": str(file), "snapshot": s.to_dict()}, as_json,
         lambda r: click.echo(f"wrote {s.size} bytes to {file} (snapshot at index {s.last_index}, "
                              f"term {s.last_term}, {s.timers} timers, from {s.node or '?'})"))


@snapshot.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The (stopped) node's data dir to restore into.")
@click.option("--force", is_flag=True, help="Restore even if the node looks alive.")
def restore(file: Path, data_dir: Path, force: bool) -> None:
    """Disaster recovery: replace a stopped node's state with FILE.

    Restore the same file into every member's data dir, then start them all: each
    starts from the snapshot with an empty log. Refuses a node that is running.
    """
    from minoots.raft.restore import RestoreError, restore_snapshot

    try:
        info = restore_snapshot(file, data_dir, force=force)
    except RestoreError as exc:
        fail(str(exc))
    click.echo(f"restored {data_dir} to index {info.last_index} (term {info.last_term}), {info.timers} timers")
