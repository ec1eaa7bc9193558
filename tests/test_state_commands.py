"""Unit tests of the kernel's commands and queries (real wheel, no mocks)."""

import pytest

from minoots.kernel import (
    MAX_TIME,
    AlreadyExists,
    EventKind,
    FailedPrecondition,
    InvalidArgument,
    KernelError,
    NotFound,
    State,
    Timer,
    TimerRef,
    TimerSpec,
    TimerState,
)

T0 = 1_700_000_000_000


def spec(id, fire_at=T0 + 1000, **kw):
    return TimerSpec(id=id, fire_at=fire_at, **kw)


def unchanged(state, fn, exc):
    """Run fn, expect exc, and check the state's bytes did not move."""
    before = state.to_bytes()
    with pytest.raises(exc) as info:
        fn()
    assert state.to_bytes() == before
    state.check_invariants()
    return info.value


# ---- create -------------------------------------------------------------------


def test_create_emits_created_then_armed_and_returns_armed_timer():
    s = State()
    r = s.create(T0, [spec("a", labels={"k": "v"}, payload=b"p", name="n", action=b"x")])
    assert [(e.seq, e.kind, e.revision, e.state) for e in r.events] == [
        (1, EventKind.CREATED, 1, TimerState.SCHEDULED),
        (2, EventKind.ARMED, 2, TimerState.ARMED),
    ]
    assert all(e.tenant == "default" and e.timer_id == "a" and e.at_ms == T0 for e in r.events)
    assert all(e.fire_at == T0 + 1000 and e.fire_id is None for e in r.events)
    (item,) = r.items
    assert item.created is True
    t = item.timer
    assert isinstance(t, Timer)
    assert (t.tenant, t.id, t.name, t.payload, dict(t.labels), t.action) == ("default", "a", "n", b"p", {"k": "v"}, b"x")
    assert t.state is TimerState.ARMED
    assert (t.created_at, t.armed_at, t.fired_at, t.settled_at) == (T0, T0, None, None)
    assert (t.attempts, t.fire_id, t.revision, t.ack_required, t.idempotency_key) == (0, None, 2, False, None)
    assert r.timers == (t,)
    assert s.get("default", "a") == t
    assert len(s) == 1 and s.seq == 2
    assert s.counts()[TimerState.ARMED] == 1
    assert s.next_deadline() == T0 + 1000
    s.check_invariants()


def test_create_batch_seq_in_spec_order_and_tenants_are_separate():
    s = State()
    r = s.create(T0, [spec("a", tenant="t1"), spec("a", tenant="t2"), spec("b", tenant="t1")])
    assert [e.seq for e in r.events] == [1, 2, 3, 4, 5, 6]
    assert [(e.tenant, e.timer_id) for e in r.events[::2]] == [("t1", "a"), ("t2", "a"), ("t1", "b")]
    assert [i.created for i in r.items] == [True, True, True]
    assert s.get("t2", "a").tenant == "t2"
    assert [t.id for t in s.timers("t1")] == ["a", "b"]
    assert [(t.tenant, t.id) for t in s] == [("t1", "a"), ("t2", "a"), ("t1", "b")]
    assert list(s.timers("nobody")) == []


def test_create_empty_batch_is_a_no_op():
    s = State()
    r = s.create(T0, [])
    assert r.events == () and r.items == ()
    assert s.to_bytes() == State().to_bytes()


def test_create_existing_id_rejects_whole_batch():
    s = State()
    s.create(T0, [spec("a")])
    err = unchanged(s, lambda: s.create(T0, [spec("b"), spec("a")]), AlreadyExists)
    assert err.field == "specs[1].id" and "'a'" in str(err)
    with pytest.raises(NotFound):
        s.get("default", "b")


def test_create_duplicate_id_inside_batch_is_invalid():
    s = State()
    err = unchanged(s, lambda: s.create(T0, [spec("a"), spec("b"), spec("a")]), InvalidArgument)
    assert err.field == "specs[2].id" and err.rule == "'a' repeats the id of specs[0] in tenant 'default'"


def test_create_idempotency_key_returns_existing_timer():
    s = State()
    first = s.create(T0, [spec("a", idempotency_key="k1")]).items[0].timer
    before_seq = s.seq
    r = s.create(T0 + 5, [spec("a", idempotency_key="k1")])
    assert r.events == ()
    assert r.items[0].created is False and r.items[0].timer == first
    # The key wins even when the retried spec names another id.
    r = s.create(T0 + 5, [spec("other", idempotency_key="k1")])
    assert r.items[0].created is False and r.items[0].timer.id == "a"
    assert s.seq == before_seq and len(s) == 1
    # Keys are per tenant.
    r = s.create(T0, [spec("a", tenant="t2", idempotency_key="k1")])
    assert r.items[0].created is True


