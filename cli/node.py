"""`minoots node run` (one node process) and `minoots up` (a local 3-node cluster)."""
from __future__ import annotations

import dataclasses
import functools
import signal
import os
import sys
import time
from pathlib import Path

import click

from minoots.api.events import EVENT_BYTES, EVENTS_BUDGET, EVENTS_MIN_AGE_MS
from minoots.api.quotas import ApiLimits
from minoots.raft.audit.ledger import AUDIT_KEEP
from minoots.raft.config import (COMPACTION_ENTRIES, COMPACTION_SECONDS, DEFAULT_CLUSTER, SNAPSHOT_KEEP,
                                 RaftTiming)
from minoots.raft.store import DEFAULT_MAP_SIZE, DEFAULT_SYNC, SYNC_POLICIES

from .common import DEFAULT_DATA_ROOT, LOCAL_CLUSTER_FILE, fail, format_size, parse_size

ADMIN_REMOVED = ("{flag} was removed: the JSON admin channel is retired; "
                 "use the gRPC Cluster service (minoots cluster …)")
sync_option = click.option("--sync", type=click.Choice(SYNC_POLICIES), default=DEFAULT_SYNC, show_default=True,
                           help="durable: fsync before acknowledging; relaxed: sync about once a second "
                                "(a power loss can lose acknowledged writes).")


def _parse_peer(value: str) -> tuple[str, str]:
    nid, sep, addr = value.partition("=")
    if not sep or not nid or not addr:
        fail(f"--peer expects ID=HOST:PORT, got {value!r}", code=2)
    return nid, addr


def removed_option(flag: str, metavar: str | None = None):
    """A hidden `flag` that only says it is gone (a usage error, exit 2) when someone still passes it."""
    def refuse(ctx, param, value):
        if value is not None:
            raise click.UsageError(ADMIN_REMOVED.format(flag=flag), ctx=ctx)

    return click.option(flag, hidden=True, expose_value=False, default=None, metavar=metavar, callback=refuse,
                        is_eager=True)


def raft_timing_options(fn):
    """One --flag per RaftTiming field (seconds), defaulting to the field's default."""
    for f in reversed(dataclasses.fields(RaftTiming)):
        fn = click.option(f"--{f.name.replace('_', '-')}", f.name, default=f.default, show_default=True,
                          type=click.FloatRange(0.0, min_open=True), help=f.metadata["help"])(fn)
    return fn


_LIMIT_HELP = {
    "max_concurrent_rpcs": "RPCs this node serves at once, watch streams included; past it gRPC answers "
                           "RESOURCE_EXHAUSTED.",
    "max_watchers_per_principal": "Open watch streams per token (or certificate) on this node.",
    "max_queued_creates": "Create requests waiting for the commit in flight; past it RESOURCE_EXHAUSTED.",
    "max_queued_timers": "Timers in those waiting requests.",
}


def api_limit_options(fn):
    """One --flag per ApiLimits field (api/quotas.py), handed to the command as `limits`."""
    names = list(_LIMIT_HELP)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        kwargs["limits"] = ApiLimits(**{n: kwargs.pop(n) for n in names})
        return fn(*args, **kwargs)

    for f in reversed(dataclasses.fields(ApiLimits)):
        wrapped = click.option(f"--{f.name.replace('_', '-')}", f.name, default=f.default, show_default=True,
                               type=click.IntRange(1), help=_LIMIT_HELP[f.name])(wrapped)
    return wrapped


@click.group()
def node() -> None:
    """Run a MINOOTS node."""


@node.command("run")
@click.option("--id", "node_id", required=True, envvar="MINOOTS_NODE_ID", help="This node's id, e.g. n1.")
@click.option("--raft", required=True, envvar="MINOOTS_RAFT", help="Raft address HOST:PORT this node listens on.")
@click.option("--raft-bind", default=None, envvar="MINOOTS_RAFT_BIND",
              help="Listen for Raft on HOST:PORT instead of --raft, which stays the address peers "
                   "use (e.g. behind a proxy, as the partition drill does).")
