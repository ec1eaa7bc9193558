"""The replicated log's schema (raft/commands.py) and the FSM (raft/fsm.py).

Golden files in tests/data: `log_v0/` is a Raft log and a snapshot written by the
build before the schema existed (commands were pickled tuples; recorded with
log_v0/record_v0.py.txt), `commands_v1.bin` the same commands as this schema's
version-1 bytes. Both must replay to the digests recorded when they were written.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minoots.kernel import KernelError, TimerSpec
from minoots.raft import commands as c
from minoots.raft import snapshots
from minoots.raft.fsm import TimerFSM
from minoots.raft.pysyncobj_compat import peer_loads

from support import read_framed

DATA = Path(__file__).parent / "data"
REGULAR = b"\x00"   # PySyncObj's entry type for a replicated call


def v0_entries() -> list[tuple[int, int, bytes]]:
    d = (DATA / "log_v0" / "v0_log.bin").read_bytes()
    out, o = [], 0
    while o < len(d):
        idx, term, n = struct.unpack_from("<QQI", d, o)
        o += 20
        out.append((idx, term, d[o:o + n]))
        o += n
    return out


def v0_commands(upto: int | None = None, after: int = 0) -> list[tuple]:
    """The command tuples of the regular entries, decoded the way a node decodes them."""
    out = []
    for idx, _, entry in v0_entries():
        if entry[:1] == REGULAR and after < idx <= (upto or idx):
            func_id, args = peer_loads(entry[1:])[:2]
            assert func_id == 0          # the one replicated method, TimerMachine._apply
            out.append(args[0])
    return out


def v1_commands() -> list[bytes]:
    return read_framed(DATA / "commands_v1.bin")


EXPECTED = json.loads((DATA / "log_v0" / "v0_expected.json").read_text())


def digest(fsm: TimerFSM) -> str:
    return hashlib.sha256(fsm.kernel.to_bytes()).hexdigest()


def test_v0_log_replays_to_the_recorded_digests():
    fsm = TimerFSM({})
    mid = v0_commands(upto=EXPECTED["snapshot_last_index"])
    for cmd in mid:
        fsm.apply(cmd)
    assert digest(fsm) == EXPECTED["snapshot_digest"]
    for cmd in v0_commands(after=EXPECTED["snapshot_last_index"]):
        fsm.apply(cmd)
    assert digest(fsm) == EXPECTED["final_digest"]
    assert fsm.names == {}   # n9 was named, then removed
    assert fsm.grpc == {}    # n1 is not a member of this empty FSM: ignored, as on a replica


def test_v0_snapshot_restores_and_the_log_after_it_replays():
    meta, kernel = snapshots.decode((DATA / "log_v0" / "v0_snapshot.bin").read_bytes())
    assert meta.last_index == EXPECTED["snapshot_last_index"]
    fsm = TimerFSM({})
    fsm.restore(kernel, meta.names, meta.grpc)
    assert digest(fsm) == EXPECTED["snapshot_digest"]
    assert fsm.grpc == {"n1": "127.0.0.1:7201"}
    for cmd in v0_commands(after=meta.last_index):
        fsm.apply(cmd)
    assert digest(fsm) == EXPECTED["final_digest"]


def test_v1_bytes_are_stable_and_replay_to_the_same_digests():
    v0 = v0_commands()
    v1 = v1_commands()
    # Today's encoder writes exactly the checked-in version-1 bytes: a change to the
    # encoding is a new version, never a silent reinterpretation.
    assert [c.encode(c.from_legacy(t)) for t in v0] == v1
    fsm = TimerFSM({})
    results = [fsm.apply(b) for b in v1]
    assert digest(fsm) == EXPECTED["final_digest"]
    # The refusals of the original run are refusals again, with the same types.
    assert isinstance(results[0][1], KernelError)            # the t-bad group
    assert isinstance(results[-3], KernelError)              # ack of a missing timer


def test_results_are_identical_on_every_replica():
    replicas = [TimerFSM({"n1": "a"}) for _ in range(3)]
    outs = [[repr(r.apply(b)) for b in v1_commands()] for r in replicas]
    assert outs[0] == outs[1] == outs[2]
    assert len({digest(r) for r in replicas}) == 1


def _unknown(kind: int, version: int) -> bytes:
    return c.FORMAT + msgpack.packb([kind, version, 1, 2], use_bin_type=True)


@pytest.mark.parametrize("data, error, text", [
    (_unknown(c.Tick.KIND, 99), c.UnknownCommand, "tick version 99 is not known to this build (it reads version 1)"),
    (_unknown(77, 1), c.UnknownCommand, "kind 77 version 1 is not known"),
    (b"\x02" + msgpack.packb([2, 1, 5]), c.InvalidCommand, "unknown format byte"),
    (c.FORMAT + b"\xc1", c.InvalidCommand, "undecodable"),
    (c.FORMAT + msgpack.packb("tick"), c.InvalidCommand, "kind and version"),
    (c.FORMAT + msgpack.packb([2, 1]), c.InvalidCommand, "wrong number of fields"),
    (c.FORMAT + msgpack.packb([1, 1, 5, [[["x"]]], None]), c.InvalidCommand, "9 fields"),
    (c.FORMAT + msgpack.packb([3, 1, 5, [["t"]]]), c.InvalidCommand, "pairs"),
    (c.FORMAT + msgpack.packb([1, 1, 5, [], [None]]), c.InvalidCommand, "one entry per group"),
])
def test_bad_commands_are_refused_identically_and_change_nothing(data, error, text):
    replicas = [TimerFSM({}) for _ in range(3)]
    for r in replicas:
        r.apply(c.encode(c.CreateTimers(1, ((TimerSpec(id="a", fire_at=50),),))))
    before = digest(replicas[0])
    results = [r.apply(data) for r in replicas]
    for res in results:
        assert type(res) is error and text in str(res)
    assert len({str(r) for r in results}) == 1
    assert all(digest(r) == before for r in replicas)
    with pytest.raises(error):
        c.decode(data)


def test_apply_never_raises_and_listeners_cannot_stop_the_log():
    fsm = TimerFSM({})
    seen = []

    def broken(*args):
        raise RuntimeError("listener bug")

    fsm.event_listeners.extend([broken, lambda events: seen.append(len(events))])
    fsm.apply_listeners.append(broken)
    fsm.result_listeners.extend([broken, lambda cmd, res: seen.append(cmd.kind)])
    res = fsm.apply(c.encode(c.CreateTimers(1, ((TimerSpec(id="a", fire_at=50),),))))
    assert res[0].items[0].created
    assert seen == [2, "create"]      # created + armed events, then the result
    assert isinstance(fsm.apply(b"garbage"), c.InvalidCommand)
    assert isinstance(fsm.apply(("no-such-v0-kind", 1)), c.UnknownCommand)


TEXT = st.text(max_size=12)
SPECS = st.builds(
    TimerSpec, id=TEXT, fire_at=st.integers(-5, 2**53), tenant=TEXT, name=TEXT, payload=st.binary(max_size=20),
    labels=st.none() | st.dictionaries(TEXT, TEXT, max_size=3), action=st.binary(max_size=5),
    idempotency_key=st.none() | TEXT, ack_required=st.booleans())
RECORDS = st.one_of(
    st.builds(c.CreateTimers, st.integers(0, 2**62), st.lists(st.lists(SPECS, max_size=3).map(tuple),
                                                              max_size=3).map(tuple)),
    st.builds(c.Tick, st.integers(0, 2**62)),
    st.builds(c.CancelTimers, st.integers(0, 2**62), st.lists(st.tuples(TEXT, TEXT), max_size=3).map(tuple)),
    st.builds(c.RescheduleTimer, st.integers(0, 2**62), TEXT, TEXT, st.none() | st.integers(0, 2**60),
              st.none() | st.integers(0, 2**40)),
    st.builds(c.AckTimer, st.integers(0, 2**62), TEXT, TEXT, st.integers(0, 2**62)),
    st.builds(c.SetMemberName, TEXT, st.none() | TEXT),
    st.builds(c.SetMemberGrpc, TEXT, st.none() | TEXT),
)


def _normal(record):
    if isinstance(record, c.CreateTimers):
        groups = tuple(tuple(s if s.labels else TimerSpec(*[*c._spec_fields(s)[:5], None, *c._spec_fields(s)[6:]])
                             for s in g) for g in record.groups)
        return c.CreateTimers(record.now_ms, groups, record.traceparents)
    return record


@settings(max_examples=300, deadline=None)
@given(RECORDS)
def test_every_record_round_trips(record):
    assert c.decode(c.encode(record)) == _normal(record)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_escape_as_another_exception(data):
    try:
        c.decode(c.FORMAT + data)
    except (c.InvalidCommand, c.UnknownCommand):
        pass
