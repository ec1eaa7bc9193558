"""Schedules with a delivery (kernel/occurrences.py): the behaviour a mutation run
(ops/mutation.py, issue 17) found no test reading -- mutants of the schedule's ending (its
`settled` / `fired` events' seq, revision, fire_id and fire_at), of the `skipped` count, of
the usage counters, of the trigger's and the escalation's event seqs, of on_ended's loop
over several ended timers and of the trigger's refusal message survived. One property
drives random commands on webhook and queue schedules and checks the event log and the
counters after every command; the targeted tests pin what the property cannot see."""
from __future__ import annotations

import pytest
from hypothesis import Phase, given, settings, strategies as st

from minoots.kernel import EventKind, FailedPrecondition, State, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.errors import AlreadyExists, InvalidArgument, NotFound
from minoots.kernel.graph import GraphSpec
from minoots.kernel.occurrences import MAX_IN_DELIVERY
from minoots.kernel.quota import TenantUsage
from minoots.kernel.retention import RetentionPolicy

T0 = 1_800_000_000_000
S = 1000
HOOK = Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2))
QUEUE = Delivery(None, DeliveryPolicy(max_attempts=2), "jobs")
TERMINAL = (TimerState.SETTLED, TimerState.CANCELLED, TimerState.DEAD_LETTERED)


def every(id="r", overlap="", delivery=HOOK, payload=b"p", **kw) -> TimerSpec:
    return TimerSpec(id, T0 + S, every_ms=S, delivery=delivery, overlap=overlap, payload=payload, **kw)


def ok(s: State, now: int, occ_id: str, fid: int, attempt: int = 1):
    return s.delivery_attempt(now, "default", occ_id, fid, attempt, 200, 5, "", b"", None)


def fail(s: State, now: int, occ_id: str, fid: int, attempt: int, retry_at=None):
    return s.delivery_attempt(now, "default", occ_id, fid, attempt, 503, 5, "http_status", b"no", retry_at)


def views(s: State) -> dict:
    return {t.id: t for t in s.timers("default")}


def check_command(s: State, before: dict, seq0: int, events) -> None:
    """What every command must leave: see the property's docstring."""
    s.check_invariants()
    assert State.from_bytes(s.to_bytes()) == s
    assert [e.seq for e in events] == list(range(seq0 + 1, seq0 + 1 + len(events)))
    assert s.seq == seq0 + len(events)
    after = views(s)
    last: dict = {}
    for e in events:
        prev = last.get(e.timer_id)
        if prev is not None:
            assert e.revision == prev.revision + 1, (prev, e)
        elif e.timer_id in before:
            assert e.revision == before[e.timer_id].revision + 1, (before[e.timer_id], e)
        last[e.timer_id] = e
        if e.kind in (EventKind.FIRED, EventKind.SETTLED) and e.timer_id in after and after[e.timer_id].attempts:
            assert e.fire_id is not None, e
    for tid, e in last.items():
        v = after.get(tid)
        if v is None:
            assert e.kind == EventKind.PURGED, e
            continue
        assert (e.revision, e.state) == (v.revision, v.state), (e, v)
        if e.kind not in (EventKind.FIRED, EventKind.ESCALATED):     # those carry the occurrence's / step's time
            assert e.fire_at == v.fire_at, (e, v)
        assert e.fire_id is None or e.fire_id == v.fire_id, (e, v)
    for tid, v in after.items():       # no change without an event about it
        if tid in before and tid not in last:
            assert v.revision == before[tid].revision, (before[tid], v)
    out = [v for v in after.values() if v.state not in TERMINAL]
    assert s.usage("default") == TenantUsage(len(out), sum(len(v.payload) for v in out))


SCHEDULE = st.tuples(st.sampled_from(["", "skip", "buffer_one", "allow_all"]), st.sampled_from(["", "all", "skip"]),
                     st.sampled_from([None, 2, 4, 9]), st.sampled_from([0, 0, 1, 2, 4]), st.integers(0, 3))
OPS = ["tick"] * 6 + ["ok"] * 3 + ["fail"] * 2 + ["lease"] * 2 + ["ack"] * 2 + ["nack", "pause", "resume",
                                                                               "trigger", "trigger", "cancel",
                                                                               "retention", "create"]
COMMAND = st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.lists(st.integers(0, 15), min_size=1, max_size=3))


