"""Recurring timers' controls and policies (kernel/recurrence.py): pause / resume / trigger,
catch-up after an outage, the preview, bad input, snapshots, and the golden bytes of
records 18-21 (tests/data/commands_schedules_v1.bin)."""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from minoots.kernel import (EventKind, FailedPrecondition, InvalidArgument, NotFound, SnapshotError, State,
                            TimerSpec, TimerState)
from minoots.kernel.recurrence import MAX_CATCH_UP
from minoots.kernel.retention import RetentionPolicy
from minoots.kernel.snapshot import FLAG_RECUR
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM
from support import read_framed

T0 = 1_700_000_000_000
S = 1000


def kinds(res):
    return [(e.kind, e.fire_at - T0) for e in res.events]


def fired(events):
    return [e.fire_at - T0 for e in events if e.kind is EventKind.FIRED]


def header_flags(data: bytes) -> int:
    return struct.unpack_from("<8sHHQI", data)[2]


# ---- pause / resume / trigger ----------------------------------------------------------


def test_paused_timer_fires_nothing_and_resumes_at_the_next_occurrence_after_the_resume():
    s = State()
    s.create(T0, [TimerSpec("p", T0 + S, every_ms=S)])
    s.tick(T0 + S)
    res = s.pause(T0 + S + 100, "default", "p")
    assert kinds(res) == [(EventKind.PAUSED, 2 * S)]
    t = res.timer
    assert (t.state, t.paused, t.fire_at) == (TimerState.SCHEDULED, True, T0 + 2 * S)
    assert s.next_deadline() is None                  # out of the wheel
    assert s.tick(T0 + 10 * S).events == ()            # nothing fires while paused
    res = s.resume(T0 + 10 * S + 400, "default", "p")
    assert kinds(res) == [(EventKind.RESUMED, 11 * S)]  # strictly after the resume, on the grid
    assert (res.timer.state, res.timer.paused, res.timer.attempts) == (TimerState.ARMED, False, 1)
    assert fired(s.tick(T0 + 11 * S).events) == [11 * S]
    s.check_invariants()
    assert not s._table.recur                          # back to the defaults: no per-timer state


def test_resume_before_the_pending_occurrence_keeps_it_and_never_goes_below_the_last_tick():
    s = State()
    s.create(T0, [TimerSpec("p", T0 + 5 * S, every_ms=S)])
    s.pause(T0 + S, "default", "p")
    assert s.resume(T0 + 2 * S, "default", "p").timer.fire_at == T0 + 5 * S
    s.pause(T0 + 3 * S, "default", "p")
    s.tick(T0 + 8 * S + 500)                           # the wheel moved on meanwhile
    # a resume stamped before the last tick (another leader's clock) arms after the tick
    assert s.resume(T0 + 6 * S, "default", "p").timer.fire_at == T0 + 9 * S


def test_resume_with_nothing_left_settles_the_timer():
    s = State()
    s.retention = RetentionPolicy({}, 0)
    s.create(T0, [TimerSpec("u", T0 + S, every_ms=S, until=T0 + 3 * S)])
    s.pause(T0, "default", "u")
    res = s.resume(T0 + 9 * S, "default", "u")
    assert [e.kind for e in res.events] == [EventKind.RESUMED, EventKind.SETTLED, EventKind.PURGED]
    assert res.timer.state is TimerState.SETTLED
    with pytest.raises(NotFound):
        s.get("default", "u")
    s.check_invariants()


def test_trigger_fires_now_with_its_own_fire_id_and_leaves_the_schedule_and_max_count_alone():
    s = State()
    s.create(T0, [TimerSpec("t", T0 + 10 * S, every_ms=10 * S, max_count=2)])
    res = s.trigger(T0 + 3 * S, "default", "t")
    assert kinds(res) == [(EventKind.FIRED, 3 * S), (EventKind.ARMED, 10 * S)]
    fid = res.events[0].fire_id
    assert fid == res.events[0].seq and res.timer.fire_id == fid
    assert (res.timer.attempts, res.timer.triggered, res.timer.fire_at) == (1, 1, T0 + 10 * S)
    assert s.next_occurrences("default", "t", 5) == [T0 + 10 * S, T0 + 20 * S]   # still two scheduled
    assert fired(s.tick(T0 + 10 * S).events) == [10 * S]
    got = s.tick(T0 + 20 * S)
    assert fired(got.events) == [20 * S] and s.get("default", "t").state is TimerState.SETTLED
    assert s.get("default", "t").attempts == 3
    s.check_invariants()


