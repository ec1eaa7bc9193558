"""Timer graphs and bulk operations in the kernel (kernel/graph.py, kernel/bulk.py):
bad input refused with typed errors and nothing created, cancel / release policies,
retention, snapshots (with the graph block, and old bytes without it)."""
from __future__ import annotations

import hashlib

import pytest

from minoots.kernel import (AlreadyExists, EventKind, FailedPrecondition, InvalidArgument, NotFound, State, TimerSpec,
                            TimerState)
from minoots.kernel import bulk
from minoots.kernel.graph import MAX_PARENTS, MAX_STEPS, GraphSpec
from minoots.kernel.retention import RetentionPolicy
from minoots.kernel.snapshot import FLAG_GRAPH, decode

T0 = 1_000_000


def dep(*after, **kw):
    return GraphSpec(tuple(after), **kw)


def unchanged(s: State):
    before = s.to_bytes()
    return lambda: s.to_bytes() == before


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("specs, err, field", [
    ([TimerSpec("a", 0, graph=dep("a"))], InvalidArgument, "specs[0].after"),                      # itself
    ([TimerSpec("a", 0, graph=dep("b")), TimerSpec("b", 0, graph=dep("c")),
      TimerSpec("c", 0, graph=dep("a"))], InvalidArgument, "specs[0].after"),                      # cycle
    ([TimerSpec("a", 0, graph=dep(*[f"p{i}" for i in range(MAX_PARENTS + 1)]))], InvalidArgument, "specs[0].after"),
    ([TimerSpec("a", 0, graph=dep("root", "root"))], InvalidArgument, "specs[0].after"),
    ([TimerSpec("a", 0, graph=dep("root", on="done"))], InvalidArgument, "specs[0].on"),
    ([TimerSpec("a", 0, graph=dep("root", mode="some"))], InvalidArgument, "specs[0].mode"),
    ([TimerSpec("a", 0, graph=dep("root", on_parent_cancel="x"))], InvalidArgument, "specs[0].on_parent_cancel"),
    ([TimerSpec("a", 0, graph=dep("root", delay_ms=-1))], InvalidArgument, "specs[0].delay_ms"),
    ([TimerSpec("a", 0, graph=dep("bad id!"))], InvalidArgument, "specs[0].after[0]"),
    ([TimerSpec("a", 5, graph=dep(escalate=((10, b"x"),)))], InvalidArgument, "specs[0].escalate"),   # no ack
    ([TimerSpec("a", 5, ack_required=True, graph=dep(escalate=((10, b"x"), (10, b"y"))))], InvalidArgument,
     "specs[0].escalate[1].after_ms"),
    ([TimerSpec("a", 5, ack_required=True, graph=dep(escalate=tuple((i + 1, b"x") for i in range(MAX_STEPS + 1))))],
     InvalidArgument, "specs[0].escalate"),
    ([TimerSpec("a", 0, graph=dep(delay_ms=5))], InvalidArgument, "specs[0].after"),            # delay, no parent
])
def test_bad_graphs_are_typed_errors_and_create_nothing(specs, err, field):
    s = State()
    s.create(T0, [TimerSpec("root", T0 + 10)])
    same = unchanged(s)
    with pytest.raises(err) as e:
        s.create(T0, [TimerSpec("ok", T0 + 1)] + [TimerSpec(x.id, x.fire_at, ack_required=x.ack_required,
                                                               graph=x.graph) for x in specs])
    assert e.value.field.replace("specs[1]", "specs[0]").startswith(field) or field in str(e.value)
    assert same() and len(s) == 1


def test_missing_parent_and_parent_of_another_tenant_are_not_found():
    s = State()
    s.create(T0, [TimerSpec("p", T0 + 10, tenant="acme")])
    same = unchanged(s)
    with pytest.raises(NotFound):
        s.create(T0, [TimerSpec("c", 0, graph=dep("nope"))])
    with pytest.raises(NotFound):       # p is acme's: the default tenant has no p
        s.create(T0, [TimerSpec("c", 0, graph=dep("p"))])
    assert same()


