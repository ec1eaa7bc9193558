"""The Raft port against a stranger on the network (issue 12's peer-link findings).

Each probe is sent to every Raft port of a real 3-node cluster: a pickle whose
unpickling would create a file (the remote-code-execution finding), the utility
protocol's `add`, a `readonly` connection, a `request_vote` with a huge term, a
64 MiB junk frame and a zlib bomb. Afterwards no file exists, and membership,
leader, term and each node's RSS stay put. It runs twice: with the cluster
secret (the default: every probe is stopped by the frame's HMAC) and with
`--insecure-peers` (defense in depth: the restricted decoder, the frame and
decompression caps and the refusals still hold).
"""
from __future__ import annotations

import os
import pickle
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest

from minoots.raft import pysyncobj_compat as compat
from minoots.raft.testing import LocalCluster

pytestmark = pytest.mark.cluster

WAIT = 30.0


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def frame(obj) -> bytes:
    data = zlib.compress(pickle.dumps(obj, protocol=2), 3)
    return struct.pack("i", len(data)) + data


def send(address: str, *payloads: bytes, linger: float = 0.3) -> None:
    """Open a connection, send each payload, read whatever comes back for a moment, close."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        for p in payloads:
            try:
                s.sendall(p)
            except OSError:
                return            # the node hung up on us: what it should do
        s.settimeout(linger)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass


def send_junk(address: str, announced: int, total: int) -> int:
    """Announce a frame of `announced` bytes, then stream up to `total` bytes of junk;
    returns how many bytes the node took before it hung up."""
    host, port = address.rsplit(":", 1)
    sent = 0
    chunk = os.urandom(1 << 16)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        try:
            s.sendall(struct.pack("i", announced))
            while sent < total:
                sent += s.send(chunk)
        except OSError:
            pass
    return sent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def snapshot(cluster: LocalCluster) -> dict:
    leader = cluster.leader(timeout=WAIT)
    st = cluster.status(leader)
    return {"leader": leader, "term": st["term"],
            "members": sorted(m["raft_address"] for m in st["members"])}


@pytest.mark.parametrize("mode", ["secret", "insecure"])
def test_strangers_on_the_raft_port_change_nothing(tmp_path, mode):
    marker = tmp_path / "pwned"
    args = ("--insecure-peers",) if mode == "insecure" else ()
    cluster = LocalCluster(tmp_path / "cluster", size=3, node_args=args)
    try:
        cluster.start()
        before = snapshot(cluster)
        rss_before = {nid: rss_kib(n.pid) for nid, n in cluster.nodes.items()}
        member = cluster.nodes["n2"].raft
        bogus = "127.0.0.1:1"
        bomb = zlib.compress(b"\0" * (200 << 20), 9)       # ~200 KB that inflate to 200 MiB
        for node in cluster.nodes.values():
            addr = node.raft
            send(addr, frame(_Evil(marker)))                             # RCE as the first frame
            send(addr, frame(["add", bogus]))                            # utility: add a member
            send(addr, frame(["remove", member]))                        # utility: remove one
            send(addr, frame(["set_version", 99]), frame(["status"]))    # utility: anything else
            send(addr, frame("readonly"), frame({"type": "append_entries", "term": 0}))
            send(addr, frame(_Evil(marker)), frame(_Evil(marker)))       # after a first frame too
            send(addr, struct.pack("i", len(bomb)) + bomb)               # zlib bomb
            taken = send_junk(addr, 64 << 20, 64 << 20)                  # 64 MiB junk frame
            assert taken < 32 << 20, f"{node.node_id} kept reading a 64 MiB junk frame ({taken} bytes)"
        time.sleep(1.0)
        assert not marker.exists(), "a peer frame ran code"
        after = snapshot(cluster)
        assert after["members"] == before["members"], "membership changed"
        assert bogus not in after["members"]
        if mode == "secret":
            assert after == before, "leader or term changed"
        else:
            assert after["term"] < compat.MAX_TERM_OR_INDEX
        for nid, node in cluster.nodes.items():
            assert node.alive(), f"{nid} died"
            grown = rss_kib(node.pid) - rss_before[nid]
            assert grown < 48 << 10, f"{nid} RSS grew by {grown} KiB"
        # ... and the cluster still commits.
        leader = cluster.nodes[after["leader"]]
        index = cluster.status(after["leader"])["commit_index"]
        from minoots import Client

        with Client([leader.grpc]) as client:
            client.create(delay=3600, id="after-probes")
        cluster.wait_applied(index + 1, timeout=WAIT)
        log = "".join(n.log_file.read_text() for n in cluster.nodes.values())
        assert "peer connection refused" in log
        if mode == "insecure":
            # Without a secret a stranger can claim to be a member (that is what the
            # secret is for) and disrupt links; it still cannot send a term past the
            # range check, a pickle that runs code, or change the membership.
            for node in cluster.nodes.values():
                other = cluster.nodes["n1" if node.node_id != "n1" else "n2"].raft
                send(node.raft, frame(other), frame({"type": "request_vote", "term": 2**64 - 1,
                                                     "last_log_index": 2**64 - 1, "last_log_term": 2**64 - 1}))
                send(node.raft, frame(other), frame(_Evil(marker)))
            time.sleep(1.0)
            assert not marker.exists(), "a peer frame from a claimed member ran code"
            final = snapshot(cluster)
            assert final["members"] == before["members"]
            assert final["term"] < 1000, f"term jumped to {final['term']}"
            assert "peer message out of range dropped" in "".join(n.log_file.read_text()
                                                                  for n in cluster.nodes.values())
    finally:
        cluster.stop()


def test_raft_port_binds_only_the_given_host_and_data_dirs_are_private(tmp_path):
    cluster = LocalCluster(tmp_path / "cluster", size=1)
    try:
        cluster.start()
        cluster.leader(timeout=WAIT)
        node = cluster.nodes["n1"]
        port = int(node.raft.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass                                           # the address it was given
        with pytest.raises(ConnectionRefusedError):       # another loopback address: not bound there
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
        for path in [node.data_dir, *node.data_dir.rglob("*")]:
            mode = path.stat().st_mode & 0o777
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        assert cluster.secret_file.stat().st_mode & 0o077 == 0
        assert cluster.admin_token_file.stat().st_mode & 0o077 == 0
    finally:
        cluster.stop()


def test_node_without_a_secret_refuses_to_start(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "minoots", "node", "run", "--id", "n1", "--raft", "127.0.0.1:1",
         "--data-dir", str(tmp_path / "n1"), "--init", "--peer", "n2=127.0.0.1:2"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "no cluster secret" in proc.stderr and "Traceback" not in proc.stderr


def test_secret_file_readable_by_others_is_refused(tmp_path):
    import subprocess
    import sys

    secret = tmp_path / "s"
    secret.write_text("x" * 40)
    secret.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "minoots", "node", "run", "--id", "n1", "--raft", "127.0.0.1:1",
         "--data-dir", str(tmp_path / "n1"), "--init", "--cluster-secret-file", str(secret)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "readable by others" in proc.stderr and "Traceback" not in proc.stderr


def test_peer_decoder_admits_only_plain_data():
    ok = {"type": "append_entries", "term": 3, "entries": [(b"\x00cmd", 4, 3), (b"", 5, 3)],
          "node": compat.TCPNode("127.0.0.1:5"), "s": {1, 2}}
    out = compat.peer_loads(pickle.dumps(ok, protocol=2))
    assert out["entries"] == ok["entries"] and out["node"].address == "127.0.0.1:5"
    for bad in (_Evil(Path("/nonexistent/x")), Path("/x"), pickle.loads):
        with pytest.raises(pickle.UnpicklingError, match="not allowed"):
            compat.peer_loads(pickle.dumps(bad, protocol=2))
    # bytes(n) would allocate n bytes: refused.
    crafted = b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R."
    with pytest.raises(pickle.UnpicklingError):
        compat.peer_loads(crafted)
