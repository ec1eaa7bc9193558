"""Recurring timers (`every`, kernel/schedule.py): occurrences from committed data only."""
from __future__ import annotations

import hashlib

import msgpack
import pytest

from minoots.kernel import EventKind, InvalidArgument, NotFound, State, TimerSpec, TimerState
from minoots.kernel.retention import RetentionPolicy
from minoots.kernel.schedule import MIN_EVERY_MS, Schedule as Every, next_occurrence
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM

T0 = 1_700_000_000_000
S = 1000


def fires(events):
    return [(e.kind, e.timer_id, e.fire_at - T0) for e in events]


def test_fires_every_interval_with_its_own_fire_id_and_settles_after_max_count():
    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=2 * S, max_count=3)])
    seen = []
    for now in (T0 + S - 1, T0 + S, T0 + 2 * S, T0 + 3 * S, T0 + 5 * S, T0 + 9 * S):
        r = s.tick(now)
        seen += [(now - T0, *f) for f in fires(r.events)]
        s.check_invariants()
    assert seen == [
        (S, EventKind.FIRED, "r", S), (S, EventKind.ARMED, "r", 3 * S),
        (3 * S, EventKind.FIRED, "r", 3 * S), (3 * S, EventKind.ARMED, "r", 5 * S),
        (5 * S, EventKind.FIRED, "r", 5 * S), (5 * S, EventKind.SETTLED, "r", 5 * S),
    ]
    t = s.get("default", "r")
    assert (t.state, t.attempts, t.every_ms, t.max_count, t.until) == (TimerState.SETTLED, 3, 2 * S, 3, None)
    assert s.next_deadline() == T0 + 5 * S + 24 * 3600 * 1000     # then retention as usual


def test_each_occurrence_has_a_distinct_fire_id():
    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S, max_count=4)])
    ids = [e.fire_id for now in range(1, 5) for e in s.tick(T0 + now * S).events if e.kind is EventKind.FIRED]
    assert len(ids) == 4 == len(set(ids)) and ids == sorted(ids)


def test_until_is_inclusive():
    s = State()
    s.create(T0, [TimerSpec("u", T0, every_ms=S, until=T0 + 2 * S)])
    got = [e.fire_at - T0 for now in range(0, 6) for e in s.tick(T0 + now * S).events if e.kind is EventKind.FIRED]
    assert got == [0, S, 2 * S]
    assert s.get("default", "u").state is TimerState.SETTLED


def test_missed_occurrences_fire_once_and_the_schedule_keeps_its_grid():
    s = State()
    s.create(T0, [TimerSpec("g", T0 + S, every_ms=S)])
    r = s.tick(T0 + 10 * S + 500)                    # an outage: 10 occurrences due
    assert fires(r.events) == [(EventKind.FIRED, "g", S), (EventKind.ARMED, "g", 11 * S)]
    assert s.get("default", "g").attempts == 1
    assert fires(s.tick(T0 + 11 * S).events)[0] == (EventKind.FIRED, "g", 11 * S)


def test_reschedule_moves_the_grid_and_cancel_stops_it():
    s = State()
    s.create(T0, [TimerSpec("m", T0 + S, every_ms=S)])
    s.tick(T0 + S)
    s.reschedule(T0 + S, "default", "m", fire_at=T0 + 5 * S + 300)
    assert fires(s.tick(T0 + 5 * S + 300).events)[1] == (EventKind.ARMED, "m", 6 * S + 300)
    s.cancel(T0 + 6 * S, [("default", "m")])
    assert s.tick(T0 + 100 * S).events == ()
    assert s.get("default", "m").state is TimerState.CANCELLED
    s.check_invariants()


@pytest.mark.parametrize("kw, field", [
    ({"every_ms": MIN_EVERY_MS - 1}, "every_ms"), ({"every_ms": -S}, "every_ms"), ({"every_ms": 1.5}, "every_ms"),
    ({"until": T0 + 5 * S}, "every_ms"), ({"max_count": 3}, "every_ms"),
    ({"every_ms": S, "until": T0}, "until"), ({"every_ms": S, "max_count": -1}, "max_count"),
])
def test_bad_schedules_are_refused_and_create_nothing(kw, field):
    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [TimerSpec("ok", T0 + S), TimerSpec("bad", T0 + S, **kw)])
    assert info.value.field == f"specs[1].{field}"
    assert len(s) == 0 and s.seq == 0


def test_next_occurrence():
    e = Every(10, -1, 0)
    assert next_occurrence(e, 100, 100, 1) == 110
    assert next_occurrence(e, 100, 135, 1) == 140
    assert next_occurrence(e, 100, 90, 1) == 110          # a tick clamped below the deadline
    assert next_occurrence(Every(10, 120, 0), 100, 115, 2) == 120
    assert next_occurrence(Every(10, 119, 0), 100, 115, 2) is None
    assert next_occurrence(Every(10, -1, 2), 100, 100, 2) is None