def test_trigger_on_a_paused_timer_fires_and_it_stays_paused():
    s = State()
    s.create(T0, [TimerSpec("t", T0 + S, every_ms=S)])
    s.pause(T0, "default", "t")
    res = s.trigger(T0 + 500, "default", "t")
    assert [(e.kind, e.state) for e in res.events] == [(EventKind.FIRED, TimerState.FIRED),
                                                      (EventKind.PAUSED, TimerState.SCHEDULED)]
    assert res.timer.paused and res.timer.state is TimerState.SCHEDULED
    assert s.next_deadline() is None
    s.check_invariants()


def test_controls_refuse_wrong_states_and_one_shot_timers_and_change_nothing():
    s = State()
    s.create(T0, [TimerSpec("one", T0 + S), TimerSpec("rec", T0 + S, every_ms=S)])
    before = s.to_bytes()
    for cmd in (s.pause, s.resume, s.trigger):
        with pytest.raises(FailedPrecondition, match="does not recur"):
            cmd(T0, "default", "one")
        with pytest.raises(NotFound):
            cmd(T0, "default", "nope")
    with pytest.raises(FailedPrecondition, match="not paused"):
        s.resume(T0, "default", "rec")
    with pytest.raises(InvalidArgument):
        s.pause(-1, "default", "rec")
    assert s.to_bytes() == before
    s.pause(T0, "default", "rec")
    paused = s.to_bytes()
    with pytest.raises(FailedPrecondition, match="already paused"):
        s.pause(T0, "default", "rec")
    s.cancel(T0, [("default", "rec")])
    ended = s.to_bytes()
    for cmd in (s.pause, s.resume, s.trigger):
        with pytest.raises(FailedPrecondition):
            cmd(T0, "default", "rec")
    assert s.to_bytes() == ended != paused
    s.check_invariants()


# ---- catch-up policies ------------------------------------------------------------------


def test_catch_up_once_all_and_skip_after_an_outage():
    s = State()
    s.create(T0, [TimerSpec("once", T0 + S, every_ms=S), TimerSpec("all", T0 + S, every_ms=S, catch_up="all"),
                  TimerSpec("skip", T0 + S, every_ms=S, catch_up="skip")])
    res = s.tick(T0 + 4 * S + 500)                    # occurrences 1, 2, 3, 4 s due
    by = {}
    for e in res.events:
        by.setdefault(e.timer_id, []).append((e.kind, e.fire_at - T0))
    assert by["once"] == [(EventKind.FIRED, S), (EventKind.ARMED, 5 * S)]
    assert by["all"] == [(EventKind.FIRED, k * S) for k in (1, 2, 3, 4)] + [(EventKind.ARMED, 5 * S)]
    assert by["skip"] == [(EventKind.ARMED, 5 * S)]
    ids = [e.fire_id for e in res.events if e.timer_id == "all" and e.kind is EventKind.FIRED]
    assert len(set(ids)) == 4
    assert [t.id for t in res.fired] == ["once", "all"]      # "skip" did not fire
    assert s.get("default", "skip").skipped == 4 and s.get("default", "all").attempts == 4
    # one occurrence due at a time: every policy fires it
    res = s.tick(T0 + 5 * S + 3)
    assert sorted(e.timer_id for e in res.events if e.kind is EventKind.FIRED) == ["all", "once", "skip"]
    s.check_invariants()


def test_catch_up_all_is_bounded_and_counts_the_rest():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + S, every_ms=S, catch_up="all")])
    res = s.tick(T0 + 250 * S)                         # 250 occurrences due
    assert len(fired(res.events)) == MAX_CATCH_UP
    assert fired(res.events)[:2] == [S, 2 * S]
    t = s.get("default", "a")
    assert (t.skipped, t.attempts, t.fire_at) == (150, MAX_CATCH_UP, T0 + 251 * S)


