"""Plain batch creates as columns (kernel/plain.py, raft/plain_record.py, record 48,
api/plain_answer.py): the column path must leave exactly the state, snapshot bytes,
events, items and errors that State.create leaves with the equivalent TimerSpecs."""
from __future__ import annotations

from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minoots.api.plain_answer import plain_response
from minoots.api.service import _create_response
from minoots.kernel import InvalidArgument, KernelError, QuotaExceeded, State, TimerSpec
from minoots.kernel.plain import PlainCreateResult, plain_specs
from minoots.kernel.quota import TenantLimit
from minoots.kernel.validate import MAX_BATCH, MAX_ID_LEN, MAX_PAYLOAD_BYTES, MAX_TIME
from minoots.raft import commands as c
from minoots.raft.fsm import TimerFSM
from minoots.raft.plain_record import PlainGroup, pack_groups

NOW = 1_764_000_000_000

ids_st = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "x.y", "z:1", "bad id", "", "é"])
fire_st = st.one_of(st.integers(NOW, NOW + 10_000_000), st.sampled_from([0, MAX_TIME, -1, MAX_TIME + 1, NOW]))
pay_st = st.one_of(st.sampled_from([b"", b"p" * 64, b"\x00"]), st.binary(max_size=20),
                   st.just(b"x" * (MAX_PAYLOAD_BYTES + 1)))
timer_st = st.tuples(ids_st, fire_st, st.sampled_from([0, 1, 2, 3, 3, 0, 0, 4]), pay_st)
good_st = st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "x.y", "z:1"] + [f"n{i}" for i in range(30)]),
                    st.integers(0, NOW + 10_000_000), st.sampled_from([0, 1, 2, 3]),
                    st.sampled_from([b"", b"p" * 64, b"\x00", b"q" * 7]))
batch_st = st.one_of(st.lists(good_st, min_size=1, max_size=12, unique_by=lambda t: t[0]),
                     st.lists(good_st, min_size=1, max_size=12, unique_by=lambda t: t[0]),
                     st.lists(timer_st, min_size=0, max_size=12))
create_st = st.tuples(st.just("create"), st.sampled_from(["default", "default", "acme", "bad tenant"]),
                      batch_st,
                      st.sampled_from([None, None, TenantLimit(max_timers=6), TenantLimit(max_payload_bytes=100)]))
free_st = st.tuples(st.just("free"), st.lists(ids_st, max_size=6))
steps_st = st.lists(st.one_of(create_st, create_st, free_st), min_size=1, max_size=10)


def _outcome(fn):
    try:
        return fn()
    except KernelError as exc:
        return exc


def _same(r1, r2) -> None:
    if isinstance(r2, Exception):
        assert type(r1) is type(r2) and str(r1) == str(r2), (r1, r2)
        return
    assert not isinstance(r1, Exception), r1
    assert list(r1.events) == list(r2.events)
    assert list(r1.items) == list(r2.items)


def _free(state: State, ids) -> None:
    """Cancel and delete some timers so their rows are free (the next creates reuse them)."""
    for tenant in ("default", "acme"):
        have = [i for i in dict.fromkeys(ids) if state._table.lookup(tenant, i) is not None]
        if not have:
            continue
        refs = [(tenant, i) for i in have]
        live = [r for r in refs if state.get(*r).state == 2]
        if live:
            state.cancel(NOW, live)
        state.delete(NOW, refs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_st)
def test_column_path_equals_the_general_path(steps):
    fast, slow = State(), State()
    for step in steps:
        if step[0] == "free":
            _free(fast, step[1])
            _free(slow, step[1])
        else:
            _, tenant, timers, limit = step
            ids = [t[0] for t in timers]
            fa = array("q", [max(-2**63, min(2**63 - 1, t[1])) for t in timers])
            flags = bytes(t[2] for t in timers)
            pays = [t[3] for t in timers]
            limits = {tenant: limit} if limit is not None else None
            r1 = _outcome(lambda: fast.create_plain(NOW, tenant, ids, fa, flags, pays, limits))
            r2 = _outcome(lambda: slow.create(NOW, plain_specs(tenant, ids, fa, flags, pays), limits))
            _same(r1, r2)
        assert fast.to_bytes() == slow.to_bytes()
        assert fast.seq == slow.seq and fast.counts() == slow.counts()
        assert fast.usage("default") == slow.usage("default") and fast.usage("acme") == slow.usage("acme")
        fast.check_invariants()
    assert State.from_bytes(fast.to_bytes()).to_bytes() == slow.to_bytes()