def test_create_idempotent_retry_mixed_with_new_specs():
    s = State()
    s.create(T0, [spec("a", idempotency_key="k")])
    r = s.create(T0, [spec("b"), spec("a", idempotency_key="k"), spec("c")])
    assert [(i.timer.id, i.created) for i in r.items] == [("b", True), ("a", False), ("c", True)]
    assert [e.timer_id for e in r.events] == ["b", "b", "c", "c"]


def test_create_existing_id_with_unused_key_is_already_exists():
    s = State()
    s.create(T0, [spec("a")])
    unchanged(s, lambda: s.create(T0, [spec("a", idempotency_key="fresh")]), AlreadyExists)


def test_create_same_key_twice_in_batch_returns_first():
    s = State()
    r = s.create(T0, [spec("a", idempotency_key="k"), spec("b", idempotency_key="k"), spec("a", idempotency_key="k")])
    assert [(i.timer.id, i.created) for i in r.items] == [("a", True), ("a", False), ("a", False)]
    assert len(s) == 1 and len(r.events) == 2
    with pytest.raises(NotFound):
        s.get("default", "b")


def test_create_past_fire_at_fires_on_next_tick():
    s = State()
    s.tick(T0)
    s.create(T0, [spec("late", fire_at=T0 - 10_000)])
    assert s.next_deadline() == T0 - 10_000
    r = s.tick(T0)  # same time as the last tick still fires it
    assert [t.id for t in r.fired] == ["late"]
    assert r.fired[0].fired_at == T0


# ---- tick ---------------------------------------------------------------------


def test_tick_fires_in_fire_at_then_creation_order_and_settles():
    s = State()
    s.create(T0, [spec("c", fire_at=T0 + 30), spec("a", fire_at=T0 + 10), spec("b", fire_at=T0 + 10), spec("z", fire_at=T0 + 99)])
    assert s.tick(T0 + 9).events == ()
    r = s.tick(T0 + 50)
    assert r.now_ms == T0 + 50
    assert [t.id for t in r.fired] == ["a", "b", "c"]
    kinds = [(e.kind, e.timer_id) for e in r.events]
    assert kinds == [
        (EventKind.FIRED, "a"), (EventKind.SETTLED, "a"),
        (EventKind.FIRED, "b"), (EventKind.SETTLED, "b"),
        (EventKind.FIRED, "c"), (EventKind.SETTLED, "c"),
    ]
    assert [e.seq for e in r.events] == list(range(9, 15))
    for t in r.fired:
        assert t.state is TimerState.SETTLED
        assert t.fired_at == t.settled_at == T0 + 50
        assert t.attempts == 1 and t.revision == 4
    fired_ev = r.events[0]
    assert r.fired[0].fire_id == fired_ev.seq == r.events[1].fire_id
    assert (fired_ev.state, fired_ev.revision) == (TimerState.FIRED, 3)
    assert s.counts()[TimerState.SETTLED] == 3 and s.counts()[TimerState.ARMED] == 1
    assert s.next_deadline() == T0 + 99
    s.check_invariants()


def test_tick_never_goes_backwards():
    s = State()
    s.tick(T0 + 100)
    s.create(T0, [spec("a", fire_at=T0 + 50), spec("b", fire_at=T0 + 150)])
    r = s.tick(T0)  # earlier than the last tick: acts as T0 + 100
    assert r.now_ms == T0 + 100 and s.last_tick == T0 + 100
    assert [t.id for t in r.fired] == ["a"] and r.fired[0].fired_at == T0 + 100
    assert s.tick(5).fired == ()
    assert s.last_tick == T0 + 100
    r = s.tick(T0 + 150)
    assert [t.id for t in r.fired] == ["b"]
    s.check_invariants()


def test_tick_with_nothing_due_only_moves_time():
    s = State()
    r = s.tick(T0)
    assert r.events == () and r.fired == () and s.last_tick == T0 and s.seq == 0
    assert s.next_deadline() is None


def test_tick_large_jump_and_max_time():
    s = State()
    s.create(0, [spec("end", fire_at=MAX_TIME), spec("zero", fire_at=0)])
    assert [t.id for t in s.tick(1).fired] == ["zero"]
    assert s.tick(MAX_TIME - 1).fired == ()
    assert [t.id for t in s.tick(MAX_TIME).fired] == ["end"]


def test_tick_ack_required_stays_fired_until_ack():
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 10, ack_required=True)])
    r = s.tick(T0 + 10)
    (ev,) = r.events
    assert ev.kind is EventKind.FIRED and ev.fire_id == ev.seq
    t = s.get("default", "a")
    assert t.state is TimerState.FIRED and t.fire_id == ev.seq and t.settled_at is None and t.revision == 3
    assert s.next_deadline() is None and s.counts()[TimerState.FIRED] == 1
    r = s.ack(T0 + 20, "default", "a", ev.seq)
    (ack_ev,) = r.events
    assert (ack_ev.kind, ack_ev.fire_id, ack_ev.revision, ack_ev.at_ms) == (EventKind.SETTLED, ev.seq, 4, T0 + 20)
    assert r.timer.state is TimerState.SETTLED and r.timer.settled_at == T0 + 20
    assert s.counts()[TimerState.FIRED] == 0 and s.counts()[TimerState.SETTLED] == 1
    s.check_invariants()


