"""Property tests: the compiled wheel against a tiny reference model.

The model is a dict key -> deadline plus `now`; expiring is "every timer with
deadline <= max(now, t), sorted by (deadline, key)". Hypothesis draws random
interleavings of insert / cancel / reschedule / advance / advance_items /
insert_many / cancel_many (over lists and over array('Q')/array('q') buffers,
the in-place fast path) / deadline / snapshot, with deadlines in the past,
near, around level boundaries (multiples of 64**k, relative and absolute), far
in the future up to MAX_TIME, plus the odd invalid one, and time jumps from one
millisecond to centuries. After every step the wheel and the model must agree
on what fired (same keys, same order), len, next_deadline, now and items().
"""
from __future__ import annotations

import os
from array import array

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from minoots.kernel._wheel import MAX_KEY, MAX_TIME, Wheel

EPOCH = 1_764_000_000_000

# MINOOTS_WHEEL_EXAMPLES=5000 for a longer hunt (CI keeps the default).
SETTINGS = settings(
    max_examples=int(os.environ.get("MINOOTS_WHEEL_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

START_TIMES = st.sampled_from(
    [0, 1, 63, 4096, EPOCH, EPOCH + 63, 64**6 - 2, 64**7 + 5, MAX_TIME - 300_000, MAX_TIME - 1]
)

BIG_KEYS = [2**32, 2**63 - 1, 2**63, MAX_KEY - 1, MAX_KEY]
KEYS = st.one_of(st.integers(0, 24), st.sampled_from(BIG_KEYS))

# Offsets straddling level boundaries, both directions.
BOUNDARY = sorted({s * (64**k + j) for k in range(1, 9) for j in (-1, 0, 1) for s in (1, -1)})

# A deadline is drawn as a spec and resolved against the model's `now` when the
# step runs, so "past", "near" and "aligned to 64**k" keep their meaning.
VALID_DEADLINE = st.one_of(
    st.tuples(st.just("rel"), st.integers(-200, 200)),  # past and near
    st.tuples(st.just("rel"), st.integers(0, 5000)),  # near future
    st.tuples(st.just("rel"), st.sampled_from(BOUNDARY)),  # level boundaries, relative
    st.tuples(st.just("aligned"), st.integers(1, 8), st.integers(0, 2), st.integers(-1, 1)),  # absolute
    st.tuples(st.just("rel"), st.integers(0, 2**47)),  # far future (clamped to MAX_TIME)
    st.tuples(st.just("abs"), st.sampled_from([0, 1, MAX_TIME - 64, MAX_TIME - 1, MAX_TIME])),
)
BAD_DEADLINE = st.tuples(st.just("bad"), st.sampled_from([-1, MAX_TIME + 1]))
DEADLINE = st.one_of(VALID_DEADLINE, VALID_DEADLINE, VALID_DEADLINE, VALID_DEADLINE, BAD_DEADLINE)

ADVANCE = st.one_of(
    st.tuples(st.just("rel"), st.integers(-100, 300)),  # small steps, some backwards
    st.tuples(st.just("rel"), st.sampled_from(BOUNDARY)),
    st.tuples(st.just("aligned"), st.integers(1, 8), st.integers(0, 2), st.integers(-1, 1)),
    st.tuples(st.just("rel"), st.integers(0, 2**48)),  # idle jumps of up to centuries
    st.tuples(st.just("next"), st.sampled_from([-1, 0, 0, 1])),  # around next_deadline()
    st.tuples(st.just("abs"), st.sampled_from([MAX_TIME - 1, MAX_TIME])),
)


def resolve(spec, now: int) -> int:
    kind = spec[0]
    if kind == "bad":
        return spec[1]
    if kind == "rel":
        d = now + spec[1]
    elif kind == "aligned":
        _, k, m, j = spec
        unit = 64**k
        d = (now // unit + m) * unit + j
    elif kind == "abs":
        d = spec[1]
    else:  # pragma: no cover
        raise AssertionError(spec)
    return min(max(d, 0), MAX_TIME)


def valid(d: int) -> bool:
    return 0 <= d <= MAX_TIME


OP = st.one_of(
    st.tuples(st.just("insert"), KEYS, DEADLINE),
    st.tuples(st.just("insert"), KEYS, DEADLINE),
    st.tuples(st.just("insert"), KEYS, VALID_DEADLINE),
    st.tuples(st.just("cancel"), KEYS),
    st.tuples(st.just("reschedule"), KEYS, DEADLINE),
    st.tuples(st.just("advance"), ADVANCE),
    st.tuples(st.just("advance"), ADVANCE),
    st.tuples(st.just("advance_items"), ADVANCE),
    st.tuples(st.just("insert_many"), st.lists(st.tuples(st.integers(0, 400), VALID_DEADLINE), max_size=25)),
    st.tuples(st.just("insert_many"), st.lists(st.tuples(KEYS, DEADLINE), max_size=6)),
    st.tuples(st.just("insert_many_arrays"), st.lists(st.tuples(st.integers(0, 400), VALID_DEADLINE), max_size=25)),
    st.tuples(st.just("insert_many_arrays"), st.lists(st.tuples(KEYS, DEADLINE), max_size=6)),
    st.tuples(st.just("cancel_many"), st.lists(st.one_of(KEYS, st.integers(0, 400)), max_size=12)),
    st.tuples(st.just("cancel_many_array"), st.lists(st.one_of(KEYS, st.integers(0, 400)), max_size=12)),
    st.tuples(st.just("deadline"), KEYS),
    st.tuples(st.just("snapshot")),
)


class Model:
    """The reference: a dict and a clock."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.timers: dict[int, int] = {}

    def advance(self, t: int) -> list[tuple[int, int]]:
        self.now = max(self.now, t)
        due = sorted((d, k) for k, d in self.timers.items() if d <= self.now)
        for _, k in due:
            del self.timers[k]
        return [(k, d) for d, k in due]

    def next_deadline(self):
        return min(self.timers.values(), default=None)

    def advance_target(self, spec) -> int:
        if spec[0] == "next":
            nd = self.next_deadline()
            base = self.now if nd is None else nd
            return min(max(base + spec[1], 0), MAX_TIME)
        return resolve(spec, self.now)


def snapshot(w: Wheel) -> Wheel:
    items = w.items()
    s = Wheel(now=w.now)
    s.insert_many([k for k, _ in items], [d for _, d in items])
    return s


def expect(errors: set, fn):
    """Run fn; it must raise one of `errors` if any are expected, else succeed."""
    if errors:
        with pytest.raises(tuple(errors)):
            fn()
        return None
    return fn()


def step(w: Wheel, m: Model, op) -> Wheel:
    """Apply op to the wheel and the model, check what it returns; return the wheel to continue with."""
    kind = op[0]
    if kind == "insert":
        _, key, spec = op
        d = resolve(spec, m.now)
        errors = ({KeyError} if key in m.timers else set()) | ({ValueError} if not valid(d) else set())
        note(f"insert({key}, {d}) expecting {errors or 'success'}")
        expect(errors, lambda: w.insert(key, d))
        if not errors:
            m.timers[key] = d
    elif kind == "cancel":
        _, key = op
        note(f"cancel({key})")
        assert w.cancel(key) is (m.timers.pop(key, None) is not None)
    elif kind == "reschedule":
        _, key, spec = op
        d = resolve(spec, m.now)
        errors = ({KeyError} if key not in m.timers else set()) | ({ValueError} if not valid(d) else set())
        note(f"reschedule({key}, {d}) expecting {errors or 'success'}")
        expect(errors, lambda: w.reschedule(key, d))
        if not errors:
            m.timers[key] = d
    elif kind in ("advance", "advance_items"):
        t = m.advance_target(op[1])
        note(f"{kind}({t})  [now={m.now}]")
        want = m.advance(t)
        if kind == "advance":
            assert w.advance(t) == [k for k, _ in want]
        else:
            assert w.advance_items(t) == want
    elif kind in ("insert_many", "insert_many_arrays"):
        pairs = [(k, resolve(spec, m.now)) for k, spec in op[1]]
        keys = [k for k, _ in pairs]
        errors = set()
        if any(not valid(d) for _, d in pairs):
            errors.add(ValueError)
        if len(set(keys)) != len(keys) or any(k in m.timers for k in keys):
            errors.add(KeyError)
        note(f"{kind}({pairs}) expecting {errors or 'success'}")
        deadlines = [d for _, d in pairs]
        if kind == "insert_many_arrays":  # the in-place buffer path
            keys, deadlines = array("Q", keys), array("q", deadlines)
        expect(errors, lambda: w.insert_many(keys, deadlines))
        if not errors:
            m.timers.update(pairs)
    elif kind in ("cancel_many", "cancel_many_array"):
        keys = op[1]
        present = {k for k in keys if k in m.timers}
        note(f"{kind}({keys})")
        assert w.cancel_many(array("Q", keys) if kind == "cancel_many_array" else keys) == len(present)
        for k in present:
            del m.timers[k]
    elif kind == "deadline":
        key = op[1]
        if key in m.timers:
            assert w.deadline(key) == m.timers[key]
        else:
            with pytest.raises(KeyError):
                w.deadline(key)
    elif kind == "snapshot":
        note("snapshot")
        w = snapshot(w)
    else:  # pragma: no cover
        raise AssertionError(op)
    return w


def check(w: Wheel, m: Model) -> None:
    assert w.now == m.now
    assert len(w) == len(m.timers)
    assert w.next_deadline() == m.next_deadline()
    assert w.items() == sorted(m.timers.items())


def drain_both(w: Wheel, m: Model) -> None:
    """Run both to the end: every remaining timer must fire at its deadline, in order."""
    while (t := m.next_deadline()) is not None:
        assert w.next_deadline() == t
        if t > m.now:
            assert w.advance(t - 1) == [k for k, _ in m.advance(t - 1)]
        assert w.advance(t) == [k for k, _ in m.advance(t)]
        check(w, m)
    assert len(w) == 0 and w.next_deadline() is None


@SETTINGS
@given(start=START_TIMES, ops=st.lists(OP, max_size=60))
def test_random_interleavings_match_the_model(start, ops):
    w, m = Wheel(start), Model(start)
    check(w, m)
    for op in ops:
        w = step(w, m, op)
        check(w, m)
    drain_both(w, m)


BULK = st.lists(
    st.tuples(st.integers(0, 2**64 - 1), VALID_DEADLINE),
    min_size=1,
    max_size=300,
    unique_by=lambda p: p[0],
)


@SETTINGS
@given(start=START_TIMES, bulk=BULK, advances=st.lists(ADVANCE, max_size=30))
def test_many_timers_expire_in_order(start, bulk, advances):
    """Hundreds of timers sharing slots and levels; expiry by random jumps, then to the end."""
    w, m = Wheel(start), Model(start)
    pairs = [(k, resolve(spec, start)) for k, spec in bulk]
    w.insert_many([k for k, _ in pairs], [d for _, d in pairs])
    m.timers.update(pairs)
    check(w, m)
    for spec in advances:
        t = m.advance_target(spec)
        assert w.advance(t) == [k for k, _ in m.advance(t)]
        check(w, m)
    drain_both(w, m)


@SETTINGS
@given(
    start=st.sampled_from([0, EPOCH, 64**7 - 3]),
    before=st.lists(OP, max_size=40),
    after=st.lists(OP.filter(lambda op: op[0] != "snapshot"), max_size=40),
)
def test_snapshot_in_the_middle_changes_nothing(start, before, after):
    """A wheel rebuilt from items() at w.now behaves exactly like the original from then on."""
    w, m = Wheel(start), Model(start)
    for op in before:
        w = step(w, m, op)
    clone, m2 = snapshot(w), Model(m.now)
    m2.timers = dict(m.timers)
    check(clone, m2)
    for op in after:
        w = step(w, m, op)
        clone = step(clone, m2, op)
        check(w, m)
        check(clone, m2)
        assert w.items() == clone.items()
    drain_both(w, m)
    drain_both(clone, m2)


@SETTINGS
@given(
    start=START_TIMES,
    deadlines=st.lists(VALID_DEADLINE, min_size=1, max_size=40),
    data=st.data(),
)
def test_stepping_one_ms_before_each_deadline_never_fires_early(start, deadlines, data):
    """For each deadline d in turn: advance(d - 1) fires only what is due by d - 1, advance(d) fires d."""
    w, m = Wheel(start), Model(start)
    for i, spec in enumerate(deadlines):
        w.insert(i, resolve(spec, start))
        m.timers[i] = resolve(spec, start)
    while (t := m.next_deadline()) is not None:
        late = data.draw(st.sampled_from([0, 0, 1, 63, 64, 4096]), label="overshoot")
        target = min(t + late, MAX_TIME)
        if t - 1 > m.now:
            assert w.advance(t - 1) == [k for k, _ in m.advance(t - 1)]
        assert w.advance(target) == [k for k, _ in m.advance(target)]
        check(w, m)