def test_a_parent_that_already_failed_refuses_a_cancel_policy_child():
    s = State()
    s.create(T0, [TimerSpec("p", T0 + 10)])
    s.cancel(T0 + 1, [("default", "p")])
    same = unchanged(s)
    with pytest.raises(FailedPrecondition):
        s.create(T0 + 2, [TimerSpec("c", 0, graph=dep("p", on="settled"))])
    assert same()
    # release: the failure counts as met, at the create's time
    res = s.create(T0 + 3, [TimerSpec("c", 0, graph=dep("p", on="settled", on_parent_cancel="release",
                                                          delay_ms=7))])
    t = res.items[0].timer
    assert (t.state, t.fire_at, t.dependency) == (TimerState.ARMED, T0 + 10, "released")
    # met already: a parent that settled at T counts at T
    s.create(T0 + 4, [TimerSpec("q", T0 + 5)])
    s.tick(T0 + 5)
    t = s.create(T0 + 100, [TimerSpec("d", 0, graph=dep("q", delay_ms=1000))]).items[0].timer
    assert (t.state, t.fire_at, t.dependency) == (TimerState.ARMED, T0 + 1005, "met")


def test_idempotent_retry_of_a_dependent_create_returns_the_first():
    s = State()
    s.create(T0, [TimerSpec("p", T0 + 10)])
    first = s.create(T0, [TimerSpec("c", 0, idempotency_key="k", graph=dep("p"))]).items[0]
    again = s.create(T0 + 1, [TimerSpec("c2", 0, idempotency_key="k", graph=dep("p"))]).items[0]
    assert first.created and not again.created and again.timer.id == "c"
    with pytest.raises(AlreadyExists):
        s.create(T0 + 1, [TimerSpec("c", 0, graph=dep("p"))])


# ---- lifecycle -------------------------------------------------------------------------


def test_chain_a_then_b_10s_after_a_settles_and_the_graph_is_readable():
    s = State()
    res = s.create(T0, [TimerSpec("a", T0 + 1000, ack_required=True),
                        TimerSpec("b", 0, graph=dep("a", on="settled", delay_ms=10_000))])
    assert [e.kind for e in res.events] == [EventKind.CREATED, EventKind.ARMED, EventKind.CREATED]
    assert res.items[0].timer.children == ("b",) and res.items[1].timer.after == ("a",)
    b = s.get("default", "b")
    assert (b.state, b.revision, b.armed_at, b.after, b.waiting_on, b.dependency) == (
        TimerState.SCHEDULED, 1, None, ("a",), ("a",), "waiting")
    assert s.get("default", "a").children == ("b",)
    s.tick(T0 + 1000)
    assert s.get("default", "b").state == TimerState.SCHEDULED       # fired is not settled
    ev = s.ack(T0 + 1500, "default", "a", s.get("default", "a").fire_id).events
    assert [(e.kind, e.timer_id, e.fire_at) for e in ev] == [(EventKind.SETTLED, "a", T0 + 1000),
                                                             (EventKind.ARMED, "b", T0 + 11_500)]
    assert s.next_deadline() == T0 + 11_500
    assert [e.kind for e in s.tick(T0 + 11_499).events] == []
    assert [e.kind for e in s.tick(T0 + 11_500).events] == [EventKind.FIRED, EventKind.SETTLED]
    s.check_invariants()


def test_cancel_cascades_down_a_chain_and_release_arms():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 1000),
                  TimerSpec("b", 0, graph=dep("a")),
                  TimerSpec("c", 0, graph=dep("b")),
                  TimerSpec("r", 0, graph=dep("b", on_parent_cancel="release", delay_ms=5))])
    ev = s.cancel(T0 + 10, [("default", "a")]).events
    assert [(e.kind, e.timer_id) for e in ev] == [(EventKind.CANCELLED, "a"), (EventKind.CANCELLED, "b"),
                                                  (EventKind.CANCELLED, "c"), (EventKind.ARMED, "r")]
    assert s.get("default", "r").fire_at == T0 + 15
    assert s.get("default", "c").dependency == "cancelled"
    s.check_invariants()


