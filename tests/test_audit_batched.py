"""The audit ledger's batched layout (issue 15): one `timer.events` record per apply batch.

Golden files: tests/data/audit_per_event_v1.jsonl was written by the build before this
layout (dde6988) and must verify and read as before, and this build, set to the per-event
layout, must still write it byte for byte; tests/data/audit_batched_v1.jsonl pins the new
layout's bytes. Both hold the same facts. Verification catches a changed, dropped or
reordered event inside a batch, a reordered or dropped batch and a truncated chain; a
replayed log is not recorded twice; a ledger of the old layout goes on in the new one;
retention and checkpoints count facts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_golden import PRIVATE_KEY, PUBLIC_KEY, T0, Machine, golden_lines
from minoots.cli import main
from minoots.kernel import Event, EventKind, TimerSpec, TimerState
from minoots.raft import commands as c
from minoots.raft.audit import AuditLedger, VerifyError, parse_public_key, verify_lines
from minoots.raft.audit import chain, ledger as ledger_mod

DATA = Path(__file__).parent / "data"
PER_EVENT = DATA / "audit_per_event_v1.jsonl"
BATCHED = DATA / "audit_batched_v1.jsonl"
KEY = parse_public_key(PUBLIC_KEY)


def file_lines(path) -> list:
    return path.read_bytes().splitlines()


def facts_of(lines) -> list:
    """(kind, data) of every fact, in chain order, records of both layouts expanded."""
    out = []
    for x in lines:
        obj = json.loads(x)
        if obj["type"] == "record":
            out.extend(chain.facts(obj))
    return out


def open_ledger(tmp_path, **kw):
    return AuditLedger(tmp_path / "audit", "n1", key=chain.private_key_from_text(PRIVATE_KEY),
                       clock=lambda: T0, **kw)


def lines_of(ledger, from_seq=1) -> list:
    return [line for b in ledger.export(from_seq) for line in b]


def rewrite(lines, i, fn) -> list:
    out = list(lines)
    obj = json.loads(out[i])
    fn(obj)
    out[i] = chain.canonical(obj)
    return out


def batch_indexes(lines) -> list:
    return [i for i, x in enumerate(lines) if json.loads(x).get("kind") == chain.TIMER_EVENTS]


def fails(lines, text):
    with pytest.raises(VerifyError, match=text):
        verify_lines(lines, KEY)


# ---------------------------------------------------------------- golden files


def test_the_old_layouts_golden_file_verifies_and_reads_as_before():
    lines = file_lines(PER_EVENT)
    result = verify_lines(lines, KEY)
    assert (result.first_seq, result.last_seq, result.records, result.anchor) == (1, 27, 27, "genesis")
    assert result.kinds["timer.created"] == 6 and result.kinds["timer.fired"] == 4
    assert chain.TIMER_EVENTS not in result.kinds
    facts = facts_of(lines)
    # chain.facts reads a per-event record as itself: its kind and data unchanged
    assert facts == [(json.loads(x)["kind"], json.loads(x)["data"]) for x in lines
                     if json.loads(x)["type"] == "record"]
    assert ("timer.cancelled", {"at_ms": T0 + 41, "event_seq": 21, "fire_at": T0 + 500, "fire_id": None,
                                "revision": 3, "state": "cancelled", "tenant": "a", "timer_id": "p3"}) in facts


def test_this_build_writes_the_old_layout_byte_for_byte(tmp_path):
    assert golden_lines(tmp_path, False) == file_lines(PER_EVENT)


def test_the_batched_layouts_golden_bytes(tmp_path):
    lines = golden_lines(tmp_path, None)          # the default layout
    assert lines == file_lines(BATCHED)
    result = verify_lines(lines, KEY)
    assert (result.first_seq, result.last_seq, result.records) == (1, 13, 13)
    # applies of 4 events or more are one record; smaller ones (t3 created, t3 and p3 cancelled) one per event
    kinds = [json.loads(x)["kind"] for x in lines if json.loads(x)["type"] == "record"]
    assert kinds == ["ledger.opened", "token.created", "member.named"] + ["timer.events"] * 3 + [
        "timer.created", "timer.armed", "timer.cancelled", "timer.cancelled", "token.revoked", "token.refused",
        "request.denied"]


def test_both_layouts_hold_the_same_facts(runner):
    old, new = file_lines(PER_EVENT), file_lines(BATCHED)
    assert facts_of(old) == facts_of(new)
    assert len(facts_of(new)) == 27 and len([x for x in new if b'"type":"record"' in x]) == 13
    assert verify_lines(old, KEY).kinds == verify_lines(new, KEY).kinds
    # the CLI's --json counts facts by kind for either file
    outs = [json.loads(runner.invoke(main, ["audit", "verify", str(p), "--pubkey", PUBLIC_KEY, "--json"]).output)
            for p in (PER_EVENT, BATCHED)]
    assert outs[0]["kinds"] == outs[1]["kinds"] and outs[1]["kinds"]["timer.armed"] == 6
    assert (outs[0]["records"], outs[1]["records"]) == (27, 13)


# ---------------------------------------------------------------- tampering


def test_a_changed_event_inside_a_batch_is_caught():
    lines = file_lines(BATCHED)
    first = batch_indexes(lines)[0]
    # a timer id, a state, a seq, the count: each breaks the link to the next record
    fails(rewrite(lines, first, lambda o: o["data"]["timer_id"].__setitem__(1, "px")), "does not chain to record")
    fails(rewrite(lines, first, lambda o: o["data"]["state"]["cycle"].__setitem__(0, "fired")),
          "does not chain to record")
    fails(rewrite(lines, first, lambda o: o["data"].update(revision=[1, 2, 1, 2, 1, 2])), "does not chain to record")
    fails(rewrite(lines, first, lambda o: o["data"].update(event_seq=2)), "does not chain to record")
    # an event dropped from the batch, the columns kept consistent
    def drop_last(o):
        d = o["data"]
        d["count"] -= 1
        for k in chain.EVENT_FIELDS:
            if isinstance(d[k], list):
                d[k].pop()
    fails(rewrite(lines, first, drop_last), "does not chain to record")
    # two events of a batch swapped
    def swap(o):
        d = o["data"]
        for k in ("timer_id", "fire_at"):
            d[k][0], d[k][2] = d[k][2], d[k][0]
    fails(rewrite(lines, first, swap), "does not chain to record")
    # a batch at the end of the chain: the checkpoint right after it pins it
    i = next(i for i in batch_indexes(lines) if json.loads(lines[i + 1]).get("hash") == chain.digest(lines[i]))
    assert verify_lines(lines[:i + 2], KEY).last_seq == json.loads(lines[i])["seq"]
    fails(rewrite(lines[:i + 2], i, lambda o: o["data"].update(tenant="b")), "does not match record")


def test_reordered_dropped_and_truncated_batches_are_caught():
    lines = file_lines(BATCHED)
    a, b = batch_indexes(lines)[:2]
    swapped = list(lines)
    swapped[a], swapped[b] = swapped[b], swapped[a]
    fails(swapped, "is missing|out of order")
    fails(lines[:b] + lines[b + 1:], "is missing|out of place")
    fails(lines[:a] + [lines[a][: len(lines[a]) // 2]] + lines[a + 1:], "not a JSON object")
    cut = max(i for i, x in enumerate(lines) if json.loads(x)["type"] == "record")
    fails(lines[:cut + 1], "not covered by a signed checkpoint")
    fails(lines[a:], "without a signed checkpoint")


def test_a_malformed_batch_does_not_verify_even_when_signed():
    """Columns that do not line up cannot be read one event at a time: the verifier refuses them."""
    key = chain.private_key_from_text(PRIVATE_KEY)
    good = {"count": 2, "event_seq": 5, "kind": ["created", "armed"], "tenant": "a", "timer_id": "t",
            "at_ms": T0, "revision": [1, 2], "state": ["scheduled", "armed"], "fire_at": T0 + 5, "fire_id": None}
    bad = [dict(good, revision=[1]), dict(good, count=0), dict(good, event_seq=[6, 5]),
           {k: v for k, v in good.items() if k != "tenant"}, dict(good, kind=[1, 2]), dict(good, extra=1),
           dict(good, revision={"cycle": []}), dict(good, revision={"cycle": [1, 2, 3]}),
           dict(good, revision={"cycle": [1, 2], "x": 1}), dict(good, revision={"runs": [1, 2]})]

    def signed(data):
        rec = chain.make_record(1, chain.GENESIS, T0, "n1", chain.TIMER_EVENTS, data)
        return [rec, chain.make_checkpoint("n1", 1, chain.digest(rec), T0, "test", key)]
    assert verify_lines(signed(good), KEY).kinds == {"timer.created": 1, "timer.armed": 1}
    assert [d["event_seq"] for _, d in chain.timer_events(good)] == [5, 6]
    for data in bad:
        with pytest.raises(VerifyError, match="record 1: .*timer.events"):
            verify_lines(signed(data), KEY)


_EVENT = st.builds(lambda kind, state, tenant, tid, at, rev, fire_at, fire_id: (kind, tenant, tid, at, rev, state,
                                                                                  fire_at, fire_id),
                   st.sampled_from(list(EventKind)), st.sampled_from(list(TimerState)), st.sampled_from(["a", "b\u00e9"]),
                   st.sampled_from(["t1", "t2", "x\"y"]), st.integers(0, 2**62), st.integers(1, 3),
                   st.integers(0, 2**62), st.none() | st.integers(1, 2**63))


@settings(max_examples=300, deadline=None)
@given(first=st.integers(1, 2**40), gaps=st.lists(st.sampled_from([1, 1, 1, 2, 7]), min_size=0, max_size=30),
       rows=st.data())
def test_a_batch_reads_back_as_the_per_event_records(first, gaps, rows):
    """Whatever repeats or not, the columns (shortened or not) read back as exactly the data the
    per-event layout writes for each event, after the canonical JSON round trip."""
    seqs = [first]
    for g in gaps:
        seqs.append(seqs[-1] + g)
    pattern = rows.draw(st.lists(_EVENT, min_size=1, max_size=3))
    mode = rows.draw(st.sampled_from(["cycle", "random"]))
    body = [pattern[i % len(pattern)] for i in range(len(seqs))] if mode == "cycle" else \
        rows.draw(st.lists(_EVENT, min_size=len(seqs), max_size=len(seqs)))
    events = [Event(s, *b) for s, b in zip(seqs, body)]
    raw = chain.make_record(9, chain.GENESIS, T0, "n1", chain.TIMER_EVENTS, chain.timer_events_data(events))
    assert chain.timer_events_record(9, chain.GENESIS, T0, "n1", events) == raw     # the writer's fast path
    obj = json.loads(raw)
    assert chain.canonical(obj) == raw
    assert chain.facts(obj) == [(chain.timer_event_kind(e), chain.timer_event_data(e)) for e in events]


# ---------------------------------------------------------------- the writer


def create(m, n0, n, now, tenant="a"):
    return m.apply(c.create_timers(now, (tuple(TimerSpec(id=f"t{i}", fire_at=now + 10_000, tenant=tenant)
                                               for i in range(n0, n0 + n)),)))


def test_a_replayed_log_is_not_recorded_twice_in_batches(tmp_path):
    m = Machine()
    ledger = open_ledger(tmp_path)
    ledger.attach(m)
    create(m, 0, 3, T0)
    create(m, 3, 2, T0 + 1)
    ledger.close()
    # After a restart the log after the snapshot applies again: the same event seqs.
    m2 = Machine()
    again = open_ledger(tmp_path)
    again.attach(m2)
    try:
        create(m2, 0, 3, T0)
        create(m2, 3, 2, T0 + 1)
        create(m2, 5, 1, T0 + 2)                  # new: recorded
        # a hand-off that straddles the watermark: only the events above it are recorded
        events = list(m2.fsm.kernel.tick(T0 + 20_000).events)
        assert len(events) == 12
        again._on_events(events[:4])
        again._on_events(events)
        lines = lines_of(again)
        facts = facts_of(lines)
        seqs = [d["event_seq"] for k, d in facts if k.startswith("timer.")]
        assert seqs == list(range(1, 13 + 12))    # each event once, in order
        assert [k for k, _ in facts].count("timer.created") == 6
        assert verify_lines(lines, KEY).kinds["timer.fired"] == 6
    finally:
        again.close()


def test_an_apply_bigger_than_a_record_takes_several(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_mod, "EVENTS_PER_RECORD", 4)
    m = Machine()
    ledger = open_ledger(tmp_path)
    ledger.attach(m)
    try:
        create(m, 0, 5, T0)
        lines = lines_of(ledger)
        batches = [json.loads(lines[i])["data"] for i in batch_indexes(lines)]
        assert [b["count"] for b in batches] == [4, 4, 2]
        assert [b["event_seq"] for b in batches] == [1, 5, 9]
        assert [d["timer_id"] for _, d in facts_of(lines)[1:]] == [f"t{i // 2}" for i in range(10)]
        verify_lines(lines, KEY)
    finally:
        ledger.close()


def test_an_old_layout_ledger_goes_on_in_batches_and_trims_by_facts(tmp_path):
    """Written per event by an older node, then continued in batches: one chain that verifies,
    every fact once; retention then counts facts across both layouts."""
    m = Machine()
    old = open_ledger(tmp_path, batch_events=False, checkpoint_every=10, keep=10_000)
    old.attach(m)
    for n in range(10):
        create(m, n, 1, T0 + n)
    old.close()
    m2 = Machine()
    for n in range(10):
        create(m2, n, 1, T0 + n)
    keep = 60
    new = open_ledger(tmp_path, checkpoint_every=10, keep=keep)
    new.attach(m2)
    try:
        lines = lines_of(new)                     # nothing trimmed yet: 2 + 20 + 1 facts
        kinds = [json.loads(x).get("kind") for x in lines]
        assert "timer.created" in kinds and "timer.events" not in kinds
        for n in range(10, 40):
            create(m2, 3 * n, 3, T0 + n)          # 6 events each: one record each
        new.checkpoint_now()
        new.checkpoint_now()                      # the pass after the first one trimmed
        lines = lines_of(new)
        result = verify_lines(lines, KEY)
        assert result.anchor.startswith("checkpoint ")
        facts = facts_of(lines)
        # at least `keep` facts stay; at most one checkpoint interval and one record more
        assert keep <= len(facts) <= keep + 10 + 6, len(facts)
        seqs = [d["event_seq"] for k, d in facts if k.startswith("timer.")]
        assert seqs == list(range(seqs[0], 20 + 180 + 1))
    finally:
        new.close()
    # Reopened, the fact count and the anchor carry on.
    again = open_ledger(tmp_path, checkpoint_every=10, keep=keep)
    try:
        assert again._extra == new._extra and again.head_seq == new.head_seq
        m3 = Machine()
        again.attach(m3)
        for n in range(40):
            create(m3, 3 * n if n >= 10 else n, 3 if n >= 10 else 1, T0 + n)     # replayed: nothing new
        create(m3, 1000, 3, T0 + 100)
        again.checkpoint_now()
        again.checkpoint_now()
        lines = lines_of(again)
        verify_lines(lines, KEY)
        assert keep <= len(facts_of(lines)) <= keep + 10 + 6
        assert [d["timer_id"] for k, d in facts_of(lines) if k == "timer.created"][-3:] == ["t1000", "t1001", "t1002"]
    finally:
        again.close()


def test_checkpoints_count_facts_not_records(tmp_path):
    m = Machine()
    ledger = open_ledger(tmp_path, checkpoint_every=10)
    ledger.attach(m)
    try:
        for n in range(6):
            create(m, 3 * n, 3, T0 + n)           # 6 facts a record
        lines = lines_of(ledger)
        every = [json.loads(x)["seq"] for x in lines if json.loads(x).get("reason") == "every"]
        # ledger.opened (1) + 6 + 6 = 13 >= 10 at record 3, then 12 at 5, 12 at 7
        assert every == [3, 5, 7]
    finally:
        ledger.close()


def test_cli_facts_reads_a_timers_history_from_either_layout(runner, tmp_path):
    outs = []
    for path in (PER_EVENT, BATCHED):
        r = runner.invoke(main, ["audit", "facts", str(path), "--timer", "p1"])
        assert r.exit_code == 0, r.output
        outs.append([json.loads(x) for x in r.output.splitlines()])
    assert [(x["kind"], x["data"]) for x in outs[0]] == [(x["kind"], x["data"]) for x in outs[1]]
    assert [x["kind"] for x in outs[1]] == ["timer.created", "timer.armed", "timer.fired", "timer.settled"]
    assert [x["seq"] for x in outs[1]] == [4, 4, 6, 6]          # the records that hold them
    r = runner.invoke(main, ["audit", "facts", str(BATCHED), "--kind", "token.created"])
    assert [json.loads(x)["data"]["id"] for x in r.output.splitlines()] == ["0123456789abcdef"]
    # a malformed batch: one line, exit 1
    lines = file_lines(BATCHED)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(rewrite(lines, batch_indexes(lines)[0], lambda o: o["data"].update(count=99))))
    r = runner.invoke(main, ["audit", "facts", str(bad)])
    assert r.exit_code == 1 and "line 5" in r.output and "Traceback" not in r.output


@pytest.mark.bench
def test_bench_audit_prints_both_layouts(runner):
    r = runner.invoke(main, ["bench", "audit", "--timers", "2000", "--batch", "1000", "--repeat", "1"])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.output.splitlines()[2:]}
    assert set(rows) == {"per-event", "batched"}
    assert rows["per-event"][1:3] == ["4,000", "4,000"]          # events, records
    assert rows["batched"][1:3] == ["4,000", "2"]                # one record per 1,000-timer apply
    assert int(rows["batched"][5]) < int(rows["per-event"][5])   # bytes per event on disk
