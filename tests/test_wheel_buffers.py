"""The buffer fast path of Wheel.insert_many / cancel_many (kernel/_wheel.pyx).

One-dimensional contiguous buffers of uint64 keys and int64 deadlines
(array('Q') / array('q'), or memoryviews of those formats, read-only ones too)
are read in place; every other input takes the generic per-item path. Both
paths must be indistinguishable from outside: same result, same errors, same
all-or-nothing behaviour.
"""
from __future__ import annotations

import random
from array import array

import pytest

from minoots.kernel._wheel import MAX_KEY, MAX_TIME, Wheel

EPOCH = 1_764_000_000_000


def drain(w: Wheel) -> list[tuple[int, list[int]]]:
    out = []
    while (t := w.next_deadline()) is not None:
        out.append((t, w.advance(t)))
    return out


def snap(w: Wheel) -> tuple:
    return (len(w), w.items(), w.next_deadline(), w.now)


def seeded(now: int = EPOCH) -> Wheel:
    """A wheel that already holds timers (past, near, far) and has freed structs."""
    w = Wheel(now)
    w.insert_many(range(1000, 1100), [now + (k * 37) % 5000 - 100 for k in range(100)])
    w.cancel_many(range(1000, 1100, 3))
    return w


def as_buffers(keys, deadlines, kind):
    if kind == "array":
        return array("Q", keys), array("q", deadlines)
    if kind == "memoryview":
        return memoryview(array("Q", keys)), memoryview(array("q", deadlines))
    if kind == "readonly":  # memoryviews over bytes: read-only buffers
        return (memoryview(array("Q", keys).tobytes()).cast("Q"),
                memoryview(array("q", deadlines).tobytes()).cast("q"))
    raise AssertionError(kind)


KINDS = ["array", "memoryview", "readonly"]


# ---------------------------------------------------------------- equivalence


@pytest.mark.parametrize("kind", KINDS)
def test_buffers_match_lists(kind):
    rng = random.Random(31)
    keys = list({rng.getrandbits(64) for _ in range(5000)} | {0, 1, MAX_KEY, 2**63, 2**63 - 1})
    rng.shuffle(keys)
    ds = [rng.choice([0, EPOCH - 10**6, EPOCH, EPOCH + 1, EPOCH + rng.randint(1, 10**10), MAX_TIME])
          for _ in keys]
    a, b = seeded(), seeded()
    a.insert_many(keys, ds)
    b.insert_many(*as_buffers(keys, ds, kind))
    assert snap(a) == snap(b)
    for k in keys[:50]:
        assert a.deadline(k) == b.deadline(k)
    assert drain(a) == drain(b)


def test_large_buffer_batch_matches_per_call_insert():
    n = 100_000
    keys = array("Q", range(0, 3 * n, 3))
    ds = array("q", (EPOCH + (i * 7919) % 3_600_000 for i in range(n)))
    a, b = Wheel(EPOCH), Wheel(EPOCH)
    a.insert_many(keys, ds)
    for k, d in zip(keys, ds):
        b.insert(k, d)
    assert snap(a) == snap(b)
    assert a.advance(EPOCH + 1_800_000) == b.advance(EPOCH + 1_800_000)
    left = len(a)
    assert 0 < left < n
    assert a.cancel_many(keys) == b.cancel_many(list(keys)) == left
    assert snap(a) == snap(b) and len(a) == 0


def test_empty_buffers():
    w = seeded()
    before = snap(w)
    w.insert_many(array("Q"), array("q"))
    assert w.cancel_many(array("Q")) == 0
    assert snap(w) == before


def test_buffer_inserts_then_everything_else_works():
    w = Wheel(EPOCH)
    w.insert_many(array("Q", [5, 6, 7]), array("q", [EPOCH + 3, EPOCH - 1, EPOCH + 3]))
    assert w.next_deadline() == EPOCH - 1
    w.reschedule(5, EPOCH + 1)
    assert w.cancel(7) is True
    assert w.advance(EPOCH + 10) == [6, 5]
    assert len(w) == 0


# ---------------------------------------------------------------- all or nothing


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [-1, MAX_TIME + 1, -(2**63), 2**63 - 1])
@pytest.mark.parametrize("where", [0, 2, 4])
def test_bad_deadline_anywhere_is_value_error_and_wheel_unchanged(kind, bad, where):
    w = seeded()
    before = snap(w)
    keys = [10, 11, 12, 13, 14]
    ds = [EPOCH + 1, EPOCH + 2, EPOCH + 3, EPOCH + 4, EPOCH + 5]
    ds[where] = bad
    with pytest.raises(ValueError, match=str(bad)):
        w.insert_many(*as_buffers(keys, ds, kind))
    assert snap(w) == before
    assert all(k not in w for k in keys)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "keys",
    [
        [10, 11, 1001],          # duplicate of a held key, last
        [1001, 10, 11],          # ... first
        [10, 1001, 11],          # ... middle
        [10, 11, 12, 11, 13],    # duplicate inside the batch
        [7, 7],
    ],
)
def test_duplicate_is_key_error_and_wheel_unchanged(kind, keys):
    w = seeded()
    assert 1001 in w
    before = snap(w)
    with pytest.raises(KeyError):
        w.insert_many(*as_buffers(keys, [EPOCH + i for i in range(len(keys))], kind))
    assert snap(w) == before
    assert all(k not in w for k in keys if k != 1001)
    # The rolled-back structs are reusable.
    w.insert_many(array("Q", [10, 11, 12, 13]), array("q", [EPOCH] * 4))
    assert len(w) == before[0] + 4


