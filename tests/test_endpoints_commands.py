"""Golden bytes of the endpoint, delivery-default and dead-letter records (raft/commands.py
numbers 33-39), in tests/data/commands_endpoints_v1.bin: today's encoder must write exactly
those bytes, and replaying them must reach the recorded digest on every replica.

Regenerate ONLY for a new record version (never to paper over a change):
    python tests/test_endpoints_commands.py --write
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import msgpack
import pytest

from minoots.kernel import KernelError, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM
from support import read_framed
from test_delivery_commands import digest, replay

GOLDEN = Path(__file__).parent / "data" / "commands_endpoints_v1.bin"
SECRET = "whsec_" + "QUJD" * 8          # 24 key bytes
SECRET2 = "whsec_" + "REVG" * 8
NONE = DeliveryPolicy(None, None, None, None, None)      # every field from the tenant's defaults
FIRE_E1, FIRE_W1 = 7, 9                                  # the seqs of their fired events in this log


def golden_commands() -> list:
    return [
        c.CreateEndpoint("acme", "ep_1", "http://hooks.example.com/e", (("x-team", "ops"),), 2000, SECRET, 5),
        c.SetDeliveryDefaults("acme", (2, 100, 400, 3000, 30000)),
        c.CreateDeliveryTimersV3(10, ((
            TimerSpec("e1", 100, tenant="acme", delivery=Delivery(None, NONE, None, "ep_1")),
            TimerSpec("w1", 100, tenant="acme",
                      delivery=Delivery(Webhook("http://x.example.com/h", ()), DeliveryPolicy(1, None, None, None,
                                                                                                None))),
            TimerSpec("q1", 100, tenant="acme", delivery=Delivery(None, NONE, "jobs"))),)),
        c.DeleteEndpoint("acme", "ep_1"),                                          # 3: refused, e1 uses it
        c.RotateEndpointSecret("acme", "ep_1", SECRET2, 20),
        c.Tick(100),
        c.DeliveryAttempts((c.DeliveryAttempt(110, "acme", "e1", FIRE_E1, 1, 500, 1, "http_status", b"", 300),
                            c.DeliveryAttempt(110, "acme", "w1", FIRE_W1, 1, 0, 5, "connect", b"", None))),
        c.Tick(300),
        c.DeliveryAttempt(310, "acme", "e1", FIRE_E1, 2, 500, 1, "http_status", b"", None),
        c.ReplayDeadLetters(400, (("acme", "e1"), ("acme", "w1"), ("acme", "nope"), ("acme", "q1"))),   # 9
        c.DeliveryAttempt(410, "acme", "w1", FIRE_W1, 1, 0, 5, "connect", b"", None),
        c.PurgeDeadLetters(500, (("acme", "w1"), ("acme", "e1"))),                 # 11: w1 goes, e1 skipped
        c.DeliveryAttempt(510, "acme", "e1", FIRE_E1, 1, 204, 1, "", b"", None),
        c.DeleteEndpoint("acme", "ep_1"),                                          # 13: now it may go
        c.SetDeliveryDefaults("acme", None),
        c.CreateDeliveryTimersV3(600, ((                                           # 15: the endpoint is gone
            TimerSpec("e2", 700, tenant="acme", delivery=Delivery(None, NONE, None, "ep_1")),),)),
    ]


def read_golden() -> list[bytes]:
    return read_framed(GOLDEN)


def test_todays_encoder_writes_the_golden_bytes():
    assert [c.encode(cmd) for cmd in golden_commands()] == read_golden()


def test_golden_bytes_decode_to_the_same_records():
    assert [c.decode(b) for b in read_golden()] == golden_commands()


def test_golden_replay_reaches_the_recorded_digest_on_every_replica():
    runs = [replay(read_golden()) for _ in range(3)]
    assert len({digest(fsm) for fsm, _ in runs}) == 1
    fsm, results = runs[0]
    assert digest(fsm) == Path(str(GOLDEN) + ".sha256").read_text().strip()
    refused = {i for i, r in enumerate(results) if isinstance(r, Exception)}
    assert refused == {3}, results
    assert "used by timers that have not ended (e1)" in str(results[3])
    assert isinstance(results[15][0], KernelError) and "does not exist" in str(results[15][0])
    # The endpoint timer took the endpoint's URL, headers and timeout, the rest from the defaults.
    created = {i.timer.id: i.timer for i in results[2][0].items}
    e1 = created["e1"].delivery
    assert (e1.webhook, e1.endpoint) == (Webhook("http://hooks.example.com/e", (("x-team", "ops"),)), "ep_1")
    assert e1.policy == DeliveryPolicy(2, 100, 400, 2000, 30000)
    assert created["w1"].delivery.policy == DeliveryPolicy(1, 100, 400, 3000, 30000)
    assert created["q1"].delivery.policy == DeliveryPolicy(2, 100, 400, 3000, 30000)
    # Replay: one result per timer, each on its own.
    replayed = results[9]
    assert [type(r).__name__ for r in replayed] == ["DeliveryResult", "DeliveryResult", "NotFound",
                                                    "FailedPrecondition"]
    deleted, skipped = results[11]
    assert [t.id for t in deleted.timers] == ["w1"] and skipped == [("acme", "e1")]
    with pytest.raises(KernelError):
        fsm.kernel.get("acme", "w1")
    e1_now = fsm.kernel.get("acme", "e1")
    assert e1_now.state == TimerState.SETTLED
    assert [(a.attempt, a.status) for a in e1_now.delivery_attempts] == [(1, 500), (2, 500), (1, 204)]
    assert len(fsm.endpoints) == 0 and fsm.delivery_defaults.effective("acme")[1] is True


def test_a_snapshot_keeps_endpoints_and_defaults_and_an_old_one_without_them_loads():
    fsm, _ = replay(read_golden()[:5])           # the endpoint (rotated) and the defaults exist
    snap = fsm.snapshot()
    back = TimerFSM({})
    back.restore(snap.kernel.to_bytes(), snap.names, snap.grpc, endpoints=snap.endpoints,
                 delivery_defaults=snap.delivery_defaults)
    assert digest(back) == digest(fsm)
    assert back.endpoints.signing("acme", "ep_1", 21) == [SECRET2, SECRET]
    assert back.delivery_defaults.effective("acme") == (DeliveryPolicy(2, 100, 400, 3000, 30000), False)
    assert back.kernel.get("acme", "e1").delivery.endpoint == "ep_1"
    old = TimerFSM({})                           # a snapshot from before endpoints: no such keys
    old.restore(snap.kernel.to_bytes(), snap.names, snap.grpc)
    assert len(old.endpoints) == 0 and old.delivery_defaults.effective("acme")[1]


@pytest.mark.parametrize("data, text", [
    (c.FORMAT + msgpack.packb([33, 1, "acme", "ep_1", "http://h.example/x", [["a"]], 0, SECRET, 1]),
     "[name, value] pairs"),
    (c.FORMAT + msgpack.packb([33, 1, "acme", "ep 1", "http://h.example/x", [], 0, SECRET, 1]), "[A-Za-z0-9_-]"),
    (c.FORMAT + msgpack.packb([33, 1, "acme", "ep_1", "ftp://h.example/x", [], 0, SECRET, 1]), "http://"),
    (c.FORMAT + msgpack.packb([33, 1, "acme", "ep_1", "http://h.example/x", [], 0, "nope", 1]), "whsec_"),
    (c.FORMAT + msgpack.packb([34, 1, "acme", "ep_9", SECRET, 1]), "does not exist"),
    (c.FORMAT + msgpack.packb([36, 1, "acme", [0, 1, 1, 1, 1000]]), "max_attempts"),
    (c.FORMAT + msgpack.packb([37, 1, 5, [[["x"]]]]), "15 fields"),
    (c.FORMAT + msgpack.packb([38, 1, 5, [["acme"]]]), "[tenant, id] pairs"),
    (c.FORMAT + msgpack.packb([39, 1, 5, "x"]), "[tenant, id] pairs"),
])
def test_malformed_endpoint_records_are_refused_identically(data, text):
    results = [TimerFSM({}).apply(data) for _ in range(3)]
    assert all(isinstance(r, KernelError) and text in str(r) for r in results), results
    assert len({str(r) for r in results}) == 1


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    entries = [c.encode(cmd) for cmd in golden_commands()]
    GOLDEN.write_bytes(b"".join(struct.pack("<I", len(e)) + e for e in entries))
    fsm, _ = replay(entries)
    Path(str(GOLDEN) + ".sha256").write_text(digest(fsm) + "\n")
    print("written", GOLDEN, digest(fsm))
