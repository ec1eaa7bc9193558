"""Kernel behaviour that no test read until mutation testing (ops/mutation.py, issue 17)
found a mutant of it surviving: each test names the line and the mutants it kills."""
from __future__ import annotations

from minoots.kernel import EventKind, State, TimerSpec, TimerState
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.retention import RetentionPolicy

T0 = 1_800_000_000_000
S = 1000
HOOK = Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2))


def test_an_occurrence_timer_taking_a_freed_row_keeps_the_free_count_exact():
    """occurrences._spawn: `st._counts[0] -= nfree - len(t.free)` (each of its four mutants
    survived: no test spawned an occurrence timer into a freed row, then checked)."""
    s = State()
    s.retention = RetentionPolicy(default=0)
    s.create(T0, [TimerSpec("gone", T0 + 60 * S), TimerSpec("r", T0 + S, every_ms=S, delivery=HOOK,
                                                              overlap="allow_all")])
    s.cancel(T0, [("default", "gone")])             # retention 0: purged at once, its row is free
    rows = len(s._table)
    assert len(s._table.free) == 1
    ev = s.tick(T0 + S).events
    fid = ev[0].fire_id
    assert [(e.kind, e.timer_id) for e in ev] == [(EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE, f"r@{fid}"),
                                                  (EventKind.ARMED, "r")]
    assert len(s._table.free) == 0 and len(s._table) == rows      # the occurrence took the freed row
    s.check_invariants()                            # counts[FREE] == the free heap's size
    assert State.from_bytes(s.to_bytes()) == s


def test_an_occurrence_timers_delivery_due_event_carries_its_revision_and_state():
    """occurrences._spawn: the `delivery_due` event's revision (2) is the new timer's; a
    watcher compares revisions to order what it sees (`2` -> `3` survived)."""
    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S, delivery=HOOK, overlap="allow_all")])
    due = [e for e in s.tick(T0 + S).events if e.kind == EventKind.DELIVERY_DUE]
    assert len(due) == 1
    occ = s.get("default", due[0].timer_id)
    assert (due[0].revision, due[0].state, due[0].fire_at) == (occ.revision, occ.state, occ.fire_at)
    assert occ.revision == 2


# ---- kernel/graph.py: check_graph, every refusal with its field and message, every bound --------

import pytest  # noqa: E402

from minoots.kernel import InvalidArgument, MAX_TIME  # noqa: E402
from minoots.kernel.graph import MAX_PARENTS, MAX_STEPS, Graph, GraphSpec, check_graph  # noqa: E402
from minoots.kernel.validate import MAX_ACTION_BYTES  # noqa: E402


def _refusal(g, ack=True, recurring=False):
    with pytest.raises(InvalidArgument) as info:
        check_graph("s", g, ack, recurring)
    return info.value.field, info.value.rule