def spec(tid: str, now: int, policy: tuple) -> TimerSpec:
    overlap, cu, until, max_count, size = policy
    payload = b"x" * size
    if tid == "p":
        return TimerSpec("p", now + 2 * S, payload=payload)
    if tid == "x":            # an ack_required timer whose escalation ladder delivers its steps
        return TimerSpec("x", now + S, ack_required=True, delivery=HOOK, payload=payload,
                         graph=GraphSpec(escalate=((S, b"page"), (2 * S, b"call"))))
    return TimerSpec(tid, now + S, every_ms=S, delivery=HOOK if tid == "r" else QUEUE, payload=payload,
                     overlap=overlap, catch_up=cu, max_count=max_count, until=None if until is None else now + until * S)


def apply(s: State, now: int, cmd: tuple, leases: dict, policies: dict):
    """One command; returns its events (raises the kernel's refusal)."""
    op, k, picks = cmd
    due = [i for _, i in s.deliveries_due()]
    live = sorted(v.id for v in s.timers("default") if v.state not in TERMINAL)
    if op == "create":          # again, once it was purged
        tid = "rqpx"[k % 4]
        return s.create(now, [spec(tid, now, policies[tid])]).events
    if op == "tick":
        return s.tick(now + k * S // 2).events
    if op in ("ok", "fail"):
        if not due:
            return ()
        occ_id = due[k % len(due)]
        v, n = s.delivery_due("default", occ_id)
        if op == "ok":
            return ok(s, now, occ_id, v.fire_id, n).events
        last = n >= v.delivery.policy.max_attempts
        return fail(s, now, occ_id, v.fire_id, n, None if last else now + 300).events
    if op == "lease":
        res = s.lease(now, "default", "jobs", 1 + k % 3, 1000 + 500 * k)
        for x in res.leases:
            leases[x.timer.id] = x.lease_id
        return res.events
    if op in ("ack", "nack"):
        if not leases:
            return ()
        tid = sorted(leases)[k % len(leases)]
        lid = leases.pop(tid)
        if op == "ack":
            return s.ack_lease(now, "default", tid, lid).events
        return s.nack_lease(now, "default", tid, lid, now + 200 if k % 2 else None).events
    if op == "retention":
        s.retention = RetentionPolicy(default=0) if k % 2 else RetentionPolicy()
        return ()
    if op == "cancel":
        if not live:
            return ()
        refs = list(dict.fromkeys(live[i % len(live)] for i in picks))
        return s.cancel(now, [("default", i) for i in refs]).events
    if op == "trigger" and k % 4 == 3:      # the ladder's timer is acknowledged
        return s.ack(now, "default", "x", s.get("default", "x").fire_id).events
    return getattr(s, op)(now, "default", "rq"[k % 2]).events


# Fixed examples, no shrinking: a mutant the property kills must not cost minutes of shrinking
# in a mutation run (the failing command sequence is printed as generated).
@settings(max_examples=120, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate])
@given(r=SCHEDULE, q=SCHEDULE, sizes=st.tuples(st.integers(0, 3), st.integers(0, 3)),
       cmds=st.lists(COMMAND, min_size=10, max_size=40))
def test_property_every_command_leaves_consistent_events_counters_and_snapshot(r, q, sizes, cmds):
    """A webhook schedule "r" and a queue schedule "q" (any overlap, catch-up, until,
    max_count), a plain timer "p" and a delivered ladder "x"; random ticks, delivery outcomes,
    leases, acks, nacks, pauses, resumes, triggers, cancels of several timers (occurrences
    too), re-creates, retention 0 or not. After every command: the invariants hold; the
    snapshot round-trips; the command's event seqs follow the previous command's and end at
    State.seq; each timer's events have revisions +1 each from its revision before the
    command, and its last one shows the timer as the command left it (revision, state,
    fire_at, fire_id); a timer without an event did not change revision; fired and settled
    events of a timer that fired carry a fire_id; the tenant's usage is the count and
    payload bytes of its outstanding timers. A refused command changes nothing."""
    s = State()
    policies = {"r": r, "q": q, "p": ("", "", None, 0, sizes[0]), "x": ("", "", None, 0, sizes[1])}
    s.create(T0, [spec(tid, T0, policies[tid]) for tid in "rqpx"])
    now = T0
    leases: dict = {}
    for cmd in cmds:
        now += 100
        before, seq0, data = views(s), s.seq, s.to_bytes()
        try:
            events = apply(s, now, cmd, leases, policies)
        except (FailedPrecondition, NotFound, AlreadyExists, InvalidArgument):
            assert s.to_bytes() == data
            continue
        now = max(now, s.last_tick)
        check_command(s, before, seq0, events)