# ---- ack ----------------------------------------------------------------------


def _fired(s, id="a"):
    s.create(T0, [spec(id, fire_at=T0, ack_required=True)])
    return s.tick(T0).events[0].fire_id


def test_ack_errors():
    s = State()
    fid = _fired(s)
    s.create(T0, [spec("armed", fire_at=T0 + 10**6)])
    unchanged(s, lambda: s.ack(T0, "default", "nope", fid), NotFound)
    unchanged(s, lambda: s.ack(T0, "other", "a", fid), NotFound)
    err = unchanged(s, lambda: s.ack(T0, "default", "a", fid + 1), FailedPrecondition)
    assert str(fid) in str(err)
    unchanged(s, lambda: s.ack(T0, "default", "armed", fid), FailedPrecondition)
    for bad in (0, -1, "1", 1.0, True, None):
        unchanged(s, lambda: s.ack(T0, "default", "a", bad), InvalidArgument)
    s.ack(T0, "default", "a", fid)
    unchanged(s, lambda: s.ack(T0, "default", "a", fid), FailedPrecondition)  # already settled


# ---- cancel -------------------------------------------------------------------


def test_cancel_armed_and_fired():
    s = State()
    fid = _fired(s, "f")
    s.create(T0, [spec("a", fire_at=T0 + 10)])
    r = s.cancel(T0 + 1, [("default", "a"), TimerRef("default", "f")])
    assert [(e.kind, e.timer_id, e.state) for e in r.events] == [
        (EventKind.CANCELLED, "a", TimerState.CANCELLED),
        (EventKind.CANCELLED, "f", TimerState.CANCELLED),
    ]
    assert [t.state for t in r.timers] == [TimerState.CANCELLED] * 2
    assert r.timers[0].settled_at == T0 + 1 and r.timers[0].revision == 3
    assert r.timers[1].fire_id == fid and r.timers[1].revision == 4
    assert s.next_deadline() == T0 + 1 + 24 * 3600 * 1000   # no fire left: only their purge deadline
    assert s.tick(T0 + 100).fired == ()  # the cancelled timer never fires
    unchanged(s, lambda: s.ack(T0, "default", "f", fid), FailedPrecondition)
    assert s.counts()[TimerState.CANCELLED] == 2
    s.check_invariants()


def test_cancel_errors_are_all_or_nothing():
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 10), spec("b", fire_at=T0 + 10), spec("done", fire_at=T0)])
    s.tick(T0)  # settles "done"
    unchanged(s, lambda: s.cancel(T0, [("default", "a"), ("default", "nope")]), NotFound)
    err = unchanged(s, lambda: s.cancel(T0, [("default", "a"), ("default", "done")]), FailedPrecondition)
    assert "SETTLED" in str(err)
    err = unchanged(s, lambda: s.cancel(T0, [("default", "a"), ("default", "b"), ("default", "a")]), InvalidArgument)
    assert err.field == "refs[2]"
    for bad in (["a"], [("default",)], [("default", "a", "x")], [("default", 5)], [(None, "a")], "abc", None):
        unchanged(s, lambda: s.cancel(T0, bad), InvalidArgument)
    s.cancel(T0, [("default", "a")])
    unchanged(s, lambda: s.cancel(T0, [("default", "a")]), FailedPrecondition)
    assert s.cancel(T0, []).events == ()


# ---- reschedule ----------------------------------------------------------------


def test_reschedule_fire_at_and_extend_by():
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 100), spec("b", fire_at=T0 + 200)])
    r = s.reschedule(T0 + 1, "default", "a", fire_at=T0 + 300)
    (ev,) = r.events
    assert (ev.kind, ev.fire_at, ev.revision, ev.state, ev.at_ms) == (EventKind.RESCHEDULED, T0 + 300, 3, TimerState.ARMED, T0 + 1)
    assert r.timer.fire_at == T0 + 300 and r.timer.armed_at == T0
    assert s.next_deadline() == T0 + 200
    r = s.reschedule(T0 + 2, "default", "b", extend_by=-150)  # pull in
    assert r.timer.fire_at == T0 + 50 and r.timer.revision == 3
    r = s.reschedule(T0 + 3, "default", "b", extend_by=25)
    assert r.timer.fire_at == T0 + 75 and r.timer.revision == 4
    assert s.next_deadline() == T0 + 75
    assert [t.id for t in s.tick(T0 + 1000).fired] == ["b", "a"]
    s.check_invariants()


def test_reschedule_into_the_past_fires_next_tick():
    s = State()
    s.tick(T0)
    s.create(T0, [spec("a", fire_at=T0 + 100)])
    s.reschedule(T0, "default", "a", fire_at=0)
    assert [t.id for t in s.tick(T0).fired] == ["a"]


