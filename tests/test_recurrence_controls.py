"""Pause, resume and trigger of recurring timers at their edges (kernel/recurrence_commands.py,
the seventh mutation pass): a flexed occurrence kept across a pause, a resume that settles
the timer (its counts, bytes and the fire it names), a plain schedule triggered beside a
delivering one, and every refusal by exact text."""
from __future__ import annotations

import pytest

from minoots.kernel import EventKind, FailedPrecondition, State, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook

T0 = 1_000_000
S = 1000
HOOK = Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2))


def test_a_pause_and_resume_before_the_flexed_occurrence_keeps_its_deadline():
    """Resumed before its pending occurrence, a flexed timer keeps the deadline already drawn
    for it (not the nominal time, not a new draw, and it does not settle)."""
    s = State()
    s.create(T0, [TimerSpec("f", T0 + 10 * S, every_ms=10 * S, flex_ms=4 * S, flex_seed=2**62 + 7)])
    drawn = s.get("default", "f").fire_at
    assert drawn != T0 + 10 * S                 # the flex moved it: the nominal would differ
    s.pause(T0 + S, "default", "f")
    r = s.resume(T0 + 2 * S, "default", "f")
    assert [(e.kind, e.state, e.fire_at) for e in r.events] == [(EventKind.RESUMED, TimerState.ARMED, drawn)]
    assert (r.timer.state, r.timer.fire_at) == (TimerState.ARMED, drawn)
    assert s.next_deadline() == drawn
    s.check_invariants()


def test_a_resume_past_until_settles_the_timer_and_releases_its_bytes():
    """Paused until its schedule ended, the resume settles it: the settled count goes up by
    one (another timer had settled before), its payload bytes leave the tenant's usage, and
    the settled event names its last fire."""
    s = State()
    s.create(T0, [TimerSpec("done", T0 + S)])
    s.tick(T0 + S)
    s.create(T0 + S, [TimerSpec("r", T0 + 2 * S, every_ms=S, until=T0 + 3 * S, payload=b"12345")])
    last_fire = [e.seq for e in s.tick(T0 + 2 * S).events if e.kind == EventKind.FIRED][0]
    s.pause(T0 + 2 * S, "default", "r")
    assert (s.usage("default").timers, s.usage("default").payload_bytes) == (1, 5)
    r = s.resume(T0 + 5 * S, "default", "r")
    assert [(e.kind, e.state, e.fire_id) for e in r.events] == [
        (EventKind.RESUMED, TimerState.SCHEDULED, None), (EventKind.SETTLED, TimerState.SETTLED, last_fire)]
    assert r.timer.state == TimerState.SETTLED
    assert (s.usage("default").timers, s.usage("default").payload_bytes) == (0, 0)
    assert s.counts()[TimerState.SETTLED] == 2
    s.check_invariants()


def test_a_plain_schedule_is_triggered_beside_a_delivering_one():
    """Only a schedule with a delivery has its triggered fire delivered (Table.occ); a plain
    schedule triggered while such a one exists just fires."""
    s = State()
    s.create(T0, [TimerSpec("hooked", T0 + 60 * S, every_ms=60 * S, delivery=HOOK),
                  TimerSpec("plain", T0 + 60 * S, every_ms=60 * S)])
    r = s.trigger(T0 + S, "default", "plain")
    assert [(e.kind, e.timer_id) for e in r.events] == [(EventKind.FIRED, "plain"), (EventKind.ARMED, "plain")]
    s.check_invariants()


def test_resume_and_trigger_refusals_by_exact_text():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 20 * S, every_ms=S)])
    with pytest.raises(FailedPrecondition) as info:
        s.resume(T0, "default", "a")
    assert str(info.value) == ("timer 'a' in tenant 'default' is ARMED and not paused; "
                               "only a paused timer can be resumed")
    s.cancel(T0, [("default", "a")])
    with pytest.raises(FailedPrecondition) as info:
        s.trigger(T0, "default", "a")
    assert str(info.value) == ("timer 'a' in tenant 'default' is CANCELLED; "
                               "only an armed or paused recurring timer can be triggered")