def test_any_mode_waits_for_a_parent_that_can_still_meet_it():
    s = State()
    s.create(T0, [TimerSpec("p1", T0 + 100), TimerSpec("p2", T0 + 200),
                  TimerSpec("c", 0, graph=dep("p1", "p2", mode="any"))])
    s.cancel(T0 + 1, [("default", "p1")])
    assert s.get("default", "c").state == TimerState.SCHEDULED and s.get("default", "c").waiting_on == ("p2",)
    s.tick(T0 + 200)
    c = s.get("default", "c")
    assert c.state == TimerState.ARMED and c.fire_at == T0 + 200


def test_retention_never_purges_a_parent_with_a_waiting_child_and_purging_forgets_edges():
    s = State()
    s.retention = RetentionPolicy(default=0)
    s.create(T0, [TimerSpec("a", T0 + 100), TimerSpec("b", 0, graph=dep("a", delay_ms=50))])
    ev = s.tick(T0 + 100).events
    # a settles, b arms (resolved first), then a is purged: b never waits on a purged timer
    assert [(e.kind, e.timer_id) for e in ev] == [(EventKind.FIRED, "a"), (EventKind.SETTLED, "a"),
                                                  (EventKind.ARMED, "b"), (EventKind.PURGED, "a")]
    b = s.get("default", "b")
    assert b.after == ("a",) and b.waiting_on == () and b.state == TimerState.ARMED
    s.tick(T0 + 150)
    assert len(s) == 0 and not s.has_graph
    s.check_invariants()


def test_escalation_steps_and_an_ack_stops_the_ladder():
    s = State()
    s.create(T0, [TimerSpec("x", T0 + 100, ack_required=True,
                            graph=dep(escalate=((1000, b"page"), (5000, b"call"))))])
    s.tick(T0 + 100)
    assert s.next_deadline() == T0 + 1100
    ev = s.tick(T0 + 1100).events
    assert [(e.kind, e.state, e.fire_at, e.fire_id) for e in ev] == [
        (EventKind.ESCALATED, TimerState.FIRED, T0 + 1100, s.get("default", "x").fire_id)]
    assert (ev[0].step, ev[0].action) == (1, b"page")           # the step and its action, in the event
    t = s.get("default", "x")
    assert t.escalated == 1 and t.escalate == ((1000, b"page"), (5000, b"call"))
    s.ack(T0 + 2000, "default", "x", t.fire_id)
    assert s.tick(T0 + 10_000).events == ()
    s.check_invariants()


# ---- bulk --------------------------------------------------------------------------------


def test_bulk_cancel_gives_a_result_per_timer_and_checks_labels_at_apply():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 10, labels={"team": "infra"}), TimerSpec("b", T0 + 10, labels={"team": "web"}),
                  TimerSpec("c", T0 + 10, labels={"team": "infra"})])
    s.cancel(T0, [("default", "c")])
    res = bulk.cancel_each(s, T0 + 1, "default", ["a", "b", "c", "zz"], (("team", "infra"),))
    assert [(i.id, i.code) for i in res.items] == [("a", "OK"), ("b", "NO_MATCH"), ("c", "FAILED_PRECONDITION"),
                                                   ("zz", "NOT_FOUND")]
    assert [(e.kind, e.timer_id) for e in res.events] == [(EventKind.CANCELLED, "a")]
    assert s.get("default", "b").state == TimerState.ARMED
    with pytest.raises(InvalidArgument):
        bulk.cancel_each(s, T0, "default", ["a", "a"])
    with pytest.raises(InvalidArgument):
        bulk.cancel_each(s, T0, "default", [f"t{i}" for i in range(bulk.MAX_BULK + 1)])