def test_a_valid_new_batch_takes_the_column_path_and_reuses_free_rows():
    s = State()
    r = s.create_plain(NOW, "default", ["a", "b", "c"], array("q", [NOW + 5, NOW + 6, NOW + 7]), b"\x02\x00\x01",
                       [b"p", b"", b"q"])
    assert type(r) is PlainCreateResult
    s.cancel(NOW, [("default", "a"), ("default", "b")])
    s.delete(NOW, [("default", "a"), ("default", "b")])
    r = s.create_plain(NOW, "default", ["d", "e", "f"], array("q", [NOW + 1] * 3), b"\x00" * 3, [b""] * 3)
    assert type(r) is PlainCreateResult
    assert [s._table.lookup("default", i) for i in "def"] == [0, 1, 3]     # free rows first, smallest first
    assert [t.id for t in s.tick(NOW + 1).fired] == ["d", "e", "f"]
    s.check_invariants()


def test_a_repeated_key_replays_through_the_general_path():
    s = State()
    s.create_plain(NOW, "default", ["a"], array("q", [NOW + 5]), b"\x02", [b""])
    r = s.create_plain(NOW, "default", ["a", "b"], array("q", [NOW + 9, NOW + 9]), b"\x02\x02", [b"", b""])
    assert type(r) is not PlainCreateResult
    assert [(i.timer.id, i.created, i.timer.fire_at) for i in r.items] == [("a", False, NOW + 5),
                                                                           ("b", True, NOW + 9)]


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(KernelError, match="differ in length"):
        State().create_plain(NOW, "default", ["a", "b"], array("q", [NOW]), b"\x00\x00", [b"", b""])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, MAX_TIME), st.sampled_from([0, 1, 2, 3]),
                          st.sampled_from([b"", b"p" * 64, b"x" * 300])), min_size=1, max_size=30),
       st.integers(0, MAX_TIME))
def test_the_column_answer_equals_the_general_answer(timers, now):
    s = State()
    ids = [f"t{i}" for i in range(len(timers))]
    r = s.create_plain(now, "acme", ids, array("q", [t[0] for t in timers]), bytes(t[1] for t in timers),
                       [t[2] for t in timers])
    assert type(r) is PlainCreateResult
    fast = plain_response(r)
    general = _create_response(type("R", (), {"items": r.items})())
    assert fast == general
    assert fast.SerializeToString(deterministic=True) == general.SerializeToString(deterministic=True)


# ---- the record -----------------------------------------------------------------------

def _specs(n, **kw):
    return tuple(TimerSpec(id=f"t{i}", fire_at=NOW + i, payload=b"p" * (i % 3), **kw) for i in range(n))


def test_create_timers_packs_plain_groups_only():
    plain = _specs(3, idempotency_key=None)
    keyed = tuple(TimerSpec(id=s.id, fire_at=s.fire_at, payload=s.payload, idempotency_key=s.id, ack_required=True)
                  for s in plain)
    cmd = c.create_timers(NOW, (plain, keyed))
    assert type(cmd) is c.CreatePlainTimers
    assert [g.specs() for g in cmd.groups] == [list(plain), list(keyed)]
    assert c.decode(c.encode(cmd)) == cmd
    for other in (_specs(2, name="n"), _specs(2, labels={"a": "b"}), _specs(2, action=b"x"),
                  _specs(2, idempotency_key="k"), _specs(2, every_ms=1000), _specs(2, ack_required=1),
                  (TimerSpec("a", NOW), TimerSpec("b", NOW, tenant="acme")),
                  (TimerSpec("a", True),), (TimerSpec("a", 2**64),), ()):
        assert type(c.create_timers(NOW, (plain, other))) is not c.CreatePlainTimers, other
    assert type(c.create_timers(NOW, (plain,), ("00-" + "1" * 32 + "-" + "2" * 16 + "-01",))) is c.CreateTimers


