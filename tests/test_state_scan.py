"""State.scan / State.cursor: the kernel's public, read-only positional scan.

Positions are ordinals (creation order). A scan resumed from the position it
returned sees every timer exactly once, on this state or on a replica rebuilt
from its snapshot; filters never change which positions exist, only which
timers come back; arguments are checked before anything is read.
"""
from __future__ import annotations

import random

import pytest

from minoots.kernel import InvalidArgument, ScanCursor, State, TimerSpec, TimerState

T0 = 1_700_000_000_000


def mixed_state() -> State:
    """Three tenants, labels, every reachable state; 40 timers."""
    s = State()
    specs = []
    for i in range(40):
        tenant = ("default", "acme", "zeta")[i % 3]
        labels = {"team": "core" if i % 2 else "edge"}
        if i % 5 == 0:
            labels["env"] = "prod"
        specs.append(TimerSpec(f"t{i:02d}", T0 + 10 * (i + 1), tenant=tenant, labels=labels,
                               ack_required=i % 4 == 0, payload=b"x" * i))
    s.create(T0, specs)
    s.tick(T0 + 100)                                   # t00..t09 fire (ack_required ones stay FIRED)
    s.cancel(T0 + 101, [("default", "t12"), ("acme", "t13")])
    return s


def collect(s: State, page: int, **filters) -> list:
    """Page through with scan(); returns (tenant, id) in order."""
    out, pos, calls = [], 0, 0
    while pos is not None:
        timers, pos = s.scan(pos, page, **filters)
        out.extend((t.tenant, t.id) for t in timers)
        calls += 1
        assert calls < 1000
    return out


def brute(s: State, tenant=None, states=None, lo=None, hi=None, labels=None) -> list:
    out = []
    for t in s:
        if tenant is not None and t.tenant != tenant:
            continue
        if states and t.state not in states:
            continue
        if lo is not None and t.fire_at < lo:
            continue
        if hi is not None and t.fire_at >= hi:
            continue
        if labels and any(t.labels.get(k) != v for k, v in labels.items()):
            continue
        out.append((t.tenant, t.id))
    return out


def test_empty_state():
    s = State()
    assert s.scan(0, 10) == ([], None)
    assert s.scan(5, 10) == ([], None)
    cur = s.cursor(0)
    assert list(cur) == [] and cur.position == 0


def test_scan_everything_in_creation_order():
    s = mixed_state()
    timers, nxt = s.scan(0, 1000)
    assert nxt is None
    assert [(t.tenant, t.id) for t in timers] == [(t.tenant, t.id) for t in s]
    assert timers == list(s)          # the same views as iteration


@pytest.mark.parametrize("page", [1, 2, 3, 7, 40, 41])
def test_paging_sees_each_timer_once(page):
    s = mixed_state()
    assert collect(s, page) == brute(s)


@pytest.mark.parametrize("filters", [
    {"tenant": "acme"},
    {"tenant": "default", "states": [TimerState.ARMED]},
    {"states": [TimerState.FIRED, TimerState.CANCELLED]},
    {"states": [int(TimerState.SETTLED)]},
    {"fire_at_from": T0 + 105, "fire_at_to": T0 + 205},
    {"labels": {"team": "core"}},
    {"labels": {"team": "edge", "env": "prod"}},
    {"tenant": "zeta", "labels": {"env": "prod"}, "fire_at_to": T0 + 300},
    {"tenant": "nobody"},
    {"states": []},
])
@pytest.mark.parametrize("page", [1, 4, 100])
def test_filters_match_a_brute_force_scan(filters, page):
    s = mixed_state()
    expect = brute(s, filters.get("tenant"), {TimerState(x) for x in filters.get("states", ())},
                   filters.get("fire_at_from"), filters.get("fire_at_to"), filters.get("labels"))
    assert collect(s, page, **filters) == expect


def test_next_position_points_past_the_last_timer_returned():
    s = mixed_state()
    acme = [t.id for t in s if t.tenant == "acme"]
    timers, nxt = s.scan(0, 2, tenant="acme")
    assert [t.id for t in timers] == acme[:2]
    # acme holds ordinals 1, 4, 7, ...: the second is at 4, so resume at 5.
    assert nxt == 5
    timers, nxt = s.scan(nxt, 1, tenant="acme")
    assert [t.id for t in timers] == [acme[2]] and nxt == 8


def test_the_last_match_at_the_last_position_ends_the_scan():
    s = mixed_state()
    timers, nxt = s.scan(len(s) - 1, 1)
    assert [t.id for t in timers] == ["t39"] and nxt is None


def test_max_positions_bounds_the_work():
    s = mixed_state()
    # Nothing in the first 10 positions is cancelled: an empty page, and a position to resume at.
    timers, nxt = s.scan(0, 5, states=[TimerState.CANCELLED], max_positions=10)
    assert timers == [] and nxt == 10
    timers, nxt = s.scan(10, 5, states=[TimerState.CANCELLED], max_positions=10)
    assert [t.id for t in timers] == ["t12", "t13"] and nxt == 20
    timers, nxt = s.scan(35, 5, max_positions=100)
    assert len(timers) == 5 and nxt is None
    timers, nxt = s.scan(0, 5, max_positions=0)
    assert timers == [] and nxt == 0


def test_limit_zero_examines_nothing():
    s = mixed_state()
    assert s.scan(3, 0) == ([], 3)
    assert s.scan(len(s), 0) == ([], None)


