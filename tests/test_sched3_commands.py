"""Golden bytes of the sched3 record (raft/commands.py CreateFullTimers, number 43):
`tests/data/commands_sched3_v1.bin` holds a log as written by the build that added it (u32
length + entry) -- a recurring webhook timer and a recurring queue timer (occurrence timers,
kernel/occurrences.py) and a graph timer on a managed endpoint -- and must replay to the
digest recorded then, identically on every replica, and through a snapshot mid-way."""
from __future__ import annotations

import hashlib
from pathlib import Path

from minoots.kernel import EventKind, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.graph import GraphSpec
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM
from support import read_framed

DATA = Path(__file__).parent / "data" / "commands_sched3_v1.bin"
T0 = 1_800_000_000_000
S = 1000
NONE_POLICY = DeliveryPolicy(*([None] * len(DeliveryPolicy._fields)))
RECORDS = [
    c.CreateEndpoint("default", "ep_0123456789abcdef", "http://127.0.0.1:9/ep", (("x-team", "infra"),), 5000,
                     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", T0),
    c.CreateFullTimers(T0, ((
        TimerSpec("r", T0 + S, payload=b"p", every_ms=S, max_count=3, overlap="buffer_one",
                  delivery=Delivery(Webhook("http://127.0.0.1:9/r"), DeliveryPolicy(2, 10, 20, 1000, 30_000))),
        TimerSpec("q", T0 + S, cron="*/2 * * * * *", tz="Europe/Paris", catch_up="all", overlap="allow_all",
                  delivery=Delivery(None, NONE_POLICY, "jobs")),
        TimerSpec("a", T0 + 5 * S),
        TimerSpec("g", 0, delivery=Delivery(None, NONE_POLICY, None, "ep_0123456789abcdef"),
                  graph=GraphSpec(("a",), "fired", "all", 500, "cancel", ())),
    ),)),
    c.Tick(T0 + S), c.Tick(T0 + 2 * S),
    c.DeliveryAttempt(T0 + 2 * S + 10, "default", "r@8", 8, 1, 503, 3, "http_status", b"down", T0 + 2 * S + 15),
    c.Tick(T0 + 2 * S + 15),
    c.DeliveryAttempt(T0 + 2 * S + 20, "default", "r@8", 8, 2, 200, 3, "", b"", None),
    c.Tick(T0 + 6 * S),
]
FINAL_DIGEST = "012d92da396932214c6b8dc6b3137083e7fe69857fc6ce25679ae854ea64100b"


def entries() -> list[bytes]:
    return read_framed(DATA)


def test_encoding_is_the_checked_in_bytes_and_decodes_back():
    assert [c.encode(r) for r in RECORDS] == entries()
    assert [c.decode(b) for b in entries()] == RECORDS
    assert (c.CreateFullTimers.KIND, c.CreateFullTimers.VERSION) == (43, 1)


def test_golden_log_replays_to_the_recorded_digest_on_every_replica():
    replicas = [TimerFSM({}) for _ in range(3)]
    results = [[r.apply(b) for b in entries()] for r in replicas]
    assert len({repr(res) for res in results}) == 1
    res = results[0]
    assert not any(isinstance(x, Exception) for x in res), res
    k = replicas[0].kernel
    g = k.get("default", "g")
    assert g.delivery.endpoint == "ep_0123456789abcdef" and g.delivery.webhook.url == "http://127.0.0.1:9/ep"
    assert g.delivery.policy.attempt_timeout_ms == 5000
    assert [(e.kind, e.timer_id) for e in res[2].events][:2] == [(EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE,
                                                                                         "r@8")]
    # The second occurrence of r waited (buffer_one) and fired when r@5 settled.
    assert [e.kind for e in res[6].events] == [EventKind.DELIVERY_ATTEMPTED, EventKind.SETTLED, EventKind.FIRED,
                                               EventKind.DELIVERY_DUE, EventKind.ARMED]
    r = k.get("default", "r")
    # The third (last) occurrence is buffered behind r@22: r waits for it, FIRED.
    assert (r.state, r.attempts, r.pending_fires, r.buffered) == (TimerState.FIRED, 2, (22,), True)
    assert k.get("default", "g").state == TimerState.ARMED       # a fired: g armed 500 ms later
    assert k.queue_depth("default", "jobs") == 6
    for rep in replicas:
        rep.kernel.check_invariants()
        assert hashlib.sha256(rep.kernel.to_bytes()).hexdigest() == FINAL_DIGEST


def test_a_replica_restored_mid_log_ends_equal():
    from minoots.kernel import State
    a, b = TimerFSM({}), TimerFSM({})
    log = entries()
    for e in log[:4]:
        a.apply(e)
        b.apply(e)
    snap = b.snapshot()
    b.restore(snap.kernel.to_bytes(), {}, {}, endpoints=snap.endpoints)
    for e in log[4:]:
        assert repr(a.apply(e)) == repr(b.apply(e))
    assert a.kernel.to_bytes() == b.kernel.to_bytes()
    assert State.from_bytes(a.kernel.to_bytes()) == a.kernel