@pytest.mark.parametrize("g, field, rule", [
    (GraphSpec(tuple(f"p{i}" for i in range(MAX_PARENTS + 1))), "s.after", f"at most {MAX_PARENTS} parents, got 17"),
    (GraphSpec(("a", "a")), "s.after", "names a parent twice"),
    (GraphSpec(("a",), on="done"), "s.on", "must be one of fired, settled, dead_lettered, cancelled, got 'done'"),
    (GraphSpec(("a",), mode="some"), "s.mode", "must be all or any, got 'some'"),
    (GraphSpec(("a",), on_parent_cancel="keep"), "s.on_parent_cancel", "must be cancel or release, got 'keep'"),
    (GraphSpec(("a",), delay_ms=-1), "s.delay_ms", f"must be an integer in 0..{MAX_TIME}"),
    (GraphSpec(("a",), delay_ms=MAX_TIME + 1), "s.delay_ms", f"must be an integer in 0..{MAX_TIME}"),
    (GraphSpec(("a",), delay_ms=True), "s.delay_ms", f"must be an integer in 0..{MAX_TIME}"),
    (GraphSpec(("a",), delay_ms=1.0), "s.delay_ms", f"must be an integer in 0..{MAX_TIME}"),
    (GraphSpec(escalate=tuple((k + 1, b"x") for k in range(MAX_STEPS + 1))), "s.escalate",
     f"must be a list of at most {MAX_STEPS} (after_ms, action) steps"),
    (GraphSpec(escalate="1:x"), "s.escalate", f"must be a list of at most {MAX_STEPS} (after_ms, action) steps"),
    (GraphSpec(escalate=((0, b"x"),)), "s.escalate[0].after_ms", f"must be an integer in 1..{MAX_TIME}"),
    (GraphSpec(escalate=((MAX_TIME + 1, b"x"),)), "s.escalate[0].after_ms", f"must be an integer in 1..{MAX_TIME}"),
    (GraphSpec(escalate=((5, b"x"), (5, b"y"))), "s.escalate[1].after_ms",
     "steps must come strictly later one after another"),
    (GraphSpec(delay_ms=5), "s.after", "on, mode, delay and on_parent_cancel need at least one parent"),
    (GraphSpec(mode="any"), "s.after", "on, mode, delay and on_parent_cancel need at least one parent"),
    (GraphSpec(on="fired"), "s.after", "on, mode, delay and on_parent_cancel need at least one parent"),
    (GraphSpec(on_parent_cancel="release"), "s.after", "on, mode, delay and on_parent_cancel need at least one parent"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_each_graph_refusal_names_its_field_and_rule(g, field, rule):
    assert _refusal(g) == (field, rule)


def test_a_ladder_needs_ack_required_and_no_recurrence():
    steps = GraphSpec(escalate=((5, b"x"),))
    assert _refusal(steps, ack=False) == ("s.escalate", "an escalation ladder needs ack_required (an ack stops it)")
    assert _refusal(steps, recurring=True) == (
        "s.escalate", "a recurring timer cannot have an escalation ladder: a ladder escalates one unacknowledged "
                      "fire, and a recurring timer may have up to 100 awaiting acks at once (not supported)")
    too_big = GraphSpec(escalate=((5, b"x" * (MAX_ACTION_BYTES + 1)),))
    assert _refusal(too_big) == ("s.escalate[0].action", f"must be at most {MAX_ACTION_BYTES} bytes, got 65537")


def test_graph_bounds_are_accepted_exactly_at_the_limit():
    parents = tuple(f"p{i}" for i in range(MAX_PARENTS))
    assert check_graph("s", GraphSpec(parents, delay_ms=MAX_TIME), False, False) == \
        GraphSpec(parents, "settled", "all", MAX_TIME, "cancel", ())
    steps = tuple((k + 1, b"x") for k in range(MAX_STEPS - 1)) + ((MAX_TIME, "last"),)
    assert check_graph("s", GraphSpec(escalate=steps), True, False).escalate == steps[:-1] + ((MAX_TIME, b"last"),)
    assert check_graph("s", GraphSpec(), False, False) is None          # asks for nothing


def test_a_copied_graph_shares_no_lists_with_the_original():
    """Graph.copy (State.copy): `g.kids = None` survived, no test copied a graph with
    dependents and changed one side."""
    g = Graph()
    g.add_kid(1, 2)
    c = g.copy()
    c.add_kid(1, 3)
    assert g.kids == {1: [2]} and c.kids == {1: [2, 3]}
    assert not g.busy and c.busy is False


def test_a_child_that_would_be_cancelled_at_once_is_refused_naming_its_place_in_the_batch():
    """graph.plan: the message names the spec's index in the batch (`i = new_at[j]` -> None
    survived) and, in mode any, counts every failed parent (`failed += 1` -> `= 1` survived)."""
    from minoots.kernel import FailedPrecondition, TimerState

    s = State()
    s.create(T0, [TimerSpec("a", T0 + 60 * S), TimerSpec("b", T0 + 60 * S)])
    s.cancel(T0, [("default", "a"), ("default", "b")])
    with pytest.raises(FailedPrecondition) as info:
        s.create(T0, [TimerSpec("x", T0 + 60 * S), TimerSpec("c", T0 + 60 * S, graph=GraphSpec(("a",)))])
    assert str(info.value) == ("specs[1].after[0]: parent 'a' in tenant 'default' is CANCELLED and can no longer "
                               "meet the condition 'settled'; with on_parent_cancel=cancel the timer would be "
                               "cancelled at once")
    with pytest.raises(FailedPrecondition) as info:
        s.create(T0, [TimerSpec("x", T0 + 60 * S), TimerSpec("c", T0 + 60 * S, graph=GraphSpec(("a", "b"), mode="any"))])
    assert str(info.value) == ("specs[1].after: no parent can still meet the condition 'settled'; "
                               "with on_parent_cancel=cancel the timer would be cancelled at once")
    s.create(T0, [TimerSpec("live", T0 + 60 * S)])
    c = s.create(T0, [TimerSpec("c", T0 + 60 * S, graph=GraphSpec(("a", "b", "live"), mode="any"))]).items[0].timer
    assert c.state == TimerState.SCHEDULED and c.waiting_on == ("live",)   # one of three can: accepted


# ---- kernel/recurrence_commands.py: pause/resume/trigger refusals -----------------------------


@pytest.mark.parametrize("command", ["pause", "resume", "trigger"])
def test_recurring_controls_check_their_arguments_by_name(command):
    """recurrence_commands._recurring: the field each bad argument is reported under
    (`"now_ms"` -> `"XXnow_msXX"` and the like survived) and the refusal of a timer
    that does not recur, in full."""
    from minoots.kernel import FailedPrecondition

    s = State()
    s.create(T0, [TimerSpec("once", T0 + 60 * S)])
    do = getattr(s, command)
    for args, field in (((-1, "default", "once"), "now_ms"), ((T0, "", "once"), "tenant"), ((T0, "default", ""), "id")):
        with pytest.raises(InvalidArgument) as info:
            do(*args)
        assert info.value.field == field
    with pytest.raises(FailedPrecondition) as info:
        do(T0, "default", "once")
    assert str(info.value) == ("timer 'once' in tenant 'default' does not recur: only a timer with every or cron "
                               "can be paused, resumed or triggered")


def test_pausing_a_paused_or_ended_timer_says_which():
    """recurrence_commands.pause: "already paused" only for a paused SCHEDULED timer
    (`rc.paused and st == _SCHEDULED` -> `or` survived, and the text itself)."""
    from minoots.kernel import FailedPrecondition

    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S), TimerSpec("w", T0 + S, every_ms=S, graph=GraphSpec(("r",)))])
    s.pause(T0, "default", "r")
    with pytest.raises(FailedPrecondition) as info:
        s.pause(T0, "default", "r")
    assert str(info.value) == "timer 'r' in tenant 'default' is already paused; only an armed recurring timer can be paused"
    with pytest.raises(FailedPrecondition) as info:      # SCHEDULED (waiting on r) but not paused
        s.pause(T0, "default", "w")
    assert str(info.value) == "timer 'w' in tenant 'default' is SCHEDULED; only an armed recurring timer can be paused"
    s.cancel(T0, [("default", "r")])
    with pytest.raises(FailedPrecondition) as info:      # paused, then cancelled: not "already paused"
        s.pause(T0, "default", "r")
    assert str(info.value) == "timer 'r' in tenant 'default' is CANCELLED; only an armed recurring timer can be paused"


