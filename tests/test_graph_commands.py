"""Golden bytes of the graph and bulk records (raft/commands.py CreateGraphTimers,
BulkCancelTimers, BulkRescheduleTimers, numbers 40-42): `tests/data/commands_graphs_v1.bin`
holds them as written by the build that added them (u32 length + entry), and must replay
to the digest recorded then, identically on every replica."""
from __future__ import annotations

import hashlib
from pathlib import Path

from minoots.kernel import EventKind, TimerSpec, TimerState
from minoots.kernel.graph import GraphSpec
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM
from support import read_framed

DATA = Path(__file__).parent / "data" / "commands_graphs_v1.bin"
T0 = 1_800_000_000_000
RECORDS = [
    c.CreateGraphTimers(T0, ((
        TimerSpec("a", T0 + 1000, ack_required=True, labels={"team": "infra"}),
        TimerSpec("b", 0, labels={"team": "infra"}, graph=GraphSpec(("a",), "settled", "all", 10_000, "cancel", ())),
        TimerSpec("r", 0, graph=GraphSpec(("b",), "fired", "any", 0, "release", ())),
        TimerSpec("x", T0 + 500, ack_required=True,
                  graph=GraphSpec((), "settled", "all", 0, "cancel", ((1000, b"page"), (3000, b"call")))),
    ),)),
    c.Tick(T0 + 500), c.Tick(T0 + 1000), c.Tick(T0 + 1500),
    c.AckTimer(T0 + 1600, "default", "a", 8),         # a settles: b arms at T0 + 11_600
    c.BulkRescheduleTimers(T0 + 1700, "default", ("b", "zz"), (("team", "infra"),), None, 5000),
    c.BulkCancelTimers(T0 + 1800, "default", ("b", "x", "a"), (("team", "infra"),)),
    c.Tick(T0 + 20_000),
]
FINAL_DIGEST = "aa570cffca58dff0dafdd2aa196157912e2cd5e30f004c7173cf84aab35c464b"


def entries() -> list[bytes]:
    return read_framed(DATA)


def test_encoding_is_the_checked_in_bytes_and_decodes_back():
    assert [c.encode(r) for r in RECORDS] == entries()
    assert [c.decode(b) for b in entries()] == RECORDS
    assert (c.CreateGraphTimers.KIND, c.CreateGraphTimers.VERSION) == (40, 1)
    assert (c.BulkCancelTimers.KIND, c.BulkCancelTimers.VERSION) == (41, 1)
    assert (c.BulkRescheduleTimers.KIND, c.BulkRescheduleTimers.VERSION) == (42, 1)


def test_golden_log_replays_to_the_recorded_digest_on_every_replica():
    replicas = [TimerFSM({}) for _ in range(3)]
    results = [[r.apply(b) for b in entries()] for r in replicas]
    assert len({repr(res) for res in results}) == 1
    res = results[0]
    assert [(e.kind, e.timer_id) for e in res[0][0].events] == [
        (EventKind.CREATED, "a"), (EventKind.ARMED, "a"), (EventKind.CREATED, "b"), (EventKind.CREATED, "r"),
        (EventKind.CREATED, "x"), (EventKind.ARMED, "x")]
    assert [(e.kind, e.fire_at) for e in res[3].events] == [(EventKind.ESCALATED, T0 + 1500)]
    assert [(e.kind, e.timer_id, e.fire_at) for e in res[4].events] == [
        (EventKind.SETTLED, "a", T0 + 1000), (EventKind.ARMED, "b", T0 + 11_600)]
    assert [(i.id, i.code) for i in res[5].items] == [("b", "OK"), ("zz", "NOT_FOUND")]
    assert [(i.id, i.code) for i in res[6].items] == [("b", "OK"), ("x", "NO_MATCH"), ("a", "FAILED_PRECONDITION")]
    assert [(e.kind, e.timer_id) for e in res[6].events] == [(EventKind.CANCELLED, "b"), (EventKind.ARMED, "r")]
    assert [e.kind for e in res[7].events] == [EventKind.FIRED, EventKind.SETTLED, EventKind.ESCALATED]
    for r in replicas:
        assert hashlib.sha256(r.kernel.to_bytes()).hexdigest() == FINAL_DIGEST
        assert r.kernel.get("default", "x").state == TimerState.FIRED and r.kernel.get("default", "x").escalated == 2
        assert r.kernel.get("default", "r").dependency == "released"
