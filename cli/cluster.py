"""Operator commands: `minoots cluster status|add|remove` and `minoots snapshot take|list|export|restore`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from .common import admin_addresses, fail

node_option = click.option("--node", "nodes", multiple=True,
                           help="Any member's admin address HOST:PORT (repeatable; default: the local cluster).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _call(nodes, method: str, path: str, body=None, raw: bool = False):
    """Send to the first reachable node; node-side errors are final, unreachable nodes are skipped."""
    from minoots.raft.admin import AdminClient, AdminError

    last = None
    for addr in admin_addresses(nodes):
        try:
            return AdminClient(addr).call(method, path, body, raw=raw)
        except AdminError as exc:
            if exc.code != "UNAVAILABLE" or "cannot reach" not in str(exc):
                fail(f"{exc.code}: {exc}")
            last = exc
    fail(str(last))


def _out(obj, as_json: bool, human) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True))
    else:
        human(obj)


@click.group()
def cluster() -> None:
    """Inspect and change cluster membership."""


@cluster.command("status")
@node_option
@json_option
def status(nodes, as_json) -> None:
    """Leader, term, commit/applied index, members with role and lag, timer counts."""
    def human(s):
        click.echo(f"cluster {s['cluster']}  leader {s['leader'] or '-'}  term {s['term']}  "
                   f"commit {s['commit_index']}  applied {s['applied_index']}  (answered by {s['node']})")
        for m in s["members"]:
            extra = ""
            if "lag" in m:
                extra = f"  match {m['match_index']}  lag {m['lag']}"
            if m.get("connected") is False:
                extra += "  (disconnected)"
            click.echo(f"  {m['id']:<6} {m['address']:<22} {m['role']}{extra}")
        counts = ", ".join(f"{k} {v}" for k, v in s["timers"].items() if v) or "none"
        click.echo(f"timers: {counts}")
    _out(_call(nodes, "GET", "/status"), as_json, human)


@cluster.command("add")
@click.argument("member")
@node_option
@json_option
def add(member, nodes, as_json) -> None:
    """Add a node: MEMBER is ID=HOST:PORT (its Raft address). Start it with --peer for every member."""
    nid, sep, addr = member.partition("=")
    if not sep or not nid or not addr:
        fail(f"expected ID=HOST:PORT, got {member!r}")
    _out(_call(nodes, "POST", "/members", {"id": nid, "address": addr}), as_json,
         lambda r: click.echo(f"added {nid} ({addr})"))


@cluster.command("remove")
@click.argument("node_id")
@node_option
@json_option
def remove(node_id, nodes, as_json) -> None:
    """Remove a node by id. To remove the leader, send this to the leader: it steps down first."""
    _out(_call(nodes, "DELETE", f"/members/{node_id}"), as_json,
         lambda r: click.echo(f"removed {node_id} ({r['removed']['address']})"))


@click.group()
def snapshot() -> None:
    """Take, list, export and restore snapshots."""


@snapshot.command("take")
@node_option
@json_option
def take(nodes, as_json) -> None:
    """Snapshot the node now (and compact its log)."""
    _out(_call(nodes, "POST", "/snapshots"), as_json,
         lambda r: click.echo("snapshot at index {last_index} (term {last_term}): {size} bytes, "
                              "{timers} timers".format(**r["snapshot"])))


@snapshot.command("list")
@node_option
@json_option
def list_(nodes, as_json) -> None:
    """Snapshots kept by the node, oldest first."""
    def human(r):
        if not r["snapshots"]:
            click.echo("no snapshots yet")
        for s in r["snapshots"]:
            click.echo("index {last_index:>10}  term {last_term:>4}  {size:>12} bytes  {timers:>9} timers  "
                       "sha256 {sha256:.16}".format(**s))
    _out(_call(nodes, "GET", "/snapshots"), as_json, human)


@snapshot.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@node_option
def export(file: Path, nodes) -> None:
    """Write the node's latest snapshot to FILE."""
    data = _call(nodes, "GET", "/snapshots/latest", raw=True)
    file.write_bytes(data)
    click.echo(f"wrote {len(data)} bytes to {file}")


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