@click.option("--peer", "peers", multiple=True, help="Another member as ID=HOST:PORT (repeat).")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              envvar="MINOOTS_DATA_DIR", help="Where this node keeps its LMDB environment.")
@removed_option("--admin", "HOST:PORT")
@click.option("--grpc", "grpc_address", default=None, envvar="MINOOTS_GRPC",
              help="Serve the gRPC API (Timers, Cluster, health, reflection) on HOST:PORT.")
@click.option("--http", "http_address", default=None, envvar="MINOOTS_HTTP",
              help="Also serve the HTTP/JSON + Server-Sent Events gateway on HOST:PORT (REST over the "
                   "same API, same tokens; /v1/openapi.json describes it). HTTPS with --tls-cert.")
@click.option("--grpc-advertise", default=None, envvar="MINOOTS_GRPC_ADVERTISE",
              help="gRPC HOST:PORT other members hand to clients (default: --grpc).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM certificate chain: serve gRPC over TLS (with --tls-key).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM private key of --tls-cert.")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Mutual TLS: clients must present a certificate signed by this PEM CA; a client "
                   "without an API token is then the principal its certificate's subject is bound to "
                   "(minoots token create --cert-subject).")
@click.option("--events-budget", default=format_size(EVENTS_BUDGET), show_default=True,
              help=f"Disk the node's event history (WatchEvents replay) may use, e.g. 512MiB, 8GiB: the hard "
                   f"bound; past it the oldest events are trimmed. An event takes about {EVENT_BYTES} bytes "
                   f"(uuid4-hex id, tenant 'default'), so the default holds ~45M events: 1M timers x 8 events "
                   f"(created, armed, fired, settled, reschedules) is 0.75 GB.")
@click.option("--events-min-age", default=EVENTS_MIN_AGE_MS / 1000, show_default=True, type=click.FloatRange(0.0),
              help="Seconds of events kept at least when the budget allows (nothing is trimmed for age "
                   "below it); when the budget trims younger events the node logs a warning.")
@click.option("--events-max-age", default=None, type=click.FloatRange(1.0),
              help="Also drop retained events older than this many seconds (off by default; at least "
                   "--events-min-age).")
@click.option("--events-keep", default=None, type=click.IntRange(1),
              help="Optional extra bound: at most this many events (off by default; the budget bounds them).")
@click.option("--cluster", default=DEFAULT_CLUSTER, show_default=True, envvar="MINOOTS_CLUSTER",
              help="Cluster name; a data dir from another cluster is refused.")
@click.option("--init", is_flag=True, help="Create a new node in a new or empty data dir.")
@sync_option
@click.option("--map-size", default=format_size(DEFAULT_MAP_SIZE), show_default=True,
              help="LMDB map size (e.g. 512MiB, 8GiB).")