def test_reschedule_errors():
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 100), spec("d", fire_at=T0)])
    s.tick(T0)
    unchanged(s, lambda: s.reschedule(T0, "default", "a"), InvalidArgument)
    unchanged(s, lambda: s.reschedule(T0, "default", "a", fire_at=T0, extend_by=1), InvalidArgument)
    unchanged(s, lambda: s.reschedule(T0, "default", "nope", fire_at=T0), NotFound)
    unchanged(s, lambda: s.reschedule(T0, "default", "d", fire_at=T0), FailedPrecondition)
    err = unchanged(s, lambda: s.reschedule(T0, "default", "a", extend_by=-(T0 + 101)), InvalidArgument)
    assert err.field == "extend_by"
    unchanged(s, lambda: s.reschedule(T0, "default", "a", extend_by=MAX_TIME), InvalidArgument)
    unchanged(s, lambda: s.reschedule(T0, "default", "a", extend_by=MAX_TIME + 1), InvalidArgument)
    for bad in (-1, MAX_TIME + 1, 1.5, float("nan"), True, "5"):
        unchanged(s, lambda: s.reschedule(T0, "default", "a", fire_at=bad), InvalidArgument)
    for bad in (1.0, False, "1"):
        unchanged(s, lambda: s.reschedule(T0, "default", "a", extend_by=bad), InvalidArgument)
    s.cancel(T0, [("default", "a")])
    unchanged(s, lambda: s.reschedule(T0, "default", "a", fire_at=T0), FailedPrecondition)


def test_reschedule_fired_timer_is_failed_precondition():
    s = State()
    _fired(s)
    unchanged(s, lambda: s.reschedule(T0, "default", "a", extend_by=5), FailedPrecondition)


# ---- queries and errors -----------------------------------------------------------


def test_get_errors():
    s = State()
    s.create(T0, [spec("a")])
    with pytest.raises(NotFound) as info:
        s.get("default", "b")
    assert info.value.code == "NOT_FOUND" and "'b'" in str(info.value)
    with pytest.raises(NotFound):
        s.get("t2", "a")
    with pytest.raises(InvalidArgument):
        s.get("default", "")
    with pytest.raises(InvalidArgument):
        s.get(None, "a")


def test_errors_are_kernel_errors_with_codes():
    for cls, code in [(InvalidArgument, "INVALID_ARGUMENT"), (NotFound, "NOT_FOUND"),
                      (AlreadyExists, "ALREADY_EXISTS"), (FailedPrecondition, "FAILED_PRECONDITION")]:
        assert issubclass(cls, KernelError) and cls.code == code
    e = InvalidArgument("specs[0].id", "must be short")
    assert (e.field, e.rule) == ("specs[0].id", "must be short")
    assert "specs[0].id" in str(e) and "must be short" in str(e)


def test_counts_lists_every_state():
    s = State()
    assert list(s.counts()) == list(TimerState)
    assert set(s.counts().values()) == {0}


def test_timer_views_are_immutable_snapshots():
    s = State()
    t = s.create(T0, [spec("a", labels={"b": "2", "a": "1"})]).items[0].timer
    with pytest.raises(AttributeError):
        t.state = TimerState.FIRED
    with pytest.raises(TypeError):
        t.labels["x"] = "y"
    assert list(t.labels) == ["a", "b"]  # stored sorted by key
    s.cancel(T0, [("default", "a")])
    assert t.state is TimerState.ARMED  # the old view did not change
    hash(t)  # usable as a dict key / in sets


def test_command_time_validation_leaves_state_unchanged():
    s = State()
    s.create(T0, [spec("a")])
    for bad in (-1, MAX_TIME + 1, 1.0, float("nan"), True, None, "1"):
        unchanged(s, lambda: s.tick(bad), InvalidArgument)
        unchanged(s, lambda: s.create(bad, [spec("b")]), InvalidArgument)
        unchanged(s, lambda: s.cancel(bad, [("default", "a")]), InvalidArgument)
        unchanged(s, lambda: s.reschedule(bad, "default", "a", fire_at=T0), InvalidArgument)
        unchanged(s, lambda: s.ack(bad, "default", "a", 1), InvalidArgument)


def test_int_subclasses_are_normalised():
    import enum

    class Ms(enum.IntEnum):
        X = T0 + 5

    s = State()
    t = s.create(Ms.X, [spec("a", fire_at=Ms.X)]).items[0].timer
    assert type(t.fire_at) is int and type(t.created_at) is int
    assert State.from_bytes(s.to_bytes()) == s