def test_a_resumed_scan_sees_timers_created_meanwhile_and_changes_to_later_ones():
    s = mixed_state()
    first, nxt = s.scan(0, 30)
    s.create(T0 + 200, [TimerSpec("late", T0 + 10_000)])
    s.cancel(T0 + 201, [("zeta", "t35")])
    rest, end = s.scan(nxt, 100)
    assert end is None
    assert [t.id for t in first] + [t.id for t in rest] == [f"t{i:02d}" for i in range(40)] + ["late"]
    assert {t.id: t.state for t in rest}["t35"] == TimerState.CANCELLED
    # A scan that had reached the end resumes at len() and finds only newer timers.
    s.create(T0 + 202, [TimerSpec("later", T0 + 10_000, tenant="acme")])
    assert [t.id for t in s.scan(len(s) - 1, 10)[0]] == ["later"]


def test_positions_are_the_same_on_a_replica_from_the_snapshot():
    s = mixed_state()
    r = State.from_bytes(s.to_bytes())
    head, nxt = s.scan(0, 3, tenant="zeta")
    tail, end = r.scan(nxt, 100, tenant="zeta")
    assert end is None
    assert [t.id for t in head + tail] == [t.id for t in s if t.tenant == "zeta"]


def test_cursor_position_tracks_progress():
    s = mixed_state()
    cur = s.cursor(0, tenant="zeta")
    assert isinstance(cur, ScanCursor) and cur.position == 0
    first = next(cur)
    assert first.id == "t02" and cur.position == 3
    next(cur)
    assert cur.position == 6
    assert len(list(cur)) == len([t for t in s if t.tenant == "zeta"]) - 2
    assert cur.position == len(s)
    # A bounded cursor stops at its stop, and says so.
    cur = s.cursor(0, 10, states=[TimerState.CANCELLED])
    assert list(cur) == [] and cur.position == 10
    cur = s.cursor(5, 2)          # stop before start: nothing
    assert list(cur) == [] and cur.position == 5


def test_unknown_tenant_is_exhausted_at_once():
    s = mixed_state()
    cur = s.cursor(0, 5, tenant="nobody")
    assert list(cur) == [] and cur.position == len(s)
    assert s.scan(0, 10, tenant="nobody", max_positions=1) == ([], None)


def test_scans_do_not_change_the_state():
    s = mixed_state()
    before = s.to_bytes()
    collect(s, 3, labels={"team": "core"})
    list(s.cursor(0, states=[TimerState.ARMED]))
    assert s.to_bytes() == before
    s.check_invariants()


@pytest.mark.parametrize("call, field", [
    (lambda s: s.scan(-1, 10), "start"),
    (lambda s: s.scan(1.5, 10), "start"),
    (lambda s: s.scan(True, 10), "start"),
    (lambda s: s.scan(0, -1), "limit"),
    (lambda s: s.scan(0, "3"), "limit"),
    (lambda s: s.scan(0, 1, max_positions=-5), "max_positions"),
    (lambda s: s.scan(0, 1, tenant=""), "tenant"),
    (lambda s: s.scan(0, 1, tenant="a b"), "tenant"),
    (lambda s: s.scan(0, 1, states=[0]), "states[0]"),
    (lambda s: s.scan(0, 1, states=[TimerState.ARMED, 99]), "states[1]"),
    (lambda s: s.scan(0, 1, states=["armed"]), "states[0]"),
    (lambda s: s.scan(0, 1, fire_at_from=-1), "fire_at_from"),
    (lambda s: s.scan(0, 1, fire_at_to=1.0), "fire_at_to"),
    (lambda s: s.scan(0, 1, labels={"team": 3}), "labels['team']"),
    (lambda s: s.scan(0, 1, labels=["team"]), "labels"),
    (lambda s: s.cursor(0, -1), "stop"),
])
def test_bad_arguments_raise_before_reading(call, field):
    s = mixed_state()
    with pytest.raises(InvalidArgument) as err:
        call(s)
    assert err.value.field == field


def test_random_pages_and_filters_agree_with_brute_force():
    rng = random.Random(7)
    s = State()
    now = T0
    for r in range(30):
        specs = [TimerSpec(f"r{r}.{i}", now + rng.randrange(1, 500), tenant=rng.choice(["a", "b", "c"]),
                           labels={"k": rng.choice(["x", "y"])} if rng.random() < 0.5 else None)
                 for i in range(rng.randrange(1, 20))]
        s.create(now, specs)
        now += rng.randrange(0, 200)
        s.tick(now)
    for _ in range(50):
        filters = {}
        if rng.random() < 0.5:
            filters["tenant"] = rng.choice(["a", "b", "c", "d"])
        if rng.random() < 0.5:
            filters["states"] = rng.sample(list(TimerState), rng.randrange(1, 3))
        if rng.random() < 0.3:
            filters["labels"] = {"k": rng.choice(["x", "y"])}
        if rng.random() < 0.3:
            filters["fire_at_from"] = T0 + rng.randrange(0, 3000)
        if rng.random() < 0.3:
            filters["fire_at_to"] = T0 + rng.randrange(0, 6000)
        expect = brute(s, filters.get("tenant"), set(filters.get("states", ())), filters.get("fire_at_from"),
                       filters.get("fire_at_to"), filters.get("labels"))
        page = rng.randrange(1, 50)
        got, pos = [], 0
        while pos is not None:
            timers, pos = s.scan(pos, page, max_positions=rng.randrange(1, 100), **filters)
            got.extend((t.tenant, t.id) for t in timers)
        assert got == expect, filters