def test_the_preview_of_a_paused_a_cancelled_and_a_waiting_schedule():
    """A paused schedule previews the occurrences a resume would give; one cancelled while
    paused (it still shows paused) and a recurring child still waiting on its parent
    preview none."""
    from minoots.kernel.graph import GraphSpec
    s = State()
    s.create(T0, [TimerSpec("r", T0 + 10 * S, every_ms=10 * S), TimerSpec("p", T0 + 60 * S),
                  TimerSpec("kid", 0, every_ms=5 * S, graph=GraphSpec(("p",)))])
    s.tick(T0 + S)
    s.pause(T0 + S, "default", "r")
    assert s.next_occurrences("default", "r", 3) == [T0 + 10 * S, T0 + 20 * S, T0 + 30 * S]
    assert s.get("default", "kid").state == TimerState.SCHEDULED
    assert s.next_occurrences("default", "kid", 3) == []
    s.cancel(T0 + S, [("default", "r")])
    assert s.get("default", "r").paused
    assert s.next_occurrences("default", "r", 3) == []


def test_preview_refusals_name_their_field_and_the_range():
    from minoots.kernel import InvalidArgument
    from minoots.kernel.recurrence import MAX_PREVIEW
    s = State()
    s.create(T0, [TimerSpec("r", T0 + 10 * S, every_ms=10 * S)])
    for args, field, text in ((("bad tenant!", "r", 1), "tenant", None),
                              (("default", "bad id!", 1), "id", None),
                              (("default", "r", 0), "count", "invalid count: must be within 1..100, got 0"),
                              (("default", "r", MAX_PREVIEW + 1), "count",
                               f"invalid count: must be within 1..{MAX_PREVIEW}, got {MAX_PREVIEW + 1}"),
                              (("default", "r", "3"), "count", "invalid count: must be an int, not str")):
        with pytest.raises(InvalidArgument) as info:
            s.next_occurrences(*args)
        assert info.value.field == field
        assert text is None or str(info.value) == text
    assert len(s.next_occurrences("default", "r", MAX_PREVIEW)) == MAX_PREVIEW


def test_allow_all_keeps_at_most_max_pending_unacknowledged_fires_and_skips_the_rest():
    from minoots.kernel.recurrence import MAX_PENDING
    s = State()
    s.create(T0, [TimerSpec("a", T0 + S, every_ms=S, ack_required=True, overlap="allow_all")])
    for k in range(1, MAX_PENDING + 3):
        s.tick(T0 + k * S)
    t = s.get("default", "a")
    assert (len(t.pending_fires), t.skipped) == (MAX_PENDING, 2)
    s.check_invariants()


def test_a_catch_up_schedule_that_ends_in_a_tick_releases_its_bytes():
    s = State()
    s.create(T0, [TimerSpec("c", T0 + S, every_ms=S, until=T0 + 3 * S, catch_up="all", payload=b"123")])
    assert (s.usage("default").timers, s.usage("default").payload_bytes) == (1, 3)
    ev = s.tick(T0 + 10 * S).events
    assert [e.kind for e in ev] == [EventKind.FIRED] * 3 + [EventKind.SETTLED]
    assert (s.usage("default").timers, s.usage("default").payload_bytes) == (0, 0)
    s.check_invariants()


def test_an_ack_of_a_fire_not_awaited_names_the_fires_that_are():
    s = State()
    s.create(T0, [TimerSpec("k", T0 + S, every_ms=10 * S, ack_required=True)])
    fired = [e.seq for e in s.tick(T0 + S).events if e.kind == EventKind.FIRED]
    with pytest.raises(FailedPrecondition) as info:
        s.ack(T0 + S, "default", "k", 999)
    assert str(info.value) == (f"fire_id 999 of timer 'k' in tenant 'default' is not awaiting an ack "
                               f"(awaiting: {fired})")


def test_the_last_ack_after_the_schedule_ended_settles_releases_and_purges_at_once():
    """Retention 0: the ack that settles an ended schedule returns its settled and purged
    events, and the timer's bytes leave the tenant's usage."""
    from minoots.kernel.retention import RetentionPolicy
    s = State()
    s.retention = RetentionPolicy({"default": 0})
    s.create(T0, [TimerSpec("k", T0 + S, every_ms=S, until=T0 + 2 * S, ack_required=True, payload=b"1234")])
    s.tick(T0 + 5 * S)
    t = s.get("default", "k")
    assert (t.state, len(t.pending_fires), s.usage("default").payload_bytes) == (TimerState.FIRED, 1, 4)
    r = s.ack(T0 + 5 * S, "default", "k", t.pending_fires[0])
    assert [(e.kind, e.timer_id) for e in r.events] == [(EventKind.SETTLED, "k"), (EventKind.PURGED, "k")]
    assert (s.usage("default").timers, s.usage("default").payload_bytes) == (0, 0)
    s.check_invariants()