def test_a_schedule_ending_after_a_catch_up_has_an_exact_event_list_and_ends_at_its_last_occurrence():
    """catch_up "all", max_count 3, the tick comes 5 occurrences late: three fires stamped
    with their occurrences, each with its occurrence timer, then `settled` with fire_at = the
    last occurrence and fire_id = the last fire (occurrences.tick, the `fire_at` line:
    `last != at` survived)."""
    s = State()
    s.create(T0, [every(catch_up="all", max_count=3, overlap="allow_all")])
    ev = s.tick(T0 + 5 * S).events
    f1, f2, f3 = 3, 5, 7                                # after `created` (1) and `armed` (2)
    assert [(e.seq, e.kind, e.timer_id, e.revision, e.state, e.fire_at, e.fire_id) for e in ev] == [
        (f1, EventKind.FIRED, "r", 3, TimerState.FIRED, T0 + S, f1),
        (f1 + 1, EventKind.DELIVERY_DUE, f"r@{f1}", 2, TimerState.DELIVERING, T0 + S, f1),
        (f2, EventKind.FIRED, "r", 4, TimerState.FIRED, T0 + 2 * S, f2),
        (f2 + 1, EventKind.DELIVERY_DUE, f"r@{f2}", 2, TimerState.DELIVERING, T0 + 2 * S, f2),
        (f3, EventKind.FIRED, "r", 5, TimerState.FIRED, T0 + 3 * S, f3),
        (f3 + 1, EventKind.DELIVERY_DUE, f"r@{f3}", 2, TimerState.DELIVERING, T0 + 3 * S, f3),
        (f3 + 2, EventKind.SETTLED, "r", 6, TimerState.SETTLED, T0 + 3 * S, f3)]
    r = s.get("default", "r")
    assert (r.state, r.fire_at, r.fire_id, r.revision, r.attempts, r.skipped) == (
        TimerState.SETTLED, T0 + 3 * S, f3, 6, 3, 0)
    s.check_invariants()


def test_a_schedule_ending_at_until_with_one_occurrence_keeps_its_deadline():
    """until reached at the first occurrence: `settled` at that occurrence, with its fire."""
    s = State()
    s.create(T0, [every(until=T0 + S)])
    ev = s.tick(T0 + 3 * S).events
    assert [(e.kind, e.timer_id, e.fire_at, e.fire_id) for e in ev] == [
        (EventKind.FIRED, "r", T0 + S, 3), (EventKind.DELIVERY_DUE, "r@3", T0 + S, 3),
        (EventKind.SETTLED, "r", T0 + S, 3)]
    assert s.get("default", "r").fire_at == T0 + S


@pytest.mark.parametrize("overlap", ["skip", "buffer_one", "allow_all"])
def test_every_occurrence_due_while_one_is_in_delivery_is_counted_as_skipped(overlap):
    """occurrences.tick: `skipped += 1` for each of several due occurrences, and on past the
    first (`skipped = 1` and `continue` -> `break` survived): catch_up "all", three due at once
    while the delivery bound is reached."""
    s = State()
    s.create(T0, [every(overlap=overlap, catch_up="all")])
    s.tick(T0 + S)                                      # one in delivery
    if overlap == "allow_all":
        for k in range(2, MAX_IN_DELIVERY + 1):
            s.tick(T0 + k * S)
        base = MAX_IN_DELIVERY * S
    else:
        base = S
    r0 = s.get("default", "r")
    assert len(r0.pending_fires) == (MAX_IN_DELIVERY if overlap == "allow_all" else 1) and r0.skipped == 0
    ev = s.tick(T0 + base + 3 * S).events               # three occurrences due
    assert [e.kind for e in ev] == [EventKind.ARMED] and ev[0].fire_at == T0 + base + 4 * S
    r = s.get("default", "r")
    assert (r.skipped, r.buffered) == ((2, True) if overlap == "buffer_one" else (3, False))
    s.tick(T0 + base + 5 * S)                           # two more: all skipped (one is buffered already)
    assert s.get("default", "r").skipped == r.skipped + 2
    s.check_invariants()