def test_control_results_are_frozen():
    """ControlResult is an answer, not a place to write (`frozen=True` -> False survived)."""
    import dataclasses

    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S)])
    res = s.pause(T0, "default", "r")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.events = ()
    assert not hasattr(res, "__dict__")                 # slots=True: no per-answer dict


def test_graph_refusals_of_a_self_dependency_and_too_many_dependents_in_full():
    """graph._check_acyclic and graph.plan: the messages in full (survivors L301, L335)."""
    from minoots.kernel import FailedPrecondition
    from minoots.kernel import graph as g

    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [TimerSpec("x", T0 + S), TimerSpec("me", T0 + S, graph=GraphSpec(("me",)))])
    assert (info.value.field, info.value.rule) == ("specs[1].after", "timer 'me' depends on itself")
    s.create(T0, [TimerSpec("p", T0 + 60 * S)])
    s.create(T0, [TimerSpec(f"k{i}", T0 + 60 * S, graph=GraphSpec(("p",))) for i in range(g.MAX_CHILDREN)])
    with pytest.raises(FailedPrecondition) as info:
        s.create(T0, [TimerSpec("one-more", T0 + 60 * S, graph=GraphSpec(("p",)))])
    assert str(info.value) == f"timer 'p' would have more than {g.MAX_CHILDREN} dependents"


def test_a_cycle_in_one_batch_is_refused_naming_every_timer_on_it():
    """graph._check_acyclic: the message in full (L352-353 survived), a child with two
    in-batch parents counted twice (`indeg[j] += 1` -> `= 1` survived: then it would be
    released after its first parent), and a ladder-only spec before a dependent one in
    the same batch (graph.attach's `continue` -> `break` survived)."""
    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [TimerSpec("x", T0 + S), TimerSpec("a", T0 + S, graph=GraphSpec(("b",))),
                      TimerSpec("b", T0 + S, graph=GraphSpec(("a",)))])
    assert (info.value.field, info.value.rule) == ("specs[1].after", "the batch's dependencies form a cycle through "
                                                                     "'a', 'b'")
    with pytest.raises(InvalidArgument) as info:    # c has two in-batch parents, one of them on the cycle
        s.create(T0, [TimerSpec("p", T0 + S), TimerSpec("q", T0 + S, graph=GraphSpec(("c",))),
                      TimerSpec("c", T0 + S, graph=GraphSpec(("p", "q")))])
    assert info.value.rule == "the batch's dependencies form a cycle through 'q', 'c'"
    res = s.create(T0, [TimerSpec("l", T0 + S, ack_required=True, graph=GraphSpec(escalate=((5, b"page"),))),
                        TimerSpec("d", T0 + S, graph=GraphSpec(("l",)))])
    assert s.get("default", "d").waiting_on == ("l",) and s.get("default", "l").state == TimerState.ARMED
    assert len(res.items) == 2
    s.check_invariants()
