"""The kernel's value types (kernel/timer.py): read-only, slotted, compared by value.

Results and views are handed to the API thread while the tick thread keeps applying: a
result that could be changed after the fact, or a timer view that grew a __dict__ (tens
of thousands are built per tick at load), would break that sharing or its memory bound.
"""
from __future__ import annotations

import dataclasses

import pytest

from minoots.kernel import State, TimerSpec, TimerState
from minoots.kernel import timer as kt


def _timer():
    s = State()
    return s.create(1000, [TimerSpec("a", 5000)]).timers[0]


def _instances():
    t = _timer()
    return {
        "TimerSpec": TimerSpec("a", 5000),
        "Timer": t,
        "CreateResult": kt.CreateResult(events=(), items=(kt.CreateItem(t, True),)),
        "CancelResult": kt.CancelResult(events=(), timers=(t,)),
        "RescheduleResult": kt.RescheduleResult(events=(), timer=t),
        "TickResult": kt.TickResult(events=(), now_ms=1, fired=(t,)),
        "AckResult": kt.AckResult(events=(), timer=t),
        "DeliveryResult": kt.DeliveryResult(events=(), timer=t),
        "LeaseResult": kt.LeaseResult(events=(), leases=()),
        "DeleteResult": kt.DeleteResult(events=(), timers=(t,)),
    }


@pytest.mark.parametrize("name", sorted(_instances()))
def test_results_and_views_are_frozen_and_slotted(name):
    obj = _instances()[name]
    field = dataclasses.fields(obj)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, None)
    assert not hasattr(obj, "__dict__")
    assert dataclasses.replace(obj) == obj            # compared by value


def test_terminal_is_exactly_settled_cancelled_and_dead_lettered():
    assert {s for s in TimerState if s.terminal} == {TimerState.SETTLED, TimerState.CANCELLED,
                                                     TimerState.DEAD_LETTERED}


def test_a_create_item_equals_only_the_same_timer_with_the_same_outcome():
    t = _timer()
    other = State().create(1000, [TimerSpec("b", 5000)]).timers[0]
    item = kt.CreateItem(t, True)
    assert item == kt.CreateItem(lambda: t, True)     # a lazily built timer compares by value
    assert item != kt.CreateItem(t, False)
    assert item != kt.CreateItem(other, True)
    assert tuple(item) == (t, True)
    assert item.__eq__((t, True)) is NotImplemented
    with pytest.raises(TypeError):
        hash(item)


def test_a_create_results_timers_are_its_items_timers_in_order():
    t, u = _timer(), State().create(1000, [TimerSpec("b", 5000)]).timers[0]
    res = kt.CreateResult(events=(), items=(kt.CreateItem(t, True), kt.CreateItem(u, False)))
    assert res.timers == (t, u)


def test_a_plain_timer_shows_no_schedule_delivery_or_graph():
    # A one-shot timer without a webhook or dependencies: the view's optional parts read as
    # "none" (clients and the SDK test these fields to tell the kinds of timers apart).
    t = _timer()
    assert (t.every_ms, t.until, t.max_count, t.cron, t.tz) == (0, None, 0, "", "")
    assert (t.delivery, t.delivery_attempts, t.next_attempt_at, t.delivery_attempt) == (None, (), None, 0)
    assert (t.after, t.on, t.mode, t.delay_ms, t.on_parent_cancel, t.waiting_on, t.dependency, t.children,
            t.escalate, t.escalated) == ((), "", "", 0, "", (), "", (), (), 0)
    assert (t.paused, t.catch_up, t.overlap, t.triggered, t.skipped, t.flex_ms, t.pending_fires, t.buffered) == \
        (False, "", "", 0, 0, 0, (), False)


def test_a_spec_asks_for_nothing_optional_by_default():
    s = TimerSpec("a", 5000)
    assert (s.tenant, s.name, s.payload, s.labels, s.action, s.idempotency_key, s.ack_required) == \
        ("default", "", b"", None, b"", None, False)
    assert (s.every_ms, s.until, s.max_count, s.cron, s.tz, s.delivery, s.graph) == (0, None, 0, "", "", None, None)
    assert (s.catch_up, s.overlap, s.flex_ms, s.flex_seed) == ("", "", 0, 0)


def test_a_tick_with_nothing_due_reports_nothing_purged():
    s = State()
    s.create(1000, [TimerSpec("a", 5000)])
    r = s.tick(2000)
    assert (r.events, r.now_ms, r.fired, r.purged) == ((), 2000, (), 0)