def test_the_plain_record_applies_like_the_general_one_on_every_replica():
    groups = (_specs(50, idempotency_key=None),
              tuple(TimerSpec(id=f"t{i}", fire_at=NOW + i, idempotency_key=f"t{i}") for i in range(40, 60)),
              tuple(TimerSpec(id=f"u{i}", fire_at=MAX_TIME + 1) for i in range(3)))      # refused as a group
    packed = c.encode(c.create_timers(NOW, groups))
    general = c.encode(c.CreateTimers(NOW, groups))
    assert c.decode(packed).KIND == 48 and len(packed) < len(general)
    fsms = [TimerFSM({}) for _ in range(3)]
    seen = [[] for _ in fsms]
    for f, s in zip(fsms, seen):
        f.event_listeners.append(s.extend)
    ref = TimerFSM({})
    ref_seen: list = []
    ref.event_listeners.append(ref_seen.extend)
    out = [f.apply(packed) for f in fsms]
    ref_out = ref.apply(general)
    for o, s, f in zip(out, seen, fsms):
        assert len(o) == 3 and type(o[0]) is PlainCreateResult
        assert isinstance(o[1], KernelError) and isinstance(o[2], KernelError)   # t40..49 exist: AlreadyExists
        assert [str(x) for x in o[1:]] == [str(x) for x in ref_out[1:]]
        assert list(o[0].items) == list(ref_out[0].items)
        assert s == ref_seen and len(s) == 100
        assert f.kernel.to_bytes() == ref.kernel.to_bytes()


@pytest.mark.parametrize("group, text", [
    ("x", "5 fields"),
    (["t", ["a"], b"\x00" * 7, b"\x00", [b""]], "differ in length"),
    (["t", ["a"], b"\x00" * 8, b"\x00\x00", [b""]], "differ in length"),
    (["t", ["a"], b"\x00" * 8, b"\x00", [b"", b""]], "differ in length"),
    (["t", "a", b"\x00" * 8, b"\x00", [b""]], "must be arrays"),
    (["t", ["a"], [1], b"\x00", [b""]], "binary"),
])
def test_malformed_plain_records_are_refused_identically(group, text):
    import msgpack
    data = c.FORMAT + msgpack.packb([48, 1, NOW, [group]], use_bin_type=True)
    results = [TimerFSM({}).apply(data) for _ in range(3)]
    assert all(isinstance(r, c.InvalidCommand) and text in str(r) for r in results), results


def test_bad_values_in_a_well_formed_record_are_the_kernels_typed_errors():
    bad = c.CreatePlainTimers(NOW, (PlainGroup("default", ["ok", "no way"], array("q", [NOW, NOW]), b"\x00\x00",
                                               [b"", b""]),
                                    PlainGroup("default", ["x"], array("q", [NOW]), b"\x08", [b""])))
    results = [TimerFSM({}).apply(c.encode(bad)) for _ in range(3)]
    for r in results:
        assert "specs[1].id" in str(r[0]) and "flags" in str(r[1])
    assert len({tuple(map(str, r)) for r in results}) == 1


def test_the_switch_keeps_the_general_record_for_a_rolling_upgrade(monkeypatch):
    monkeypatch.setattr(c, "PLAIN_CREATES", False)
    assert type(c.create_timers(NOW, (_specs(3),))) is c.CreateTimers
    monkeypatch.setattr(c, "PLAIN_CREATES", True)
    assert type(c.create_timers(NOW, (_specs(3),))) is c.CreatePlainTimers


# ---- the peer transport's frames -------------------------------------------------------

def test_peer_frames_decode_at_any_level_and_incompressible_ones_are_stored():
    import os
    import pickle
    import zlib

    from minoots.raft.pysyncobj_compat import _bounded_decompress, compress_frame, peer_loads

    for entry in (b"p" * 100_000, os.urandom(100_000), b"small"):
        msg = {"type": "append_entries", "entries": [(entry, 7, 1)]}
        frame = compress_frame(pickle.dumps(msg, 2))
        assert peer_loads(_bounded_decompress(frame, 1 << 20)) == msg
        assert zlib.decompress(frame) == pickle.dumps(msg, 2)          # what an older node does
    random_frame = compress_frame(pickle.dumps(os.urandom(100_000), 2))
    assert random_frame[:2] == b"\x78\x01"                              # stored (level 0)
    assert len(compress_frame(pickle.dumps(b"p" * 100_000, 2))) < 2_000


