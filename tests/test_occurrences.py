"""Recurring timers with a webhook or a queue (kernel/occurrences.py): one occurrence timer
"<id>@<fire id>" per occurrence, the overlap policy bounding how many are in delivery, the
schedule re-arming on the occurrence and never on delivery; snapshots (header flag 16)."""
from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings, strategies as st

from minoots.kernel import EventKind, FailedPrecondition, InvalidArgument, NotFound, State, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.occurrences import MAX_IN_DELIVERY
from minoots.kernel.retention import RetentionPolicy
from minoots.kernel.snapshot import FLAG_OCC

T0 = 1_800_000_000_000
S = 1000
HOOK = Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2))


def header(data: bytes) -> tuple[int, int]:
    return struct.unpack_from("<HH", data, 8)


def every(overlap: str = "", delivery=HOOK, **kw) -> TimerSpec:
    return TimerSpec("r", T0 + S, every_ms=S, delivery=delivery, overlap=overlap, payload=b"p", name="n",
                     labels={"team": "infra"}, **kw)


def kinds(events) -> list:
    return [(e.kind, e.timer_id) for e in events]


def fail(s: State, now: int, occ_id: str, fid: int, attempt: int, retry_at=None):
    return s.delivery_attempt(now, "default", occ_id, fid, attempt, 503, 5, "http_status", b"no", retry_at)


def ok(s: State, now: int, occ_id: str, fid: int, attempt: int = 1):
    return s.delivery_attempt(now, "default", occ_id, fid, attempt, 200, 5, "", b"", None)


def test_each_occurrence_is_an_occurrence_timer_with_its_own_fire_id_and_delivery():
    s = State()
    s.create(T0, [every("allow_all")])
    fids = []
    for k in range(1, 4):
        tr = s.tick(T0 + k * S)
        fired = [e for e in tr.events if e.kind == EventKind.FIRED]
        assert len(fired) == 1 and fired[0].timer_id == "r"
        fid = fired[0].fire_id
        assert kinds(tr.events) == [(EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE, f"r@{fid}"),
                                    (EventKind.ARMED, "r")]
        fids.append(fid)
        s.check_invariants()
    assert len(set(fids)) == 3
    # The schedule re-armed at each occurrence although none was delivered yet.
    r = s.get("default", "r")
    assert r.state == TimerState.ARMED and r.fire_at == T0 + 4 * S and r.pending_fires == tuple(fids)
    assert r.delivery == HOOK and r.attempts == 3
    assert s.deliveries_due() == [("default", f"r@{f}") for f in fids]
    o = s.get("default", f"r@{fids[1]}")
    assert (o.state, o.fire_id, o.fire_at, o.payload, o.name, dict(o.labels), o.delivery) == (
        TimerState.DELIVERING, fids[1], T0 + 2 * S, b"p", "n", {"team": "infra"}, HOOK)
    assert o.idempotency_key is None and o.every_ms == 0
    assert s.delivery_due("default", f"r@{fids[1]}") == (o, 1)


def test_an_outcome_for_an_old_occurrence_never_settles_a_newer_one():
    s = State()
    s.create(T0, [every("allow_all")])
    a = s.tick(T0 + S).events[0].fire_id
    b = s.tick(T0 + 2 * S).events[0].fire_id
    with pytest.raises(FailedPrecondition):             # a's fire id on b's occurrence timer
        ok(s, T0 + 2 * S, f"r@{b}", a)
    with pytest.raises(FailedPrecondition):             # the schedule itself is not delivering
        ok(s, T0 + 2 * S, "r", b)
    before = s.to_bytes()
    with pytest.raises(FailedPrecondition):
        ok(s, T0 + 2 * S, f"r@{a}", a, attempt=2)          # not the attempt due
    assert s.to_bytes() == before
    ok(s, T0 + 2 * S, f"r@{a}", a)
    assert s.get("default", f"r@{a}").state == TimerState.SETTLED
    assert s.get("default", f"r@{b}").state == TimerState.DELIVERING
    assert s.get("default", "r").pending_fires == (b,)
    with pytest.raises(FailedPrecondition):             # repeated outcome of a settled occurrence
        ok(s, T0 + 2 * S, f"r@{a}", a)
    s.check_invariants()