def test_key_equal_to_the_id_behaves_as_any_key_but_is_stored_once():
    """The SDK sends idempotency_key == id: kept as a flag, not a second string and index entry."""
    s = State()
    first = s.create(T0, [spec("a", idempotency_key="a", payload=b"p")]).items[0].timer
    assert first.idempotency_key == "a" and first.payload == b"p"
    assert s.get("default", "a").idempotency_key == "a"
    assert s._table.by_idem[0] == {}                     # found through the id index
    r = s.create(T0 + 5, [spec("a", idempotency_key="a")])          # the SDK's retry
    assert r.events == () and r.items[0].created is False and r.items[0].timer == first
    r = s.create(T0 + 5, [spec("z", idempotency_key="a")])          # another id, same key: the key wins
    assert r.items[0].created is False and r.items[0].timer.id == "a"
    s.create(T0, [spec("b", idempotency_key="k")])
    # The id of a timer created with another key is not a key: x is created, and keeps "b" as its key.
    r = s.create(T0, [spec("x", idempotency_key="b")])
    assert r.items[0].created is True and r.items[0].timer.idempotency_key == "b"
    r = s.create(T0, [spec("b", idempotency_key="b")])           # key "b" is x's now
    assert r.items[0].created is False and r.items[0].timer.id == "x"
    unchanged(s, lambda: s.create(T0, [spec("a", idempotency_key="fresh")]), AlreadyExists)
    s.check_invariants()
    back = State.from_bytes(s.to_bytes())
    assert back == s and back.to_bytes() == s.to_bytes()
    back.check_invariants()
    assert back.create(T0, [spec("q", idempotency_key="a")]).items[0].timer.id == "a"


def test_snapshot_with_a_stored_key_equal_to_the_id_loads_in_the_canonical_form():
    """A snapshot written before keys equal to ids were folded into a flag loads to the same state."""
    from minoots.kernel.table import FLAG_KEY_IS_ID, Extra
    s = State()
    s.create(T0, [spec("a", idempotency_key="a", payload=b"p"), spec("b", idempotency_key="a2")])
    old = State.from_bytes(s.to_bytes())
    t = old._table                                        # rewrite "a" the way older code stored it
    t.flags[0] &= ~FLAG_KEY_IS_ID
    t.extra[0] = Extra("", b"p", (), b"", "a")
    t.by_idem[0]["a"] = 0
    old.check_invariants()
    assert old.to_bytes() != s.to_bytes()
    assert State.from_bytes(old.to_bytes()).to_bytes() == s.to_bytes()


def test_variable_fields_read_back_exactly_as_created_including_the_empty_defaults():
    # The table stores "no extras" and "a payload only" compactly (None / bare bytes);
    # reading back must still give exactly the defaults, before and after a snapshot.
    s = State()
    s.create(T0, [spec("plain"), spec("payload-only", payload=b"\x00body"),
                  spec("full", name="n", payload=b"p", labels={"b": "2", "a": "1"}, action=b"act",
                       idempotency_key="k", ack_required=True)])
    for state in (s, State.from_bytes(s.to_bytes())):
        fields = {t.id: (t.name, t.payload, dict(t.labels), t.action, t.idempotency_key, t.ack_required)
                  for t in (state.get("default", i) for i in ("plain", "payload-only", "full"))}
        assert fields == {"plain": ("", b"", {}, b"", None, False),
                          "payload-only": ("", b"\x00body", {}, b"", None, False),
                          "full": ("n", b"p", {"a": "1", "b": "2"}, b"act", "k", True)}


def test_a_snapshot_with_many_tenants_restores_every_lookup():
    # Restore builds the id indexes one way up to 16 tenants and another way above.
    s = State()
    s.create(T0, [spec(f"t{i}", tenant=f"tenant{i % 20}", idempotency_key=f"k{i}") for i in range(60)])
    r = State.from_bytes(s.to_bytes())
    for i in range(60):
        assert r.get(f"tenant{i % 20}", f"t{i}").idempotency_key == f"k{i}"
    # the idempotency index too: a retry with the same key returns the existing timer
    again = r.create(T0, [spec("other", tenant="tenant3", idempotency_key="k3")])
    assert [item.timer.id for item in again.items] == ["t3"]
    r.check_invariants()


# ---- quotas (kernel side; the FSM's and the API's are in test_quotas.py) -----------------