def test_catch_up_all_stops_at_max_count_and_settles():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + S, every_ms=S, catch_up="all", max_count=3)])
    res = s.tick(T0 + 10 * S)
    assert fired(res.events) == [S, 2 * S, 3 * S]
    t = s.get("default", "a")
    assert (t.state, t.skipped, t.fire_at) == (TimerState.SETTLED, 0, T0 + 3 * S)


def test_cron_catch_up_all_fires_each_missed_time():
    start = 1_767_225_600_000                      # 2026-01-01 00:00 UTC
    s = State()
    s.create(start, [TimerSpec("c", start, cron="* * * * * */10", tz="Europe/Paris", catch_up="all")])
    res = s.tick(start + 35_000)
    assert [e.fire_at - start for e in res.events if e.kind is EventKind.FIRED] == [0, 10_000, 20_000, 30_000]
    assert s.get("default", "c").fire_at == start + 40_000


@pytest.mark.parametrize("kw, field", [
    ({"every_ms": S, "catch_up": "sometimes"}, "catch_up"), ({"every_ms": S, "overlap": "queue"}, "overlap"),
    ({"catch_up": "all"}, "catch_up"), ({"overlap": "skip"}, "overlap"), ({"every_ms": S, "catch_up": 1}, "catch_up"),
])
def test_bad_policies_are_refused_and_create_nothing(kw, field):
    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [TimerSpec("ok", T0 + S), TimerSpec("bad", T0 + S, **kw)])
    assert info.value.field == f"specs[1].{field}"
    assert len(s) == 0 and s.seq == 0


# ---- preview ------------------------------------------------------------------------------


def test_next_occurrences_match_what_ticks_fire():
    s = State()
    s.retention = RetentionPolicy({}, 30 * 24 * 3600 * 1000)
    start = 1_774_742_400_000                      # 2026-03-29 00:00 UTC: Paris springs forward at 01:00 UTC
    s.create(start, [TimerSpec("c", start, cron="30 2 * * *", tz="Europe/Paris", max_count=4),
                     TimerSpec("e", start + 7, every_ms=3_600_000, until=start + 4 * 3_600_000 + 7),
                     TimerSpec("one", start + 5)])
    preview = s.next_occurrences("default", "c", 10)
    assert len(preview) == 4
    assert s.next_occurrences("default", "e", 100) == [start + 7 + k * 3_600_000 for k in range(5)]
    assert s.next_occurrences("default", "one", 3) == [start + 5]
    got = []
    for h in range(0, 24 * 5, 1):
        got += [e.fire_at for e in s.tick(start + h * 3_600_000).events
                if e.kind is EventKind.FIRED and e.timer_id == "c"]
    assert got == preview
    assert s.next_occurrences("default", "c", 5) == [] and s.next_occurrences("default", "one", 5) == []


@pytest.mark.parametrize("count", [0, -1, 101, 1.5, True])
def test_next_occurrences_count_is_bounded(count):
    s = State()
    s.create(T0, [TimerSpec("e", T0 + S, every_ms=S)])
    with pytest.raises(InvalidArgument, match="count"):
        s.next_occurrences("default", "e", count)


# ---- snapshots ----------------------------------------------------------------------------


def test_snapshot_round_trip_keeps_paused_policies_and_counters_and_defaults_keep_old_bytes():
    s = State()
    s.create(T0, [TimerSpec(f"r{i}", T0 + S, every_ms=S) for i in range(4)])
    plain = s.to_bytes()
    assert not header_flags(plain) & FLAG_RECUR
    s.pause(T0, "default", "r1")
    s.resume(T0, "default", "r1")
    assert s.to_bytes() != plain and not header_flags(s.to_bytes()) & FLAG_RECUR   # revision moved, no block
    s.create(T0, [TimerSpec("all", T0 + S, every_ms=S, catch_up="all", overlap="allow_all"),
                  TimerSpec("skip", T0 + S, every_ms=S, catch_up="skip")])
    s.pause(T0, "default", "r2")
    s.trigger(T0 + 1, "default", "r3")
    s.tick(T0 + 5 * S)
    data = s.to_bytes()
    assert header_flags(data) & FLAG_RECUR
    r = State.from_bytes(data)
    assert r.to_bytes() == data
    r.check_invariants()
    for tid in ("r2", "r3", "all", "skip"):
        assert r.get("default", tid) == s.get("default", tid)
    assert r.get("default", "r2").paused and r.get("default", "skip").skipped == 5
    assert r.get("default", "all").overlap == "allow_all" and r.get("default", "r3").triggered == 1
    for k in range(6, 12):
        assert r.tick(T0 + k * S) == s.tick(T0 + k * S)
    assert r.resume(T0 + 12 * S, "default", "r2") == s.resume(T0 + 12 * S, "default", "r2")
    assert r.to_bytes() == s.to_bytes()


