"""A cluster of real node processes on loopback: what `minoots up`, the tests and the drills start.

Every process it starts it stops, by PID (SIGTERM, then SIGKILL after a grace
period). Ports are picked free at start unless given.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .admin import AdminClient, AdminError


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


@dataclass
class LocalNode:
    node_id: str
    raft: str
    admin: str
    data_dir: Path
    log_file: Path
    proc: subprocess.Popen | None = None
    extra_args: tuple = ()
    grpc: str | None = None          # gRPC API address (passed as --grpc when set)
    metrics: str | None = None       # Prometheus /metrics address (passed as --metrics when set)

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self.metrics}/metrics" if self.metrics else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: float = 5.0) -> AdminClient:
        return AdminClient(self.admin, timeout=timeout)


@dataclass
class LocalCluster:
    root: Path
    size: int = 3
    host: str = "127.0.0.1"
    raft_ports: list[int] | None = None
    admin_ports: list[int] | None = None
    grpc_ports: list[int] | None = None
    metrics_ports: list[int] | None = None
    node_args: tuple = ()
    nodes: dict[str, LocalNode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        ports = free_ports(4 * self.size, self.host)
        raft_ports = self.raft_ports or ports[: self.size]
        admin_ports = self.admin_ports or ports[self.size: 2 * self.size]
        grpc_ports = self.grpc_ports or ports[2 * self.size: 3 * self.size]
        metrics_ports = self.metrics_ports or ports[3 * self.size:]
        for i in range(self.size):
            nid = f"n{i + 1}"
            self.nodes[nid] = LocalNode(
                nid, f"{self.host}:{raft_ports[i]}", f"{self.host}:{admin_ports[i]}",
                self.root / nid, self.root / f"{nid}.log", extra_args=tuple(self.node_args),
                grpc=f"{self.host}:{grpc_ports[i]}", metrics=f"{self.host}:{metrics_ports[i]}")

    # ---- processes ----------------------------------------------------------

    def command(self, node: LocalNode, members: list[LocalNode] | None = None) -> list[str]:
        members = members if members is not None else list(self.nodes.values())
        cmd = [sys.executable, "-m", "minoots", "node", "run", "--id", node.node_id, "--raft", node.raft,
               "--admin", node.admin, "--data-dir", str(node.data_dir), *node.extra_args]
        if node.grpc:
            cmd += ["--grpc", node.grpc]
        if node.metrics:
            cmd += ["--metrics", node.metrics]
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
        self.root.mkdir(parents=True, exist_ok=True)
        logf = open(node.log_file, "ab")
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

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- observing ------------------------------------------------------------

    def status(self, nid: str, timeout: float = 2.0) -> dict | None:
        try:
            return self.nodes[nid].client(timeout).call("GET", "/status")
        except AdminError:
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
        return {"nodes": [{"id": n.node_id, "raft": n.raft, "admin": n.admin, "grpc": n.grpc,
                           "metrics": n.metrics, "pid": n.pid,
                           "data_dir": str(n.data_dir), "log": str(n.log_file)} for n in self.nodes.values()]}

    def write_description(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.describe(), indent=2))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