def test_bulk_reschedule():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 10), TimerSpec("b", T0 + 20)])
    res = bulk.reschedule_each(s, T0 + 1, "default", ["a", "b"], (), extend_by=1000)
    assert [(i.code, i.timer.fire_at) for i in res.items] == [("OK", T0 + 1010), ("OK", T0 + 1020)]
    with pytest.raises(InvalidArgument):
        bulk.reschedule_each(s, T0, "default", ["a"], (), fire_at=1, extend_by=1)


# ---- snapshots ---------------------------------------------------------------------------


def test_snapshot_round_trips_the_graph_and_a_state_without_one_writes_the_old_bytes():
    plain = State()
    plain.create(T0, [TimerSpec("a", T0 + 100)])
    with_graph = State()
    with_graph.create(T0, [TimerSpec("a", T0 + 100)])
    assert plain.to_bytes() == with_graph.to_bytes()
    with_graph.create(T0, [TimerSpec("b", 0, graph=dep("a", on="fired", delay_ms=3)),
                           TimerSpec("x", T0 + 50, ack_required=True, graph=dep(escalate=((10, b"e"),)))])
    data = with_graph.to_bytes()
    assert decode(data)[0].graph and int.from_bytes(data[8:10], "little") == 2      # version 2
    assert int.from_bytes(data[10:12], "little") & FLAG_GRAPH
    assert not int.from_bytes(plain.to_bytes()[10:12], "little") & FLAG_GRAPH
    back = State.from_bytes(data)
    assert back == with_graph and back.to_bytes() == data
    back.check_invariants()
    for st in (back, with_graph):
        st.tick(T0 + 50)
        st.tick(T0 + 100)
    assert back == with_graph and back.get("default", "b").state == TimerState.ARMED
    assert [e.kind for e in back.tick(T0 + 103).events] == [EventKind.FIRED, EventKind.SETTLED]
    assert hashlib.sha256(plain.to_bytes()).hexdigest() == hashlib.sha256(State.from_bytes(
        plain.to_bytes()).to_bytes()).hexdigest()


def test_dead_lettered_condition_through_a_webhook_delivery_and_a_dependent_webhook_timer():
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook

    hook = Delivery(Webhook("https://example.com/h"), DeliveryPolicy(max_attempts=1))
    s = State()
    s.create(T0, [TimerSpec("w", T0 + 10, delivery=hook),
                  TimerSpec("on_dead", 0, graph=dep("w", on="dead_lettered")),
                  TimerSpec("on_ok", 0, delivery=hook, graph=dep("w", on="settled", delay_ms=5))])
    assert s.get("default", "on_ok").state == TimerState.SCHEDULED
    s.tick(T0 + 10)
    fid = s.get("default", "w").fire_id
    ev = s.delivery_attempt(T0 + 20, "default", "w", fid, 1, 500, 3, "http_status", b"", None).events
    assert [(e.kind, e.timer_id) for e in ev] == [
        (EventKind.DELIVERY_ATTEMPTED, "w"), (EventKind.DEAD_LETTERED, "w"), (EventKind.ARMED, "on_dead"),
        (EventKind.CANCELLED, "on_ok")]
    s.check_invariants()
    assert State.from_bytes(s.to_bytes()) == s


def test_a_graph_block_that_contradicts_the_table_is_a_snapshot_error():
    from minoots.kernel import SnapshotError
    from minoots.kernel import snapshot

    s = State()
    s.create(T0, [TimerSpec("a", T0 + 100), TimerSpec("b", 0, graph=dep("a"))])
    table, seq, last, v1 = decode(s.to_bytes())
    d = table.graph.deps[1]
    for bad in (d._replace(waiting=()),                  # scheduled but waiting on nothing
                d._replace(pords=(7,)),                   # a parent outside the table
                d._replace(on=9)):                        # an unknown condition
        table.graph.deps[1] = bad
        with pytest.raises(SnapshotError):
            State.from_bytes(snapshot.encode(table, seq, last, v1))
    table.graph.deps[1] = d
    assert State.from_bytes(snapshot.encode(table, seq, last, v1)) == s