def test_a_damaged_recurrence_block_is_a_snapshot_error():
    import zlib
    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S), TimerSpec("q", T0 + S, every_ms=S)])
    s.pause(T0, "default", "r")
    data = s.to_bytes()
    body = bytearray(data[24:])

    def seal(b: bytes, flags: int) -> bytes:
        return b"MNTSKRNL" + struct.pack("<HHQI", 2, flags, len(b), zlib.crc32(b)) + bytes(b)

    # The recurrence block ends the body: for one entry, three u8 blocks (paused, catch_up,
    # overlap) and five i64 blocks, each after its u64 length; the paused byte is the first.
    tail = (8 + 1) * 3 + (8 + 8) * 5 + (8 + 1) + (8 + 4) + 8    # ... buffered u8, pending counts u32, no ids
    paused_at = len(body) - tail + 8
    assert body[paused_at] == 1
    body[paused_at] = 0                       # "paused" cleared on a SCHEDULED timer: only defaults left
    with pytest.raises(SnapshotError, match="recurrence"):
        State.from_bytes(seal(body, header_flags(data)))
    with pytest.raises(SnapshotError, match="trailing"):      # the block unannounced
        State.from_bytes(seal(data[24:], header_flags(data) & ~FLAG_RECUR))


# ---- records 18-21: golden bytes and replicas --------------------------------------------

DATA = Path(__file__).parent / "data" / "commands_schedules_v1.bin"
RECORDS = [
    c.CreateRecurringTimers(T0, ((TimerSpec("a", T0 + S, tenant="acme", every_ms=S, catch_up="all",
                                            overlap="buffer_one"),
                                  TimerSpec("b", T0 + S, tenant="acme", every_ms=2 * S, catch_up="skip"),
                                  TimerSpec("c", T0, tenant="acme", cron="* * * * * */5", tz="Asia/Tokyo",
                                            max_count=3, catch_up="once"),
                                  TimerSpec("d", T0 + S, tenant="acme", every_ms=3 * S, flex_ms=2 * S,
                                            flex_seed=42),
                                  TimerSpec("e", T0 + S, tenant="acme", every_ms=2 * S, ack_required=True,
                                            overlap="buffer_one")),)),
    c.Tick(T0 + 4 * S + 500),
    c.PauseTimer(T0 + 5 * S, "acme", "a"),
    c.TriggerTimer(T0 + 5 * S + 1, "acme", "a"),
    c.Tick(T0 + 9 * S),
    c.ResumeTimer(T0 + 9 * S + 200, "acme", "a"),
    c.TriggerTimer(T0 + 9 * S + 300, "acme", "b"),
    c.PauseTimer(T0 + 9 * S + 400, "acme", "nope"),
    c.ResumeTimer(T0 + 9 * S + 500, "acme", "b"),
    c.Tick(T0 + 30 * S),
    c.AckTimer(T0 + 30 * S + 1, "acme", "e", 19),        # e's first fire (seq 19): the buffered one fires
]


def test_records_have_their_numbers_and_round_trip():
    assert [(r.KIND, r.VERSION) for r in (c.CreateRecurringTimers, c.PauseTimer, c.ResumeTimer, c.TriggerTimer)] \
        == [(18, 1), (19, 1), (20, 1), (21, 1)]
    for r in RECORDS:
        assert c.decode(c.encode(r)) == r
    assert c.CreateRecurringTimers.kind == "create"
    plain = c.create_timers(T0, ((TimerSpec("x", T0, every_ms=S),),))
    assert type(plain) is c.CreateTimersV2              # no policy: the older record, unchanged bytes
    assert type(c.create_timers(T0, ((TimerSpec("x", T0, every_ms=S, overlap="skip"),),))) \
        is c.CreateRecurringTimers
    import msgpack
    bad = c.FORMAT + msgpack.packb([18, 1, T0, [[c._spec_fields_v2(TimerSpec("x", T0))]], None])
    with pytest.raises(c.InvalidCommand, match="18 fields"):
        c.decode(bad)


