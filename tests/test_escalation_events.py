"""Escalated events carry their ladder step and its action (kernel/graph.py) through the event
store (api/events.py stored-event format 2, flagged in the kind byte; format 1 events, stored
before it existed, read as they did), the wire (Event.escalation_step, Event.action), the
SDK's Event and the CLI's watch line."""
from __future__ import annotations

import struct

from minoots.api.convert import event_fields_to_pb, event_to_pb
from minoots.api.client.wire import event_from_pb
from minoots.api.events import _VAL, pack_event, unpack_event
from minoots.kernel import EventKind, State, TimerSpec, TimerState
from minoots.kernel.graph import GraphSpec
from minoots.kernel.timer import Event

T0 = 1_800_000_000_000


def ladder_events() -> list:
    s = State()
    s.create(T0, [TimerSpec("x", T0 + 100, ack_required=True,
                            graph=GraphSpec(escalate=((1000, b"page"), (5000, b"\xffcall"))))])
    s.tick(T0 + 100)
    return list(s.tick(T0 + 1100).events) + list(s.tick(T0 + 5100).events)


def test_each_escalated_event_names_its_step_and_action():
    esc = ladder_events()
    assert [(e.kind, e.step, e.action) for e in esc] == [(EventKind.ESCALATED, 1, b"page"),
                                                          (EventKind.ESCALATED, 2, b"\xffcall")]


def test_the_event_store_keeps_step_and_action_and_reads_old_events_as_before():
    for e in ladder_events():
        raw = pack_event(e)
        assert raw[0] & 0x80                              # format 2
        got = unpack_event(e.seq, raw)
        assert got == (e.seq, int(e.kind), e.tenant, e.timer_id, e.at_ms, e.revision, int(e.state), e.fire_at,
                       e.fire_id, e.step, e.action)
    plain = Event(7, EventKind.FIRED, "default", "a:b", T0, 3, TimerState.FIRED, T0, 7)
    old = _VAL.pack(3, 3, 3, T0, T0, 7, 7) + b"default" + b"a:b"     # as every earlier build stored it
    assert pack_event(plain) == old
    assert unpack_event(7, old) == (7, 3, "default", "a:b", T0, 3, 3, T0, 7, 0, b"")
    assert struct.unpack_from(">B", old)[0] == 3


def test_the_wire_the_sdk_and_the_cli_show_step_and_action():
    from minoots.cli.timer import _event_line
    e = ladder_events()[1]
    pb = event_to_pb(e)
    assert (pb.escalation_step, pb.action) == (2, b"\xffcall")
    assert event_fields_to_pb(*unpack_event(e.seq, pack_event(e))) == pb
    ev = event_from_pb(pb)
    assert (ev.escalation_step, ev.action) == (2, b"\xffcall")
    d = ev.to_dict()
    assert d["escalation_step"] == 2 and d["action"] == "base64:/2NhbGw="
    assert "step=2" in _event_line(ev)
    plain = event_from_pb(event_to_pb(Event(7, EventKind.FIRED, "default", "a", T0, 3, TimerState.FIRED, T0, 7)))
    assert plain.escalation_step == 0 and "escalation_step" not in plain.to_dict()