def test_a_buffered_last_occurrence_leaves_the_schedule_fired_with_its_last_fire_id():
    """max_count 2, buffer_one: the second occurrence is buffered and ends the schedule: a
    `fired` event carrying the fire in delivery (occurrences.tick's `t.fire_id[o] or None`)."""
    s = State()
    s.create(T0, [every(overlap="buffer_one", max_count=2)])
    a = s.tick(T0 + S).events[0].fire_id
    ev = s.tick(T0 + 2 * S).events
    assert [(e.kind, e.timer_id, e.revision, e.state, e.fire_at, e.fire_id) for e in ev] == [
        (EventKind.FIRED, "r", 5, TimerState.FIRED, T0 + 2 * S, a)]
    r = s.get("default", "r")
    assert (r.state, r.fire_id, r.revision, r.fire_at) == (TimerState.FIRED, a, 5, T0 + 2 * S)


def test_trigger_beyond_the_delivery_bound_is_refused_with_its_message():
    s = State()
    s.create(T0, [every(overlap="allow_all")])
    for k in range(1, MAX_IN_DELIVERY + 1):
        s.tick(T0 + k * S)
    with pytest.raises(FailedPrecondition) as info:
        s.trigger(T0 + 10**6, "default", "r")
    assert str(info.value) == f"timer 'r' in tenant 'default' has {MAX_IN_DELIVERY} occurrences in delivery"


def test_one_cancel_ending_several_timers_lets_each_occurrence_leave_its_schedule():
    """occurrences.on_ended loops over all the ended timers of a command: a cancelled
    schedule, a plain timer, an occurrence its schedule no longer counts (redriven) and
    occurrences still counted, in one cancel (each `continue` -> `break` survived)."""
    s = State()
    s.create(T0, [every("r", "allow_all"), every("q", "allow_all"), TimerSpec("p", T0 + 10 * S)])
    c1, a = [e.fire_id for e in s.tick(T0 + S).events if e.kind == EventKind.FIRED]
    fail(s, T0 + S + 1, f"q@{a}", a, 1, T0 + S + 5)
    s.tick(T0 + S + 5)
    fail(s, T0 + S + 6, f"q@{a}", a, 2)                 # dead-lettered: q counts it no more
    s.redrive(T0 + S + 7, "default", f"q@{a}")          # delivering again, still not counted
    c2, b = [e.fire_id for e in s.tick(T0 + 2 * S).events if e.kind == EventKind.FIRED]
    assert s.get("default", "r").pending_fires == (c1, c2) and s.get("default", "q").pending_fires == (b,)
    refs = ["r", "p", f"q@{a}", f"r@{c1}", f"r@{c2}", f"q@{b}"]
    ev = s.cancel(T0 + 2 * S + 1, [("default", i) for i in refs]).events
    assert [(e.kind, e.timer_id) for e in ev] == [(EventKind.CANCELLED, i) for i in refs]
    assert s.get("default", "r").pending_fires == () and s.get("default", "q").pending_fires == ()
    s.check_invariants()


def test_two_buffered_occurrences_firing_in_one_command_both_end_their_schedules_at_once():
    """Retention 0: one cancel ends the deliveries two over schedules waited for; both
    buffered occurrences fire and both schedules settle and are purged in that command
    (occurrences.on_ended's `at_once +=`: `=` kept only the last one's purge)."""
    s = State()
    s.retention = RetentionPolicy(default=0)
    s.create(T0, [every("r", "buffer_one", max_count=2), every("q", "buffer_one", max_count=2, delivery=QUEUE)])
    a, b = [e.fire_id for e in s.tick(T0 + S).events if e.kind == EventKind.FIRED]
    s.tick(T0 + 2 * S)                                  # both buffered: the schedules are over, FIRED
    assert [s.get("default", i).state for i in "rq"] == [TimerState.FIRED, TimerState.FIRED]
    ev = s.cancel(T0 + 2 * S + 1, [("default", f"r@{a}"), ("default", f"q@{b}")]).events
    kinds = [(e.kind, e.timer_id) for e in ev]
    c, d = [e.fire_id for e in ev if e.kind == EventKind.FIRED]
    assert kinds == [(EventKind.CANCELLED, f"r@{a}"), (EventKind.CANCELLED, f"q@{b}"),
                     (EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE, f"r@{c}"), (EventKind.SETTLED, "r"),
                     (EventKind.FIRED, "q"), (EventKind.DELIVERY_DUE, f"q@{d}"), (EventKind.SETTLED, "q"),
                     (EventKind.PURGED, f"r@{a}"), (EventKind.PURGED, f"q@{b}"), (EventKind.PURGED, "r"),
                     (EventKind.PURGED, "q")]
    for gone in ("r", "q", f"r@{a}", f"q@{b}"):
        with pytest.raises(NotFound):
            s.get("default", gone)
    s.check_invariants()