def test_golden_bytes_replay_to_the_recorded_digest_on_every_replica():
    entries = read_framed(DATA)
    assert [c.encode(r) for r in RECORDS] == entries
    replicas = [TimerFSM({}) for _ in range(3)]
    results = [[r.apply(b) for b in entries] for r in replicas]
    assert len({repr(res) for res in results}) == 1
    res = results[0]
    by = [(e.kind, e.timer_id, e.fire_at - T0) for e in res[1].events]
    assert [f for f in by if f[1] == "a"] == [(EventKind.FIRED, "a", k * S) for k in (1, 2, 3, 4)] \
        + [(EventKind.ARMED, "a", 5 * S)]
    assert [f for f in by if f[1] == "b"] == [(EventKind.ARMED, "b", 5 * S)]        # skipped 1 s and 3 s
    assert [e.kind for e in res[2].events] == [EventKind.PAUSED]
    assert [e.kind for e in res[3].events] == [EventKind.FIRED, EventKind.PAUSED]
    assert not [e for e in res[4].events if e.timer_id == "a"]                      # paused: nothing
    assert [(e.kind, e.fire_at - T0) for e in res[5].events] == [(EventKind.RESUMED, 10 * S)]
    assert isinstance(res[7], NotFound) and isinstance(res[8], FailedPrecondition)
    kernel = replicas[0].kernel
    a = kernel.get("acme", "a")
    assert (a.triggered, a.attempts, a.paused, a.catch_up, a.overlap) == (1, 4 + 1 + 21, False, "all", "buffer_one")
    assert kernel.get("acme", "b").triggered == 1 and kernel.get("acme", "c").state is TimerState.SETTLED
    assert [e.kind for e in res[10].events] == [EventKind.SETTLED, EventKind.FIRED, EventKind.ARMED]
    e = kernel.get("acme", "e")
    assert (e.ack_required, len(e.pending_fires), e.buffered, e.attempts) == (True, 1, False, 2)
    digests = {hashlib.sha256(r.kernel.to_bytes()).hexdigest() for r in replicas}
    assert digests == {Path(str(DATA) + ".sha256").read_text().strip()}


# ---- flexible window ------------------------------------------------------------------------


def test_flex_fires_each_occurrence_within_its_window_on_the_nominal_grid_and_matches_the_preview():
    s = State()
    s.create(T0, [TimerSpec("f", T0 + S, every_ms=10 * S, flex_ms=4 * S, flex_seed=2**62 + 7)])
    preview = s.next_occurrences("default", "f", 20)
    fires = []
    for k in range(0, 200 * S + 1, 250):
        fires += fired(s.tick(T0 + k).events)
    assert [T0 + f for f in fires] == preview[:len(fires)] and len(fires) == 20
    for k, f in enumerate(fires):
        nominal = S + 10 * S * k                       # the grid never drifts with the offsets
        assert nominal <= f <= nominal + 4 * S
    assert len(set(f - S - 10 * S * k for k, f in enumerate(fires))) > 10   # spread, not one fixed offset
    s.check_invariants()


def test_flex_offsets_come_from_the_seed_in_the_command_so_replicas_agree_and_seeds_differ():
    def run(seed):
        s = State()
        s.create(T0, [TimerSpec("f", T0, cron="* * * * *", tz="UTC", flex_ms=50 * S, flex_seed=seed)])
        return s.next_occurrences("default", "f", 30), s

    a, sa = run(1)
    b, sb = run(1)
    assert a == b and sa.to_bytes() == sb.to_bytes()
    c_, _ = run(2)
    assert c_ != a
    assert all(0 <= t % 60_000 <= 50 * S for t in a)          # minute marks + up to 50 s
    r = State.from_bytes(sa.to_bytes())
    assert r.next_occurrences("default", "f", 30) == a and r.to_bytes() == sa.to_bytes()


