"""Golden bytes of the retention records (raft/commands.py SetRetention, DeleteTimers):
`tests/data/commands_retention_v1.bin` holds them as written by the build that added
them (u32 length + entry, with the timer commands around them), and must replay to
the digest recorded then."""
from __future__ import annotations

import hashlib
from pathlib import Path

from minoots.kernel import EventKind, FailedPrecondition, TimerSpec
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM
from support import read_framed

DATA = Path(__file__).parent / "data" / "commands_retention_v1.bin"
T0 = 1_800_000_000_000
RECORDS = [
    c.SetRetention("*", 60_000), c.SetRetention("acme", 0), c.SetRetention("beta", 5_000),
    c.CreateTimers(T0, ((TimerSpec("a", T0 + 1000, tenant="acme", idempotency_key="k1"),
                         TimerSpec("b", T0 + 1000, tenant="beta"),
                         TimerSpec("c", T0 + 2000, tenant="other", ack_required=True)),)),
    c.Tick(T0 + 1000), c.DeleteTimers(T0 + 1001, (("beta", "b"),)), c.Tick(T0 + 2000),
    c.SetRetention("beta", None), c.DeleteTimers(T0 + 2001, (("other", "c"),)),
    c.AckTimer(T0 + 2002, "other", "c", 13), c.Tick(T0 + 62_001), c.Tick(T0 + 62_002),
    # create version 2 (a recurring timer: kernel/schedule.py), in a tenant with retention 0
    c.CreateTimersV2(T0 + 70_000, ((TimerSpec("rec", T0 + 71_000, tenant="acme", every_ms=1000, max_count=2),),)),
    c.Tick(T0 + 71_000), c.Tick(T0 + 72_500),
    # and a cron one (second 30 of every minute, Paris time), once
    c.CreateTimersV2(T0 + 80_000, ((TimerSpec("cr", T0 + 80_000, tenant="acme", max_count=1, cron="* * * * * 30",
                                              tz="Europe/Paris"),),)),
    c.Tick(T0 + 200_000),
]
FINAL_DIGEST = "b3a58e87abe16149e87bf03d315fb7723df720b8970a0ee7e26acd53f3dc4c00"


def entries() -> list[bytes]:
    return read_framed(DATA)


def test_encoding_is_the_checked_in_bytes_and_decodes_back():
    assert [c.encode(r) for r in RECORDS] == entries()
    assert [c.decode(b) for b in entries()] == RECORDS
    assert (c.SetRetention.KIND, c.SetRetention.VERSION) == (16, 1)
    assert (c.DeleteTimers.KIND, c.DeleteTimers.VERSION) == (17, 1)
    assert (c.CreateTimersV2.KIND, c.CreateTimersV2.VERSION) == (1, 2)


def test_golden_log_replays_to_the_recorded_digest_on_every_replica():
    replicas = [TimerFSM({}) for _ in range(3)]
    results = [[r.apply(b) for b in entries()] for r in replicas]
    assert len({repr(res) for res in results}) == 1
    res = results[0]
    assert res[:3] == [("*", 60_000), ("acme", 0), ("beta", 5_000)]
    assert [e.kind for e in res[4].events].count(EventKind.PURGED) == 1          # acme's a, at once
    assert [e.kind for e in res[5].events] == [EventKind.DELETED]
    assert res[7] == ("beta", 60_000)                                           # back to the default
    assert isinstance(res[8], FailedPrecondition)                                # c is fired, not ended
    assert res[10].events == ()                                                  # c ended at T0+2002
    assert [(e.kind, e.timer_id) for e in res[11].events] == [(EventKind.PURGED, "c")]
    assert [e.kind for e in res[13].events] == [EventKind.FIRED, EventKind.ARMED]
    assert [e.kind for e in res[14].events] == [EventKind.FIRED, EventKind.SETTLED, EventKind.PURGED]
    assert res[15][0].items[0].timer.fire_at == T0 + 90_000             # 08:01:30 UTC, the first second 30
    assert [(e.kind, e.fire_at) for e in res[16].events][0] == (EventKind.FIRED, T0 + 90_000)
    for r in replicas:
        assert hashlib.sha256(r.kernel.to_bytes()).hexdigest() == FINAL_DIGEST
        assert len(r.kernel) == 0 and r.kernel.positions == 3       # "rec" and "cr" reused freed rows
        assert r.retention.to_json() == [{"tenant": "*", "retention_ms": 60_000},
                                         {"tenant": "acme", "retention_ms": 0}]
