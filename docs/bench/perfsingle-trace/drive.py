"""Drive a traced run (docs/bench/perfsingle.md): a fresh 3-node cluster whose node
processes load ../perfsingle-trace/sitecustomize.py, N threads of single creates to the
leader for S seconds, CPU seconds per process, then analyze.py.

    PS_TRACE_DIR=/tmp/t PYTHONPATH=docs/bench/perfsingle-trace python docs/bench/perfsingle-trace/drive.py 8 16
"""
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from minoots.api.client import Client
from minoots.raft.testing import LocalCluster, harness_token


def cpu_seconds(pid):
    """User + system CPU seconds of a process (as bench/single_creates.py; kept here so a
    build without that module can be traced too)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 5
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 16
out = Path(os.environ["PS_TRACE_DIR"])
out.mkdir(parents=True, exist_ok=True)
root = Path(tempfile.mkdtemp(prefix="ps-trace-"))
token = harness_token()
cl = LocalCluster(root / "c", node_args=tuple(os.environ.get("PS_NODE_ARGS", "").split()))
cl.start()
try:
    leader = cl.leader(timeout=30)
    time.sleep(2)
    lat, lock = [], threading.Lock()
    pids = {k: n.pid for k, n in cl.nodes.items()}
    pids["client"] = os.getpid()
    c0 = {k: cpu_seconds(p) for k, p in pids.items()}
    stop = time.monotonic() + secs

    def worker():
        with Client([cl.nodes[leader].grpc], timeout=30, token=token) as c:
            while time.monotonic() < stop:
                t0 = time.monotonic_ns()
                c.create(int(time.time() * 1000) + 3_600_000)
                with lock:
                    lat.append((t0, time.monotonic_ns()))

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    s0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - s0
    c1 = {k: cpu_seconds(p) for k, p in pids.items()}
    cpu = {("leader" if k == leader else k): round((c1[k] - c0[k]) * 1000 / max(1, len(lat)), 3) for k in pids}
    print(f"single creates/s {len(lat) / took:.0f}; CPU ms per create {cpu}; load {os.getloadavg()[0]:.1f}")
    json.dump({"lat": lat, "leader_pid": cl.nodes[leader].pid}, open(out / "client.json", "w"))
finally:
    cl.stop()
    shutil.rmtree(root, ignore_errors=True)