def test_quotas_count_new_timers_and_payload_bytes_exactly_at_their_bounds():
    """A limit is a bound the tenant may reach and not pass, for a tenant never seen as for
    one holding timers, in one-tenant and mixed batches, with payloads as bytes or inside
    an Extra; 0 is unlimited; the QuotaExceeded names the tenant, limit, quota, held, adding."""
    from minoots.kernel import QuotaExceeded, TenantLimit

    def refused(state, specs, limits=None, default=None) -> tuple:
        e = unchanged(state, lambda: state.create(T0, specs, limits, default), QuotaExceeded)
        return e.tenant, e.limit, e.quota, e.held, e.adding

    s = State()
    lim = {"a": TenantLimit(max_timers=2), "b": TenantLimit(max_payload_bytes=10)}
    # tenants never seen: nothing held
    assert refused(s, [spec("x", tenant="a"), spec("y", tenant="a"), spec("z", tenant="a")], lim) == (
        "a", "max_timers", 2, 0, 3)
    assert refused(s, [spec("x", tenant="b", payload=b"123456"), spec("y", tenant="b", name="n", payload=b"12345")],
                   lim) == ("b", "max_payload_bytes", 10, 0, 11)
    assert refused(s, [spec("x", tenant="a"), spec("y", tenant="b", payload=b"x" * 5),
                       spec("z", tenant="b", name="n", payload=b"x" * 6)], lim) == ("b", "max_payload_bytes", 10, 0, 11)
    s.create(T0, [spec("x", tenant="a"), spec("y", tenant="b", payload=b"123456")], lim)
    s.create(T0, [spec("z", tenant="b", name="n", payload=b"1234")], lim)          # exactly 10 bytes
    # now held: a 1 timer, b 10 bytes (2 timers, no timer limit)
    assert refused(s, [spec("w", tenant="b", payload=b"1")], lim) == ("b", "max_payload_bytes", 10, 10, 1)
    assert refused(s, [spec("v", tenant="a"), spec("w", tenant="a")], lim) == ("a", "max_timers", 2, 1, 2)
    assert refused(s, [spec("v", tenant="b"), spec("w", tenant="a"), spec("u", tenant="a")], lim) == (
        "a", "max_timers", 2, 1, 2)
    s.create(T0, [spec("v", tenant="a"), spec("w", tenant="b")], lim)              # a reaches 2; b adds 0 bytes
    # a tenant without a limit first does not end the checks of the tenants after it
    assert refused(s, [spec("n1", tenant="nolimit"), spec("n2", tenant="a")], lim) == ("a", "max_timers", 2, 2, 1)
    # the default limit binds tenants not named; timers are checked before bytes
    both = TenantLimit(max_timers=1, max_payload_bytes=1)
    assert refused(s, [spec("p", tenant="c", payload=b"12"), spec("q", tenant="c", payload=b"3")], lim, both) == (
        "c", "max_timers", 1, 0, 2)
    assert refused(s, [spec("p", tenant="c", payload=b"12")], None, both) == ("c", "max_payload_bytes", 1, 0, 2)
    s.create(T0, [spec("p", tenant="c", payload=b"1")], lim, both)
    s.create(T0, [spec("many", tenant="a")], {"a": TenantLimit(0, 0)})             # 0: unlimited
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [spec("bad", tenant="a")], {"a": (1, 1)})
    assert info.value.field == "limits" and "TenantLimit, not tuple" in str(info.value)
    # a cancel frees what the tenant held
    s.cancel(T0, [("b", "y")])
    s.create(T0, [spec("r", tenant="b", payload=b"123456")], lim)
    s.check_invariants()


def test_a_bad_ref_or_tenant_names_the_exact_field():
    """Refs are checked one by one: the error names refs[i] (not a pair), refs[i].tenant or
    refs[i].id, for cancel and delete alike; a listing by a bad tenant name is refused too."""
    s = State()
    s.create(T0, [spec("a"), spec("b")])
    for call in (s.cancel, s.delete):
        for refs, field in [([("default", "a"), "ab"], "refs[1]"), ([("default", "a", "x")], "refs[0]"),
                            ([("default", "a"), (None, "b")], "refs[1].tenant"),
                            ([("default", "a"), ("default", "")], "refs[1].id")]:
            err = unchanged(s, lambda: call(T0, refs), InvalidArgument)
            assert err.field == field, (call, refs)
        err = unchanged(s, lambda: call(T0, ["ab"]), InvalidArgument)
        assert "must be a (tenant, id) pair, not str" in str(err)
    with pytest.raises(InvalidArgument) as info:
        s.timers("")
    assert info.value.field == "tenant"
    assert [t.id for t in s.timers()] == ["a", "b"] == [t.id for t in s.timers("default")]


def test_bad_scan_arguments_and_specs_get_their_exact_messages():
    s = State()
    s.create(T0, [spec("a")])
    cases = [
        (lambda: s.scan(-1, 5), "invalid start: must be a position >= 0, got -1"),
        (lambda: s.scan(0, -2), "invalid limit: must be >= 0, got -2"),
        (lambda: s.scan(0, "5"), "invalid limit: must be an int, not str"),
        (lambda: s.scan(0, 5, states=[99]), "invalid states[0]: must be a TimerState, got 99"),
        (lambda: s.create(T0, [("a", 5)]), "invalid specs[0]: must be a TimerSpec, not tuple"),
        (lambda: s.cancel(T0, ["ab"]), "invalid refs[0]: must be a (tenant, id) pair, not str"),
    ]
    for call, message in cases:
        err = unchanged(s, call, InvalidArgument)
        assert str(err) == message


def test_a_scans_fire_at_window_includes_its_start_and_excludes_its_end():
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 10), spec("b", fire_at=T0 + 20), spec("c", fire_at=T0 + 30)])
    timers, _ = s.scan(0, 10, fire_at_from=T0 + 10, fire_at_to=T0 + 30)
    assert [t.id for t in timers] == ["a", "b"]
    timers, _ = s.scan(0, 10, fire_at_from=T0 + 11, fire_at_to=T0 + 31)
    assert [t.id for t in timers] == ["b", "c"]