def test_check_invariants_names_each_broken_rule_of_schedule_deliveries_exactly():
    """occurrences.check: each rule, broken in one way on a real state, fails with its own
    message (message and condition mutants survived: no test broke these rules)."""
    def base():
        s = State()
        s.create(T0, [every("r", "buffer_one", max_count=2), TimerSpec("p", T0 + 50 * S),
                      TimerSpec("x", T0 + 50, ack_required=True, delivery=HOOK,
                                graph=GraphSpec(escalate=((10, b"e"),)))])
        (a,) = [e.fire_id for e in s.tick(T0 + S).events if (e.kind, e.timer_id) == (EventKind.FIRED, "r")]
        s.tick(T0 + 2 * S)
        s.check_invariants()
        assert s.get("default", "r").pending_fires == (a,)
        t = s._table
        assert set(t.occ) == {0} and set(t.esc) == {2}
        return s, t, a

    def broken(change, what):
        s, t, a = base()
        change(t, a)
        with pytest.raises(AssertionError) as info:
            s.check_invariants()
        assert str(info.value) == f"kernel invariant broken: {what if type(what) is str else what(a)}"

    occ = lambda **kw: lambda t, a: t.occ.__setitem__(0, t.occ[0]._replace(**kw))    # noqa: E731
    broken(lambda t, a: t.flags.__setitem__(2, t.flags[2] & ~1),
           "delivered ladder of timer 2 belongs to an ack_required timer without a delivery of its own")
    broken(lambda t, a: t.occ.__setitem__(1, t.occ[0]), "schedule 1 with delivery is recurring")
    broken(lambda t, a: t.occ.__setitem__(0, t.occ[0]._replace(inflight=(a, a))), "occurrences in delivery of schedule 0")
    broken(occ(inflight=()), "a buffered occurrence of schedule 0 waits for one in delivery")
    broken(occ(buffered=-1), "a fired schedule 0 waits for its buffered one")
    broken(lambda t, a: t.occ.__setitem__(0, t.occ[0]._replace(inflight=(a + 1000,))),
           lambda a: f"occurrence {a + 1000} of schedule 0 is a timer in delivery")


def test_a_delivered_ladder_on_a_timer_still_waiting_for_its_parent_checks_and_round_trips():
    """A ladder timer waiting SCHEDULED on a dependency is valid: check_invariants and the
    snapshot's ladder block accept it (`state != 0` / `states[o] == 0` mutated to 1 survived)."""
    s = State()
    s.create(T0, [TimerSpec("parent", T0 + 50 * S),
                  TimerSpec("x", T0 + S, ack_required=True, delivery=HOOK,
                            graph=GraphSpec(after=("parent",), escalate=((10, b"e"),)))])
    assert s.get("default", "x").state == TimerState.SCHEDULED and s._table.esc
    s.check_invariants()
    back = State.from_bytes(s.to_bytes())
    back.check_invariants()
    assert back == s


def test_a_corrupt_schedule_delivery_block_is_refused_with_its_exact_message():
    """occurrences.decode's refusals, exactly (prefixed / suffixed messages survived the
    substring checks of tests/test_occurrences.py), and a non-int ordinal named as such."""
    from minoots.kernel import SnapshotError

    def load(change):
        s = State()
        s.create(T0, [every("r", "allow_all"),
                      TimerSpec("x", T0 + 50, ack_required=True, delivery=HOOK, graph=GraphSpec(escalate=((10, b"e"),)))])
        s.tick(T0 + S)
        change(s._table)
        with pytest.raises(SnapshotError) as info:
            State.from_bytes(s.to_bytes())
        return str(info.value)

    assert load(lambda t: t.esc.__setitem__(-1, t.esc.pop(1))) == "snapshot delivered ladder names timer -1 wrongly"
    assert load(lambda t: t.occ.__setitem__(-1, t.occ.pop(0))) == "snapshot schedule delivery names timer -1 wrongly"
    assert load(lambda t: t.occ.__setitem__("0", t.occ.pop(0))) == "snapshot schedule delivery names timer '0' wrongly"
    assert load(lambda t: t.occ.__setitem__(0, t.occ[0]._replace(inflight=(0,)))) == (
        "snapshot schedule delivery of timer 0 is inconsistent")
