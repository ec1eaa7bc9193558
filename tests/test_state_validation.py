"""Every create-spec rule: a bad field raises InvalidArgument naming it, and the
whole batch is refused with the state untouched."""

from types import MappingProxyType

import pytest

from minoots.kernel import (
    MAX_BATCH,
    MAX_TIME,
    InvalidArgument,
    State,
    TimerSpec,
)

T0 = 1_700_000_000_000


def good(**kw):
    base = dict(id="ok", fire_at=T0)
    base.update(kw)
    return TimerSpec(**base)


BAD_FIELDS = [
    # field, value, substring of the rule
    ("id", "", "1..128"),
    ("id", "x" * 129, "1..128"),
    ("id", "has space", "characters"),
    ("id", "slash/no", "characters"),
    ("id", "é", "characters"),
    ("id", "a\n", "characters"),
    ("id", 5, "str"),
    ("id", None, "str"),
    ("id", b"abc", "str"),
    ("tenant", "", "1..64"),
    ("tenant", "t" * 65, "1..64"),
    ("tenant", "a b", "characters"),
    ("tenant", None, "str"),
    ("fire_at", -1, "0.."),
    ("fire_at", MAX_TIME + 1, "0.."),
    ("fire_at", 1.0, "int"),
    ("fire_at", float("nan"), "int"),
    ("fire_at", True, "int"),
    ("fire_at", None, "int"),
    ("fire_at", "5", "int"),
    ("name", "n" * 257, "256"),
    ("name", 5, "str"),
    ("name", None, "str"),
    ("name", "bad\ud800", "surrogate"),
    ("payload", b"x" * 65537, "65536"),
    ("payload", "text", "bytes"),
    ("payload", None, "bytes"),
    ("action", b"x" * 65537, "65536"),
    ("action", 3, "bytes"),
    ("labels", {"k": 1}, "str"),
    ("labels", {1: "v"}, "str"),
    ("labels", {"": "v"}, "key name"),
    ("labels", {"-k": "v"}, "key name"),
    ("labels", {"k-": "v"}, "key name"),
    ("labels", {"a b": "v"}, "key name"),
    ("labels", {"k" * 64: "v"}, "key name"),
    ("labels", {"Upper.Case/k": "v"}, "prefix"),
    ("labels", {"/k": "v"}, "prefix"),
    ("labels", {"a..b/k": "v"}, "prefix"),
    ("labels", {"k": "v" * 257}, "256"),
    ("labels", {"k": "\udfff"}, "surrogate"),
    ("labels", {f"k{i}": "v" for i in range(65)}, "64"),
    ("labels", [("k", "v")], "mapping"),
    ("labels", "k=v", "mapping"),
    ("idempotency_key", "", "1..128"),
    ("idempotency_key", "k" * 129, "1..128"),
    ("idempotency_key", 7, "str"),
    ("idempotency_key", "\ud800", "surrogate"),
    ("ack_required", 1, "bool"),
    ("ack_required", None, "bool"),
    ("ack_required", "yes", "bool"),
]


@pytest.mark.parametrize("field,value,rule", BAD_FIELDS, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_FIELDS)])
def test_bad_field_rejects_batch(field, value, rule):
    s = State()
    s.create(T0, [good(id="existing")])
    before = s.to_bytes()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [good(id="first"), good(**{"id": "second", field: value})])
    err = info.value
    assert err.field.startswith(f"specs[1].{field}"), err.field
    assert rule in err.rule, err.rule
    assert err.field in str(err) and err.rule in str(err)
    assert s.to_bytes() == before


GOOD_FIELDS = [
    ("id", "x" * 128),
    ("id", "A-z_0.9:~"),
    ("tenant", "t" * 64),
    ("fire_at", 0),
    ("fire_at", MAX_TIME),
    ("name", "n" * 256),
    ("name", "ünïcödé ☃"),
    ("payload", b"x" * 65536),
    ("payload", bytearray(b"ba")),
    ("payload", memoryview(b"mv")),
    ("action", b"a" * 65536),
    ("labels", {}),
    ("labels", {f"k{i}": "v" * 256 for i in range(64)}),
    ("labels", {"k" * 63: ""}),
    ("labels", {"example.com/k": "v", "a/b": "☃", "A.b-c_D": "x", "z": "y"}),
    ("labels", MappingProxyType({"k": "v"})),
    ("idempotency_key", "k" * 128),
    ("idempotency_key", "any thing/ü"),
    ("ack_required", True),
]


@pytest.mark.parametrize("field,value", GOOD_FIELDS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(GOOD_FIELDS)])
def test_good_field_is_accepted_and_survives_snapshot(field, value):
    s = State()
    t = s.create(T0, [good(**{field: value})]).items[0].timer
    got = getattr(t, field)
    if field == "labels":
        assert dict(got) == dict(value)
    elif field in ("payload", "action"):
        assert got == bytes(value) and type(got) is bytes
    else:
        assert got == value
    r = State.from_bytes(s.to_bytes())
    assert r == s
    assert r.get(t.tenant, t.id) == t


def test_spec_must_be_a_timerspec():
    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [good(), {"id": "x", "fire_at": 1}])
    assert info.value.field == "specs[1]"


def test_batch_type_and_size():
    s = State()
    for bad in (None, good(), "abc", (x for x in [good()])):
        with pytest.raises(InvalidArgument) as info:
            s.create(T0, bad)
        assert info.value.field == "specs"
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [good(id=f"t{i}") for i in range(MAX_BATCH + 1)])
    assert "10000" in info.value.rule
    assert len(s) == 0 and s.seq == 0
    r = s.create(T0, tuple(good(id=f"t{i}") for i in range(MAX_BATCH)))
    assert len(r.items) == MAX_BATCH and len(s) == MAX_BATCH
    with pytest.raises(InvalidArgument):
        s.cancel(T0, [("default", f"t{i}") for i in range(MAX_BATCH + 1)])


def test_all_specs_validated_before_lookup():
    # A bad field later in the batch wins over a duplicate earlier: nothing is
    # looked up until every spec is well-formed.
    s = State()
    s.create(T0, [good(id="a")])
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [good(id="a"), good(id="b", fire_at=-5)])
    assert info.value.field == "specs[1].fire_at"


def test_str_subclass_is_stored_as_plain_str():
    class S(str):
        def __hash__(self):
            return 1

    s = State()
    t = s.create(T0, [good(id=S("abc"), tenant=S("ten"), name=S("nm"))]).items[0].timer
    assert type(t.id) is str and type(t.tenant) is str and type(t.name) is str
    assert State.from_bytes(s.to_bytes()) == s


@pytest.mark.parametrize("field, value, rule", [("every_ms", 1, "1000.."), ("max_count", 1, "need an every_ms"),
                                                ("until", T0, "need an every_ms"), ("tz", "UTC", "need an every_ms"),
                                                ("cron", "* * * * *", "time zone")])
def test_a_schedule_field_alone_is_checked_not_taken_for_a_plain_timer(field, value, rule):
    """Every schedule field sends a spec off the plain fast path, where it is checked."""
    s = State()
    before = s.to_bytes()
    with pytest.raises(InvalidArgument) as info:
        s.create(T0, [good(**{field: value})])
    assert info.value.field.startswith("specs[0].") and rule in info.value.rule
    assert s.to_bytes() == before