def test_an_idempotency_key_equal_to_the_id_is_kept_as_a_flag_on_the_plain_path_too():
    """A key equal to the id is stored as a flag (no key in the extra), on the plain path as on
    the full one, and never takes another flag's place."""
    from minoots.kernel.table import FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID
    s = State()
    s.create(T0, [TimerSpec("k", T0 + 5, idempotency_key="k", ack_required=True),               # plain path
                  TimerSpec("f", T0 + 5, idempotency_key="f", ack_required=True, labels={"x": "y"})])  # full path
    t = s._table
    for tid in ("k", "f"):
        o = t.by_id[0][tid]
        assert t.flags[o] == FLAG_ACK_REQUIRED | FLAG_KEY_IS_ID, tid
        view = s.get("default", tid)
        assert view.ack_required and view.idempotency_key == tid
    assert getattr(t.extra[t.by_id[0]["k"]], "idempotency_key", None) is None
    assert t.extra[t.by_id[0]["f"]].idempotency_key is None and t.extra[t.by_id[0]["f"]].labels == (("x", "y"),)
    back = State.from_bytes(s.to_bytes())
    assert back.get("default", "k") == s.get("default", "k") and back.to_bytes() == s.to_bytes()
    s.check_invariants()


def test_reschedule_bounds_are_inclusive_and_the_event_is_complete():
    """extend_by may move fire_at exactly to 0 or to MAX_TIME; the event takes the next seq
    and names the tenant and id; the message states the refused deadline."""
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 100, tenant="t")])
    r = s.reschedule(T0 + 1, "t", "a", extend_by=-(T0 + 100))
    assert [tuple(e)[:8] for e in r.events] == [(3, EventKind.RESCHEDULED, "t", "a", T0 + 1, 3, TimerState.ARMED, 0)]
    assert s.seq == 3 and s.next_deadline() == 0
    r = s.reschedule(T0 + 2, "t", "a", extend_by=MAX_TIME)
    assert r.timer.fire_at == MAX_TIME and s.next_deadline() == MAX_TIME and s.seq == 4
    err = unchanged(s, lambda: s.reschedule(T0, "t", "a", extend_by=1), InvalidArgument)
    assert err.rule == f"moves fire_at to {MAX_TIME + 1}, outside 0..{MAX_TIME} ms"
    s.reschedule(T0 + 3, "t", "a", fire_at=5)
    err = unchanged(s, lambda: s.reschedule(T0, "t", "a", extend_by=-6), InvalidArgument)
    assert (err.field, err.rule) == ("extend_by", f"moves fire_at to -1, outside 0..{MAX_TIME} ms")
    err = unchanged(s, lambda: s.reschedule(T0, "t", "a"), InvalidArgument)
    assert (err.field, err.rule) == ("fire_at", "give exactly one of fire_at and extend_by")


def test_each_created_item_is_the_timer_as_the_command_left_it():
    """A create's items are built lazily or from the table depending on the spec; each must
    equal what `get` returns right after the command: plain, payload, labels, ack, keys (one
    equal to the id), webhook, queue, every_ms, cron, a catch-up policy, a dependency, an
    escalation ladder with a webhook, a recurring webhook timer; an idempotent repeat returns
    the existing timer."""
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
    from minoots.kernel.graph import GraphSpec
    hook = Delivery(Webhook("http://127.0.0.1:9/h", ()), DeliveryPolicy(max_attempts=2))
    queue = Delivery(None, DeliveryPolicy(max_attempts=2), "jobs")
    specs = [spec("plain"), spec("pay", payload=b"xy", name="n", labels={"k": "v"}, action=b"a", tenant="t"),
             spec("ack", ack_required=True, idempotency_key="key1"), spec("self", idempotency_key="self"),
             spec("hook", delivery=hook), spec("q", delivery=queue), spec("every", every_ms=60_000, max_count=3),
             spec("cron", cron="0 9 * * *", tz="UTC"), spec("catch", every_ms=60_000, catch_up="all"),
             spec("child", graph=GraphSpec(("plain",))),
             spec("ladder", ack_required=True, delivery=hook, graph=GraphSpec(escalate=((1000, b"page"),))),
             spec("occ", every_ms=60_000, delivery=hook)]
    s = State()
    res = s.create(T0, specs)
    assert [(item.timer.id, item.created) for item in res.items] == [(x.id, True) for x in specs]
    for x, item in zip(specs, res.items):
        assert item.timer == s.get(x.tenant, x.id), x.id
    assert res.items[4].timer.delivery == hook and res.items[5].timer.delivery == queue
    assert res.items[8].timer.catch_up == "all" and res.items[9].timer.waiting_on == ("plain",)
    again = s.create(T0 + 1, [spec("other", idempotency_key="key1"), spec("self2", idempotency_key="self")])
    assert [(i.timer.id, i.created) for i in again.items] == [("ack", False), ("self", False)]
    assert again.items[0].timer == s.get("default", "ack") and again.events == ()
    assert {st.name: n for st, n in s.counts().items() if n} == {"SCHEDULED": 1, "ARMED": 11}
    s.check_invariants()


