"""raft/ticker.py's Ticker with an injected clock and a fake machine.

The ticker's decisions are in `_step()` (propose or not, and how long to sleep) and
`_done()` (the commit callback); these tests drive them directly against a fake
clock, so "the wheel's next deadline is due" is a fact about numbers, never about
the wall clock. One test runs the real thread loop to show the wake-ups are wired;
it waits on events (bounded against hangs) and asserts nothing about time.
"""
from __future__ import annotations

import bisect
import logging
import subprocess
import sys
import threading

import pytest

from minoots.raft import commands, ticker as ticker_mod
from minoots.raft.pysyncobj_compat import FAIL_REASON
from minoots.raft.ticker import IDLE_WAIT, IN_FLIGHT_LIMIT, Ticker


class FakeClock:
    """The Clock interface (raft/clock.py) on numbers the test sets."""

    def __init__(self, now_ms: int = 1_000_000, mono: float = 100.0):
        self.ms = now_ms
        self.mono = mono

    def now_ms(self) -> int:
        return self.ms

    def seconds_until(self, deadline_ms: int) -> float:
        return (deadline_ms - self.ms) / 1000.0

    def monotonic(self) -> float:
        return self.mono


class FakeMachine:
    """What the ticker uses of raft.machine: leadership, the wheel's next deadline,
    propose with a callback. Applying a Tick fires every deadline <= its time."""

    def __init__(self, deadlines=(), leader=True):
        self.deadlines = sorted(deadlines)
        self.leader = leader
        self.storage_full = None
        self.leader_listeners = []
        self.apply_listeners = []
        self.proposals = []          # (command, callback)
        self.proposed_event = threading.Event()

    def is_leader(self) -> bool:
        return self.leader

    def next_deadline(self):
        return self.deadlines[0] if self.deadlines else None

    def propose(self, command, callback):
        self.proposals.append((command, callback))
        self.proposed_event.set()

    def commit(self, n: int, err=FAIL_REASON.SUCCESS):
        """Apply proposal n (a Tick) and call its callback, as PySyncObj would."""
        command, callback = self.proposals[n]
        if err == FAIL_REASON.SUCCESS:
            del self.deadlines[:bisect.bisect_right(self.deadlines, command.now_ms)]
        callback(None, err)


def make(deadlines=(), leader=True, now_ms=1_000_000):
    clock = FakeClock(now_ms)
    machine = FakeMachine(deadlines, leader)
    return Ticker(machine, clock), machine, clock


def ticks(machine) -> list[int]:
    return [c.now_ms for c, _ in machine.proposals]


def test_idle_cluster_proposes_nothing():
    t, machine, clock = make()
    for _ in range(5):
        assert t._step() == IDLE_WAIT
        clock.ms += 60_000
    assert machine.proposals == [] and t.proposed == 0


def test_a_follower_proposes_nothing_even_with_deadlines_due():
    t, machine, _ = make([999_995], leader=False)
    assert t._step() == IDLE_WAIT
    assert machine.proposals == []


def test_sleeps_until_the_exact_next_deadline_not_a_poll_period():
    t, machine, clock = make([1_000_250])
    assert t._step() == pytest.approx(0.25)
    clock.ms = 1_000_249
    assert t._step() == pytest.approx(0.001)
    assert machine.proposals == []
    # Far deadlines: re-check at least every IDLE_WAIT (leadership, clock steps).
    t2, machine2, _ = make([1_000_000 + 3_600_000])
    assert t2._step() == IDLE_WAIT and machine2.proposals == []


def test_proposes_a_tick_when_the_deadline_is_due_stamped_with_the_clock():
    t, machine, clock = make([1_000_250])
    clock.ms = 1_000_250                       # exactly due: inclusive
    assert t._step() == IN_FLIGHT_LIMIT
    [(command, _)] = machine.proposals
    assert isinstance(command, commands.Tick) and command.now_ms == 1_000_250
    assert t.proposed == 1 and t.committed == 0


def test_the_tick_carries_now_not_the_deadline():
    t, machine, clock = make([1_000_100])
    clock.ms = 1_007_000                       # the leader noticed late (e.g. after an election)
    t._step()
    assert ticks(machine) == [1_007_000]


