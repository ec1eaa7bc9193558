"""Timer graphs (kernel/graph.py) against a reference model: random DAGs, random parent
outcomes (fires, acks, cancels, ticks), retention 0 and the default, snapshots taken at
random points. Every child arms exactly when the model says (time and deadline), never
twice, is cancelled exactly when its policy says, and never fires while it waits; every
escalation ladder escalates exactly the steps the model says."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minoots.kernel import EventKind, FailedPrecondition, NotFound, State, TimerSpec, TimerState
from minoots.kernel.graph import GraphSpec
from minoots.kernel.retention import RetentionPolicy

T0 = 1_000_000
CONDS = ["fired", "settled", "dead_lettered", "cancelled"]


@st.composite
def dags(draw):
    n = draw(st.integers(2, 8))
    nodes = []
    for i in range(n):
        parents = sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 3)))) if i else []
        nodes.append(dict(
            id=f"t{i}", parents=[f"t{p}" for p in parents],
            fire_at=T0 + draw(st.integers(0, 5)) * 100 if not parents or draw(st.booleans()) else 0,
            ack=draw(st.booleans()), on=draw(st.sampled_from(CONDS)), mode=draw(st.sampled_from(["all", "any"])),
            delay=draw(st.sampled_from([0, 50, 250])), policy=draw(st.sampled_from(["cancel", "release"]))))
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("tick"), st.integers(1, 400)),
        st.tuples(st.just("cancel"), st.integers(0, n - 1)),
        st.tuples(st.just("ack"), st.integers(0, n - 1)),
        st.tuples(st.just("snapshot"), st.just(0)),
        st.tuples(st.just("child"), st.fixed_dictionaries(dict(
            parents=st.sets(st.integers(0, n - 1), min_size=1, max_size=3), on=st.sampled_from(CONDS),
            mode=st.sampled_from(["all", "any"]), delay=st.sampled_from([0, 50, 250]),
            policy=st.sampled_from(["cancel", "release"]), fire_at=st.sampled_from([0, T0 + 300]))))),
        max_size=25))
    return nodes, ops, draw(st.sampled_from([0, None]))


def by_id(log):
    out: dict = {}
    for e in log:
        out.setdefault(e.timer_id, []).append(e)
    return out


def _held(s, tid):
    try:
        s.get("default", tid)
        return True
    except LookupError:
        return False


def specs_of(nodes):
    out = []
    for nd in nodes:
        g = None
        if nd["parents"]:
            g = GraphSpec(tuple(nd["parents"]), nd["on"], nd["mode"], nd["delay"], nd["policy"])
        out.append(TimerSpec(nd["id"], nd["fire_at"], ack_required=nd["ack"], graph=g))
    return out


def outcome(events_of_parent, on):
    """(met, time, seq) of a parent for condition `on` from its events, or None while undecided."""
    for e in events_of_parent:
        if on == "fired" and e.kind == EventKind.FIRED:
            return True, e.at_ms, e.seq
        if e.kind in (EventKind.SETTLED, EventKind.CANCELLED, EventKind.DEAD_LETTERED):
            if on == "fired":
                return False, e.at_ms, e.seq       # ended without a fire: only a cancel does that
            want = {"settled": EventKind.SETTLED, "dead_lettered": EventKind.DEAD_LETTERED,
                    "cancelled": EventKind.CANCELLED}[on]
            return e.kind == want, e.at_ms, e.seq
    return None


def expected(nd, by_timer):
    """What the model says of a child: ("arm", at, fire_at, seq_after) | ("cancel", at, seq_after) | None.
    Parent outcomes from before the child's create count at their own time when they met the
    condition (earliest first), at the create's time when they failed; later ones in commit order."""
    pre, post = [], []
    born, born_at = nd.get("born", (0, T0))
    for k, p in enumerate(nd["parents"]):
        o = outcome(by_timer.get(p, []), nd["on"])
        if o is None:
            continue
        if o[2] < born:
            pre.append(((o[1] if o[0] else born_at, k), (o[0], o[1] if o[0] else born_at, born)))
        else:
            post.append((o[2], o))
    outs = [o for _, o in sorted(pre)] + [o for _, o in sorted(post)]
    left = len(nd["parents"])
    met_at = None
    for met, at, seq in outs:
        left -= 1
        if met or nd["policy"] == "release":
            met_at = at if met_at is None else max(met_at, at)
            if nd["mode"] == "any" or left == 0:
                return "arm", max(at, born_at), max(nd["fire_at"], met_at + nd["delay"]), seq
        elif nd["mode"] == "all" or left == 0:
            return "cancel", max(at, born_at), seq
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_children_arm_and_cancel_exactly_when_the_model_says(case):
    nodes, ops, retention = case
    s = State()
    if retention is not None:
        s.retention = RetentionPolicy({"default": retention})
    log = list(s.create(T0, specs_of(nodes)).events)
    now = T0
    for op, arg in ops:
        if op == "tick":
            now += arg
            log += s.tick(now).events
        elif op == "snapshot":
            pol = s.retention
            s = State.from_bytes(s.to_bytes())
            s.retention = pol
        elif op == "child":
            nd = dict(id=f"n{len(nodes)}", parents=[nodes[p]["id"] for p in sorted(arg["parents"])], ack=False,
                      on=arg["on"], mode=arg["mode"], delay=arg["delay"], policy=arg["policy"],
                      fire_at=arg["fire_at"])
            spec = specs_of([nd])[0]
            pre = {p: list(by_id(log).get(p, [])) for p in nd["parents"]}
            live = [p for p in nd["parents"] if _held(s, p)]
            fails = [p for p in live if (o := outcome(pre[p], nd["on"])) is not None and not o[0]]
            try:
                res = s.create(now, [spec])
            except NotFound:
                assert len(live) < len(nd["parents"])          # a parent was purged (retention 0)
                continue
            except FailedPrecondition:
                assert nd["policy"] == "cancel" and fails and (nd["mode"] == "all" or len(fails) == len(live))
                continue
            assert len(live) == len(nd["parents"])
            assert not (nd["policy"] == "cancel" and fails and (nd["mode"] == "all" or len(fails) == len(live)))
            nd["born"] = (res.events[0].seq, now)
            nodes.append(nd)
            log += res.events
        else:
            tid = nodes[arg]["id"] if arg < len(nodes) else nodes[-1]["id"]
            try:
                t = s.get("default", tid)
            except LookupError:
                continue
            if op == "cancel" and not t.state.terminal:
                log += s.cancel(now, [("default", tid)]).events
            elif op == "ack" and t.state == TimerState.FIRED:
                log += s.ack(now, "default", tid, t.fire_id).events
        s.check_invariants()
    for _ in range(3):            # let everything armed fire
        now += 2000
        log += s.tick(now).events
    s.check_invariants()
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    by_timer: dict = {}
    for e in log:
        by_timer.setdefault(e.timer_id, []).append(e)
    for nd in nodes:
        evs = by_timer[nd["id"]]
        armed = [e for e in evs if e.kind == EventKind.ARMED]
        assert len(armed) <= 1, nd
        if not nd["parents"]:
            assert len(armed) == 1
            continue
        cancels = [e for e in evs if e.kind == EventKind.CANCELLED]
        user_cancel = cancels and not any(e.seq < cancels[0].seq for e in armed) and (
            expected(nd, {p: [e for e in by_timer.get(p, []) if e.seq < cancels[0].seq] for p in nd["parents"]})
            is None)
        want = expected(nd, by_timer)
        if user_cancel:        # cancelled by a command while it still waited: never armed
            assert not armed
            continue
        if want is None:
            assert not armed and not cancels, (nd, evs)
            assert evs[-1].state == TimerState.SCHEDULED
            continue
        if want[0] == "arm":
            assert len(armed) == 1, (nd, want, evs)
            assert (armed[0].at_ms, armed[0].fire_at) == (want[1], want[2]), (nd, want, evs)
            assert armed[0].seq > want[3]
            fired = [e for e in evs if e.kind == EventKind.FIRED]
            assert all(e.at_ms >= armed[0].fire_at and e.seq > armed[0].seq for e in fired)
        else:
            assert not armed, (nd, want, evs)
            assert cancels and cancels[0].at_ms == want[1] and cancels[0].seq > want[2], (nd, want, evs)
            assert not any(e.kind == EventKind.FIRED for e in evs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=4, unique=True),
       st.lists(st.integers(1, 600), max_size=12), st.integers(0, 12), st.booleans())
