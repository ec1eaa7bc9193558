"""An existing cluster as the load harness sees it (``minoots bench load --cluster``).

The same observing surface as ``LocalCluster`` (``nodes``, ``status``, ``leader``,
``wait_applied``) over each node's own gRPC ``Cluster.Status``, and nothing else: it
starts, stops and kills no process, so the rows that need that (RSS, follower restart,
failover) are reported as not measured. Members are found from the first node that
answers (its member list with their gRPC addresses); the token is the SDK's
($MINOOTS_TOKEN, $MINOOTS_TOKEN_FILE or the admin token ``minoots up`` wrote).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import grpc

from minoots.api.client.policy import resolve_token
from minoots.raft.testing import CHANNEL_OPTIONS, Bearer, message_dict
from minoots.v1 import cluster_pb2, cluster_pb2_grpc


class ExternalClusterError(Exception):
    """No member answered, or the addresses are malformed."""


def parse_addresses(text: str, what: str = "--cluster") -> list:
    """'h1:p1,h2:p2' -> ['h1:p1', 'h2:p2'] (each HOST:PORT with a numeric port)."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ExternalClusterError(f"{what}: {part!r} is not HOST:PORT")
        out.append(part)
    if not out:
        raise ExternalClusterError(f"{what}: no address given")
    return out


@dataclass
class ExternalNode:
    node_id: str
    grpc: str
    metrics: Optional[str] = None
    _channel: Optional[grpc.Channel] = field(default=None, repr=False)

    pid = None                       # not ours: no RSS, no signals

    def alive(self) -> bool:         # for LocalCluster-shaped callers: "may answer"
        return True

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            ch = grpc.insecure_channel(self.grpc, options=CHANNEL_OPTIONS)
            token = resolve_token(None)
            self._channel = grpc.intercept_channel(ch, Bearer(token)) if token else ch
        return self._channel

    def status(self, timeout: float = 2.0) -> dict:
        return message_dict(cluster_pb2_grpc.ClusterStub(self.channel()).Status(cluster_pb2.StatusRequest(),
                                                                                timeout=timeout))

    def close(self) -> None:
        ch, self._channel = self._channel, None
        if ch is not None:
            ch.close()


class ExternalCluster:
    """The members of a running cluster, reached through `addresses` (gRPC HOST:PORT)."""

    def __init__(self, addresses: list, metrics: Optional[list] = None, timeout: float = 10.0) -> None:
        self.addresses = list(addresses)
        self.metrics = list(metrics or [])
        self.nodes: dict = {}
        deadline = time.monotonic() + timeout
        last = None
        while not self.nodes and time.monotonic() < deadline:
            for a in self.addresses:           # every address given is a member, under its own id
                node = ExternalNode("?", a)
                try:
                    st = node.status(timeout=2.0)
                except grpc.RpcError as exc:
                    last = f"{a}: {exc.code().name} {exc.details()}"
                    node.close()
                    continue
                node.node_id = st["node"]
                self.nodes[st["node"]] = node
                members = st.get("members") or []
            if not self.nodes:
                time.sleep(0.2)
        if not self.nodes:
            raise ExternalClusterError(f"no member of --cluster answered Cluster.Status ({last})")
        for m in members:                      # members not given, that announced a gRPC address
            if m.get("id") and m.get("grpc_address") and m["id"] not in self.nodes:
                self.nodes[m["id"]] = ExternalNode(m["id"], m["grpc_address"])

    def status(self, nid: str, timeout: float = 2.0) -> Optional[dict]:
        try:
            return self.nodes[nid].status(timeout)
        except grpc.RpcError:
            return None

    def leader(self, timeout: float = 15.0, exclude=frozenset()) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for nid in self.nodes:
                if nid in exclude:
                    continue
                s = self.status(nid, timeout=1.0)
                if s and s["role"] == "leader":
                    return nid
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout}s")

    def wait_applied(self, index: int, nids=None, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        nids = list(nids or self.nodes)
        while time.monotonic() < deadline:
            if all((self.status(n) or {}).get("applied_index", -1) >= index for n in nids):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nodes {nids} did not apply index {index} within {timeout}s")

    def stop(self) -> None:
        """Closes the harness's channels only: the cluster keeps running."""
        for n in self.nodes.values():
            n.close()