# ---- the leader's checks -----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["", "a", "bad id", "x" * 129]), st.sampled_from(["", "acme", "bad tenant"]),
       st.one_of(st.tuples(st.just("fire_at"), st.integers(-5, MAX_TIME + 5)),
                 st.tuples(st.just("delay"), st.integers(-5, 10**15))),
       st.sampled_from([b"", b"p" * 64, b"x" * (MAX_PAYLOAD_BYTES + 1)]), st.sampled_from(["", "k", "a"]),
       st.booleans(), st.sampled_from(["", "n"]),
       st.sampled_from([None, None, "labels", "every", "webhook", "after", "cron", "max_count", "action", "until",
                        "no deadline"]))
def test_the_checks_fast_path_equals_the_full_checks(tid, tenant, deadline, payload, key, ack, name, extra):
    from minoots.api import validation
    from minoots.v1 import timers_pb2 as pb

    spec = pb.TimerSpec(id=tid, tenant=tenant, payload=payload, idempotency_key=key, ack_required=ack, name=name)
    if extra == "labels":
        spec.labels["team"] = "x"
    elif extra == "every":
        spec.every.seconds = 60
    elif extra == "webhook":
        spec.webhook.url = "https://example.com/h"
    elif extra == "after":
        spec.after.append("parent")
    elif extra == "cron":
        spec.cron = "* * * * *"
    elif extra == "max_count":
        spec.max_count = 3
    elif extra == "action":
        spec.action = b"act"
    elif extra == "until":
        spec.until.seconds = 10**9
    kind, ms = deadline
    if extra == "no deadline":
        pass
    elif kind == "fire_at":
        spec.fire_at.seconds, spec.fire_at.nanos = divmod(ms, 1000)[0], divmod(ms, 1000)[1] * 1_000_000
    else:
        spec.delay.seconds, spec.delay.nanos = int(ms / 1000), int(ms - int(ms / 1000) * 1000) * 1_000_000
    now = NOW

    def run(fn):
        try:
            return fn("timers[3]", spec, now, lambda: "generated")
        except KernelError as exc:
            return type(exc), str(exc)
    assert run(validation.create_spec) == run(validation._checked_spec)


def test_a_batch_without_ids_gets_distinct_uuid4_ids():
    import uuid

    from minoots.api import validation
    from minoots.v1 import timers_pb2 as pb

    specs = [pb.TimerSpec(payload=b"p") for _ in range(300)] + [pb.TimerSpec(id="mine")]
    for s in specs:
        s.delay.seconds = 60
    out = validation.create_batch(specs, NOW)
    ids = [s.id for s in out]
    assert ids[-1] == "mine" and len(set(ids)) == 301
    assert all(uuid.UUID(hex=i).version == 4 and uuid.UUID(hex=i).hex == i for i in ids[:-1])
    assert {s.fire_at for s in out} == {NOW + 60_000}


def test_a_brief_answer_holds_the_ids_and_created_flags_of_either_result():
    from minoots.api.client import wire
    from minoots.api.plain_answer import brief_response

    s = State()
    r = s.create_plain(NOW, "acme", ["a", "b"], array("q", [NOW + 1, NOW + 2]), b"\x02\x02", [b"", b"p"])
    assert type(r) is PlainCreateResult
    assert wire.brief_results(brief_response(r), 2) == [("a", True), ("b", True)]
    general = s.create(NOW, [TimerSpec("b", NOW + 9, tenant="acme", idempotency_key="b"),
                             TimerSpec("c", NOW + 9, tenant="acme", name="x")])
    assert wire.brief_results(brief_response(general), 2) == [("b", False), ("c", True)]
    full = _create_response(general)                    # a server that predates `brief`
    assert wire.brief_results(full, 2) == [("b", False), ("c", True)]
    with pytest.raises(Exception, match="brief CreateTimers answer"):
        wire.brief_results(brief_response(r), 3)


def test_the_create_path_bench_runs_every_stage_through_the_column_record():
    from minoots.bench import create_path

    for mode in ("sdk", "delay"):
        r = create_path.run(rounds=1, mode=mode)
        assert r["record"] == 48 and r["entry_bytes"] > 64_000
        assert all(r[k] >= 0 for k in create_path.STAGES)


# Mutation testing (ops/mutation.py, seventh pass, issue 17): `_fast_ok` decides between the
# column path and the general one; a batch it wrongly lets through is applied unchecked, a
# batch it wrongly sends to the general path loses the column path's speed. Each case below
# names the mutants of kernel/plain.py it kills.

def _cols(ids, fire_at=None, flags=None, payloads=None):
    n = len(ids)
    return (ids, array("q", [NOW + 5] * n) if fire_at is None else fire_at,
            b"\x00" * n if flags is None else flags, [b""] * n if payloads is None else payloads)


