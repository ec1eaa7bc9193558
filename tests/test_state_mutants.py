"""Kernel behaviour that no test read until mutation testing (ops/mutation.py, issue 17)
found a mutant of it surviving: each test names the line and the mutants it kills."""
from __future__ import annotations

from minoots.kernel import EventKind, State, TimerSpec
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.retention import RetentionPolicy

T0 = 1_800_000_000_000
S = 1000
HOOK = Delivery(Webhook("http://x.test/h"), DeliveryPolicy(max_attempts=2))


def test_an_occurrence_timer_taking_a_freed_row_keeps_the_free_count_exact():
    """occurrences._spawn: `st._counts[0] -= nfree - len(t.free)` (each of its four mutants
    survived: no test spawned an occurrence timer into a freed row, then checked)."""
    s = State()
    s.retention = RetentionPolicy(default=0)
    s.create(T0, [TimerSpec("gone", T0 + 60 * S), TimerSpec("r", T0 + S, every_ms=S, delivery=HOOK,
                                                              overlap="allow_all")])
    s.cancel(T0, [("default", "gone")])             # retention 0: purged at once, its row is free
    rows = len(s._table)
    assert len(s._table.free) == 1
    ev = s.tick(T0 + S).events
    fid = ev[0].fire_id
    assert [(e.kind, e.timer_id) for e in ev] == [(EventKind.FIRED, "r"), (EventKind.DELIVERY_DUE, f"r@{fid}"),
                                                  (EventKind.ARMED, "r")]
    assert len(s._table.free) == 0 and len(s._table) == rows      # the occurrence took the freed row
    s.check_invariants()                            # counts[FREE] == the free heap's size
    assert State.from_bytes(s.to_bytes()) == s


def test_an_occurrence_timers_delivery_due_event_carries_its_revision_and_state():
    """occurrences._spawn: the `delivery_due` event's revision (2) is the new timer's; a
    watcher compares revisions to order what it sees (`2` -> `3` survived)."""
    s = State()
    s.create(T0, [TimerSpec("r", T0 + S, every_ms=S, delivery=HOOK, overlap="allow_all")])
    due = [e for e in s.tick(T0 + S).events if e.kind == EventKind.DELIVERY_DUE]
    assert len(due) == 1
    occ = s.get("default", due[0].timer_id)
    assert (due[0].revision, due[0].state, due[0].fire_at) == (occ.revision, occ.state, occ.fire_at)
    assert occ.revision == 2
