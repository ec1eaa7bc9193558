"""Plain batch creates (record 48, CreatePlainTimers) on a real 3-node cluster: the SDK's
create_many goes out as the column record, and every replica ends with the same timers."""
from __future__ import annotations

import grpc
import pytest

import minoots
from minoots.api import validation
from minoots.api.client import wire
from minoots.raft import commands
from minoots.v1 import timers_pb2 as pb
from support import cluster_grpc
from test_raft_cluster import WAIT, converge, get_timer

pytestmark = pytest.mark.cluster
FAR_S = 3600


def _batch(prefix: str, n: int, **kw) -> list[minoots.TimerSpec]:
    return [minoots.TimerSpec(id=f"{prefix}{i}", delay=FAR_S + i, payload=b"p" * 64, **kw) for i in range(n)]


def test_the_sdk_batch_is_sent_as_the_column_record():
    req = wire.create_many_request(_batch("s", 5), None)
    specs = validation.create_batch(req.timers, 1_764_000_000_000)
    assert type(commands.create_timers(1_764_000_000_000, (tuple(specs),))) is commands.CreatePlainTimers


def test_plain_batches_reach_every_replica_identically(fresh_cluster):
    c = fresh_cluster
    with minoots.Client(cluster_grpc(c), timeout=WAIT) as client:
        made = []
        for b in range(4):
            made += client.create_many(_batch(f"b{b}-", 500))
        acked = client.create_many(_batch("ack-", 20, ack_required=True))
        again = client.create_many(_batch("b0-", 3) + _batch("new-", 2))          # a replay plus two new
        other = client.create_many([minoots.TimerSpec(id="named", delay=FAR_S, name="n")])   # the general record
        brief = client.create_many_ids(_batch("brief-", 300))
        brief_again = client.create_many_ids(_batch("brief-", 2) + [minoots.TimerSpec(id="named2", delay=FAR_S,
                                                                                        name="n")])
        with pytest.raises(minoots.AlreadyExists):
            client.create_many([minoots.TimerSpec(id="b1-0", delay=FAR_S, idempotency_key="other-key")])
    assert len(made) == 2000 and all(t.created for t in made)
    assert [t.created for t in again] == [False, False, False, True, True]
    assert all(t.ack_required for t in acked)
    assert [t.id for t in again] == ["b0-0", "b0-1", "b0-2", "new-0", "new-1"]
    assert other[0].name == "n"
    assert brief == [(f"brief-{i}", True) for i in range(300)]
    assert brief_again == [("brief-0", False), ("brief-1", False), ("named2", True)]
    digest = converge(c)
    for nid, node in c.nodes.items():
        st = node.status(WAIT)
        assert st["timers"]["armed"] == 2000 + 20 + 2 + 1 + 300 + 1, nid
        assert node.digest(WAIT)["sha256"] == digest
        for tid in ("b0-0", "b3-499", "ack-7", "new-1", "brief-299"):
            t = get_timer(node, tid)
            assert pb.TimerState.Name(t.state) == "TIMER_STATE_ARMED", (nid, tid)
            assert t.payload == b"p" * 64 and t.idempotency_key == tid and t.revision == 2
        assert get_timer(node, "ack-7").ack_required
        with pytest.raises(grpc.RpcError):
            get_timer(node, "b1-500")