def test_a_dead_lettered_occurrence_does_not_stop_the_schedule():
    s = State()
    s.create(T0, [every()])
    a = s.tick(T0 + S).events[0].fire_id
    fail(s, T0 + S + 10, f"r@{a}", a, 1, T0 + S + 100)
    s.tick(T0 + S + 100)                                 # the retry is due again
    r = fail(s, T0 + S + 200, f"r@{a}", a, 2)
    assert kinds(r.events) == [(EventKind.DELIVERY_ATTEMPTED, f"r@{a}"), (EventKind.DEAD_LETTERED, f"r@{a}")]
    assert s.get("default", "r").pending_fires == ()
    tr = s.tick(T0 + 2 * S)
    b = tr.events[0].fire_id
    assert kinds(tr.events) == [(EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE, f"r@{b}"), (EventKind.ARMED, "r")]
    # Redrive of the dead-lettered occurrence: delivered again, not counted against the overlap.
    s.redrive(T0 + 2 * S, "default", f"r@{a}")
    assert s.get("default", "r").pending_fires == (b,)
    ok(s, T0 + 2 * S + 5, f"r@{a}", a)
    assert s.get("default", "r").pending_fires == (b,)
    s.check_invariants()


def test_overlap_skip_skips_while_an_occurrence_is_in_delivery():
    s = State()
    s.create(T0, [every()])
    a = s.tick(T0 + S).events[0].fire_id
    tr = s.tick(T0 + 2 * S)
    assert kinds(tr.events) == [(EventKind.ARMED, "r")] and tr.fired == ()
    assert s.get("default", "r").skipped == 1
    ok(s, T0 + 2 * S + 1, f"r@{a}", a)
    tr = s.tick(T0 + 3 * S)
    assert [e.kind for e in tr.events][:2] == [EventKind.FIRED, EventKind.DELIVERY_DUE]
    s.check_invariants()


def test_overlap_buffer_one_fires_the_buffered_occurrence_when_the_delivery_settles():
    s = State()
    s.create(T0, [every("buffer_one", max_count=2)])
    a = s.tick(T0 + S).events[0].fire_id
    tr = s.tick(T0 + 2 * S)                          # buffered; it was the last scheduled one
    assert kinds(tr.events) == [(EventKind.FIRED, "r")]
    r = s.get("default", "r")
    assert r.state == TimerState.FIRED and r.buffered and r.pending_fires == (a,)
    s.check_invariants()
    res = ok(s, T0 + 2 * S + 50, f"r@{a}", a)
    b = res.events[2].fire_id
    assert kinds(res.events) == [(EventKind.DELIVERY_ATTEMPTED, f"r@{a}"), (EventKind.SETTLED, f"r@{a}"),
                                 (EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE, f"r@{b}"), (EventKind.SETTLED, "r")]
    assert res.events[2].fire_at == T0 + 2 * S           # stamped with its occurrence
    assert [e.seq for e in res.events] == list(range(res.events[0].seq, res.events[0].seq + 5))
    r = s.get("default", "r")
    assert r.state == TimerState.SETTLED and not r.buffered and r.pending_fires == (b,)
    assert s.get("default", f"r@{b}").state == TimerState.DELIVERING
    s.check_invariants()
    ok(s, T0 + 3 * S, f"r@{b}", b)
    assert s.get("default", "r").pending_fires == ()
    s.check_invariants()


def test_overlap_buffer_one_keeps_one_and_the_schedule_armed():
    s = State()
    s.create(T0, [every("buffer_one")])
    a = s.tick(T0 + S).events[0].fire_id
    s.tick(T0 + 2 * S)
    s.tick(T0 + 3 * S)                                # a second waiting one is skipped
    r = s.get("default", "r")
    assert r.buffered and r.skipped == 1 and r.state == TimerState.ARMED
    res = ok(s, T0 + 3 * S + 1, f"r@{a}", a)
    assert [e.kind for e in res.events][2:] == [EventKind.FIRED, EventKind.DELIVERY_DUE, EventKind.ARMED]
    s.check_invariants()