@pytest.mark.parametrize("cols, field, rule", [
    # L101 (`return False` -> True): a repeat within the batch must reach the general path's check
    (_cols(["a", "a"]), "specs[1].id", None),
    # L88 (`1 <= n <= MAX_BATCH` with `and`): one timer over the bound is refused, not applied
    (_cols([f"n{i}" for i in range(MAX_BATCH + 1)]), "specs", None),
    # L98 (`or` -> `and`): a str payload in a list is refused by the general path
    (_cols(["a"], payloads=["text"]), "specs[0].payload", None),
    # L83: a flag outside FLAGS_PLAIN
    (_cols(["a"], flags=b"\x80"), "flags", "a plain timer's flags must be a subset of 3, got 128"),
    # L122: the columns' lengths differ
    (_cols(["a", "b"], fire_at=array("q", [NOW])), "specs",
     "the columns differ in length (2 ids, 1 deadlines, 2 flags, 2 payloads)"),
])
def test_a_batch_the_column_path_must_not_take_is_refused_by_field(cols, field, rule):
    s = State()
    s.create(NOW, [TimerSpec("keyed", NOW + 9, idempotency_key="k")])
    before = s.to_bytes()
    with pytest.raises((InvalidArgument, KernelError)) as err:
        s.create_plain(NOW, "default", *cols)
    assert getattr(err.value, "field", None) == field or str(err.value).startswith(field), err.value
    if rule is not None:
        assert err.value.rule == rule
    assert s.to_bytes() == before


def test_the_column_path_takes_the_largest_batch_and_lists_only():
    """L88 (`<= MAX_BATCH` -> `<`): a batch of exactly MAX_BATCH takes the column path; L92/L94
    (`or` -> `and`): ids as a tuple, deadlines as a list take the general path and give the
    same timers; L108 (`by_idem and` -> `or`): another timer's idempotency key does not push a
    batch off the column path; L118: a bad now_ms is named."""
    s = State()
    s.create(NOW, [TimerSpec("keyed", NOW + 9, idempotency_key="k")])
    ids = [f"n{i}" for i in range(MAX_BATCH)]
    r = s.create_plain(NOW, "default", *_cols(ids))
    assert type(r) is PlainCreateResult and len(r.items) == MAX_BATCH
    r = s.create_plain(NOW, "default", *_cols(["m1"]))
    assert type(r) is PlainCreateResult
    # L92 (the ids joined by "\n" only) and L94 (`> MAX_TIME` -> `>=`): the longest ids and the
    # last deadline allowed still take the column path
    longest = ["L" * MAX_ID_LEN, "M" * MAX_ID_LEN]
    r = s.create_plain(NOW, "default", *_cols(longest, fire_at=array("q", [MAX_TIME, NOW + 5])))
    assert type(r) is PlainCreateResult and s.get("default", longest[0]).fire_at == MAX_TIME
    r = s.create_plain(NOW, "default", ("t1", "t2"), array("q", [NOW + 5] * 2), b"\x00\x00", [b"", b""])
    assert type(r) is not PlainCreateResult and [i.timer.id for i in r.items] == ["t1", "t2"]
    r = s.create_plain(NOW, "default", ["l1"], [NOW + 5], b"\x00", [b""])
    assert type(r) is not PlainCreateResult and r.items[0].timer.fire_at == NOW + 5
    s.check_invariants()
    with pytest.raises(InvalidArgument) as err:
        s.create_plain(-1, "default", *_cols(["z"]))
    assert err.value.field == "now_ms"


def test_a_default_limit_alone_holds_on_the_column_path():
    """L128 (`default_limit is not None` -> `is None`): a default limit with no per-tenant
    ones is checked before the column path applies anything."""
    s = State()
    before = s.to_bytes()
    with pytest.raises(QuotaExceeded) as err:
        s.create_plain(NOW, "default", *_cols(["a", "b"]), None, TenantLimit(max_timers=1))
    assert (err.value.limit, err.value.quota, err.value.held, err.value.adding) == ("max_timers", 1, 0, 2)
    assert s.to_bytes() == before
    r = s.create_plain(NOW, "default", *_cols(["a"]), None, TenantLimit(max_timers=1))
    assert type(r) is PlainCreateResult and s.usage("default").timers == 1
