"""A fault-injection layer for Raft links: one small TCP proxy in front of each node.

Why a proxy works with PySyncObj: a node knows its peers only by the address
strings it was given (`--peer id=HOST:PORT`), and knows itself by `--raft`. Of two
nodes, one opens the connection and names its own address in its first frame (with
a cluster secret: in its second, after a key exchange, both sealed with the
secret); the acceptor looks that string up among its peers. Nothing depends on the
TCP source address. So every node is started with `--raft` = its proxy's address
(the only address anybody uses for it, itself included) and `--raft-bind` = a
private address the node really listens on; the proxy forwards one to the other.
The proxy holds the cluster secret, reads the opener's first frames as a peer
would (minoots.raft.pysyncobj_compat.FrameDecoder), and so knows every
connection's two ends.

Cutting a link is a black hole, not a reset: from the moment a link is cut,
bytes of its connections are read and dropped (both directions) and new
connections across it are accepted and then ignored, so each side sees silence
until its connection timeout fires, as with a pulled cable. A connection that
lost bytes is never used again (its stream could be mid-frame); on heal the
nodes reconnect on fresh connections. Across a cut link the key exchange may
still pass (the proxy learns who is calling only after it); the connection goes
dark before the caller has named itself.

Loopback only; every socket and thread is closed by `close()`.
"""
from __future__ import annotations

import socket
import struct
import threading

from minoots.raft import peer_secret
from minoots.raft.pysyncobj_compat import FrameDecoder

MAX_HANDSHAKE = 1 << 16
HANDSHAKE_FRAMES = 3      # key, (key, address) with a secret; address alone without


class Network:
    """The shared link state of a set of proxies: which pairs of nodes may talk."""

    def __init__(self, password: bytes | None = None) -> None:
        self.decoder = FrameDecoder(password)
        self._cut: set[frozenset] = set()
        self._lock = threading.Lock()
        self.proxies: dict[str, "RaftProxy"] = {}     # node id -> proxy
        self.addr_to_id: dict[str, str] = {}

    def add(self, node_id: str, listen: str, target: str) -> "RaftProxy":
        p = RaftProxy(self, node_id, listen, target)
        self.proxies[node_id] = p
        self.addr_to_id[listen] = node_id
        return p

    def start(self) -> None:
        for p in self.proxies.values():
            p.start()

    def blocked(self, a: str | None, b: str | None) -> bool:
        if a is None or b is None:
            return False
        with self._lock:
            return frozenset((a, b)) in self._cut

    def isolate(self, node_id: str) -> None:
        """Cut every link of node_id."""
        with self._lock:
            for other in self.proxies:
                if other != node_id:
                    self._cut.add(frozenset((node_id, other)))
        for p in self.proxies.values():
            p.apply_cuts()

    def heal(self) -> None:
        with self._lock:
            self._cut.clear()
        for p in self.proxies.values():
            p.drop_dead()

    def close(self) -> None:
        for p in self.proxies.values():
            p.close()

    def stats(self) -> dict:
        return {nid: {"connections": p.accepted, "blackholed": p.blackholed} for nid, p in self.proxies.items()}


def proxy_cluster(cluster) -> "Network":
    """Put a started proxy on each node's Raft address of a LocalCluster that has not
    started yet, and move each node to a private address (--raft-bind). The proxies
    hold the cluster's secret (written here when the cluster has none yet)."""
    from minoots.raft.testing import free_ports

    cluster.root.mkdir(parents=True, exist_ok=True)
    if not cluster.secret_file.exists():
        peer_secret.generate(cluster.secret_file)
    net = Network(peer_secret.load(cluster.secret_file))
    for (nid, node), port in zip(cluster.nodes.items(), free_ports(len(cluster.nodes), cluster.host)):
        bind = f"{cluster.host}:{port}"
        node.extra_args = tuple(node.extra_args) + ("--raft-bind", bind)
        net.add(nid, node.raft, bind)
    net.start()
    return net


class _Conn:
    def __init__(self, src_id, client: socket.socket, upstream: socket.socket | None) -> None:
        self.src = src_id
        self.client = client
        self.upstream = upstream
        self.dead = False       # a cut went through it: drop everything, forever

    def close(self) -> None:
        for s in (self.client, self.upstream):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass


class RaftProxy:
    """Listens on `listen` (the address peers know node `node_id` by) and forwards to `target`."""

    def __init__(self, net: Network, node_id: str, listen: str, target: str) -> None:
        self.net = net
        self.node_id = node_id
        self.listen = listen
        self.target = target
        self.accepted = 0
        self.blackholed = 0
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._closed = False
        host, port = listen.rsplit(":", 1)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, int(port)))
        self._server.listen(16)
        self._server.settimeout(0.5)     # so the accept loop notices close()
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{node_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True,
                             name=f"proxy-{self.node_id}-conn").start()

    def _serve(self, client: socket.socket) -> None:
        host, port = self.target.rsplit(":", 1)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = socket.create_connection((host, int(port)), timeout=2.0)
            up.settimeout(None)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            client.close()
            return
        conn = _Conn(None, client, up)
        with self._lock:
            if self._closed:
                conn.close()
                return
            self._conns.append(conn)
        threading.Thread(target=self._pump, args=(conn, up, client), daemon=True).start()
        # Forward the opener's frames one by one until it names itself; a frame that
        # names a node on the other side of a cut is never forwarded.
        for _ in range(HANDSHAKE_FRAMES):
            frame, message = self._read_frame(client)
            if frame is None:
                self._forget(conn)
                conn.close()
                return
            src = self.net.addr_to_id.get(self.net.decoder.claimed_address(message) or "")
            if src is not None:
                conn.src = src
                if self.net.blocked(src, self.node_id):
                    conn.dead = True
                    self.blackholed += 1
            if conn.dead:
                break
            try:
                up.sendall(frame)
            except OSError:
                self._forget(conn)
                conn.close()
                return
            if src is not None or message is None:
                break       # labelled, or a frame we cannot read: pass the rest through
        self._pump(conn, client, up)

    def _read_frame(self, client: socket.socket):
        """Read one frame; returns (raw bytes, decoded message or None), (None, None) on EOF."""
        buf = b""
        try:
            client.settimeout(5.0)      # raises on a socket close() already shut
            while len(buf) < 4:
                chunk = client.recv(4 - len(buf))
                if not chunk:
                    return None, None
                buf += chunk
            (length,) = struct.unpack("i", buf[:4])
            if length <= 0 or length > MAX_HANDSHAKE:
                return buf, None           # not a handshake we understand: pass through unlabelled
            while len(buf) < 4 + length:
                chunk = client.recv(4 + length - len(buf))
                if not chunk:
                    return None, None
                buf += chunk
        except OSError:
            return None, None
        finally:
            try:
                client.settimeout(None)
            except OSError:
                pass
        try:
            return buf, self.net.decoder.decode(buf[4:])
        except Exception:  # noqa: BLE001 - pass through, unlabelled
            return buf, None

    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if conn.dead or dst is None:
                    continue            # black hole
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if not conn.dead:
                self._forget(conn)
                conn.close()

    def apply_cuts(self) -> None:
        with self._lock:
            for c in self._conns:
                if self.net.blocked(c.src, self.node_id):
                    c.dead = True

    def drop_dead(self) -> None:
        with self._lock:
            dead = [c for c in self._conns if c.dead]
            self._conns = [c for c in self._conns if not c.dead]
        for c in dead:
            c.close()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        try:
            self._server.close()
        except OSError:
            pass
        for c in conns:
            c.close()