def test_allow_all_is_bounded_and_so_is_trigger():
    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S, delivery=HOOK, overlap="allow_all")])
    s.tick(T0 + (MAX_IN_DELIVERY + 5) * S)            # catch-up once: one fire
    for k in range(2, MAX_IN_DELIVERY + 3):
        s.tick(T0 + (MAX_IN_DELIVERY + 4 + k) * S)
    r = s.get("default", "r")
    assert len(r.pending_fires) == MAX_IN_DELIVERY and r.skipped >= 1
    with pytest.raises(FailedPrecondition, match="in delivery"):
        s.trigger(T0 + 10**6, "default", "r")
    s.check_invariants()


def test_trigger_fires_an_occurrence_with_its_delivery():
    s = State()
    s.create(T0, [every()])
    res = s.trigger(T0 + 10, "default", "r")
    fid = res.events[0].fire_id
    assert kinds(res.events) == [(EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE, f"r@{fid}"), (EventKind.ARMED, "r")]
    assert s.get("default", f"r@{fid}").fire_at == T0 + 10
    s.check_invariants()


def test_cancelling_the_schedule_drops_a_buffered_occurrence_and_lets_deliveries_finish():
    s = State()
    s.create(T0, [every("buffer_one")])
    a = s.tick(T0 + S).events[0].fire_id
    s.tick(T0 + 2 * S)
    s.cancel(T0 + 2 * S + 1, [("default", "r")])
    r = s.get("default", "r")
    assert r.state == TimerState.CANCELLED and not r.buffered
    res = ok(s, T0 + 2 * S + 2, f"r@{a}", a)
    assert kinds(res.events) == [(EventKind.DELIVERY_ATTEMPTED, f"r@{a}"), (EventKind.SETTLED, f"r@{a}")]
    s.check_invariants()


def test_queue_schedules_put_each_occurrence_on_the_queue():
    s = State()
    s.create(T0, [every("allow_all", delivery=Delivery(None, DeliveryPolicy(), "jobs"))])
    a = s.tick(T0 + S).events[0].fire_id
    b = s.tick(T0 + 2 * S).events[0].fire_id
    assert s.queue_depth("default", "jobs") == 2
    got = s.lease(T0 + 2 * S, "default", "jobs", 10, 30_000)
    assert [(x.timer.id, x.timer.fire_id) for x in got.leases] == [(f"r@{a}", a), (f"r@{b}", b)]
    s.ack_lease(T0 + 2 * S + 5, "default", f"r@{a}", got.leases[0].lease_id)
    assert s.get("default", "r").pending_fires == (b,)
    s.check_invariants()


def test_occurrence_timers_are_purged_by_retention_and_ids_are_refused_at_create():
    s = State()
    s.retention = RetentionPolicy(default=0)
    s.create(T0, [every("allow_all")])
    a = s.tick(T0 + S).events[0].fire_id
    res = ok(s, T0 + S + 1, f"r@{a}", a)
    assert [e.kind for e in res.events][-1] == EventKind.PURGED
    with pytest.raises(NotFound):
        s.get("default", f"r@{a}")
    with pytest.raises(InvalidArgument, match="id"):
        s.create(T0, [TimerSpec(f"r@{a + 1}", T0)])
    s.check_invariants()