def test_a_mixed_batch_behaves_exactly_as_its_timers_created_one_by_one():
    """Per-spec extras (a schedule's occurrences, a ladder's escalation webhook, a plain
    webhook) go to the right timer of a mixed batch: the batch and the same specs created
    one by one give the same bytes and the same events tick after tick."""
    from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
    from minoots.kernel.graph import GraphSpec
    hook = Delivery(Webhook("http://127.0.0.1:9/h", ()), DeliveryPolicy(max_attempts=2))
    specs = [spec("every", every_ms=60_000, max_count=2), spec("ack", ack_required=True),
             spec("ladder", ack_required=True, delivery=hook, graph=GraphSpec(escalate=((1000, b"page"),))),
             spec("occ", every_ms=60_000, max_count=2, delivery=hook), spec("hook", delivery=hook)]
    a, b = State(), State()
    a.create(T0, specs)
    for x in specs:
        b.create(T0, [x])
    assert a.to_bytes() == b.to_bytes()
    kinds = []
    for now in (T0 + 1000, T0 + 2000, T0 + 61_000):
        ea = a.tick(now).events
        assert ea == b.tick(now).events and a.to_bytes() == b.to_bytes()
        kinds.append([(e.kind.name, e.timer_id) for e in ea])
    assert kinds == [
        [("FIRED", "every"), ("ARMED", "every"), ("FIRED", "ack"), ("FIRED", "ladder"), ("FIRED", "occ"),
         ("DELIVERY_DUE", "occ@15"), ("ARMED", "occ"), ("FIRED", "hook"), ("DELIVERY_DUE", "hook")],
        [("ESCALATED", "ladder"), ("DELIVERY_DUE", "ladder@20")],
        [("FIRED", "every"), ("SETTLED", "every"), ("ARMED", "occ")]]
    a.check_invariants()


def test_cancel_and_delete_refusals_state_exactly_what_is_wrong():
    s = State()
    s.create(T0, [spec("a", fire_at=T0), spec("b")])
    s.tick(T0)                                            # a settles, b stays armed
    for call, done in ((s.cancel, "b"), (s.delete, "a")):
        err = unchanged(s, lambda: call(T0, "abc"), InvalidArgument)
        assert (err.field, err.rule) == ("refs", "must be a list or tuple, not str")
        err = unchanged(s, lambda: call(T0, [("default", done), ("default", done)]), InvalidArgument)
        assert (err.field, err.rule) == ("refs[1]", "names the same timer as refs[0]")
    err = unchanged(s, lambda: s.cancel(T0, [("default", "b"), ("default", "a")]), FailedPrecondition)
    assert str(err) == ("refs[1]: timer 'a' in tenant 'default' is SETTLED; "
                        "only scheduled, armed, fired or delivering timers can be cancelled")
    err = unchanged(s, lambda: s.delete(T0, [("default", "a"), ("default", "b")]), FailedPrecondition)
    assert str(err) == ("refs[1]: timer 'b' in tenant 'default' is ARMED; "
                        "only settled, cancelled or dead-lettered timers can be deleted (cancel it first)")


def test_reschedule_refusals_name_their_field_and_state():
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 100), spec("d", fire_at=T0)])
    s.tick(T0)
    err = unchanged(s, lambda: s.reschedule(T0, "default", "a", extend_by=1.5), InvalidArgument)
    assert (err.field, err.rule) == ("extend_by", "must be an int, not float")
    err = unchanged(s, lambda: s.reschedule(T0, "default", "a", fire_at="5"), InvalidArgument)
    assert err.field == "fire_at"
    err = unchanged(s, lambda: s.reschedule(T0, "default", "d", fire_at=T0), FailedPrecondition)
    assert str(err) == "timer 'd' in tenant 'default' is SETTLED; only scheduled or armed timers can be rescheduled"


def test_ack_refusals_name_their_field_and_state():
    s = State()
    s.create(T0, [spec("a", fire_at=T0 + 100)])
    err = unchanged(s, lambda: s.ack(T0, "default", "a", "1"), InvalidArgument)
    assert err.field == "fire_id"
    err = unchanged(s, lambda: s.ack(T0, "default", "a", 1), FailedPrecondition)
    assert str(err) == "timer 'a' in tenant 'default' is ARMED; only a fired timer can be acknowledged"


def test_a_stale_ack_names_the_current_fire():
    s = State()
    s.create(T0, [spec("a", fire_at=T0, ack_required=True)])
    s.tick(T0)
    fid = s.get("default", "a").fire_id
    err = unchanged(s, lambda: s.ack(T0, "default", "a", fid + 1), FailedPrecondition)
    assert str(err) == f"fire_id {fid + 1} is not the current fire of timer 'a' in tenant 'default' ({fid})"