def test_a_child_created_waiting_emits_only_created_between_its_armed_siblings():
    """A child waiting on its parent is created SCHEDULED at revision 1 with one event; the
    timers after it in the batch take the following seqs."""
    s = State()
    r = s.create(T0, [TimerSpec("p", T0 + 100), TimerSpec("c", T0 + 200, graph=dep("p")), TimerSpec("d", T0 + 300)])
    assert [tuple(e)[:8] for e in r.events] == [
        (1, EventKind.CREATED, "default", "p", T0, 1, TimerState.SCHEDULED, T0 + 100),
        (2, EventKind.ARMED, "default", "p", T0, 2, TimerState.ARMED, T0 + 100),
        (3, EventKind.CREATED, "default", "c", T0, 1, TimerState.SCHEDULED, T0 + 200),
        (4, EventKind.CREATED, "default", "d", T0, 1, TimerState.SCHEDULED, T0 + 300),
        (5, EventKind.ARMED, "default", "d", T0, 2, TimerState.ARMED, T0 + 300)]
    assert [(i.timer.id, i.timer.revision, i.timer.state) for i in r.items] == [
        ("p", 2, TimerState.ARMED), ("c", 1, TimerState.SCHEDULED), ("d", 2, TimerState.ARMED)]
    assert s.seq == 5 and s.get("default", "c").revision == 1