def test_a_retention_zero_timer_ending_while_an_occurrence_is_in_delivery_is_purged_at_once():
    """Occurrences in flight must not take the place of the other timers the same command
    purges at once (kernel/state.py appends the occurrences' own purges to that list)."""
    s = State()
    s.retention = RetentionPolicy(default=0)
    s.create(T0, [every("allow_all"), TimerSpec("c", T0 + 50 * S), TimerSpec("d", T0 + 50 * S)])
    a = s.tick(T0 + S).events[0].fire_id
    assert s.get("default", f"r@{a}").state == TimerState.DELIVERING          # an occurrence in flight
    cancel = s.cancel(T0 + S + 1, [("default", "c"), ("default", "d")])
    assert kinds(cancel.events) == [(EventKind.CANCELLED, "c"), (EventKind.CANCELLED, "d"),
                                    (EventKind.PURGED, "c"), (EventKind.PURGED, "d")]
    for gone in ("c", "d"):
        with pytest.raises(NotFound):
            s.get("default", gone)
    # the occurrence and its schedule are untouched, and the occurrence still purges at once when it ends
    assert s.get("default", f"r@{a}").state == TimerState.DELIVERING
    assert [e.kind for e in ok(s, T0 + S + 2, f"r@{a}", a).events][-1] == EventKind.PURGED
    s.check_invariants()


def test_check_invariants_checks_occurrences_in_a_state_without_any_ladder():
    s = State()
    s.create(T0, [every("allow_all")])
    a = s.tick(T0 + S).events[0].fire_id
    t = s._table
    assert t.occ and not t.esc
    s.check_invariants()
    o = t.by_id[0]["r"]
    t.occ[o] = t.occ[o]._replace(inflight=(a + 1000,))          # an occurrence that is no timer
    with pytest.raises(AssertionError, match=f"occurrence {a + 1000} of schedule {o} is a timer in delivery"):
        s.check_invariants()


def test_snapshots_round_trip_and_a_state_without_schedule_deliveries_keeps_its_bytes():
    plain = State()
    plain.create(T0, [TimerSpec("p", T0 + S, every_ms=S), TimerSpec("w", T0 + S, delivery=HOOK)])
    plain.tick(T0 + S)
    assert not header(plain.to_bytes())[1] & FLAG_OCC
    s = State()
    s.create(T0, [every("buffer_one"), TimerSpec("w", T0 + S, delivery=HOOK)])
    a = s.tick(T0 + S).events[0].fire_id
    s.tick(T0 + 2 * S)
    data = s.to_bytes()
    assert header(data)[1] & FLAG_OCC
    back = State.from_bytes(data)
    back.check_invariants()
    assert back.to_bytes() == data and back.get("default", "r") == s.get("default", "r")
    assert back.capture().to_bytes() == data
    # Both continue identically.
    assert ok(back, T0 + 2 * S + 3, f"r@{a}", a) == ok(s, T0 + 2 * S + 3, f"r@{a}", a)
    assert back.tick(T0 + 5 * S) == s.tick(T0 + 5 * S)
    assert back.to_bytes() == s.to_bytes()


def test_a_corrupt_schedule_delivery_block_is_refused():
    import zlib

    from minoots.kernel import SnapshotError
    s = State()
    s.create(T0, [every()])
    data = s.to_bytes()
    body = data[24:]
    at = body.index(b'[[[0,"http://x.test/h"')             # the last block: the schedules' deliveries
    block = body[at:].replace(b'"http://x.test/h"', b'null')   # neither a webhook nor a queue
    bad = body[:at - 8] + struct.pack("<Q", len(block)) + block
    sealed = data[:8] + struct.pack("<HHQI", *header(data), len(bad), zlib.crc32(bad)) + bad
    with pytest.raises(SnapshotError, match="schedule delivery"):
        State.from_bytes(sealed)


OPS = st.lists(st.tuples(st.sampled_from(["tick", "ok", "fail", "trigger", "snap"]), st.integers(0, 3)),
               max_size=40)