def test_snapshot_round_trip_keeps_schedules_and_the_next_occurrences():
    s = State()
    s.retention = RetentionPolicy({}, 0)
    s.create(T0, [TimerSpec(f"r{i}", T0 + i * 100, every_ms=S + i * 100, max_count=i + 2,
                            until=T0 + 60 * S if i % 2 else None) for i in range(6)]
             + [TimerSpec("plain", T0 + 50)])
    s.tick(T0 + 2 * S)
    r = State.from_bytes(s.to_bytes())
    r.retention = s.retention
    assert r.to_bytes() == s.to_bytes() and r.get("default", "r3") == s.get("default", "r3")
    r.check_invariants()
    for now in range(3, 30):
        assert r.tick(T0 + now * S) == s.tick(T0 + now * S)
    assert r.to_bytes() == s.to_bytes() and len(s) == 0 and not s._table.schedules  # all ended and purged
    s.create(T0 + 31 * S, [TimerSpec("again", T0 + 32 * S)])       # a reused row has no schedule
    assert s.get("default", "again").every_ms == 0


def _kind_version(data: bytes) -> tuple:
    return tuple(msgpack.unpackb(data[1:], raw=False)[:2])


def test_replicas_running_a_recurring_create_agree_and_old_creates_keep_version_1_bytes():
    plain = c.create_timers(T0, ((TimerSpec("a", T0 + S, name="n"),),))
    assert type(plain) is c.CreateTimers and _kind_version(c.encode(plain)) == (1, 1)
    columns = c.create_timers(T0, ((TimerSpec("a", T0 + S),),))      # plain: the column record (48)
    assert type(columns) is c.CreatePlainTimers and _kind_version(c.encode(columns)) == (48, 1)
    rec = c.create_timers(T0, ((TimerSpec("a", T0 + S, every_ms=S, max_count=5),),))
    assert type(rec) is c.CreateTimersV2 and rec.kind == "create" and _kind_version(c.encode(rec)) == (1, 2)
    assert c.decode(c.encode(rec)) == rec
    log = [c.encode(rec)] + [c.encode(c.Tick(T0 + k * S)) for k in range(1, 8)]
    replicas = [TimerFSM({}) for _ in range(3)]
    for r in replicas:
        for b in log:
            r.apply(b)
    digests = {hashlib.sha256(r.kernel.to_bytes()).hexdigest() for r in replicas}
    assert len(digests) == 1
    t = replicas[0].kernel.get("default", "a")
    assert (t.state, t.attempts) == (TimerState.SETTLED, 5)
    with pytest.raises(NotFound):
        replicas[0].kernel.get("default", "nope")
    # A version-2 create whose spec has version 1's nine fields is refused, not guessed at.
    bad = c.FORMAT + msgpack.packb([1, 2, T0, [[c._spec_fields(TimerSpec("x", T0))]], None], use_bin_type=True)
    with pytest.raises(c.InvalidCommand, match="14 fields"):
        c.decode(bad)


# ---- cron with IANA time zones ---------------------------------------------------------------

from datetime import datetime, timezone  # noqa: E402


def utc_ms(y, mo, d, h, mi, s=0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc).timestamp()) * 1000


def cron_fires(cron: str, tz: str, start: int, until_ms: int, step: int = 15 * 60_000) -> list[int]:
    """Fire times of one cron timer, ticking every `step` ms from `start` to `until_ms`."""
    s = State()
    s.create(start, [TimerSpec("c", start, cron=cron, tz=tz)])
    out = []
    for now in range(start, until_ms + 1, step):
        out += [e.fire_at for e in s.tick(now).events if e.kind is EventKind.FIRED]
    s.check_invariants()
    return out


def test_cron_across_the_spring_forward_gap_fires_right_after_it():
    # Paris, 2026-03-29: 02:00 CET -> 03:00 CEST. 02:30 does not exist that day.
    got = cron_fires("30 2 * * *", "Europe/Paris", utc_ms(2026, 3, 27, 12, 0), utc_ms(2026, 3, 31, 0, 0), 60_000)
    assert got == [utc_ms(2026, 3, 28, 1, 30), utc_ms(2026, 3, 29, 1, 0), utc_ms(2026, 3, 30, 0, 30)]


def test_cron_in_the_repeated_fall_back_hour_fires_both_times():
    # Paris, 2026-10-25: 03:00 CEST -> 02:00 CET. 02:30 happens at 00:30 and at 01:30 UTC.
    got = cron_fires("30 2 * * *", "Europe/Paris", utc_ms(2026, 10, 24, 12, 0), utc_ms(2026, 10, 26, 12, 0), 60_000)
    assert got == [utc_ms(2026, 10, 25, 0, 30), utc_ms(2026, 10, 25, 1, 30), utc_ms(2026, 10, 26, 1, 30)]


def test_cron_weekdays_in_new_york_keep_the_local_hour_across_dst():
    # New York, 2026-03-08: EST (UTC-5) -> EDT (UTC-4). 09:00 local is 14:00 then 13:00 UTC.
    got = cron_fires("0 9 * * 1-5", "America/New_York", utc_ms(2026, 3, 5, 0, 0), utc_ms(2026, 3, 11, 0, 0))
    assert got == [utc_ms(2026, 3, 5, 14, 0), utc_ms(2026, 3, 6, 14, 0), utc_ms(2026, 3, 9, 13, 0),
                   utc_ms(2026, 3, 10, 13, 0)]


