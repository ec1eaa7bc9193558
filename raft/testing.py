"""A cluster of real node processes on loopback: what `minoots up`, the tests, the drills and the
benchmarks start. A harness, not part of a node: nothing in a running node imports it.

Every process it starts it stops, by PID (SIGTERM, then SIGKILL after a grace
period). Ports are picked free at start unless given. The members share one
cluster secret, ROOT/cluster.secret, and one audit signing key, ROOT/audit.key (both
written at the first start). Each node serves the
gRPC API (`--grpc`), and the harness observes a node through that node's own
`minoots.v1.Cluster` service (Status, GetDigest), exactly as an operator would:
no node-side back door exists. One channel per node, reconnecting quickly
after the node restarts.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from minoots.v1 import cluster_pb2, cluster_pb2_grpc, timers_pb2_grpc

from . import peer_secret
from .audit import AUDIT_KEY_FILE, write_key
from .tokens import new_token

# Reconnect to a restarted node within ~0.1-0.5 s (gRPC's default backoff starts at 1 s and grows).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports the kernel says are free right now."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def message_dict(msg) -> dict:
    """A protobuf message as plain values keyed by its field names (what the node answered,
    nothing renamed): nested messages as dicts (a Timestamp as ms since the epoch), None for
    an unset one; repeated fields as lists, maps as dicts."""
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        kind = f.message_type
        if kind is not None and kind.GetOptions().map_entry:
            out[f.name] = dict(value)
        elif f.is_repeated:
            out[f.name] = [message_dict(v) for v in value] if kind is not None else list(value)
        elif kind is None:
            out[f.name] = value
        elif not msg.HasField(f.name):
            out[f.name] = None
        elif kind.full_name == "google.protobuf.Timestamp":
            out[f.name] = value.ToMilliseconds()
        else:
            out[f.name] = message_dict(value)
    return out


class Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call on a channel."""

    def __init__(self, token: str | None = None) -> None:
        token = token or os.environ["MINOOTS_TOKEN"]
        self._md = (("authorization", f"Bearer {token}"),)

    def _details(self, d):
        return d._replace(metadata=tuple(d.metadata or ()) + self._md) if hasattr(d, "_replace") else \
            _CallDetails(d.method, d.timeout, tuple(d.metadata or ()) + self._md, d.credentials,
                         getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                            "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


def harness_token() -> str:
    """The admin token of the clusters a harness (drill, bench) starts in this process:
    $MINOOTS_TOKEN, set here to a new token when absent, so that LocalCluster makes it
    the clusters' bootstrap admin token and the SDK clients of this process send it."""
    if not os.environ.get("MINOOTS_TOKEN"):
        os.environ["MINOOTS_TOKEN"] = new_token()[1]
    return os.environ["MINOOTS_TOKEN"]


def authed_channel(address: str, token: str | None = None, options=()) -> grpc.Channel:
    """A plaintext channel to `address` whose every call carries the API token
    (`token`, else $MINOOTS_TOKEN)."""
    return grpc.intercept_channel(grpc.insecure_channel(address, options=list(options)), Bearer(token))


@dataclass
class LocalNode:
    node_id: str
    raft: str
    grpc: str                        # gRPC API address (Timers, Cluster): how it is reached
    data_dir: Path
    log_file: Path
    proc: subprocess.Popen | None = None
    extra_args: tuple = ()
    metrics: str | None = None       # Prometheus /metrics address (passed as --metrics when set)
    tls_ca: Path | None = None       # PEM to trust when the node serves TLS (--tls-cert); None: plaintext
    tls_client: tuple | None = None  # (cert PEM, key PEM) the harness presents (mutual TLS)
    token_file: Path | None = None   # API token sent with every call (the cluster's admin token)
    http: str | None = None          # HTTP/JSON + SSE gateway address (passed as --http when set)
    _channel: grpc.Channel | None = field(default=None, repr=False, compare=False)

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self.metrics}/metrics" if self.metrics else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- talking to it (its gRPC API) ----------------------------------------------

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            if self.tls_ca is None:
                self._channel = grpc.insecure_channel(self.grpc, options=CHANNEL_OPTIONS)
            else:
                cert, key = (Path(p).read_bytes() for p in self.tls_client) if self.tls_client else (None, None)
                creds = grpc.ssl_channel_credentials(root_certificates=Path(self.tls_ca).read_bytes(),
                                                     private_key=key, certificate_chain=cert)
                self._channel = grpc.secure_channel(self.grpc, creds, options=CHANNEL_OPTIONS)
            if self.token_file is not None and self.token_file.exists():
                token = peer_secret.load(self.token_file).decode()
                self._channel = grpc.intercept_channel(self._channel, Bearer(token))
        return self._channel

    def close_channel(self) -> None:
        ch, self._channel = self._channel, None
        if ch is not None:
            ch.close()

    def timers(self) -> timers_pb2_grpc.TimersStub:
        return timers_pb2_grpc.TimersStub(self.channel())

    def cluster(self) -> cluster_pb2_grpc.ClusterStub:
        return cluster_pb2_grpc.ClusterStub(self.channel())

    def status(self, timeout: float = 2.0) -> dict:
        """This node's own Cluster.Status as a dict (message_dict; grpc.RpcError when it does not answer)."""
        return message_dict(self.cluster().Status(cluster_pb2.StatusRequest(), timeout=timeout))

    def digest(self, timeout: float = 5.0) -> dict:
        """{"applied_index", "sha256", "bytes"} of this node's kernel (Cluster.GetDigest)."""
        d = self.cluster().GetDigest(cluster_pb2.GetDigestRequest(), timeout=timeout)
        return {"applied_index": d.applied_index, "sha256": d.sha256, "bytes": d.size}


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    host: str = "127.0.0.1"
    raft_ports: list[int] | None = None
    grpc_ports: list[int] | None = None
    metrics_ports: list[int] | None = None
    http_ports: list[int] | None = None   # serve the HTTP gateway (--http) on these ports
    http: bool = False                    # ... or on free ports
    node_args: tuple = ()
    tls_ca: Path | None = None       # with --tls-cert in node_args: the PEM the harness trusts
    tls_client: tuple | None = None  # with --tls-client-ca: (cert, key) the harness presents
    nodes: dict[str, LocalNode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        ports = free_ports(3 * self.size, self.host)
        raft_ports = self.raft_ports or ports[: self.size]
        grpc_ports = self.grpc_ports or ports[self.size: 2 * self.size]
        metrics_ports = self.metrics_ports or ports[2 * self.size:]
        http_ports = self.http_ports or [None] * self.size
        for i in range(self.size):
            self.new_node(f"n{i + 1}", raft_ports[i], grpc_ports[i], metrics_ports[i], http_ports[i])

    def new_node(self, nid: str, raft_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, http_port: int | None = None) -> LocalNode:
        """Describe (not start) node `nid` of this cluster; free ports for those not given
        (an HTTP port only when the cluster serves HTTP)."""
        serves_http = bool(self.http or self.http_ports)
        given = (raft_port, grpc_port, metrics_port, http_port if serves_http else 0)
        spare = iter(free_ports(given.count(None), self.host))
        raft_port, grpc_port, metrics_port, http_port = (p if p is not None else next(spare) for p in given)
        node = self.nodes[nid] = LocalNode(
            nid, f"{self.host}:{raft_port}", f"{self.host}:{grpc_port}", self.root / nid, self.root / f"{nid}.log",
            extra_args=tuple(self.node_args), metrics=f"{self.host}:{metrics_port}", tls_ca=self.tls_ca,
            tls_client=self.tls_client,
            token_file=self.root / peer_secret.ADMIN_TOKEN_FILE,
            http=f"{self.host}:{http_port}" if serves_http else None)
        return node

    @property
    def secret_file(self) -> Path:
        return self.root / peer_secret.SECRET_FILE

    @property
    def admin_token_file(self) -> Path:
        """The bootstrap admin token every node accepts (written at the first start:
        $MINOOTS_TOKEN when set, else a new token)."""
        return self.root / peer_secret.ADMIN_TOKEN_FILE

    def admin_token(self) -> str:
        return peer_secret.load(self.admin_token_file).decode()

    @property
    def audit_key_file(self) -> Path:
        """The Ed25519 key every node signs its audit checkpoints with (`minoots audit pubkey`)."""
        return self.root / AUDIT_KEY_FILE

    # ---- processes ----------------------------------------------------------

    def command(self, node: LocalNode, members: list[LocalNode] | None = None) -> list[str]:
        members = members if members is not None else list(self.nodes.values())
        cmd = [sys.executable, "-m", "minoots", "node", "run", "--id", node.node_id, "--raft", node.raft,
               "--grpc", node.grpc, "--data-dir", str(node.data_dir),
               "--cluster-secret-file", str(self.secret_file), "--admin-token-file", str(self.admin_token_file),
               "--audit-key-file", str(self.audit_key_file),
               *node.extra_args]
        if node.metrics:
            cmd += ["--metrics", node.metrics]
        if node.http:
            cmd += ["--http", node.http]
        for other in members:
            if other.node_id != node.node_id:
                cmd += ["--peer", f"{other.node_id}={other.raft}"]
        if not node.data_dir.exists():
            cmd.append("--init")
        return cmd

    def start_node(self, nid: str, members: list[LocalNode] | None = None) -> LocalNode:
        node = self.nodes[nid]
        if node.alive():
            raise RuntimeError(f"{nid} is already running (pid {node.pid})")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.secret_file.exists():
            peer_secret.generate(self.secret_file)
        if not self.admin_token_file.exists():
            token = os.environ.get("MINOOTS_TOKEN") or new_token()[1]
            peer_secret.generate(self.admin_token_file, token.strip().encode())
        if not self.audit_key_file.exists():
            write_key(self.audit_key_file)
        node.close_channel()        # a fresh channel: no reconnect backoff left from the last run
        logf = os.fdopen(os.open(node.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        try:
            node.proc = subprocess.Popen(self.command(node, members), stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL)
        finally:
            logf.close()
        return node

    def start(self) -> "LocalCluster":
        for nid in self.nodes:
            self.start_node(nid)
        return self

    def kill(self, nid: str) -> None:
        """SIGKILL: the crash case."""
        node = self.nodes[nid]
        if node.alive():
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def terminate(self, nid: str, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        node = self.nodes[nid]
        if node.proc is None:
            return None
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        return node.proc.returncode

    def stop(self) -> None:
        for nid in self.nodes:
            node = self.nodes[nid]
            if node.alive():
                node.proc.send_signal(signal.SIGTERM)
        for nid in self.nodes:
            self.terminate(nid)
        for node in self.nodes.values():
            node.close_channel()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- observing ------------------------------------------------------------

    def status(self, nid: str, timeout: float = 2.0) -> dict | None:
        """Node `nid`'s own status, or None when it does not answer."""
        try:
            return self.nodes[nid].status(timeout)
        except grpc.RpcError:
            return None

    def leader(self, timeout: float = 15.0, exclude: set[str] = frozenset()) -> str:
        """Id of the node that is leader (as it says itself), waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for nid, node in self.nodes.items():
                if nid in exclude or not node.alive():
                    self._check_exit(node)
                    continue
                s = self.status(nid, timeout=1.0)
                if s and s["role"] == "leader":
                    return nid
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout}s")

    def wait_applied(self, index: int, nids=None, timeout: float = 15.0) -> None:
        """Wait until every given (default: running) node has applied at least `index`."""
        deadline = time.monotonic() + timeout
        nids = list(nids or [n for n, node in self.nodes.items() if node.alive()])
        while time.monotonic() < deadline:
            done = [(self.status(n) or {}).get("applied_index", -1) >= index for n in nids]
            if all(done):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nodes {nids} did not apply index {index} within {timeout}s")

    def _check_exit(self, node: LocalNode) -> None:
        if node.proc is not None and node.proc.poll() not in (None, -9, -15, 0):
            tail = node.log_file.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{node.node_id} exited with {node.proc.returncode}:\n" + "\n".join(tail))

    def describe(self) -> dict:
        return {"nodes": [{"id": n.node_id, "raft": n.raft, "grpc": n.grpc,
                           "metrics": n.metrics, "http": n.http, "pid": n.pid,
                           "data_dir": str(n.data_dir), "log": str(n.log_file)} for n in self.nodes.values()]}

    def write_description(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.describe(), indent=2))