@settings(max_examples=60, deadline=None)
@given(overlap=st.sampled_from(["skip", "buffer_one", "allow_all"]), ops=OPS)
def test_property_replicas_agree_and_deliveries_in_flight_stay_bounded(overlap, ops):
    """Three replicas apply the same commands (one restored from a snapshot at random points)
    and agree byte for byte; the invariants hold; the overlap bound holds throughout."""
    reps = [State() for _ in range(3)]
    for r in reps:
        r.create(T0, [every(overlap, max_count=12)])
    now = T0
    for op, k in ops:
        now += 400
        due = reps[0].deliveries_due()
        results = []
        for i, r in enumerate(reps):
            try:
                if op == "tick":
                    results.append(r.tick(now + k * S))
                elif op in ("ok", "fail") and due:
                    occ_id = due[k % len(due)][1]
                    fid, n = r.get("default", occ_id).fire_id, r.delivery_due("default", occ_id)[1]
                    results.append(ok(r, now, occ_id, fid, n) if op == "ok"
                                   else fail(r, now, occ_id, fid, n, now + 100))
                elif op == "trigger":
                    results.append(r.trigger(now, "default", "r"))
                elif op == "snap" and i == 2:
                    reps[2] = State.from_bytes(r.to_bytes())
            except (FailedPrecondition, NotFound) as exc:
                results.append(type(exc))
        now += k * S
        assert len({repr(x) for x in results[:2]}) <= 1
        for r in reps:
            r.check_invariants()
        view = reps[0].get("default", "r")
        assert len(view.pending_fires) <= (1 if overlap != "allow_all" else MAX_IN_DELIVERY) + (
            view.triggered if overlap != "allow_all" else 0)
        assert len({r.to_bytes() for r in reps}) == 1


def test_digest_of_a_fixed_run_is_stable():
    """The same commands give the same bytes on every run (no dict order, no clock)."""
    def run() -> str:
        s = State()
        s.create(T0, [every("allow_all"), TimerSpec("q", T0 + S, cron="*/5 * * * * *", tz="Europe/Paris",
                                                     delivery=Delivery(None, DeliveryPolicy(), "jobs"))])
        for k in range(1, 8):
            s.tick(T0 + k * S)
        return hashlib.sha256(s.to_bytes()).hexdigest()
    assert run() == run()


def test_the_occurrence_bench_runs_and_reports_every_row():
    from minoots.bench import occurrences as bench
    r = bench.run(50)
    assert r["occurrences"] == 50 and r["held"] == 51 and r["snapshot_per_timer"] > 0
    assert len(bench.format_table(r).splitlines()) == 5


def ladder_timer(s: State, delivery=HOOK):
    from minoots.kernel.graph import GraphSpec
    s.create(T0, [TimerSpec("x", T0 + 100, ack_required=True, delivery=delivery, payload=b"p",
                            graph=GraphSpec(escalate=((S, b"page"), (3 * S, b"call"))))])


def test_a_ladder_with_a_webhook_delivers_each_step_as_an_escalation_timer():
    from minoots.api.dispatcher import envelope
    import json
    s = State()
    ladder_timer(s)
    assert s.get("default", "x").delivery == HOOK
    assert [e.kind for e in s.tick(T0 + 100).events] == [EventKind.FIRED]    # the fire awaits its ack
    assert s.deliveries_due() == []
    ev = s.tick(T0 + 100 + S).events
    esc = ev[0].seq
    assert [(e.kind, e.timer_id, e.fire_id) for e in ev] == [
        (EventKind.ESCALATED, "x", s.get("default", "x").fire_id), (EventKind.DELIVERY_DUE, f"x@{esc}", esc)]
    step = s.get("default", f"x@{esc}")
    assert (step.state, step.escalation_step, step.action, step.payload, step.fire_at) == (
        TimerState.DELIVERING, 1, b"page", b"p", T0 + 100 + S)
    body = json.loads(envelope(step, 1))
    assert body["type"] == "timer.escalated" and body["data"]["escalation_step"] == 1
    assert body["data"]["escalated_timer_id"] == "x" and body["data"]["action_base64"] == "cGFnZQ=="
    back = State.from_bytes(s.to_bytes())
    back.check_invariants()
    assert back == s and back.get("default", f"x@{esc}").escalation_step == 1
    fail(s, T0 + 2 * S, f"x@{esc}", esc, 1, T0 + 3 * S)          # its own retries
    s.ack(T0 + 2 * S, "default", "x", s.get("default", "x").fire_id)   # the ack stops the ladder
    assert [e.kind for e in s.tick(T0 + 10 * S).events] == [EventKind.DELIVERY_DUE]   # only x@esc's retry
    s.check_invariants()


