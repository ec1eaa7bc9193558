"""A real 3-node MINOOTS cluster for the TypeScript SDK's tests (started by test/cluster.js).

Prints one JSON line {"nodes": {id: grpc address}, "token": admin token} once the cluster
has a leader and every member's gRPC address is announced, then reads commands from stdin:
"kill ID" (SIGKILL, by PID; answers "killed ID"), "leader" (answers the leader's id). At the
end of stdin it stops every node it started, by PID, and removes its directory.
"""
import json
import shutil
import sys
import tempfile
import time

import minoots
from minoots.raft.testing import LocalCluster, harness_token

root = tempfile.mkdtemp(prefix="minoots-ts-")
harness_token()
cluster = LocalCluster(root, size=3)
try:
    cluster.start()
    cluster.leader(timeout=60)
    addrs = [n.grpc for n in cluster.nodes.values()]
    with minoots.Client(addrs, timeout=60) as c:
        deadline = time.monotonic() + 60
        while True:
            s = c.status()
            if s.leader and all(m.grpc_address for m in s.members):
                break
            if time.monotonic() > deadline:
                raise SystemExit("the members never announced their gRPC addresses")
            time.sleep(0.1)
    print(json.dumps({"nodes": {n.node_id: n.grpc for n in cluster.nodes.values()},
                      "token": cluster.admin_token()}), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "kill":
            cluster.kill(arg)
            print(f"killed {arg}", flush=True)
        elif cmd == "leader":
            print(cluster.leader(timeout=60, exclude={n for n, x in cluster.nodes.items() if not x.alive()}),
                  flush=True)
finally:
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)