def test_an_escalation_ladder_escalates_exactly_the_steps_the_model_says(afters, ticks, ack_after, snap):
    afters = sorted(afters)
    steps = tuple((a, f"step{k}".encode()) for k, a in enumerate(afters))
    s = State()
    s.create(T0, [TimerSpec("x", T0 + 100, ack_required=True, graph=GraphSpec(escalate=steps))])
    s.tick(T0 + 100)
    base = T0 + 100
    now = base
    got = []
    # the model: one pending step; a tick at or past its deadline escalates it and only then
    # puts the next one in (which a later tick may escalate)
    want = []
    k = 0
    acked = False
    for i, dt in enumerate(ticks):
        if i == ack_after:
            fid = s.get("default", "x").fire_id
            res = s.ack(now, "default", "x", fid)
            assert [e.kind for e in res.events] == [EventKind.SETTLED]
            acked = True
        now += dt
        got += [(e.at_ms, e.fire_at) for e in s.tick(now).events if e.kind == EventKind.ESCALATED]
        if not acked and k < len(afters) and now >= base + afters[k]:
            want.append((now, base + afters[k]))
            k += 1
        if snap:
            s = State.from_bytes(s.to_bytes())
        s.check_invariants()
    assert got == want
    t = s.get("default", "x")
    assert t.escalated == len(want) and t.escalate == steps
    if acked or k == len(afters):
        assert s.next_deadline() is None or s.next_deadline() > now or t.state.terminal