def test_an_ack_required_webhook_timer_without_a_ladder_is_still_refused():
    with pytest.raises(InvalidArgument, match="ack"):
        State().create(T0, [TimerSpec("x", T0, ack_required=True, delivery=HOOK)])


def test_each_rule_of_the_schedule_deliveries_block_refuses_with_its_own_message():
    """Each check of occurrences.decode at its bound, through a snapshot written by the real
    encoder from a table changed in one way."""
    from minoots.kernel import SnapshotError
    from minoots.kernel.graph import GraphSpec

    def base():
        s = State()
        s.create(T0, [every("allow_all"),
                      TimerSpec("x", T0 + 50, ack_required=True, delivery=HOOK, graph=GraphSpec(escalate=((10, b"e"),)))])
        s.tick(T0 + S)
        assert set(s._table.occ) == {0} and set(s._table.esc) == {1} and len(s._table.ids) == 3
        return s

    def load(change):
        s = base()
        change(s._table)
        return State.from_bytes(s.to_bytes())

    def occ_(**kw):
        return lambda t: t.occ.__setitem__(0, t.occ[0]._replace(**kw))

    def spec_(**kw):
        return lambda t: t.occ.__setitem__(0, t.occ[0]._replace(spec=t.occ[0].spec._replace(**kw)))

    def esc_(**kw):
        return lambda t: t.esc.__setitem__(1, t.esc[1]._replace(**kw))

    cases = [
        (lambda t: t.esc.__setitem__(3, t.esc.pop(1)), "delivered ladder names timer 3 wrongly"),
        (lambda t: t.esc.__setitem__(-1, t.esc.pop(1)), "delivered ladder names timer -1 wrongly"),
        (esc_(webhook=None), "delivered ladder names timer 1 wrongly"),
        (esc_(queue="jobs"), "delivered ladder names timer 1 wrongly"),
        (lambda t: t.occ.__setitem__(3, t.occ.pop(0)), "schedule delivery names timer 3 wrongly"),
        (lambda t: t.occ.__setitem__(-1, t.occ.pop(0)), "schedule delivery names timer -1 wrongly"),
        (lambda t: t.occ.__setitem__(1, t.occ[0]), "schedule delivery names timer 1 wrongly"),    # not recurring
        (spec_(webhook=None), "schedule delivery of timer 0 is inconsistent"),
        (spec_(queue="jobs"), "schedule delivery of timer 0 is inconsistent"),
        (occ_(buffered="1"), "schedule delivery of timer 0 is inconsistent"),
        (occ_(inflight=(0,)), "schedule delivery of timer 0 is inconsistent"),
        (occ_(inflight=(6, 6)), "schedule delivery of timer 0 is inconsistent"),
        (occ_(inflight=(7, 6)), "schedule delivery of timer 0 is inconsistent"),
        (occ_(inflight=tuple(range(1, MAX_IN_DELIVERY + 3))), "schedule delivery of timer 0 is inconsistent"),
        (lambda t: t.deliv.__setitem__(0, __import__("minoots.kernel.delivery", fromlist=["x"]).DeliveryRecord(t.occ[0].spec)),
         "both a delivery record and a schedule delivery"),
        (lambda t: t.deliv.__setitem__(1, __import__("minoots.kernel.delivery", fromlist=["x"]).DeliveryRecord(t.esc[1])),
         "both a delivery record and a schedule delivery"),
    ]
    for change, needle in cases:
        with pytest.raises(SnapshotError) as info:
            load(change)
        assert needle in str(info.value), (needle, str(info.value))
    # The controls: the bounds load.
    load(occ_(inflight=tuple(range(1, MAX_IN_DELIVERY + 2))))
    load(occ_(inflight=(1, 6)))
    load(lambda t: t.occ.clear())           # ladders alone
    load(lambda t: t.esc.clear())           # schedules alone