def test_each_rule_of_the_graph_block_refuses_with_its_own_message():
    """Each check of graph.decode at its bound, through a snapshot written by the real encoder
    from a table changed in one way (a random flip would be caught by any later check)."""
    from minoots.kernel import SnapshotError
    from minoots.kernel import snapshot
    from minoots.kernel.graph import NO_TIME
    MAX = 253402300799999

    def base():
        s = State()
        s.create(T0, [TimerSpec("a", T0 + 100), TimerSpec("b", 0, graph=dep("a")),
                      TimerSpec("x", T0 + 50, ack_required=True, graph=dep(escalate=((10, b"e"), (20, b"f"))))])
        return s

    def load(change):
        table, seq, last, v1 = decode(base().to_bytes())
        change(table, table.graph.deps[1], table.graph.ladders[2])
        return State.from_bytes(snapshot.encode(table, seq, last, v1))

    def dep_(**kw):
        return lambda t, d, lad: t.graph.deps.__setitem__(1, d._replace(**kw))

    def lad_(**kw):
        return lambda t, d, lad: t.graph.ladders.__setitem__(2, lad._replace(**kw))

    def move_dep(o):
        return lambda t, d, lad: (t.graph.deps.pop(1), t.graph.deps.__setitem__(o, d))

    def move_lad(o):
        return lambda t, d, lad: (t.graph.ladders.pop(2), t.graph.ladders.__setitem__(o, lad))

    cases = [
        (move_dep(3), "dependency names timer 3 wrongly"),
        (move_dep(-1), "dependency names timer -1 wrongly"),
        (dep_(parents=("a", "x"), pords=(0,)), "dependency of timer 1 is inconsistent"),
        (dep_(parents=(), pords=(), waiting=()), "dependency of timer 1 is inconsistent"),
        (dep_(parents=("a",) * (MAX_PARENTS + 1), pords=(0,) * (MAX_PARENTS + 1)), "dependency of timer 1 is inconsistent"),
        (dep_(on=5), "dependency of timer 1 is inconsistent"),
        (dep_(mode=2), "dependency of timer 1 is inconsistent"),
        (dep_(policy=2), "dependency of timer 1 is inconsistent"),
        (dep_(outcome=4), "dependency of timer 1 is inconsistent"),
        (dep_(pords=(3,)), "dependency of timer 1 is inconsistent"),
        (dep_(pords=(-2,)), "dependency of timer 1 is inconsistent"),
        (dep_(pords=(-2,), waiting=(), outcome=1), "dependency of timer 1 is inconsistent"),   # only the range says no
        (dep_(waiting=(2,)), "dependency of timer 1 is inconsistent"),            # not one of its parents
        (dep_(pords=(-1,), waiting=(-1,)), "dependency of timer 1 is inconsistent"),   # a purged parent awaited
        (lambda t, d, lad: (t.state.__setitem__(0, 4), t.purge_at.__setitem__(0, T0 + 1)),
         "dependency of timer 1 is inconsistent"),                                 # a terminal parent awaited
        (lambda t, d, lad: (t.state.__setitem__(1, 2), t.fire_at.__setitem__(1, T0)),
         "dependency of timer 1 is inconsistent"),                                 # awaiting but armed
        (dep_(outcome=1), "dependency of timer 1 is inconsistent"),               # met but still awaiting
        (move_lad(3), "escalation ladder names timer 3 wrongly"),
        (move_lad(-1), "escalation ladder names timer -1 wrongly"),
        (lad_(steps=()), "escalation ladder of timer 2 is inconsistent"),
        (lad_(steps=((10, b"e"),) * (MAX_STEPS + 1)), "escalation ladder of timer 2 is inconsistent"),
        (lad_(done=3), "escalation ladder of timer 2 is inconsistent"),
        (lad_(done=-1), "escalation ladder of timer 2 is inconsistent"),
        (lad_(base=-2), "escalation ladder of timer 2 is inconsistent"),
        (lad_(base=MAX + 1), "escalation ladder of timer 2 is inconsistent"),
    ]
    for change, needle in cases:
        with pytest.raises(SnapshotError) as info:
            load(change)
        assert str(info.value) == f"snapshot {needle}", (needle, str(info.value))
    # The controls: each bound itself loads.
    for change in (dep_(parents=("a",) * MAX_PARENTS, pords=(0,) * MAX_PARENTS, waiting=(0,)),
                   dep_(on=4, mode=1, policy=1),
                   lad_(steps=((10, b"e"),) * MAX_STEPS), lad_(done=2), lad_(done=0), lad_(base=MAX), lad_(base=0),
                   lad_(base=NO_TIME)):
        load(change)
    # A graph flag with an empty block.
    import struct
    import zlib
    data = base().to_bytes()
    plain = State()
    plain.create(T0, [TimerSpec("r", T0 + 60_000, every_ms=60_000)])      # format 2, no graph
    head = struct.Struct("<8sHHQI")
    magic, version, flags, _, _ = head.unpack(plain.to_bytes()[:head.size])
    for block, needle in ((b"[[],[]]", "graph block is empty"), (b"[[[0]],[]]", "graph block is malformed")):
        body = plain.to_bytes()[head.size:] + struct.pack("<Q", len(block)) + block
        bad = head.pack(magic, version, flags | FLAG_GRAPH, len(body), zlib.crc32(body)) + body
        with pytest.raises(SnapshotError) as info:
            State.from_bytes(bad)
        assert str(info.value).startswith(f"snapshot {needle}"), str(info.value)
    assert State.from_bytes(data) == base()
    # A ladder's action must be strict base64: a stray character is refused, not skipped.
    from minoots.kernel import graph
    for action, ok in (("ZQ==", True), ("ZQ=!=", False), ("Z Q==", False)):
        blob = b'[[],[[0,[[10,"%s"]],0,0]]]' % action.encode()
        if ok:
            assert graph.decode(blob, 1, bytes([3])).ladders[0].steps == ((10, b"e"),)
            continue
        with pytest.raises(SnapshotError) as info:
            graph.decode(blob, 1, bytes([3]))
        assert str(info.value).startswith("snapshot graph block is malformed: "), str(info.value)