def test_flex_with_pause_resume_and_reschedule_stays_on_the_grid():
    s = State()
    s.create(T0, [TimerSpec("f", T0 + S, every_ms=10 * S, flex_ms=3 * S, flex_seed=99)])
    s.pause(T0, "default", "f")
    t = s.resume(T0 + 25 * S, "default", "f").timer
    assert T0 + 31 * S <= t.fire_at <= T0 + 34 * S            # next nominal after the resume: 31 s
    s.reschedule(T0 + 26 * S, "default", "f", fire_at=T0 + 40 * S)
    assert s.next_occurrences("default", "f", 2)[0] == T0 + 40 * S    # an explicit deadline takes no offset
    assert T0 + 50 * S <= s.next_occurrences("default", "f", 2)[1] <= T0 + 53 * S
    s.check_invariants()


@pytest.mark.parametrize("kw, field", [
    ({"every_ms": 10 * S, "flex_ms": 10 * S}, "flex_ms"), ({"cron": "0 9 * * *", "tz": "UTC", "flex_ms": 86_400_001},
                                                           "flex_ms"),
    ({"flex_ms": S}, "flex_ms"), ({"every_ms": 10 * S, "flex_ms": -1}, "flex_ms"),
    ({"every_ms": 10 * S, "flex_ms": S, "flex_seed": -5}, "flex_seed"),
    ({"every_ms": 10 * S, "flex_ms": 1.5}, "flex_ms"),
])
def test_bad_windows_are_refused_and_create_nothing(kw, field):
    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [TimerSpec("bad", T0 + S, **kw)])
    assert info.value.field == f"specs[0].{field}"
    assert len(s) == 0


# ---- ack_required recurring timers and the overlap policy ---------------------------------


def _kinds_of(res, tid):
    return [(e.kind, e.fire_id) for e in res.events if e.timer_id == tid]


def test_overlap_skip_buffer_one_and_allow_all_while_an_ack_is_pending():
    s = State()
    s.create(T0, [TimerSpec("skip", T0 + S, every_ms=S, ack_required=True),
                  TimerSpec("buf", T0 + S, every_ms=S, ack_required=True, overlap="buffer_one"),
                  TimerSpec("all", T0 + S, every_ms=S, ack_required=True, overlap="allow_all")])
    first = s.tick(T0 + S)
    assert all(k[0][0] is EventKind.FIRED for k in (_kinds_of(first, t) for t in ("skip", "buf", "all")))
    for k in (2, 3, 4):
        s.tick(T0 + k * S)
        s.check_invariants()
    skip, buf, all_ = (s.get("default", t) for t in ("skip", "buf", "all"))
    assert (skip.state, len(skip.pending_fires), skip.skipped, skip.attempts) == (TimerState.ARMED, 1, 3, 1)
    assert (len(buf.pending_fires), buf.buffered, buf.skipped, buf.attempts) == (1, True, 2, 1)
    assert (len(all_.pending_fires), all_.skipped, all_.attempts) == (4, 0, 4)
    # acking the pending fire of "buf" fires the buffered occurrence at once
    res = s.ack(T0 + 4 * S + 10, "default", "buf", buf.pending_fires[0])
    assert [e.kind for e in res.events] == [EventKind.SETTLED, EventKind.FIRED, EventKind.ARMED]
    assert res.events[0].state is TimerState.ARMED and res.events[0].fire_id == buf.pending_fires[0]
    assert res.timer.pending_fires == (res.events[1].fire_id,) and not res.timer.buffered
    # an ack of a fire that is not pending is refused and changes nothing
    before = s.to_bytes()
    with pytest.raises(FailedPrecondition, match="not awaiting an ack"):
        s.ack(T0 + 5 * S, "default", "all", 1)
    with pytest.raises(FailedPrecondition):
        s.ack(T0 + 5 * S, "default", "skip", buf.pending_fires[0])
    assert s.to_bytes() == before
    # "all" acks in any order
    for f in reversed(all_.pending_fires):
        s.ack(T0 + 5 * S, "default", "all", f)
    assert s.get("default", "all").pending_fires == () and s.get("default", "all").state is TimerState.ARMED
    s.check_invariants()


