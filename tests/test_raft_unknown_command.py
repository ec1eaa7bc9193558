"""An unknown command version, committed to a real 3-node Raft log, is refused identically by
every replica, and the log keeps moving (the nodes run in this process so the test can see
each replica's apply result)."""
from __future__ import annotations

import hashlib
import threading
import time

import msgpack
import pytest

from minoots.kernel import TimerSpec
from minoots.raft import commands, peer_secret
from minoots.raft.config import NodeConfig
from minoots.raft.node import Node

from support import free_addresses, wait_for

pytestmark = pytest.mark.cluster


def test_unknown_version_is_refused_identically_on_every_replica(tmp_path):
    secret = tmp_path / "cluster.secret"
    peer_secret.generate(secret)
    addrs = free_addresses(3)
    ids = ["n1", "n2", "n3"]
    nodes = []
    results = {nid: [] for nid in ids}
    try:
        for nid, addr in zip(ids, addrs):
            peers = {p: a for p, a in zip(ids, addrs) if p != nid}
            node = Node(NodeConfig(node_id=nid, raft=addr, data_dir=tmp_path / nid, peers=peers, init=True,
                                   cluster_secret_file=secret))
            node.start()
            nodes.append(node)
            apply = node.machine.fsm.apply

            def recording(entry, _apply=apply, _out=results[nid]):
                res = _apply(entry)
                _out.append(res)
                return res
            node.machine.fsm.apply = recording
        wait_for(lambda: any(n.machine.is_leader() for n in nodes), "a leader")
        leader = next(n for n in nodes if n.machine.is_leader())
        for n in nodes:
            n.ticker.stop()          # only this test's commands enter the log

        future = commands.FORMAT + msgpack.packb([commands.Tick.KIND, 99, 123], use_bin_type=True)
        done, box = threading.Event(), []
        leader.machine._apply(future, callback=lambda res, err: (box.append((res, err)), done.set()))
        assert done.wait(30)
        refusal = box[0][0]
        assert isinstance(refusal, commands.UnknownCommand)
        assert "tick version 99 is not known to this build" in str(refusal)
        # The log moves on: a normal command after it applies everywhere.
        leader.machine.propose_sync(commands.CreateTimers(1, ((TimerSpec(id="after", fire_at=10**12),),)))
        wait_for(lambda: all(len(results[nid]) >= 2 and not isinstance(results[nid][-1], Exception)
                             for nid in ids), "every replica to apply both commands")
        refusals = {nid: [repr(r) for r in results[nid] if isinstance(r, commands.UnknownCommand)] for nid in ids}
        assert all(refusals[nid] == [repr(refusal)] for nid in ids), refusals
        digests = {hashlib.sha256(n.machine.kernel_bytes()).hexdigest() for n in nodes}
        assert len(digests) == 1
    finally:
        for n in nodes:
            n.stop()