def test_graph_survivors_of_the_fourth_mutation_pass():
    """A bool is no integer for a delay; an empty GraphSpec is no graph; a new ladder has fired
    no step; a child cancelled with its parent releases its payload bytes."""
    s = State()
    s.create(T0, [TimerSpec("root", T0 + 100)])
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [TimerSpec("a", 0, graph=dep("root", delay_ms=True))])
    assert info.value.field == "specs[0].delay_ms"
    s.create(T0, [TimerSpec("plain", T0 + 10, graph=GraphSpec())])
    assert s.get("default", "plain").after == () and not s.has_graph
    s.create(T0, [TimerSpec("x", T0 + 50, ack_required=True, graph=dep(escalate=((10, b"e"), (20, b"f"))))])
    assert s.get("default", "x").escalated == 0
    s.create(T0, [TimerSpec("kid", 0, payload=b"12345", graph=dep("root"))])
    before = s.usage("default")
    res = s.cancel(T0 + 1, [("default", "root")])
    assert [e.timer_id for e in res.events] == ["root", "kid"]
    after = s.usage("default")
    assert (after.timers, after.payload_bytes) == (before.timers - 2, before.payload_bytes - 5)
    s.check_invariants()


def test_a_parent_takes_exactly_max_children_dependents():
    from minoots.kernel.graph import MAX_CHILDREN
    s = State()
    s.create(T0, [TimerSpec("root", T0 + 100)])
    s.create(T0, [TimerSpec(f"c{i}", 0, graph=dep("root")) for i in range(MAX_CHILDREN)])
    assert len(s.get("default", "root").children) == MAX_CHILDREN
    with pytest.raises(FailedPrecondition) as info:
        s.create(T0, [TimerSpec("one_more", 0, graph=dep("root"))])
    assert f"more than {MAX_CHILDREN} dependents" in str(info.value)


# ---- the seventh mutation pass (kernel/graph.py from line 404) -------------------------


def test_a_cascade_resolves_breadth_first_and_each_cascaded_cancel_is_one_revision():
    """`_run` holds the graph busy: a cascaded cancel queues its own children at the end
    (p's children a and b before a's child a1), so every replica and every build emits the
    same seqs. Without the guard, `on_ended` re-entered and went depth first (a1 before b)."""
    s = State()
    s.create(T0, [TimerSpec("p", T0 + 1000), TimerSpec("a", 0, graph=dep("p")), TimerSpec("b", 0, graph=dep("p")),
                  TimerSpec("a1", 0, graph=dep("a"))])
    ev = s.cancel(T0 + 1, [("default", "p")]).events
    assert [(e.seq, e.kind, e.timer_id, e.revision) for e in ev] == [
        (6, EventKind.CANCELLED, "p", 3), (7, EventKind.CANCELLED, "a", 2), (8, EventKind.CANCELLED, "b", 2),
        (9, EventKind.CANCELLED, "a1", 2)]
    assert [s.get("default", i).revision for i in ("a", "b", "a1")] == [2, 2, 2]
    s.check_invariants()


def test_an_any_child_met_by_one_parent_stays_met_when_its_other_parent_is_cancelled_in_the_same_tick():
    """p1 settles (meets c) and p0's settle cancels p2 in one tick; p2's cancel reaches c after
    c was met. That late outcome must be skipped: c is armed, and its dependency says met
    (a mutant that processed it wrote `cancelled` on an armed timer)."""
    s = State()
    s.create(T0, [TimerSpec("p0", T0 + 100), TimerSpec("p1", T0 + 100),
                  TimerSpec("p2", 0, graph=dep("p0", on="cancelled")),
                  TimerSpec("c", 0, graph=dep("p1", "p2", on="settled", mode="any"))])
    ev = s.tick(T0 + 100).events
    assert [(e.kind, e.timer_id) for e in ev][-2:] == [(EventKind.CANCELLED, "p2"), (EventKind.ARMED, "c")]
    c = s.get("default", "c")
    assert (c.state, c.dependency, c.fire_at, c.waiting_on) == (TimerState.ARMED, "met", T0 + 100, ())
    s.check_invariants()
    assert State.from_bytes(s.to_bytes()).get("default", "c").dependency == "met"