def test_never_two_ticks_in_flight():
    t, machine, clock = make([1_000_000, 1_000_500, 1_001_000])
    t._step()
    for _ in range(5):                         # more comes due; the first tick has not committed
        clock.ms += 400
        clock.mono += IN_FLIGHT_LIMIT / 10
        assert t._step() == IN_FLIGHT_LIMIT
    assert len(machine.proposals) == 1
    machine.commit(0)
    assert t.committed == 1
    t._step()                                  # after the commit it looks again at once
    assert ticks(machine) == [1_000_000, 1_002_000]
    machine.commit(1)
    assert (t.proposed, t.committed) == (2, 2)


def test_coalesces_everything_due_into_one_tick():
    t, machine, clock = make([1_000_100, 1_000_150, 1_000_200, 1_000_900])
    clock.ms = 1_000_250
    t._step()
    machine.commit(0)
    assert machine.deadlines == [1_000_900]
    assert t._step() == pytest.approx(0.65)    # next: sleep until 900, no second tick
    assert ticks(machine) == [1_000_250]


def test_lost_callback_gives_up_after_the_in_flight_limit_and_ignores_the_stale_one():
    t, machine, clock = make([1_000_000])
    t._step()
    clock.mono += IN_FLIGHT_LIMIT - 0.001
    t._step()
    assert len(machine.proposals) == 1         # not yet
    clock.mono += 0.001
    clock.ms += 10
    t._step()                                  # at the limit: propose again
    assert ticks(machine) == [1_000_000, 1_000_010]
    machine.proposals[0][1](None, FAIL_REASON.SUCCESS)   # the lost one turns up late
    assert t._step() == IN_FLIGHT_LIMIT        # the second is still in flight
    assert len(machine.proposals) == 2


def test_a_failed_tick_is_not_counted_and_is_proposed_again():
    t, machine, clock = make([1_000_000])
    t._step()
    machine.commit(0, err=FAIL_REASON.NOT_LEADER)
    assert (t.proposed, t.committed) == (1, 0)
    assert machine.deadlines == [1_000_000]   # nothing applied
    t._step()
    assert len(machine.proposals) == 2 and t.proposed == 2


def test_full_storage_proposes_nothing():
    t, machine, _ = make([1_000_000])
    machine.storage_full = "journal full"
    assert t._step() == IDLE_WAIT
    assert machine.proposals == []


def test_wakes_on_leadership_and_on_creates_and_reschedules_only():
    t, machine, _ = make()
    assert machine.leader_listeners == [t._on_leadership] and machine.apply_listeners == [t._on_apply]
    for kind, wakes in [("tick", False), ("cancel", False), ("ack", False), ("create", True), ("reschedule", True)]:
        t._wake.clear()
        t._on_apply(kind)
        assert t._wake.is_set() == wakes, kind
    t._wake.clear()
    t._on_leadership(True)
    assert t._wake.is_set()


def test_the_thread_loop_proposes_on_wake_and_looks_again_after_a_commit(monkeypatch):
    # The loop's sleeps are real waits on an Event; make the idle one short so a bug
    # shows as a failure, not a hang. Nothing below measures time.
    monkeypatch.setattr(ticker_mod, "IDLE_WAIT", 0.05)
    t, machine, clock = make(leader=False)
    t.start()
    try:
        machine.deadlines = [999_000, 1_000_000]
        machine.leader = True
        for listener in machine.leader_listeners:
            listener(True)
        assert machine.proposed_event.wait(30), "no tick after becoming leader with timers due"
        machine.proposed_event.clear()
        clock.ms = 1_000_500
        machine.deadlines.append(1_000_400)    # due by the time the first tick commits
        machine.commit(0)
        assert machine.proposed_event.wait(30), "no tick after the commit"
        assert ticks(machine) == [1_000_000, 1_000_500]
    finally:
        t.stop()
    assert not t._thread.is_alive()


def test_a_fresh_ticker_proposes_at_once_whatever_the_monotonic_clock_reads():
    # Nothing is in flight before the first proposal, even on a host whose monotonic
    # clock is still below IN_FLIGHT_LIMIT (just booted).
    clock = FakeClock(mono=IN_FLIGHT_LIMIT / 4)
    machine = FakeMachine([999_000])
    t = Ticker(machine, clock)
    assert t._step() == IN_FLIGHT_LIMIT
    assert ticks(machine) == [1_000_000]


def test_a_lost_callback_is_reported_once_not_on_every_later_look(caplog):
    t, machine, clock = make([1_000_000])
    t._step()
    machine.deadlines.clear()                  # the tick applied; only its callback was lost
    clock.mono += IN_FLIGHT_LIMIT
    with caplog.at_level(logging.WARNING, logger="minoots.raft.ticker"):
        for _ in range(4):
            assert t._step() == IDLE_WAIT      # gave up waiting; nothing is due
            clock.mono += IN_FLIGHT_LIMIT
    lost = [r for r in caplog.records if "callback lost" in r.getMessage()]
    assert len(lost) == 1
    assert len(machine.proposals) == 1