def test_cron_with_seconds_and_max_count_and_first_occurrence_at_or_after_the_start():
    start = utc_ms(2026, 1, 1, 0, 0) + 500
    s = State()
    t = s.create(start, [TimerSpec("s", start, cron="* * * * * */10", tz="UTC", max_count=3)]).items[0].timer
    assert (t.fire_at, t.cron, t.tz, t.max_count) == (start - 500 + 10_000, "* * * * * */10", "UTC", 3)
    exact = utc_ms(2026, 1, 1, 0, 0)
    assert s.create(exact, [TimerSpec("e", exact, cron="0 0 * * *", tz="UTC")]).items[0].timer.fire_at == exact
    fired = [e.fire_at for now in range(start, start + 60_000, 1000) for e in s.tick(now).events
             if e.kind is EventKind.FIRED and e.timer_id == "s"]
    assert fired == [exact + 10_000, exact + 20_000, exact + 30_000]
    assert s.get("default", "s").state is TimerState.SETTLED


@pytest.mark.parametrize("kw, field", [
    ({"cron": "61 * * * *", "tz": "UTC"}, "cron"), ({"cron": "* * *", "tz": "UTC"}, "cron"),
    ({"cron": "0 9 * * *"}, "tz"), ({"cron": "0 9 * * *", "tz": "Mars/Olympus"}, "tz"),
    ({"cron": "0 9 * * *", "tz": "../../etc/passwd"}, "tz"), ({"tz": "UTC"}, "every_ms"),
    ({"cron": "0 9 * * *", "tz": "UTC", "every_ms": 1000}, "cron"), ({"every_ms": 1000, "tz": "UTC"}, "tz"),
    ({"cron": "0 0 1 1 *", "tz": "UTC", "until": T0 + 1}, "cron"),   # no occurrence before until
])
def test_bad_cron_schedules_are_refused_and_create_nothing(kw, field):
    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [TimerSpec("bad", T0, **kw)])
    assert info.value.field == f"specs[0].{field}"
    assert len(s) == 0


def test_cron_schedule_survives_a_snapshot():
    s = State()
    s.retention = RetentionPolicy({}, 30 * 24 * 3600 * 1000)
    start = utc_ms(2026, 3, 28, 0, 0)
    s.create(start, [TimerSpec("c", start, cron="30 2 * * *", tz="Europe/Paris", until=utc_ms(2026, 4, 2, 0, 0)),
                     TimerSpec("e", start + 5, every_ms=3_600_000)])
    s.tick(utc_ms(2026, 3, 28, 2, 0))
    r = State.from_bytes(s.to_bytes())
    r.retention = s.retention
    assert r.to_bytes() == s.to_bytes() and r.get("default", "c") == s.get("default", "c")
    for h in range(0, 24 * 6, 3):
        now = utc_ms(2026, 3, 28, 3, 0) + h * 3_600_000
        assert r.tick(now) == s.tick(now)
    assert s.get("default", "c").state is TimerState.SETTLED and s.get("default", "c").attempts == 5


SCRIPT = r"""
import json, sys
from datetime import datetime, timezone
from minoots.kernel import State, TimerSpec, EventKind
def ms(*a): return int(datetime(*a, tzinfo=timezone.utc).timestamp()) * 1000
s = State()
start = ms(2026, 3, 26, 0, 0)
s.create(start, [TimerSpec("p", start, cron="30 2 * * *", tz="Europe/Paris"),
                 TimerSpec("n", start, cron="0 9 * * 1-5", tz="America/New_York"),
                 TimerSpec("a", start, cron="15 1 * * *", tz="Australia/Sydney")])
out = []
for k in range(0, 8 * 96):
    out += [(e.timer_id, e.fire_at) for e in s.tick(start + k * 900_000).events if e.kind == EventKind.FIRED]
print(json.dumps(out))
"""


def test_two_replicas_with_different_system_time_zones_fire_at_identical_times(tmp_path):
    """The machine's zone settings ($TZ, its zone files) never reach the kernel: replicas in
    Tokyo and Los Angeles, one without any system zone files, compute the same occurrences
    across the March DST changes of Paris and New York (and Sydney's April one nearby)."""
    import json
    import os
    import subprocess
    import sys

    runs = []
    for tz_env, tzpath in (("Asia/Tokyo", None), ("America/Los_Angeles", str(tmp_path))):
        env = dict(os.environ, TZ=tz_env)
        if tzpath:
            env["PYTHONTZPATH"] = tzpath          # an empty dir: no system zone files at all
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1]
    paris = [at for tid, at in runs[0] if tid == "p"]
    assert utc_ms(2026, 3, 29, 1, 0) in paris                 # 03:00 CEST: the gap's 02:30
    assert len(paris) == 8 and len([1 for tid, _ in runs[0] if tid == "n"]) == 6
