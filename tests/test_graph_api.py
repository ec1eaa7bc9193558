"""The wire side of graphs and bulk operations (api/graphs.py, api/validation.py): requests
checked into kernel arguments, typed errors naming the request's fields, Timer messages."""
from __future__ import annotations

import pytest

from minoots.api import convert, graphs, validation
from minoots.kernel import InvalidArgument, State, TimerSpec
from minoots.kernel.graph import GraphSpec
from minoots.v1 import timers_pb2 as pb

NOW = 1_000_000


def spec(**kw) -> pb.TimerSpec:
    s = pb.TimerSpec(id=kw.pop("id", "c"), **{k: v for k, v in kw.items() if k not in ("delay_ms", "steps")})
    if "delay_ms" in kw:
        s.after_delay.FromMilliseconds(kw["delay_ms"])
    for after_ms, action in kw.get("steps", ()):
        st = s.escalate.add(action=action)
        st.after.FromMilliseconds(after_ms)
    return s


def test_a_dependent_spec_needs_no_deadline_and_becomes_a_graph_spec():
    got = validation.create_spec("timer", spec(after=["a", "b"], on="fired", mode="any", delay_ms=10_000,
                                               on_parent_cancel="release"), NOW)
    assert got.fire_at == 0 and got.graph == GraphSpec(("a", "b"), "fired", "any", 10_000, "release", ())
    with pytest.raises(InvalidArgument, match="deadline"):
        validation.create_spec("timer", spec(), NOW)              # no parents: a deadline is required


def test_a_recurring_child_is_accepted():
    got = validation.create_spec("timer", spec(after=["a"], every={"seconds": 5}), NOW)
    assert got.every_ms == 5000 and got.graph.after == ("a",)


@pytest.mark.parametrize("kw, field", [
    (dict(after=["a"], on="done"), "timer.on"),
    (dict(after=["a"], mode="most"), "timer.mode"),
    (dict(after=[f"p{i}" for i in range(17)]), "timer.after"),
    (dict(after=["a"], delay_ms=-5), "timer.after_delay"),
    (dict(on="fired", delay={"seconds": 1}), "timer.after"),    # a condition without parents
    (dict(after=["a"], steps=[(1000, b"x")]), "timer.escalate"),  # a ladder needs ack_required
    (dict(ack_required=True, delay={"seconds": 1}, every={"seconds": 5}, steps=[(1000, b"x")]),
     "timer.escalate"),                                         # no ladder on a recurring timer
])
def test_bad_graph_fields_name_the_request_field(kw, field):
    with pytest.raises(InvalidArgument) as e:
        validation.create_spec("timer", spec(**kw), NOW)
    assert e.value.field.startswith(field), e.value.field


def test_the_timer_message_carries_the_graph():
    s = State()
    s.create(NOW, [TimerSpec("a", NOW + 10, ack_required=True, graph=GraphSpec(escalate=((500, b"page"),))),
                   TimerSpec("b", 0, graph=GraphSpec(("a",), "settled", "all", 2000, "release"))])
    a, b = convert.timer_to_pb(s.get("default", "a")), convert.timer_to_pb(s.get("default", "b"))
    assert list(a.children) == ["b"] and [(x.after.ToMilliseconds(), x.action) for x in a.escalate] == [(500, b"page")]
    assert (list(b.after), b.on, b.mode, b.on_parent_cancel, b.after_delay.ToMilliseconds(), list(b.waiting_on),
            b.dependency) == (["a"], "settled", "all", "release", 2000, ["a"], "waiting")


@pytest.mark.parametrize("req, field", [
    (pb.CancelTimersRequest(), "ids"),                                               # neither
    (pb.CancelTimersRequest(ids=["a"], label_selector="k=v"), "ids"),               # both
    (pb.CancelTimersRequest(ids=["a", "a"]), "ids"),
    (pb.CancelTimersRequest(ids=["bad id"]), "ids[0]"),
    (pb.CancelTimersRequest(ids=["a"], page_token="x"), "page_token"),
    (pb.CancelTimersRequest(label_selector="k"), "label_selector"),
    (pb.CancelTimersRequest(label_selector="k=v", page_size=1001), "page_size"),
    (pb.CancelTimersRequest(label_selector="k=v", page_token="!!"), "page_token"),
    (pb.CancelTimersRequest(ids=[f"t{i}" for i in range(1001)]), "ids"),
])
def test_bad_bulk_requests_are_typed_errors(req, field):
    with pytest.raises(InvalidArgument) as e:
        graphs.bulk_query(req, validation._tenant, validation._label_selector, validation._decode_page_token)
    assert e.value.field == field


def test_bulk_query_and_change():
    q = graphs.bulk_query(pb.CancelTimersRequest(tenant="t", label_selector="b=2,a=1"), validation._tenant,
                          validation._label_selector, validation._decode_page_token)
    assert (q.tenant, q.ids, q.labels, q.page_size, q.start) == ("t", (), (("a", "1"), ("b", "2")), 1000, 0)
    r = pb.RescheduleTimersRequest(ids=["a"])
    with pytest.raises(InvalidArgument, match="exactly one"):
        graphs.bulk_change(r, NOW)
    r.delay.FromMilliseconds(600_000)
    assert graphs.bulk_change(r, NOW) == (NOW + 600_000, None)
    r.extend_by.FromMilliseconds(-5)
    assert graphs.bulk_change(r, NOW) == (None, -5)