def test_an_ack_required_schedule_that_ends_waits_for_its_acks_then_settles():
    s = State()
    s.create(T0, [TimerSpec("k", T0 + S, every_ms=S, max_count=2, ack_required=True, overlap="allow_all")])
    s.tick(T0 + S)
    res = s.tick(T0 + 2 * S)
    assert [e.kind for e in res.events] == [EventKind.FIRED]          # the last: no re-arm
    t = s.get("default", "k")
    assert t.state is TimerState.FIRED and len(t.pending_fires) == 2 and s.next_deadline() is None
    s.ack(T0 + 3 * S, "default", "k", t.pending_fires[1])
    assert s.get("default", "k").state is TimerState.FIRED
    res = s.ack(T0 + 3 * S, "default", "k", t.pending_fires[0])
    assert [(e.kind, e.state) for e in res.events] == [(EventKind.SETTLED, TimerState.SETTLED)]
    assert res.timer.state is TimerState.SETTLED and res.timer.settled_at == T0 + 3 * S
    s.check_invariants()


def test_a_trigger_of_an_ack_required_timer_awaits_its_ack_and_pending_fires_survive_a_snapshot():
    s = State()
    s.create(T0, [TimerSpec("k", T0 + 10 * S, every_ms=10 * S, ack_required=True, overlap="buffer_one")])
    tr = s.trigger(T0 + S, "default", "k")
    assert tr.timer.pending_fires == (tr.events[0].fire_id,)
    s.tick(T0 + 10 * S)                                   # pending: buffered
    s.pause(T0 + 11 * S, "default", "k")
    data = s.to_bytes()
    r = State.from_bytes(data)
    assert r.to_bytes() == data and r.get("default", "k") == s.get("default", "k")
    r.check_invariants()
    assert r.get("default", "k").buffered and r.get("default", "k").paused
    assert r.ack(T0 + 12 * S, "default", "k", tr.events[0].fire_id) == s.ack(T0 + 12 * S, "default", "k",
                                                                             tr.events[0].fire_id)
    assert r.to_bytes() == s.to_bytes()


def test_a_tick_with_a_catch_up_timer_fires_the_others_each_on_its_own_path():
    """Only a timer with a recurrence policy takes the catch-up path: a plain, a webhook and
    a plain recurring timer due in the same tick fire as they would alone."""
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
    hook = Delivery(Webhook("http://127.0.0.1:9/h", ()), DeliveryPolicy(max_attempts=2))
    t0 = 1_000_000
    s = State()
    s.create(t0, [TimerSpec("c", t0 + 1000, every_ms=60_000, catch_up="all"), TimerSpec("p", t0 + 1000),
                  TimerSpec("w", t0 + 1000, delivery=hook), TimerSpec("e", t0 + 1000, every_ms=60_000)])
    r = s.tick(t0 + 1000)
    assert [(e.kind.name, e.timer_id) for e in r.events] == [
        ("FIRED", "c"), ("ARMED", "c"), ("FIRED", "p"), ("SETTLED", "p"), ("FIRED", "w"), ("DELIVERY_DUE", "w"),
        ("FIRED", "e"), ("ARMED", "e")]
    assert [t.id for t in r.fired] == ["c", "p", "w", "e"]
    s.check_invariants()


def test_each_recurrence_block_of_a_snapshot_is_named_when_its_length_is_wrong():
    """The twelve blocks of the recurrence section, each one byte too long: the refusal names
    that block (the names were unpinned: every one could change unseen)."""
    from minoots.kernel import snapshot as snap
    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S, ack_required=True, overlap="buffer_one", catch_up="all",
                            flex_ms=100, flex_seed=7)])
    s.tick(T0 + 2 * S)
    table, _, _, _ = snap.decode(s.to_bytes())
    blocks = snap._encode_recur(table.recur)
    states = bytes(table.state)

    def read(bs):
        body = b"".join(snap._LEN.pack(len(b)) + b for b in bs)
        return snap._decode_recur(snap._Reader(memoryview(body)), table, states)

    assert read(blocks) == table.recur
    names = ["ordinals", "paused", "catch_up", "overlap", "triggered", "skipped", "flex_ms", "seed", "nominal",
             "buffered", "pending counts", "pending fires"]
    assert len(blocks) == len(names)
    for i, name in enumerate(names):
        bad = list(blocks)
        bad[i] = bytes(bad[i]) + b"\0"
        with pytest.raises(SnapshotError) as info:
            read(bad)
        assert str(info.value) == ("snapshot recurrence ordinals are not whole i64 values" if i == 0 else
                                   f"snapshot recurrence {name} holds {len(bad[i])} bytes, expected {len(blocks[i])}")
