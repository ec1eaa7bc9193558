"""Restoring a snapshot takes C-level shortcuts for the usual shapes (one tenant, extras that
are payloads alone, columns of empty names and keys, ASCII text); these tests hold each
shortcut to exactly what the general path restores: the same bytes, the same timers, the
same per-tenant usage (timers held and their payload bytes)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from minoots.kernel import State, TimerSpec

from support import T0

_extras = st.one_of(
    st.just({}),
    st.builds(lambda p: {"payload": p}, st.binary(min_size=1, max_size=8)),
    st.builds(lambda n: {"name": n}, st.sampled_from(["n", "café", "☃ x"])),
    st.builds(lambda p, n: {"payload": p, "name": n}, st.binary(min_size=1, max_size=4), st.sampled_from(["a", "é"])),
    st.just({"labels": {"k": "v"}, "payload": b"p"}),
    st.just({"action": b"act"}),
)


def _restored(s: State) -> State:
    blob = s.to_bytes()
    r = State.from_bytes(blob)
    assert r.to_bytes() == blob
    return r


def _same(s: State, r: State, tenants) -> None:
    assert r == s
    r.check_invariants()
    for tenant in tenants:
        assert r.usage(tenant) == s.usage(tenant)
        assert list(r.timers(tenant)) == list(s.timers(tenant))


@settings(max_examples=60, deadline=None)
@given(st.lists(_extras, min_size=1, max_size=30), st.sets(st.integers(0, 29)), st.booleans(),
       st.booleans())
def test_restore_equals_the_original_for_any_mix_of_extras(extras, ended, keyed, two_tenants):
    s = State()
    specs = []
    for i, ex in enumerate(extras):
        tenant = "other" if two_tenants and i % 2 else "default"
        key = f"k{i}" if keyed and i % 3 == 0 else None
        specs.append(TimerSpec(f"t{i}", T0 + 10 + i, tenant=tenant, idempotency_key=key, **ex))
    s.create(T0, specs)
    s.cancel(T0 + 1, [("other" if two_tenants and i % 2 else "default", f"t{i}")
                      for i in sorted(ended) if i < len(extras)])
    _same(s, _restored(s), ["default", "other"])


def test_payload_only_timers_in_every_row_restore_as_payload_bytes():
    s = State()
    s.create(T0, [TimerSpec(f"t{i}", T0 + 10 + i, payload=bytes([i + 1]) * 3) for i in range(50)])
    s.tick(T0 + 20)                                 # some settle: their payloads are no longer held
    r = _restored(s)
    _same(s, r, ["default"])
    assert r.usage("default").payload_bytes == 3 * (50 - 11)
    assert r.get("default", "t49").payload == bytes([50]) * 3


def test_payload_only_timers_among_plain_ones_land_on_their_own_rows():
    s = State()
    s.create(T0, [TimerSpec(f"t{i}", T0 + 10 + i, payload=b"p%d" % i if i % 4 == 0 else b"") for i in range(40)])
    r = _restored(s)
    _same(s, r, ["default"])
    assert [r.get("default", f"t{i}").payload for i in range(8)] == [b"p0", b"", b"", b"", b"p4", b"", b"", b""]


def test_one_tenant_with_full_extras_and_payload_only_rows_counts_both_payloads():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 10, payload=b"12345"),
                  TimerSpec("b", T0 + 10, payload=b"123", name="bee ☃", labels={"x": "y"}),
                  TimerSpec("c", T0 + 10, name="no payload")])
    r = _restored(s)
    _same(s, r, ["default"])
    assert r.usage("default").payload_bytes == 8
    assert r.get("default", "b").name == "bee ☃" and r.get("default", "c").name == "no payload"