@click.option("--snapshot-keep", default=SNAPSHOT_KEEP, show_default=True, type=click.IntRange(1, 1000))
@click.option("--compaction-entries", default=COMPACTION_ENTRIES, show_default=True, type=click.IntRange(100))
@click.option("--compaction-seconds", default=COMPACTION_SECONDS, show_default=True, type=click.FloatRange(1.0))
@raft_timing_options
@click.option("--clock-offset-ms", default=0, show_default=True, type=int,
              help="Run this node's clock ahead (+) or behind (-); for chaos drills.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--metrics", "metrics_address", default=None, envvar="MINOOTS_METRICS",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (off when not given).")
@click.option("--cluster-secret-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="MINOOTS_CLUSTER_SECRET_FILE",
              help="The cluster secret every member holds (mode 0600); it authenticates every Raft "
                   "frame. Default: DATA_DIR/cluster.secret, written at --init for a node without peers.")
@click.option("--admin-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="MINOOTS_ADMIN_TOKEN_FILE",
              help="A file (mode 0600) holding the bootstrap admin token, accepted besides the "
                   "replicated tokens so the first ones can be made (minoots up writes one).")
@click.option("--insecure-peers", is_flag=True,
              help="Run the Raft port with no authentication: anyone who reaches it can join, "
                   "read and rewrite the log. Logs a warning every minute.")
@click.option("--audit-key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="MINOOTS_AUDIT_KEY_FILE",
              help="The cluster's audit signing key (Ed25519, mode 0600; minoots up writes one): signs "
                   "the checkpoints of this node's audit ledger. Without it the ledger is unsigned.")
@click.option("--audit-keep", default=AUDIT_KEEP, show_default=True, type=click.IntRange(1000),
              help="Audit facts retained (newest; a record of timer events counts its events; "
                   "the trimmed prefix leaves a signed checkpoint).")
@click.option("--webhook-allow-hosts", "webhook_allow_hosts", default="", metavar="HOST[,HOST...]",
              envvar="MINOOTS_WEBHOOK_ALLOW_HOSTS",
              help="Hosts, addresses or networks (CIDR) webhooks may reach although they are loopback, private "
                   "or link-local (refused by default: SSRF). minoots up passes 127.0.0.1,localhost,::1.")
@api_limit_options
def run_cmd(node_id, raft, raft_bind, peers, data_dir, grpc_address, http_address, grpc_advertise, tls_cert, tls_key, tls_client_ca,
            events_budget, events_min_age, events_max_age, events_keep, cluster, init, sync, map_size, snapshot_keep,
            compaction_entries, compaction_seconds,
            clock_offset_ms, log_level, metrics_address, cluster_secret_file, admin_token_file, insecure_peers,
            audit_key_file, audit_keep, webhook_allow_hosts, limits, **timing) -> None:
    """Run one node until SIGTERM/SIGINT. Logs JSON lines on stderr.

    With --grpc the node serves the gRPC API; writes may go to any node (a follower
    forwards them to the leader), reads answer from the node's own applied state.
    """
    from minoots.raft import jsonlog
    from minoots.raft.config import NodeConfig
    from minoots.raft.node import run
    from minoots.raft.store import DataDirError

    peer_map: dict[str, str] = {}
    for p in peers:
        nid, addr = _parse_peer(p)
        if nid in peer_map:
            fail(f"--peer {nid} given twice", code=2)
        peer_map[nid] = addr
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together", code=2)
    if tls_client_ca and not tls_cert:
        fail("--tls-client-ca needs --tls-cert and --tls-key", code=2)
    if (tls_cert or grpc_advertise or admin_token_file or http_address) and not grpc_address:
        fail("--tls-cert/--tls-key/--grpc-advertise/--admin-token-file/--http need --grpc", code=2)
    if audit_key_file and not grpc_address:
        fail("--audit-key-file needs --grpc (the audit ledger is kept by a node serving the API)", code=2)
    jsonlog.setup(node_id, log_level)
    os.umask(0o077)     # everything the node writes (LMDB, snapshots, secrets) is its user's alone
    try:
        cfg = NodeConfig(node_id=node_id, raft=raft, data_dir=data_dir, peers=peer_map,
                         cluster=cluster, init=init, sync=sync, map_size=parse_size(map_size),
                         snapshot_keep=snapshot_keep, compaction_entries=compaction_entries,
                         compaction_seconds=compaction_seconds, clock_offset_ms=clock_offset_ms,
                         raft_bind=raft_bind, timing=RaftTiming(**timing), metrics=metrics_address,
                         cluster_secret_file=cluster_secret_file, insecure_peers=insecure_peers)
        if grpc_address:
            from minoots.api.process import ApiConfig, run_node
            from minoots.api.server import TlsFiles

            api = ApiConfig(grpc=grpc_address, advertise=grpc_advertise,
                            tls=TlsFiles(tls_cert, tls_key, tls_client_ca) if tls_cert else None,
                            events_budget=parse_size(events_budget), events_min_age_s=events_min_age,
                            events_keep=events_keep, events_max_age_s=events_max_age,
                            admin_token_file=admin_token_file, audit_key_file=audit_key_file,
                            audit_keep=audit_keep, limits=limits, http=http_address,
                            webhook_allow_hosts=tuple(h.strip() for h in webhook_allow_hosts.split(",") if h.strip()))
            code = run_node(cfg, api)
        else:
            code = run(cfg)
    except (DataDirError, ValueError) as exc:
        fail(str(exc))
    sys.exit(code)


@node.command("init-secrets")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init_secrets(directory: Path) -> None:
    """Write DIRECTORY/cluster.secret, DIRECTORY/admin.token and DIRECTORY/audit.key (mode 0600)
    for a new cluster.

    Give every member the same files: --cluster-secret-file authenticates the Raft links,
    --admin-token-file is the first admin token (the CLI and SDK read it from
    $MINOOTS_TOKEN_FILE or $MINOOTS_TOKEN), --audit-key-file signs the audit ledger's
    checkpoints. Existing files are kept, never overwritten.
    """
    from minoots.raft import peer_secret
    from minoots.raft.audit import AUDIT_KEY_FILE, write_key
    from minoots.raft.tokens import new_token

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    writers = ((peer_secret.SECRET_FILE, peer_secret.generate),
               (peer_secret.ADMIN_TOKEN_FILE, lambda p: peer_secret.generate(p, new_token()[1].encode())),
               (AUDIT_KEY_FILE, write_key))
    for name, write in writers:
        path = directory / name
        if path.exists():
            click.echo(f"{path}: exists, kept")
            continue
        write(path)
        click.echo(f"{path}: written (0600)")


#: `minoots up` is a local playground: its webhooks may call receivers on this machine.
LOOPBACK_WEBHOOKS = "127.0.0.1,localhost,::1"


@click.command()
@click.option("--dir", "data_root", default=DEFAULT_DATA_ROOT, show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the nodes keep their data.")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--raft-port", default=7101, show_default=True, type=click.IntRange(1, 65000),
              help="First Raft port; node i uses raft-port+i-1.")
@removed_option("--admin-port", "PORT")
@click.option("--grpc-port", default=7201, show_default=True, type=click.IntRange(1, 65000),
              help="First gRPC port; node i uses grpc-port+i-1.")
@click.option("--metrics-port", default=7501, show_default=True, type=click.IntRange(1, 65000),
              help="First Prometheus /metrics port; node i uses metrics-port+i-1.")
@click.option("--http-port", default=7301, show_default=True, type=click.IntRange(0, 65000),
              help="First HTTP/JSON + SSE gateway port (on --host); node i uses http-port+i-1; 0 turns it off.")
@sync_option
def up(data_root: Path, nodes: int, host: str, raft_port: int, grpc_port: int, metrics_port: int, http_port: int,
       sync: str) -> None:
    """Start a local cluster on loopback; Ctrl-C stops every node.

    Its nodes run with --webhook-allow-hosts 127.0.0.1,localhost,::1, so webhooks may call
    receivers on this machine (a production node refuses loopback and private addresses).

    Data lives in --dir (one folder per node, reused on the next `up`); node logs
    (JSON lines) go to --dir/nX.log.
    """
    from minoots.raft.testing import LocalCluster

    cluster = LocalCluster(data_root, size=nodes, host=host,
                           raft_ports=[raft_port + i for i in range(nodes)],
                           grpc_ports=[grpc_port + i for i in range(nodes)],
                           metrics_ports=[metrics_port + i for i in range(nodes)],
                           http_ports=[http_port + i for i in range(nodes)] if http_port else None,
                           node_args=("--sync", sync, "--webhook-allow-hosts", LOOPBACK_WEBHOOKS))

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        cluster.start()
        cluster.write_description(data_root / LOCAL_CLUSTER_FILE)
        try:
            leader = cluster.leader(timeout=30)
        except (TimeoutError, RuntimeError) as exc:
            raise click.ClickException(f"{exc}\nsee the node logs in {data_root}")
        for n in cluster.nodes.values():
            http = f"  http http://{n.http}/v1" if n.http else ""
            click.echo(f"{n.node_id}: grpc {n.grpc}{http}  raft {n.raft}  "
                       f"metrics http://{n.metrics}/metrics  data {n.data_dir}  log {n.log_file}  pid {n.pid}")
        click.echo(f"leader: {leader}")
        click.echo("Ctrl-C stops the cluster.")
        while True:
            for n in cluster.nodes.values():
                if not n.alive():
                    raise click.ClickException(f"node {n.node_id} exited with code {n.proc.returncode}; "
                                               f"see {n.log_file}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("stopping...")
    finally:
        cluster.stop()
        (data_root / LOCAL_CLUSTER_FILE).unlink(missing_ok=True)
