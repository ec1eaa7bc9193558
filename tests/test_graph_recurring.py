"""Recurring timers with `after` (kernel/graph.py _recurring_start): the schedule starts when
the parents meet the condition (+ delay); paused recurring children snapshot and check;
escalation ladders on recurring timers stay refused with a reason."""
from __future__ import annotations

import pytest

from minoots.kernel import EventKind, InvalidArgument, State, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, Webhook
from minoots.kernel.graph import GraphSpec

T0 = 1_800_000_000_000
S = 1000


def after(*parents, on="settled", delay=0):
    return GraphSpec(tuple(parents), on, "all", delay, "cancel", ())


def test_an_every_child_starts_its_schedule_at_the_condition_plus_delay():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + S, ack_required=True),
                  TimerSpec("b", 0, every_ms=S, max_count=2, graph=after("a", delay=200))])
    assert s.get("default", "b").state == TimerState.SCHEDULED
    s.tick(T0 + S)
    res = s.ack(T0 + 1300, "default", "a", s.get("default", "a").fire_id)
    assert [(e.kind, e.timer_id, e.fire_at) for e in res.events][-1] == (EventKind.ARMED, "b", T0 + 1500)
    assert [e.fire_at for e in s.tick(T0 + 1500).events if e.kind == EventKind.FIRED] == [T0 + 1500]
    ev = s.tick(T0 + 2500).events
    assert [(e.kind, e.fire_at) for e in ev] == [(EventKind.FIRED, T0 + 2500), (EventKind.SETTLED, T0 + 2500)]
    s.check_invariants()


def test_a_cron_child_with_a_webhook_starts_at_its_first_time_after_the_condition():
    s = State()
    s.create(T0, [TimerSpec("c", T0 + 1500),
                  TimerSpec("d", 0, cron="*/2 * * * * *", tz="UTC", delivery=Delivery(Webhook("http://x.test/h")),
                            overlap="allow_all", graph=after("c", on="fired"))])
    s.tick(T0 + 1500)
    d = s.get("default", "d")
    assert d.state == TimerState.ARMED and d.fire_at == T0 + 2000 and d.dependency == "met"
    ev = s.tick(T0 + 2000).events
    assert [(e.kind, e.timer_id) for e in ev][:2] == [(EventKind.FIRED, "d"), (EventKind.DELIVERY_DUE,
                                                                              f"d@{ev[0].fire_id}")]
    s.pause(T0 + 2001, "default", "d")                  # paused: scheduled, its dependency resolved
    s.check_invariants()
    back = State.from_bytes(s.to_bytes())
    back.check_invariants()
    assert back == s
    assert s.resume(T0 + 2002, "default", "d").timer.state == TimerState.ARMED


def test_a_child_whose_schedule_ended_before_the_condition_is_cancelled():
    s = State()
    s.create(T0, [TimerSpec("e", T0 + 2 * S),
                  TimerSpec("f", 0, every_ms=S, until=T0 + S, graph=after("e", on="fired"))])
    ev = s.tick(T0 + 2 * S).events
    assert [(e.kind, e.timer_id) for e in ev][-1] == (EventKind.CANCELLED, "f")
    assert s.get("default", "f").dependency == "met"
    s.check_invariants()


def test_a_recurring_timer_still_cannot_have_an_escalation_ladder():
    with pytest.raises(InvalidArgument, match="escalation ladder"):
        State().create(T0, [TimerSpec("x", T0, ack_required=True, every_ms=S,
                                      graph=GraphSpec(escalate=((S, b"page"),)))])


# ---- found by tests/test_graph_model.py's recurring property (its BUG_* flags steer around them)


def _nothing_left_over(s, events, now):
    """The command's events carry consecutive seqs, and the next command reports only its own
    (here: cancelling b gives one `cancelled` event, the next seq)."""
    assert [e.seq for e in events] == list(range(events[0].seq, events[0].seq + len(events)))
    nxt = s.cancel(now, [("default", "b")]).events
    assert [(e.seq, e.kind, e.timer_id) for e in nxt] == [(events[-1].seq + 1, EventKind.CANCELLED, "b")]


def test_the_ack_that_settles_a_recurring_parent_reports_its_childs_arm_in_the_same_command():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + S, every_ms=S, until=T0 + S, ack_required=True),
                  TimerSpec("b", 0, graph=after("a"))])
    s.tick(T0 + S)                      # the one occurrence fires and waits for its ack
    a = s.get("default", "a")
    assert a.state == TimerState.FIRED and a.pending_fires == (a.fire_id,)
    res = s.ack(T0 + S + 100, "default", "a", a.fire_id)
    assert s.get("default", "b").state == TimerState.ARMED          # b was armed by this command...
    assert [(e.kind, e.timer_id) for e in res.events] == [(EventKind.SETTLED, "a"), (EventKind.ARMED, "b")]
    _nothing_left_over(s, res.events, T0 + S + 100)


def test_the_resume_that_settles_a_paused_parent_reports_its_childs_arm_in_the_same_command():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + S, every_ms=S, until=T0 + 2 * S),
                  TimerSpec("b", 0, graph=after("a"))])
    s.pause(T0 + 10, "default", "a")
    res = s.resume(T0 + 5 * S, "default", "a")            # past until: a settles
    assert s.get("default", "a").state == TimerState.SETTLED
    assert s.get("default", "b").state == TimerState.ARMED
    assert [e.kind for e in res.events] == [EventKind.RESUMED, EventKind.SETTLED, EventKind.ARMED]
    _nothing_left_over(s, res.events, T0 + 5 * S)


def test_a_triggered_fire_meets_the_condition_of_a_child_waiting_on_fired():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 10 * S, every_ms=S),
                  TimerSpec("b", 0, graph=after("a", on="fired"))])
    res = s.trigger(T0 + 100, "default", "a")
    assert [(e.seq, e.kind, e.timer_id) for e in res.events] == [
        (4, EventKind.FIRED, "a"), (5, EventKind.ARMED, "a"), (6, EventKind.ARMED, "b")]   # b's in this command
    late = s.create(T0 + 100, [TimerSpec("c", 0, graph=after("a", on="fired"))])
    assert late.items[0].timer.state == TimerState.ARMED           # c counts the triggered fire
    assert s.get("default", "b").state == TimerState.ARMED         # b, already waiting, too