def test_a_ladder_without_a_delivery_escalates_beside_one_that_delivers():
    """Only a ladder whose timer has a delivery spawns escalation timers (`Table.esc`); the
    plain ladder next to it only emits its `escalated` events."""
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
    s = State()
    s.create(T0, [TimerSpec("plain", T0 + 10, ack_required=True, graph=dep(escalate=((100, b"e"),))),
                  TimerSpec("hook", T0 + 10, ack_required=True, payload=b"p",
                            delivery=Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2)),
                            graph=dep(escalate=((100, b"f"),)))])
    s.tick(T0 + 10)
    ev = s.tick(T0 + 110).events
    esc = [e.seq for e in ev if e.kind == EventKind.ESCALATED and e.timer_id == "hook"][0]
    assert [(e.kind, e.timer_id) for e in ev] == [(EventKind.ESCALATED, "plain"), (EventKind.ESCALATED, "hook"),
                                                  (EventKind.DELIVERY_DUE, f"hook@{esc}")]
    assert s.get("default", "plain").escalated == 1
    s.check_invariants()


def _broken(change) -> str:
    """check_invariants' message for a State (free row 0, chain a -> b, a ladder on x) changed
    in one way."""
    s = State()
    s.create(T0, [TimerSpec("z", T0 + 100), TimerSpec("a", T0 + 100), TimerSpec("b", 0, graph=dep("a")),
                  TimerSpec("l", T0 + 100), TimerSpec("x", T0 + 50, ack_required=True, graph=dep(escalate=((10, b"e"),)))])
    keep, s.retention = s.retention, RetentionPolicy({"default": 0})
    s.cancel(T0, [("default", "z")])            # purged at once: row 0 is free
    s.retention = keep
    s.check_invariants()
    change(s._table.graph, s._table)
    with pytest.raises(AssertionError) as info:
        s.check_invariants()
    return str(info.value)


def test_each_graph_invariant_is_checked_with_its_own_message():
    """kernel.graph.check: each rule broken alone, by exact message (they were only known to
    refuse, so two weakened rules and every message could change unseen)."""
    def dep_of_b(**kw):
        return lambda g, t: g.deps.__setitem__(2, g.deps[2]._replace(**kw))

    cases = [
        (lambda g, t: g.deps.__setitem__(0, g.deps[2]), "dependency of free row 0"),
        (dep_of_b(waiting=(), outcome=1), "timer 2 waits iff it is scheduled (and not paused)"),
        (dep_of_b(outcome=1), "outcome of timer 2"),
        (dep_of_b(waiting=(3,)), "timer 2 waits only on live parents (a terminal parent resolves its children first)"),
        (dep_of_b(parents=("z", "a"), pords=(0, 1)), "parent 0 of 2 is held"),
        (dep_of_b(parents=("a", "l"), pords=(1, 3)), "children lists are exactly the inverse of the dependencies, "
                                                        "sorted"),
        (lambda g, t: g.ladders.__setitem__(4, g.ladders[4]._replace(done=2)), "ladder of timer 4"),
    ]
    for change, what in cases:
        assert _broken(change) == f"kernel invariant broken: {what}", what


def test_a_snapshot_dependency_on_the_free_row_0_is_refused():
    """Row 0 is a row like any other: a dependency naming it while it is free is refused
    (a `p > 0` mutant let it through)."""
    from minoots.kernel import SnapshotError
    from minoots.kernel import snapshot
    s = State()
    s.create(T0, [TimerSpec("z", T0 + 100), TimerSpec("a", T0 + 100), TimerSpec("b", 0, graph=dep("a"))])
    keep, s.retention = s.retention, RetentionPolicy({"default": 0})
    s.cancel(T0, [("default", "z")])            # purged at once: row 0 is free
    s.retention = keep
    table, seq, last, v1 = decode(s.to_bytes())
    assert table.state[0] == 0
    table.graph.deps[2] = table.graph.deps[2]._replace(parents=("z", "a"), pords=(0, 1))
    with pytest.raises(SnapshotError) as info:
        State.from_bytes(snapshot.encode(table, seq, last, v1))
    assert str(info.value) == "snapshot dependency of timer 2 is inconsistent"
    table.graph.deps[2] = table.graph.deps[2]._replace(parents=("a",), pords=(1,))
    assert State.from_bytes(snapshot.encode(table, seq, last, v1)) == s