class RecordingWake:
    """Stands in for the loop's wake Event: records every wait instead of sleeping."""

    def __init__(self):
        self.waits = []

    def clear(self):
        pass

    def set(self):
        pass

    def wait(self, timeout):
        self.waits.append(timeout)
        return False


def test_the_loop_sleeps_exactly_as_long_as_each_step_decides_and_survives_a_failing_step():
    t, machine, _ = make()
    t._wake = RecordingWake()
    decisions = iter([0.25, IDLE_WAIT, RuntimeError("kernel hiccup"), 0.001, "stop"])

    def step():
        d = next(decisions)
        if isinstance(d, Exception):
            raise d
        if d == "stop":
            t._stop.set()
            return 0.5
        return d

    t._step = step
    t._run()                                   # returns once a step sets stop
    # A failing step is logged and retried after IDLE_WAIT; the loop does not die.
    assert t._wake.waits == [0.25, IDLE_WAIT, IDLE_WAIT, 0.001, 0.5]


class FakeLinks:
    def __init__(self, links):
        self.links = links
        self.calls = []

    def links_for(self, events):
        self.calls.append(list(events))
        return self.links


class TickResult:
    def __init__(self, now_ms, fired, events):
        self.now_ms, self.fired, self.events = now_ms, fired, events


@pytest.fixture
def spans():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from minoots.raft import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


def _link(n):
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    return Link(SpanContext(trace_id=n, span_id=n, is_remote=True, trace_flags=TraceFlags(1)))


def test_a_committed_tick_that_fired_timers_records_a_span_linked_to_the_creates(spans):
    links = FakeLinks([_link(7), _link(8)])
    clock, machine = FakeClock(), FakeMachine([1_000_000])
    t = Ticker(machine, clock, links)
    t._step()
    (_, callback), = machine.proposals
    callback(TickResult(1_000_000, fired=["a", "b"], events=["ev1", "ev2"]), FAIL_REASON.SUCCESS)
    (span,) = spans.get_finished_spans()
    assert span.name == "raft.tick"
    assert dict(span.attributes) == {"minoots.fired": 2, "minoots.tick_ms": 1_000_000}
    assert [l.context.span_id for l in span.links] == [7, 8]
    assert links.calls == [["ev1", "ev2"]]
    assert span.start_time > 0


def test_no_tick_span_without_fires_or_without_a_commit(spans):
    links = FakeLinks([_link(7)])
    t, machine, clock = make([1_000_000, 1_000_100, 1_000_200])
    t._links = links
    t._step()
    machine.proposals[0][1](TickResult(1_000_000, fired=[], events=["created"]), FAIL_REASON.SUCCESS)
    clock.ms = 1_000_100
    t._step()
    machine.proposals[1][1](TickResult(1_000_100, fired=[], events=[]), FAIL_REASON.SUCCESS)
    clock.ms = 1_000_200
    t._step()
    machine.proposals[2][1](TickResult(1_000_200, fired=["x"], events=["ev"]), FAIL_REASON.NOT_LEADER)
    assert spans.get_finished_spans() == ()
    assert links.calls == []


def test_without_tracing_a_tick_does_no_link_work():
    from minoots.raft import tracing

    assert not tracing.enabled()
    links = FakeLinks([])
    t, machine, _ = make([1_000_000])
    t._links = links
    t._step()
    machine.proposals[0][1](TickResult(1_000_000, fired=["x"], events=["ev"]), FAIL_REASON.SUCCESS)
    assert t.committed == 1 and links.calls == []


def test_the_ticker_thread_never_keeps_a_process_alive():
    # Documented: it runs in a daemon thread, so a process that exits without stop()
    # (a node's fatal path) is not held up by it.
    code = (
        "import threading\n"
        "from minoots.raft.ticker import Ticker\n"
        "class M:\n"
        "    storage_full = None\n"
        "    def __init__(self): self.leader_listeners, self.apply_listeners = [], []\n"
        "    def is_leader(self): return False\n"
        "class C:\n"
        "    pass\n"
        "t = Ticker(M(), C()); t.start(); assert t._thread.is_alive()\n"
        "print('exiting')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=45)
    assert out.returncode == 0 and out.stdout == "exiting\n", out.stderr