def test_length_mismatch_is_value_error():
    w = seeded()
    before = snap(w)
    for ks, ds in ((array("Q", [1, 2, 3]), array("q", [1, 2])), (array("Q", [1]), array("q", [1, 2]))):
        with pytest.raises(ValueError, match="keys but"):
            w.insert_many(ks, ds)
    assert snap(w) == before


def test_buffers_are_released_after_the_call():
    """The wheel must not keep a buffer export: the arrays stay resizable."""
    w = Wheel()
    ks, ds = array("Q", [1, 2]), array("q", [5, 6])
    w.insert_many(ks, ds)
    ks.append(3)
    ds.append(7)
    bad_ks, bad_ds = array("Q", [1]), array("q", [9])
    with pytest.raises(KeyError):
        w.insert_many(bad_ks, bad_ds)
    bad_ks.append(0)
    bad_ds.append(0)
    with pytest.raises(ValueError):
        w.insert_many(array("Q", [8]), array("q", [-1]))
    assert w.cancel_many(ks) == 2
    ks.append(4)


# ---------------------------------------------------------------- other buffers


@pytest.mark.parametrize(
    "keys, deadlines, exc",
    [
        (array("d", [1.0, 2.0]), array("q", [5, 6]), TypeError),      # float keys
        (array("Q", [1, 2]), array("d", [5.0, 6.0]), TypeError),      # float deadlines
        (array("f", [1.0]), array("f", [5.0]), TypeError),
        (array("q", [1, -2]), array("q", [5, 6]), ValueError),        # negative signed key
        (array("Q", [1, 2]), array("Q", [5, 2**63]), ValueError),     # unsigned deadline beyond int64
        (array("Q", [1, 2]), array("q", [5]), ValueError),            # length mismatch
    ],
)
def test_wrong_formats_fall_back_and_fail_cleanly(keys, deadlines, exc):
    w = seeded()
    before = snap(w)
    with pytest.raises(exc):
        w.insert_many(keys, deadlines)
    assert snap(w) == before


@pytest.mark.parametrize(
    "keys, deadlines",
    [
        (array("q", [1, 2, 3]), array("q", [5, 6, 7])),               # signed keys
        (array("Q", [1, 2, 3]), array("Q", [5, 6, 7])),               # unsigned deadlines
        (array("I", [1, 2, 3]), array("i", [5, 6, 7])),               # narrower ints
        (array("B", [1, 2, 3]), array("b", [5, 6, 7])),
        (bytes([1, 2, 3]), bytearray([5, 6, 7])),                     # format 'B' buffers
        (memoryview(array("Q", [1, 0, 2, 0, 3]))[::2], array("q", [5, 6, 7])),  # strided
        (array("Q", [1, 2, 3]), [5, 6, 7]),                           # buffer + list
        ([1, 2, 3], array("q", [5, 6, 7])),                           # list + buffer
    ],
)
def test_other_buffers_still_work_through_the_generic_path(keys, deadlines):
    w = Wheel()
    w.insert_many(keys, deadlines)
    assert w.items() == [(1, 5), (2, 6), (3, 7)]


def test_cancel_many_buffers():
    w = Wheel()
    w.insert_many(range(20), range(100, 120))
    assert w.cancel_many(array("Q", [2, 99, 2, 4, MAX_KEY])) == 2       # absent / repeated count once
    assert w.cancel_many(memoryview(array("Q", [5]))) == 1
    assert w.cancel_many(memoryview(array("Q", [6]).tobytes()).cast("Q")) == 1
    assert w.cancel_many(memoryview(array("Q", [7, 0, 8]))[::2]) == 2   # strided: generic path
    assert w.cancel_many(array("q", [9, 10])) == 2                       # signed: generic path
    assert w.cancel_many(bytes([11])) == 1
    with pytest.raises(TypeError):
        w.cancel_many(array("d", [12.0]))
    with pytest.raises(ValueError):
        w.cancel_many(array("q", [12, -1]))
    assert 12 in w  # the generic path validates every key before cancelling any
    assert [k for k, _ in w.items()] == [0, 1, 3, 12, 13, 14, 15, 16, 17, 18, 19]
