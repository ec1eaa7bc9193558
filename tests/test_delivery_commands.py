"""Golden bytes of the delivery and queue records (raft/commands.py numbers 24-32), in
tests/data/commands_delivery_v1.bin: today's encoder must write exactly those bytes,
and replaying them must reach the recorded digest on every replica.

Regenerate ONLY for a new record version (never to paper over a change):
    python tests/test_delivery_commands.py --write
"""
from __future__ import annotations

import hashlib
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

GOLDEN = Path(__file__).parent / "data" / "commands_delivery_v1.bin"
SECRET = "whsec_" + "QUJD" * 8          # 24 key bytes

HOOK = Delivery(Webhook("http://hooks.example.com/t", (("x-team", "ops"),)),
                DeliveryPolicy(max_attempts=2, backoff_base_ms=100, backoff_cap_ms=400))


QUEUE = Delivery(None, DeliveryPolicy(max_attempts=3), "jobs")
FIRE_W2 = 30          # the seq of w2's fired event in this log


def golden_commands() -> list:
    return [
        c.PutWebhookSecret("acme", SECRET, 5),
        c.CreateDeliveryTimers(10, ((TimerSpec("w1", 100, tenant="acme", payload=b"p", labels={"k": "v"},
                                               delivery=HOOK),
                                     TimerSpec("plain", 100, tenant="acme")),)),
        c.Tick(100),
        c.DeliveryAttempt(110, "acme", "w1", 5, 1, 503, 12, "http_status", b"busy", 300),
        c.DeliveryAttempt(111, "acme", "w1", 5, 1, 200, 1, "", b"", None),       # stale: refused
        c.Tick(300),
        c.DeliveryAttempt(310, "acme", "w1", 5, 2, 0, 10_000, "timeout", b"", None),
        c.RedriveTimer(400, "acme", "w1"),
        c.DeliveryAttempt(410, "acme", "w1", 5, 1, 204, 2, "", b"", None),
        # pull queues: create (create_delivery v2), lease, nack, lease again, extend, ack
        c.CreateDeliveryTimersV2(500, ((TimerSpec("q1", 600, tenant="acme", delivery=QUEUE),
                                        TimerSpec("w2", 900, tenant="acme", delivery=HOOK)),)),
        c.Tick(600),
        c.LeaseTimers(610, "acme", "jobs", 10, 5000),
        c.NackLease(620, "acme", "q1", "23", 700),
        c.Tick(700),
        c.LeaseTimers(710, "acme", "jobs", 10, 5000),
        c.ExtendLease(720, "acme", "q1", "26", 9000),
        c.AckLease(730, "acme", "q1", "26"),
        # a group commit of outcomes: one applies, one (a repeat) is refused on its own
        c.Tick(900),
        c.DeliveryAttempts((c.DeliveryAttempt(910, "acme", "w2", FIRE_W2, 1, 204, 3, "", b"", None),
                            c.DeliveryAttempt(911, "acme", "w2", FIRE_W2, 1, 500, 3, "http_status", b"", 999))),
    ]


def read_golden() -> list[bytes]:
    return read_framed(GOLDEN)


def replay(entries) -> tuple[TimerFSM, list]:
    fsm = TimerFSM({})
    return fsm, [fsm.apply(b) for b in entries]


def digest(fsm: TimerFSM) -> str:
    return hashlib.sha256(fsm.kernel.to_bytes()).hexdigest()


def test_todays_encoder_writes_the_golden_bytes():
    assert [c.encode(cmd) for cmd in golden_commands()] == read_golden()


def test_golden_bytes_decode_to_the_same_records():
    assert [c.decode(b) for b in read_golden()] == golden_commands()


def test_golden_replay_reaches_the_recorded_digest_on_every_replica():
    runs = [replay(read_golden()) for _ in range(3)]
    assert len({digest(fsm) for fsm, _ in runs}) == 1
    fsm, results = runs[0]
    assert digest(fsm) == (Path(str(GOLDEN) + ".sha256").read_text().strip())
    assert isinstance(results[4], KernelError)                 # the stale outcome
    assert not any(isinstance(r, Exception) for i, r in enumerate(results) if i != 4), results
    batch = results[-1]
    assert not isinstance(batch[0], Exception) and isinstance(batch[1], KernelError)
    assert fsm.kernel.get("acme", "w2").state == TimerState.SETTLED
    q = fsm.kernel.get("acme", "q1")
    assert q.state == TimerState.SETTLED
    assert [(a.attempt, a.error) for a in q.delivery_attempts] == [(1, "nack"), (2, "")]
    assert [l.lease_id for l in results[11].leases] == ["23"] and results[12].timer.next_attempt_at == 700
    t = fsm.kernel.get("acme", "w1")
    assert t.state == TimerState.SETTLED
    assert [(a.attempt, a.status, a.error) for a in t.delivery_attempts] == \
        [(1, 503, "http_status"), (2, 0, "timeout"), (1, 204, "")]
    assert fsm.webhook_secrets.get("acme") == SECRET
    # The FSM snapshot holds the delivery state and the secret, and restores to the same digest.
    snap = fsm.snapshot()
    back = TimerFSM({})
    back.restore(snap.kernel.to_bytes(), snap.names, snap.grpc, snap.tokens, snap.quotas,
                 webhook_secrets=snap.webhook_secrets)
    assert digest(back) == digest(fsm) and back.webhook_secrets.get("acme") == SECRET


@pytest.mark.parametrize("data, text", [
    (c.FORMAT + msgpack.packb([24, 1, 5, [[["x"]]]]), "10 fields"),
    (c.FORMAT + msgpack.packb([24, 1, 5, [[["a", 1, "default", "", b"", None, b"", None, False, ["u"]]]]]),
     "[url, headers, policy]"),
    (c.FORMAT + msgpack.packb([24, 1, 5, "x"]), "array of arrays"),
    (c.FORMAT + msgpack.packb([27, 1, "acme", "nope", 1]), "whsec_"),
])
def test_malformed_delivery_records_are_refused_identically(data, text):
    results = [TimerFSM({}).apply(data) for _ in range(3)]
    assert all(isinstance(r, KernelError) and text in str(r) for r in results), results
    assert len({str(r) for r in results}) == 1


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    entries = [c.encode(cmd) for cmd in golden_commands()]
    GOLDEN.write_bytes(b"".join(struct.pack("<I", len(e)) + e for e in entries))
    fsm, _ = replay(entries)
    Path(str(GOLDEN) + ".sha256").write_text(digest(fsm) + "\n")
    print("written", GOLDEN, digest(fsm))
