"""Kernel: the delivery lifecycle of a webhook timer (kernel/delivery.py, State.delivery_attempt,
State.redrive). FIRED -> DELIVERING -> SETTLED | DEAD_LETTERED, retries waiting in the wheel at
the time the leader proposed, every outcome a fact, stale outcomes refused without a change."""
from __future__ import annotations

import struct

import pytest

from minoots.kernel import (EventKind, FailedPrecondition, InvalidArgument, SnapshotError, State, TimerSpec,
                            TimerState)
from minoots.kernel.delivery import Delivery, DeliveryPolicy, Webhook
from minoots.kernel.snapshot import VERSION, VERSION_DELIVERY

URL = "http://127.0.0.1:9/hook"


def hook(max_attempts=3, **kw) -> Delivery:
    return Delivery(Webhook(URL, (("X-Team", "ops"),)), DeliveryPolicy(max_attempts=max_attempts, **kw))


def fired(max_attempts=3) -> tuple[State, int]:
    s = State()
    s.create(10, [TimerSpec("w", 100, delivery=hook(max_attempts)), TimerSpec("plain", 100)])
    s.tick(100)
    return s, s.get("default", "w").fire_id


def kinds(events) -> list[str]:
    return [e.kind.name for e in events]


def test_a_webhook_timer_fires_into_delivering_with_attempt_one_due():
    s = State()
    res = s.create(10, [TimerSpec("w", 100, delivery=hook())])
    t = res.items[0].timer
    assert t.delivery.webhook.headers == (("x-team", "ops"),)      # names normalised, sorted
    tick = s.tick(100)
    assert kinds(tick.events) == ["FIRED", "DELIVERY_DUE"]
    assert [t.id for t in tick.fired] == ["w"]
    t = s.get("default", "w")
    assert t.state == TimerState.DELIVERING and t.fire_id == tick.events[0].seq
    assert s.deliveries_due() == [("default", "w")]
    assert s.delivery_due("default", "w")[1] == 1
    assert s.next_deadline() is None       # nothing waits in the wheel: the attempt is due now
    assert s.counts()[TimerState.DELIVERING] == 1 and s.usage("default").timers == 1
    s.check_invariants()


def test_a_failed_attempt_puts_the_leaders_retry_time_in_the_wheel():
    s, fid = fired()
    res = s.delivery_attempt(120, "default", "w", fid, 1, 503, 41, "http_status", b"busy", 5000)
    assert kinds(res.events) == ["DELIVERY_ATTEMPTED"]
    t = res.timer
    assert t.state == TimerState.DELIVERING and t.next_attempt_at == 5000
    a = t.delivery_attempts[0]
    assert (a.attempt, a.fire_id, a.at_ms, a.status, a.latency_ms, a.error, a.body, a.next_at) == \
        (1, fid, 120, 503, 41, "http_status", b"busy", 5000)
    assert s.next_deadline() == 5000 and s.deliveries_due() == []
    assert s.delivery_due("default", "w") is None
    assert s.tick(4999).events == ()
    tick = s.tick(5000)
    assert kinds(tick.events) == ["DELIVERY_DUE"] and tick.fired == ()   # a retry is not a fire
    assert s.delivery_due("default", "w")[1] == 2
    assert s.get("default", "w").attempts == 1                           # fires, not attempts
    s.check_invariants()


def test_success_settles_and_frees_the_tenants_usage():
    s, fid = fired()
    res = s.delivery_attempt(130, "default", "w", fid, 1, 204, 3, "", b"", None)
    assert kinds(res.events) == ["DELIVERY_ATTEMPTED", "SETTLED"]
    assert res.timer.state == TimerState.SETTLED and res.timer.settled_at == 130
    assert s.usage("default").timers == 0 and s.counts()[TimerState.DELIVERING] == 0
    s.check_invariants()


def test_a_success_or_a_last_failure_ends_the_delivery_even_with_a_retry_time_given():
    """The retry time is kept only for a failure with attempts left: an outcome that ends the
    delivery never waits in the wheel, whatever next_at the proposal carried."""
    s, fid = fired()
    res = s.delivery_attempt(130, "default", "w", fid, 1, 204, 3, "", b"", 9000)
    assert kinds(res.events) == ["DELIVERY_ATTEMPTED", "SETTLED"]
    assert res.timer.next_attempt_at is None and res.timer.delivery_attempts[0].next_at is None
    assert s.next_deadline() != 9000
    s2, fid2 = fired(max_attempts=1)
    res = s2.delivery_attempt(130, "default", "w", fid2, 1, 500, 3, "http_status", b"", 9000)
    assert kinds(res.events) == ["DELIVERY_ATTEMPTED", "DEAD_LETTERED"]
    assert res.timer.delivery_attempts[0].next_at is None
    s.check_invariants()
    s2.check_invariants()


def test_each_refused_outcome_says_why_with_the_attempt_due():
    s, fid = fired()
    with pytest.raises(FailedPrecondition) as err:
        s.delivery_attempt(120, "default", "w", fid + 5, 1, 500, 1, "http_status", b"", 300)
    assert str(err.value) == f"fire_id {fid + 5} is not the current fire of timer 'w' in tenant 'default' ({fid})"
    with pytest.raises(FailedPrecondition) as err:
        s.delivery_attempt(120, "default", "w", fid, 2, 500, 1, "http_status", b"", 300)
    assert str(err.value) == ("attempt 2 of timer 'w' in tenant 'default' is not the attempt due (1): "
                              "its outcome is already recorded")
    s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", 300)
    with pytest.raises(FailedPrecondition) as err:        # waiting for its retry: no attempt is due
        s.delivery_attempt(121, "default", "w", fid, 2, 500, 1, "http_status", b"", 400)
    assert str(err.value) == ("attempt 2 of timer 'w' in tenant 'default' is not the attempt due (none): "
                              "its outcome is already recorded")
    s.tick(300)
    with pytest.raises(InvalidArgument) as err:
        s.delivery_attempt(301, "default", "w", fid, 2, 500, 1, "http_status", b"", None)
    assert str(err.value) == "invalid next_at: a failed attempt with attempts left needs the retry time"
    with pytest.raises(FailedPrecondition) as err:
        s.delivery_attempt(301, "default", "plain", 1, 1, 200, 1, "", b"", None)
    assert str(err.value) == "timer 'plain' in tenant 'default' is SETTLED, not delivering"
    q = State()
    q.create(10, [TimerSpec("job", 100, delivery=Delivery(None, DeliveryPolicy(), "jobs"))])
    q.tick(100)
    with pytest.raises(FailedPrecondition) as err:
        q.delivery_attempt(101, "default", "job", q.get("default", "job").fire_id, 1, 200, 1, "", b"", None)
    assert str(err.value) == "timer 'job' in tenant 'default' is delivered through queue 'jobs': its attempts are leases"
    s.check_invariants()


def test_the_last_failure_dead_letters_and_redrive_gives_a_fresh_budget():
    s, fid = fired(max_attempts=2)
    s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", 200)
    s.tick(200)
    res = s.delivery_attempt(210, "default", "w", fid, 2, 0, 10000, "timeout", b"", None)
    assert kinds(res.events) == ["DELIVERY_ATTEMPTED", "DEAD_LETTERED"]
    assert res.timer.state == TimerState.DEAD_LETTERED and res.timer.state.terminal
    assert s.usage("default").timers == 0
    with pytest.raises(FailedPrecondition):
        s.cancel(220, [("default", "w")])
    res = s.redrive(300, "default", "w")
    assert kinds(res.events) == ["REDRIVEN", "DELIVERY_DUE"]
    t = res.timer
    assert t.state == TimerState.DELIVERING and t.settled_at is None and t.fire_id == fid
    assert len(t.delivery_attempts) == 2                  # history kept
    assert s.delivery_due("default", "w")[1] == 1         # budget reset
    assert s.usage("default").timers == 1
    s.check_invariants()
    res = s.delivery_attempt(310, "default", "w", fid, 1, 200, 2, "", b"ok", None)
    assert res.timer.state == TimerState.SETTLED and len(res.timer.delivery_attempts) == 3


@pytest.mark.parametrize("args, error", [
    ((2, 500, 1, "http_status", b"", 300), FailedPrecondition),          # not the attempt due
    ((1, 500, 1, "http_status", b"", None), InvalidArgument),            # attempts left, no retry time
    ((1, 500, 1, "bad class!", b"", 300), InvalidArgument),
    ((1, 200, 1, "", b"x" * 1025, None), InvalidArgument),               # more than the 1 KiB excerpt
    ((1, 1000, 1, "", b"", None), InvalidArgument),
    ((0, 200, 1, "", b"", None), InvalidArgument),
])
def test_bad_or_stale_outcomes_change_nothing(args, error):
    s, fid = fired()
    before = s.to_bytes()
    with pytest.raises(error):
        s.delivery_attempt(120, "default", "w", fid, *args)
    assert s.to_bytes() == before


def test_a_repeated_outcome_from_a_deposed_leader_is_refused():
    s, fid = fired()
    s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", 900)
    before = s.to_bytes()
    for wrong_fid, n in ((fid, 1), (fid + 1, 2)):
        with pytest.raises(FailedPrecondition):
            s.delivery_attempt(125, "default", "w", wrong_fid, n, 200, 1, "", b"", None)
    assert s.to_bytes() == before
    with pytest.raises(FailedPrecondition):
        s.delivery_attempt(125, "default", "plain", 1, 1, 200, 1, "", b"", None)     # no webhook


def test_cancelling_a_waiting_retry_takes_it_out_of_the_wheel():
    s, fid = fired()
    s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", 900)
    res = s.cancel(130, [("default", "w")])
    assert res.timers[0].state == TimerState.CANCELLED
    assert s.next_deadline() >= 86_400_000 and s.tick(1000).events == ()   # only purge deadlines left
    with pytest.raises(FailedPrecondition):
        s.redrive(140, "default", "w")
    s.check_invariants()


@pytest.mark.parametrize("delivery, field", [
    (Delivery(Webhook("ftp://x/y")), "specs[0].delivery.webhook.url"),
    (Delivery(Webhook("http://x/ y")), "specs[0].delivery.webhook.url"),
    (Delivery(Webhook(URL, (("webhook-id", "x"),))), "specs[0].delivery.webhook.headers[0].name"),
    (Delivery(Webhook(URL, (("a", "1"), ("A", "2")))), "specs[0].delivery.webhook.headers[1].name"),
    (Delivery(Webhook(URL), DeliveryPolicy(max_attempts=0)), "specs[0].delivery.policy.max_attempts"),
    (Delivery(Webhook(URL), DeliveryPolicy(max_attempts=51)), "specs[0].delivery.policy.max_attempts"),
    (Delivery(Webhook(URL), DeliveryPolicy(backoff_base_ms=5000, backoff_cap_ms=10)),
     "specs[0].delivery.policy.backoff_cap_ms"),
    (Delivery(Webhook(URL), DeliveryPolicy(attempt_timeout_ms=0)), "specs[0].delivery.policy.attempt_timeout_ms"),
    ("not a delivery", "specs[0].delivery"),
])
def test_bad_deliveries_are_refused_and_nothing_is_created(delivery, field):
    s = State()
    with pytest.raises(InvalidArgument) as info:
        s.create(1, [TimerSpec("w", 10, delivery=delivery)])
    assert info.value.field == field
    assert len(s) == 0


def test_a_webhook_timer_cannot_also_require_an_ack():
    with pytest.raises(InvalidArgument) as info:
        State().create(1, [TimerSpec("w", 10, delivery=hook(), ack_required=True)])
    assert info.value.field == "specs[0].ack_required"
    assert info.value.rule == ("a timer with a webhook or queue settles when it is delivered; it cannot also require "
                               "an ack (unless it has an escalation ladder: then its steps are delivered there)")


def test_snapshots_carry_delivery_state_and_stay_version_1_without_it():
    plain = State()
    plain.create(1, [TimerSpec("a", 10)])
    assert struct.unpack_from("<H", plain.to_bytes(), 8)[0] == VERSION
    s, fid = fired()
    s.create(110, [TimerSpec("later", 10_000, delivery=hook())])
    s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"\x00\xff", 900)
    data = s.to_bytes()
    assert struct.unpack_from("<H", data, 8)[0] == VERSION_DELIVERY
    back = State.from_bytes(data)
    back.check_invariants()
    assert back == s and back.get("default", "w") == s.get("default", "w")
    assert back.next_deadline() == 900
    # capture() (the Raft layer's off-thread snapshot) gives the same bytes, even after more changes.
    cap = s.capture()
    s.tick(900)
    assert cap.to_bytes() == data
    assert kinds(back.tick(900).events) == ["DELIVERY_DUE"]


def test_a_snapshot_with_a_delivering_timer_but_no_record_is_refused():
    import zlib

    from minoots.kernel.snapshot import _HEADER
    s = State()
    s.create(1, [TimerSpec("a", 10)])
    data = bytearray(s.to_bytes())
    body = bytearray(data[_HEADER.size:])
    # state column: the first byte after counters, tenant blocks and the tenant column.
    idx = body.index(bytes([TimerState.ARMED]), 40)
    body[idx] = TimerState.DELIVERING
    data = _HEADER.pack(b"MNTSKRNL", VERSION, 0, len(body), zlib.crc32(bytes(body))) + bytes(body)
    with pytest.raises(SnapshotError, match="without a delivery record"):
        State.from_bytes(data)


def test_replicas_applying_the_same_facts_end_byte_identical():
    def run() -> bytes:
        s, fid = fired()
        s.delivery_attempt(120, "default", "w", fid, 1, 500, 7, "http_status", b"x", 700)
        s.tick(700)
        s.delivery_attempt(720, "default", "w", fid, 2, 0, 9, "connect", b"", 1400)
        s.tick(1400)
        s.delivery_attempt(1410, "default", "w", fid, 3, 0, 9, "timeout", b"", None)
        s.redrive(1500, "default", "w")
        return s.to_bytes()

    assert run() == run()
    s = State.from_bytes(run())
    assert s.get("default", "w").state == TimerState.DELIVERING
    assert s.tick(2000).events == ()          # a due attempt waits for the leader, not the wheel
    assert s.deliveries_due() == [("default", "w")]


def test_enum_values_are_appended_never_renumbered():
    assert [(s.name, s.value) for s in TimerState][-2:] == [("DEAD_LETTERED", 6), ("DELIVERING", 7)]
    assert [k.value for k in EventKind] == list(range(1, 13)) + [18, 19, 20, 21, 40]   # 18, 19: recurrence; 20+: retention, 40+: graphs
    assert not TimerState.DELIVERING.terminal and TimerState.DEAD_LETTERED.terminal


# ---- pull queues -----------------------------------------------------------------------

def queued(n=3, max_attempts=2, queue="jobs") -> State:
    s = State()
    pol = DeliveryPolicy(max_attempts=max_attempts)
    s.create(10, [TimerSpec(f"q{i}", 100 + i, delivery=Delivery(None, pol, queue)) for i in range(n)])
    s.tick(200)
    return s


def test_fired_queue_timers_wait_on_their_queue_not_for_the_dispatcher():
    s = queued()
    assert s.queue_depth("default", "jobs") == 3 and s.queue_depth("default", "other") == 0
    assert s.deliveries_due() == [] and s.delivery_due("default", "q0") is None
    assert {s.get("default", f"q{i}").state for i in range(3)} == {TimerState.DELIVERING}
    s.check_invariants()


def test_leases_hand_out_distinct_timers_oldest_first():
    s = queued()
    a = s.lease(300, "default", "jobs", 2, 5000)
    b = s.lease(300, "default", "jobs", 2, 5000)
    assert [l.timer.id for l in a.leases] == ["q0", "q1"] and [l.timer.id for l in b.leases] == ["q2"]
    assert kinds(a.events) == ["LEASED", "LEASED"]
    assert len({l.lease_id for l in a.leases + b.leases}) == 3
    assert all(l.attempt == 1 and l.expires_at == 5300 for l in a.leases)
    assert s.lease(300, "default", "jobs", 5, 5000).leases == ()                 # none left: nothing changes
    assert s.next_deadline() == 5300
    s.check_invariants()


def test_ack_settles_nack_retries_at_the_leaders_time_and_expiry_redelivers():
    s = queued()
    l0, l1, l2 = s.lease(300, "default", "jobs", 3, 5000).leases
    res = s.ack_lease(400, "default", "q0", l0.lease_id)
    assert kinds(res.events) == ["DELIVERY_ATTEMPTED", "SETTLED"] and res.timer.state == TimerState.SETTLED
    res = s.nack_lease(400, "default", "q1", l1.lease_id, 1000)
    assert res.timer.next_attempt_at == 1000 and res.timer.delivery_attempts[-1].error == "nack"
    assert s.lease(500, "default", "jobs", 5, 5000).leases == ()                 # q1 backs off, q2 leased
    assert kinds(s.tick(1000).events) == ["DELIVERY_DUE"]
    again = s.lease(1000, "default", "jobs", 5, 5000).leases
    assert [(l.timer.id, l.attempt) for l in again] == [("q1", 2)]
    # q2's lease expires: attempt 1 failed, available again; then q1 (attempt 2 of 2) expires: dead.
    tick = s.tick(5300)
    assert kinds(tick.events) == ["DELIVERY_ATTEMPTED", "DELIVERY_DUE"]
    assert s.get("default", "q2").delivery_attempts[-1].error == "lease_expired"
    assert s.lease(5300, "default", "jobs", 1, 5000).leases[0].attempt == 2
    tick = s.tick(6000)
    assert kinds(tick.events) == ["DELIVERY_ATTEMPTED", "DEAD_LETTERED"]
    assert s.get("default", "q1").state == TimerState.DEAD_LETTERED
    s.check_invariants()
    res = s.redrive(6100, "default", "q1")
    assert kinds(res.events) == ["REDRIVEN", "DELIVERY_DUE"]
    assert [l.attempt for l in s.lease(6100, "default", "jobs", 5, 5000).leases] == [1]
    s.check_invariants()


def test_extend_keeps_a_lease_and_stale_leases_are_refused():
    s = queued(n=1)
    (l0,) = s.lease(300, "default", "jobs", 1, 5000).leases
    res = s.extend_lease(4000, "default", "q0", l0.lease_id, 5000)
    assert kinds(res.events) == ["LEASE_EXTENDED"] and res.leases[0].expires_at == 9000
    assert s.tick(5300).events == ()                          # the old expiry passed: still leased
    before = s.to_bytes()
    for call in (lambda: s.ack_lease(5400, "default", "q0", "999"),
                 lambda: s.nack_lease(5400, "default", "q0", "999", 6000),
                 lambda: s.extend_lease(5400, "default", "q0", "", 5000)):
        with pytest.raises((FailedPrecondition, InvalidArgument)):
            call()
    assert s.to_bytes() == before
    with pytest.raises(InvalidArgument):
        s.nack_lease(5400, "default", "q0", l0.lease_id, None)      # attempts left: needs a retry time
    with pytest.raises(FailedPrecondition):
        s.delivery_attempt(5400, "default", "q0", s.get("default", "q0").fire_id, 1, 200, 1, "", b"", None)
    s.ack_lease(5400, "default", "q0", l0.lease_id)
    with pytest.raises(FailedPrecondition):
        s.ack_lease(5500, "default", "q0", l0.lease_id)     # acked already


def test_queue_state_survives_snapshots_and_replicas_agree():
    def run() -> State:
        s = queued(n=4)
        leases = s.lease(300, "default", "jobs", 2, 5000).leases
        s.nack_lease(400, "default", leases[0].timer.id, leases[0].lease_id, 2000)
        s.cancel(450, [("default", "q3")])
        return s

    a, b = run(), run()
    assert a.to_bytes() == b.to_bytes()
    back = State.from_bytes(a.to_bytes())
    back.check_invariants()
    assert back.queue_depth("default", "jobs") == a.queue_depth("default", "jobs") == 1
    # the same leases come out of the restored state and the live one
    assert [(l.timer.id, l.lease_id) for l in back.lease(500, "default", "jobs", 5, 5000).leases] == \
        [(l.timer.id, l.lease_id) for l in a.lease(500, "default", "jobs", 5, 5000).leases] == [("q2", str(a.seq))]


@pytest.mark.parametrize("args, field", [
    (("default", "bad queue", 1, 5000), "queue"),
    (("default", "jobs", 0, 5000), "max_timers"),
    (("default", "jobs", 101, 5000), "max_timers"),
    (("default", "jobs", 1, 10), "visibility_ms"),
])
def test_bad_lease_requests_are_refused(args, field):
    s = queued()
    with pytest.raises(InvalidArgument) as info:
        s.lease(300, *args)
    assert info.value.field == field


def test_delivery_events_take_consecutive_seqs_and_the_outcome_bounds_are_inclusive():
    """Every event of an attempt's life takes the next kernel seq (attempted, the retry's
    due, settled) with the state it leaves; status 0-999 and latency 0-2^31-1 are the
    inclusive bounds of an outcome."""
    s, fid = fired()
    for args, field in [((1, 1000, 1, "http_status", b"", 300), "status"),
                        ((1, 500, 2**31, "http_status", b"", 300), "latency_ms")]:
        with pytest.raises(InvalidArgument) as info:
            s.delivery_attempt(120, "default", "w", fid, *args)
        assert info.value.field == field
    seq = s.seq
    res = s.delivery_attempt(120, "default", "w", fid, 1, 999, 2**31 - 1, "http_status", b"", 300)
    assert [(e.seq, e.kind.name, e.state) for e in res.events] == [
        (seq + 1, "DELIVERY_ATTEMPTED", TimerState.DELIVERING)]
    tick = s.tick(300)
    assert [(e.seq, e.kind.name, e.state) for e in tick.events] == [(seq + 2, "DELIVERY_DUE", TimerState.DELIVERING)]
    res = s.delivery_attempt(310, "default", "w", fid, 2, 204, 0, "", b"", None)
    assert [(e.seq, e.kind.name, e.state) for e in res.events] == [
        (seq + 3, "DELIVERY_ATTEMPTED", TimerState.DELIVERING), (seq + 4, "SETTLED", TimerState.SETTLED)]
    assert s.seq == seq + 4
    s.check_invariants()


def test_redrive_events_carry_the_command_time_and_a_bad_time_is_refused():
    s, fid = fired(max_attempts=1)
    s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", None)
    assert s.get("default", "w").state == TimerState.DEAD_LETTERED
    with pytest.raises(InvalidArgument) as info:
        s.redrive(-1, "default", "w")
    assert info.value.field == "now_ms"
    res = s.redrive(500, "default", "w")
    assert [(e.kind.name, e.at_ms, e.tenant, e.timer_id) for e in res.events] == [
        ("REDRIVEN", 500, "default", "w"), ("DELIVERY_DUE", 500, "default", "w")]
    assert res.events[1].revision == res.events[0].revision + 1 == s.get("default", "w").revision


def test_a_stored_delivery_record_has_one_form_whatever_path_led_to_it():
    """Snapshot bytes hold the records as stored, so a record must not carry leftovers of
    how it got there: a record that does not wait stores next_at -1 (after an outcome and
    after a redrive), a leased one stores avail 0 (it is in no queue)."""
    def rec(state, tid):
        return state._table.deliv[state._table.by_id[0][tid]]

    s, fid = fired(max_attempts=1)
    s.delivery_attempt(120, "default", "w", fid, 1, 500, 1, "http_status", b"", 700)
    assert (rec(s, "w").waiting, rec(s, "w").next_at) == (False, -1)          # dead-lettered
    s.redrive(500, "default", "w")
    assert (rec(s, "w").waiting, rec(s, "w").next_at, rec(s, "w").attempt) == (False, -1, 0)
    q = queued(n=1, max_attempts=1)
    lease = q.lease(300, "default", "jobs", 1, 5000).leases[0]
    assert (rec(q, "q0").avail, rec(q, "q0").next_at, rec(q, "q0").lease) == (0, 5300, lease.lease_id)
    q.nack_lease(301, "default", "q0", lease.lease_id, None)                  # last attempt: dead-lettered
    q.redrive(400, "default", "q0")
    r = rec(q, "q0")
    assert (r.waiting, r.next_at, r.lease, r.attempt, r.avail) == (False, -1, "", 0, q.seq)
    for state in (s, q):
        back = State.from_bytes(state.to_bytes())
        assert back.to_bytes() == state.to_bytes()
        state.check_invariants()


def test_a_refused_redrive_or_nack_says_why():
    s, fid = fired()
    with pytest.raises(FailedPrecondition) as err:
        s.redrive(130, "default", "w")
    assert str(err.value) == ("timer 'w' in tenant 'default' is DELIVERING; only a dead-lettered timer with a "
                              "webhook or queue can be redriven")
    q = queued(n=1, max_attempts=2)
    lease = q.lease(300, "default", "jobs", 1, 5000).leases[0]
    with pytest.raises(InvalidArgument) as err:
        q.nack_lease(301, "default", "q0", lease.lease_id, None)
    assert str(err.value) == "invalid next_at: a nack with attempts left needs the retry time"


def test_lease_outcomes_name_their_tenant_count_every_end_and_refuse_what_is_not_leased():
    def rec(state, tid):
        return state._table.deliv[state._table.by_id[0][tid]]

    s = queued(n=2, max_attempts=2)
    s.create(10, [TimerSpec("plain", 10_000), TimerSpec("w", 10_000, delivery=hook())])
    a, b = s.lease(300, "default", "jobs", 2, 5000).leases
    nack = s.nack_lease(301, "default", "q0", a.lease_id, 900)                   # attempts left: waits
    assert [(e.kind.name, e.tenant) for e in nack.events] == [("DELIVERY_ATTEMPTED", "default")]
    assert (rec(s, "q0").waiting, rec(s, "q0").next_at, rec(s, "q0").avail, rec(s, "q0").lease) == (True, 900, 0, "")
    ack = s.ack_lease(302, "default", "q1", b.lease_id)
    assert [(e.kind.name, e.tenant) for e in ack.events] == [("DELIVERY_ATTEMPTED", "default"), ("SETTLED", "default")]
    assert (rec(s, "q1").waiting, rec(s, "q1").next_at, rec(s, "q1").avail, rec(s, "q1").lease) == (False, -1, 0, "")
    s.tick(900)
    again = s.lease(901, "default", "jobs", 1, 5000).leases[0]
    s.ack_lease(902, "default", "q0", again.lease_id)
    assert s.counts()[TimerState.SETTLED] == 2                                  # every end counted
    s.check_invariants()
    for tid in ("plain", "w"):                                                 # not a queue timer
        with pytest.raises(FailedPrecondition) as err:
            s.ack_lease(903, "default", tid, "7")
        assert str(err.value) == (f"lease '7' is not the live lease of timer '{tid}' in tenant 'default' "
                                  "(it expired, was acked or nacked, or never existed)")
    q = queued(n=1)
    lease = q.lease(300, "default", "jobs", 1, 5000).leases[0]
    with pytest.raises(InvalidArgument) as err:
        q.extend_lease(301, "default", "q0", lease.lease_id, 10)
    assert err.value.field == "visibility_ms"
    s.check_invariants()


def test_a_lease_outcome_that_ends_a_timer_gives_back_its_payload_bytes():
    s = State()
    pol = DeliveryPolicy(max_attempts=1)
    s.create(10, [TimerSpec(f"q{i}", 100, payload=b"x" * (10 + i), delivery=Delivery(None, pol, "jobs"))
                  for i in range(2)] + [TimerSpec("keep", 10_000, payload=b"k" * 7)])
    s.tick(200)
    assert tuple(s.usage("default")) == (3, 10 + 11 + 7)
    a, b = s.lease(300, "default", "jobs", 2, 5000).leases
    s.ack_lease(301, "default", "q0", a.lease_id)
    assert tuple(s.usage("default")) == (2, 11 + 7)
    s.nack_lease(302, "default", "q1", b.lease_id, None)                        # last attempt: dead-lettered
    assert tuple(s.usage("default")) == (1, 7)
    s.check_invariants()


def test_bad_scan_and_usage_arguments_name_their_field():
    s = queued(n=1)
    with pytest.raises(InvalidArgument) as err:
        s.scan(-1, 5, max_positions=10)
    assert err.value.field == "start"
    with pytest.raises(InvalidArgument) as err:
        s.usage("")
    assert err.value.field == "tenant"


def test_a_tenant_never_seen_holds_nothing():
    s, _ = fired()
    assert tuple(s.usage("nobody")) == (0, 0)
    assert s.usage("default").timers == 1        # "w" is delivering; "plain" settled when it fired


def rows(events) -> list[tuple]:
    """Every field of each event but the tenant (always "default" here) and the step/action."""
    return [(e.seq, e.kind.name, e.timer_id, e.at_ms, e.revision, e.state.name, e.fire_at, e.fire_id) for e in events]


def test_a_queue_timers_whole_life_event_by_event():
    """Lease, extend, nack with attempts left, backoff over, expiry on the last attempt,
    expiry with attempts left, ack, redrive, nack on the last attempt: every event's seq,
    time, revision, state and fire fields, each Attempt logged, the lease ids, the live
    leases and the queue depth after each step."""
    from minoots.kernel.delivery import Attempt
    s = State()
    pol = DeliveryPolicy(max_attempts=2)
    s.create(10, [TimerSpec(f"q{i}", 100 + i, delivery=Delivery(None, pol, "jobs")) for i in range(2)])
    s.tick(200)
    assert s.seq == 8 and [s.get("default", f"q{i}").fire_id for i in range(2)] == [5, 7]
    from minoots.kernel.snapshot import decode
    table = decode(s.to_bytes())[0]                        # fired: available, nothing waiting
    assert {table.ids[o]: (r.attempt, r.next_at, r.waiting, r.lease, r.avail) for o, r in table.deliv.items()} == {
        "q0": (0, -1, False, "", 6), "q1": (0, -1, False, "", 8)}
    r = s.lease(300, "default", "jobs", 5, 1000)
    assert rows(r.events) == [(9, "LEASED", "q0", 300, 5, "DELIVERING", 100, 5),
                              (10, "LEASED", "q1", 300, 5, "DELIVERING", 101, 7)]
    assert [(l.timer.id, l.timer.revision, l.lease_id, l.attempt, l.expires_at) for l in r.leases] == [
        ("q0", 5, "9", 1, 1300), ("q1", 5, "10", 1, 1300)]
    assert all(e.tenant == "default" for e in r.events) and s.seq == 10
    assert s.live_leases("default", [("q0", "9"), ("q1", "10"), ("q0", "10"), ("zz", "9")]) == [("q0", "9"), ("q1", "10")]
    assert s.live_leases("other", [("q0", "9")]) == [] and s.queue_depth("default", "jobs") == 0

    r = s.extend_lease(400, "default", "q1", "10", 2000)
    assert rows(r.events) == [(11, "LEASE_EXTENDED", "q1", 400, 6, "DELIVERING", 101, 7)] and s.seq == 11
    assert [(l.timer.id, l.timer.revision, l.lease_id, l.attempt, l.expires_at) for l in r.leases] == [
        ("q1", 6, "10", 1, 2400)]

    r = s.nack_lease(500, "default", "q0", "9", 900)
    assert rows(r.events) == [(12, "DELIVERY_ATTEMPTED", "q0", 500, 6, "DELIVERING", 100, 5)] and s.seq == 12
    assert (r.timer.revision, r.timer.next_attempt_at) == (6, 900)
    assert r.timer.delivery_attempts == (Attempt(1, 5, 500, 0, 0, "nack", b"", 900),)
    assert s.live_leases("default", [("q0", "9"), ("q1", "10")]) == [("q1", "10")]
    assert s.queue_depth("default", "jobs") == 0 and s.next_deadline() == 900

    assert rows(s.tick(900).events) == [(13, "DELIVERY_DUE", "q0", 900, 7, "DELIVERING", 100, 5)]
    assert s.queue_depth("default", "jobs") == 1 and s.get("default", "q0").next_attempt_at is None
    r = s.lease(1000, "default", "jobs", 1, 1000)
    assert rows(r.events) == [(14, "LEASED", "q0", 1000, 8, "DELIVERING", 100, 5)]
    assert [(l.lease_id, l.attempt, l.expires_at) for l in r.leases] == [("14", 2, 2000)]

    # q0's second (last) lease expires: dead-lettered; q1's extended lease then expires with one left
    assert rows(s.tick(2000).events) == [(15, "DELIVERY_ATTEMPTED", "q0", 2000, 9, "DELIVERING", 100, 5),
                                         (16, "DEAD_LETTERED", "q0", 2000, 10, "DEAD_LETTERED", 100, 5)]
    q0 = s.get("default", "q0")
    assert q0.delivery_attempts[-1] == Attempt(2, 5, 2000, 0, 0, "lease_expired", b"", None)
    assert (q0.revision, q0.settled_at, q0.next_attempt_at) == (10, 2000, None)
    assert rows(s.tick(2400).events) == [(17, "DELIVERY_ATTEMPTED", "q1", 2400, 7, "DELIVERING", 101, 7),
                                         (18, "DELIVERY_DUE", "q1", 2400, 8, "DELIVERING", 101, 7)]
    q1 = s.get("default", "q1")
    assert q1.delivery_attempts == (Attempt(1, 7, 2400, 0, 0, "lease_expired", b"", None),)
    assert (q1.revision, q1.next_attempt_at, s.queue_depth("default", "jobs")) == (8, None, 1)
    from minoots.kernel.snapshot import decode
    table = decode(s.to_bytes())[0]                        # what a snapshot keeps of both records
    assert {table.ids[o]: (r.attempt, r.next_at, r.waiting, r.lease, r.avail) for o, r in table.deliv.items()} == {
        "q0": (2, -1, False, "", 0), "q1": (1, -1, False, "", 18)}

    r = s.lease(2500, "default", "jobs", 5, 1000)
    assert rows(r.events) == [(19, "LEASED", "q1", 2500, 9, "DELIVERING", 101, 7)]
    r = s.ack_lease(2600, "default", "q1", "19")
    assert rows(r.events) == [(20, "DELIVERY_ATTEMPTED", "q1", 2600, 10, "DELIVERING", 101, 7),
                              (21, "SETTLED", "q1", 2600, 11, "SETTLED", 101, 7)] and s.seq == 21
    assert r.timer.delivery_attempts[-1] == Attempt(2, 7, 2600, 0, 0, "", b"", None)
    assert (r.timer.revision, r.timer.settled_at, r.timer.next_attempt_at) == (11, 2600, None)
    assert s.live_leases("default", [("q1", "19")]) == [] and tuple(s.usage("default")) == (0, 0)

    r = s.redrive(2700, "default", "q0")
    assert rows(r.events) == [(22, "REDRIVEN", "q0", 2700, 11, "DELIVERING", 100, 5),
                              (23, "DELIVERY_DUE", "q0", 2700, 12, "DELIVERING", 100, 5)]
    assert s.queue_depth("default", "jobs") == 1
    (l,) = s.lease(2800, "default", "jobs", 5, 1000).leases
    assert (l.lease_id, l.attempt, l.expires_at, l.timer.revision) == ("24", 1, 3800, 13)
    s.nack_lease(2900, "default", "q0", "24", 3000)
    s.tick(3000)
    (l,) = s.lease(3100, "default", "jobs", 5, 1000).leases
    assert (l.lease_id, l.attempt, l.timer.revision) == ("27", 2, 16)
    # a nack of the last attempt dead-letters, whatever retry time it names
    r = s.nack_lease(3200, "default", "q0", "27", 9999)
    assert rows(r.events) == [(28, "DELIVERY_ATTEMPTED", "q0", 3200, 17, "DELIVERING", 100, 5),
                              (29, "DEAD_LETTERED", "q0", 3200, 18, "DEAD_LETTERED", 100, 5)] and s.seq == 29
    assert r.timer.delivery_attempts[-1] == Attempt(2, 5, 3200, 0, 0, "nack", b"", None)
    assert (r.timer.settled_at, r.timer.next_attempt_at) == (3200, None)
    assert {st.name: n for st, n in s.counts().items() if n} == {"SETTLED": 1, "DEAD_LETTERED": 1}
    s.check_invariants()


def test_leases_go_oldest_available_first_past_stale_entries_of_a_reused_ordinal():
    """A queue timer cancelled while available leaves its entry in the queue; purged at
    once, its ordinal goes to the next timer created. That timer becomes available after
    another one: the stale entry (older) must not lease it ahead of that other one."""
    from minoots.kernel.retention import RetentionPolicy
    s = State()
    s.retention = RetentionPolicy({}, 0)
    pol = DeliveryPolicy(max_attempts=3)
    s.create(10, [TimerSpec("a", 100, delivery=Delivery(None, pol, "jobs")),
                  TimerSpec("x", 130, delivery=Delivery(None, pol, "jobs"))])
    s.tick(130)                                                   # a, then x available
    s.cancel(140, [("default", "a")])                              # purged at once: its ordinal is free
    assert s.queue_depth("default", "jobs") == 1
    s.create(150, [TimerSpec("b", 160, delivery=Delivery(None, pol, "jobs"))])   # takes a's ordinal
    s.tick(160)                                                   # b available after x
    assert s.queue_depth("default", "jobs") == 2
    assert [l.timer.id for l in s.lease(200, "default", "jobs", 1, 1000).leases] == ["x"]
    assert [l.timer.id for l in s.lease(200, "default", "jobs", 1, 1000).leases] == ["b"]
    assert s.lease(200, "default", "jobs", 5, 1000).leases == () and s.queue_depth("default", "jobs") == 0
    s.check_invariants()


def test_leasing_from_a_queue_or_tenant_never_seen_changes_nothing():
    s = queued(n=1)
    before = s.to_bytes()
    for tenant, queue in (("default", "other"), ("nobody", "jobs")):
        r = s.lease(300, tenant, queue, 5, 1000)
        assert (r.events, r.leases) == ((), ())
        assert s.queue_depth(tenant, queue) == 0
    assert s.to_bytes() == before and s.queue_depth("default", "jobs") == 1
    # a queue emptied by a lease leases nothing more, and one refilled leases again
    (l,) = s.lease(300, "default", "jobs", 5, 1000).leases
    assert s.lease(300, "default", "jobs", 5, 1000).leases == ()
    s.tick(1300)                                                  # the lease expired: available again
    assert [x.timer.id for x in s.lease(1400, "default", "jobs", 5, 1000).leases] == ["q0"]
    s.check_invariants()


def test_every_command_names_the_time_argument_it_refuses():
    """A bad command time is refused as `now_ms` by every command (the state unchanged);
    a retry time as `next_at`, a lease expiry past MAX_TIME as `visibility_ms`, a new
    deadline as `fire_at`, scan bounds as `fire_at_from` / `fire_at_to`."""
    from minoots.kernel import MAX_TIME
    s = queued(n=2)
    (l0, l1) = s.lease(300, "default", "jobs", 2, 5000).leases
    s.create(300, [TimerSpec("w", 400, delivery=hook(3)), TimerSpec("a", 9000, ack_required=True)])
    s.tick(400)
    fid = s.get("default", "w").fire_id
    calls = {
        "create": lambda t: s.create(t, [TimerSpec("new", 9000)]),
        "cancel": lambda t: s.cancel(t, [("default", "a")]),
        "reschedule": lambda t: s.reschedule(t, "default", "a", fire_at=9500),
        "tick": lambda t: s.tick(t),
        "ack": lambda t: s.ack(t, "default", "a", 1),
        "delete": lambda t: s.delete(t, [("default", "a")]),
        "delivery_attempt": lambda t: s.delivery_attempt(t, "default", "w", fid, 1, 200, 1, "", b"", None),
        "redrive": lambda t: s.redrive(t, "default", "w"),
        "lease": lambda t: s.lease(t, "default", "jobs", 1, 5000),
        "ack_lease": lambda t: s.ack_lease(t, "default", "q0", l0.lease_id),
        "nack_lease": lambda t: s.nack_lease(t, "default", "q0", l0.lease_id, 6000),
        "extend_lease": lambda t: s.extend_lease(t, "default", "q0", l0.lease_id, 5000),
    }
    before = s.to_bytes()
    for name, call in calls.items():
        for bad in (-1, MAX_TIME + 1, None):
            with pytest.raises(InvalidArgument) as info:
                call(bad)
            assert info.value.field == "now_ms", (name, bad)
    assert s.to_bytes() == before
    for call, field in [(lambda: s.nack_lease(500, "default", "q0", l0.lease_id, -1), "next_at"),
                        (lambda: s.delivery_attempt(500, "default", "w", fid, 1, 500, 1, "x", b"", -1), "next_at"),
                        (lambda: s.extend_lease(MAX_TIME - 1000, "default", "q1", l1.lease_id, 5000), "visibility_ms"),
                        (lambda: s.lease(MAX_TIME - 1000, "default", "jobs", 1, 5000), "visibility_ms"),
                        (lambda: s.reschedule(500, "default", "a", fire_at=-1), "fire_at"),
                        (lambda: s.cursor(0, fire_at_from=-1), "fire_at_from"),
                        (lambda: s.cursor(0, fire_at_to=MAX_TIME + 1), "fire_at_to")]:
        with pytest.raises(InvalidArgument) as info:
            call()
        assert info.value.field == field
    assert s.to_bytes() == before


def test_a_webhook_timers_whole_life_event_by_event_with_usage_and_retention():
    """Fire, a failed attempt with a retry, the retry due, the last attempt failing, redrive,
    success; a retention-0 tenant purged in the outcome's own command; acks and deletes:
    every event's fields, each Attempt logged, the due list, the tenants' usage."""
    from minoots.kernel import NotFound
    from minoots.kernel.delivery import Attempt
    from minoots.kernel.retention import RetentionPolicy

    def full(events) -> list[tuple]:
        return [(e.seq, e.kind.name, e.tenant, e.timer_id, e.at_ms, e.revision, e.state.name, e.fire_at, e.fire_id)
                for e in events]

    def usage() -> tuple:
        return tuple(s.usage("t")), tuple(s.usage("z"))

    s = State()
    s.retention = RetentionPolicy({"z": 0})
    s.create(10, [TimerSpec("w", 100, tenant="t", payload=b"12345", delivery=hook(2)),
                  TimerSpec("k", 100, tenant="t", payload=b"123", ack_required=True),
                  TimerSpec("v", 100, tenant="z", payload=b"1234567", delivery=hook(1)),
                  TimerSpec("d", 100, tenant="z", payload=b"1", ack_required=True)])
    assert full(s.tick(100).events) == [
        (9, "FIRED", "t", "w", 100, 3, "FIRED", 100, 9), (10, "DELIVERY_DUE", "t", "w", 100, 4, "DELIVERING", 100, 9),
        (11, "FIRED", "t", "k", 100, 3, "FIRED", 100, 11),
        (12, "FIRED", "z", "v", 100, 3, "FIRED", 100, 12), (13, "DELIVERY_DUE", "z", "v", 100, 4, "DELIVERING", 100, 12),
        (14, "FIRED", "z", "d", 100, 3, "FIRED", 100, 14)]
    assert usage() == ((2, 8), (2, 8)) and s.deliveries_due() == [("t", "w"), ("z", "v")]
    timer, n = s.delivery_due("t", "w")
    assert (timer.id, timer.revision, n) == ("w", 4, 1)
    from minoots.kernel.snapshot import decode
    table = decode(s.to_bytes())[0]                        # fired: attempt 1 due, nothing waiting
    assert {table.ids[o]: (r.attempt, r.next_at, r.waiting) for o, r in table.deliv.items()} == {
        "w": (0, -1, False), "v": (0, -1, False)}

    r = s.delivery_attempt(110, "t", "w", 9, 1, 503, 20, "http_status", b"busy", 300)
    assert full(r.events) == [(15, "DELIVERY_ATTEMPTED", "t", "w", 110, 5, "DELIVERING", 100, 9)] and s.seq == 15
    assert r.timer.delivery_attempts == (Attempt(1, 9, 110, 503, 20, "http_status", b"busy", 300),)
    assert (r.timer.revision, r.timer.next_attempt_at, r.timer.delivery_attempt) == (5, 300, 1)
    assert s.deliveries_due() == [("z", "v")] and s.delivery_due("t", "w") is None and s.next_deadline() == 300
    assert full(s.tick(300).events) == [(16, "DELIVERY_DUE", "t", "w", 300, 6, "DELIVERING", 100, 9)]
    timer, n = s.delivery_due("t", "w")
    assert (timer.revision, timer.next_attempt_at, n) == (6, None, 2)

    r = s.delivery_attempt(310, "t", "w", 9, 2, 0, 1000, "timeout", b"", None)
    assert full(r.events) == [(17, "DELIVERY_ATTEMPTED", "t", "w", 310, 7, "DELIVERING", 100, 9),
                              (18, "DEAD_LETTERED", "t", "w", 310, 8, "DEAD_LETTERED", 100, 9)] and s.seq == 18
    assert r.timer.delivery_attempts[-1] == Attempt(2, 9, 310, 0, 1000, "timeout", b"", None)
    assert (r.timer.settled_at, usage()) == (310, ((1, 3), (2, 8)))

    r = s.redrive(400, "t", "w")
    assert full(r.events) == [(19, "REDRIVEN", "t", "w", 400, 9, "DELIVERING", 100, 9),
                              (20, "DELIVERY_DUE", "t", "w", 400, 10, "DELIVERING", 100, 9)] and s.seq == 20
    assert (r.timer.settled_at, r.timer.delivery_attempt, len(r.timer.delivery_attempts)) == (None, 0, 2)
    assert usage() == ((2, 8), (2, 8)) and s.deliveries_due() == [("t", "w"), ("z", "v")]
    r = s.delivery_attempt(410, "t", "w", 9, 1, 204, 5, "", b"", None)
    assert full(r.events) == [(21, "DELIVERY_ATTEMPTED", "t", "w", 410, 11, "DELIVERING", 100, 9),
                              (22, "SETTLED", "t", "w", 410, 12, "SETTLED", 100, 9)]
    assert r.timer.delivery_attempts[-1] == Attempt(1, 9, 410, 204, 5, "", b"", None)
    assert (r.timer.settled_at, usage()) == (410, ((1, 3), (2, 8)))

    # retention 0: the dead-lettering and the ack purge the timer in the same command
    r = s.delivery_attempt(420, "z", "v", 12, 1, 500, 7, "http_status", b"x", None)
    assert full(r.events) == [(23, "DELIVERY_ATTEMPTED", "z", "v", 420, 5, "DELIVERING", 100, 12),
                              (24, "DEAD_LETTERED", "z", "v", 420, 6, "DEAD_LETTERED", 100, 12),
                              (25, "PURGED", "z", "v", 420, 7, "DEAD_LETTERED", 100, None)]
    assert (r.timer.state, r.timer.settled_at, usage()) == (TimerState.DEAD_LETTERED, 420, ((1, 3), (1, 1)))
    r = s.ack(430, "t", "k", 11)
    assert full(r.events) == [(26, "SETTLED", "t", "k", 430, 4, "SETTLED", 100, 11)]
    assert (r.timer.settled_at, usage()) == (430, ((0, 0), (1, 1)))
    r = s.ack(440, "z", "d", 14)
    assert full(r.events) == [(27, "SETTLED", "z", "d", 440, 4, "SETTLED", 100, 14),
                              (28, "PURGED", "z", "d", 440, 5, "SETTLED", 100, None)]
    r = s.delete(450, [("t", "k"), ("t", "w")])
    assert full(r.events) == [(29, "DELETED", "t", "k", 450, 5, "SETTLED", 100, None),
                              (30, "DELETED", "t", "w", 450, 13, "SETTLED", 100, None)] and s.seq == 30
    assert [(v.id, v.revision) for v in r.timers] == [("k", 4), ("w", 12)]
    assert (len(s), usage(), s.deliveries_due()) == (0, ((0, 0), (0, 0)), [])
    for tenant, tid in (("t", "w"), ("z", "v")):
        with pytest.raises(NotFound):
            s.get(tenant, tid)
    s.check_invariants()


def test_every_per_timer_command_names_a_bad_tenant_or_id():
    s = queued(n=1)
    (l0,) = s.lease(300, "default", "jobs", 1, 5000).leases
    calls = {
        "reschedule": lambda tn, i: s.reschedule(400, tn, i, fire_at=9000),
        "ack": lambda tn, i: s.ack(400, tn, i, 1),
        "delivery_attempt": lambda tn, i: s.delivery_attempt(400, tn, i, 1, 1, 200, 1, "", b"", None),
        "redrive": lambda tn, i: s.redrive(400, tn, i),
        "ack_lease": lambda tn, i: s.ack_lease(400, tn, i, l0.lease_id),
        "nack_lease": lambda tn, i: s.nack_lease(400, tn, i, l0.lease_id, 6000),
        "extend_lease": lambda tn, i: s.extend_lease(400, tn, i, l0.lease_id, 5000),
        "get": lambda tn, i: s.get(tn, i),
    }
    before = s.to_bytes()
    for name, call in calls.items():
        for args, field in ((("", "q0"), "tenant"), (("default", ""), "id"), (("bad tenant", "q0"), "tenant"),
                            (("default", "bad id"), "id")):
            with pytest.raises(InvalidArgument) as info:
                call(*args)
            assert info.value.field == field, (name, args)
    with pytest.raises(InvalidArgument) as info:
        s.lease(400, "", "jobs", 1, 5000)
    assert info.value.field == "tenant"
    with pytest.raises(InvalidArgument) as info:
        s.ack_lease(400, "default", "q0", 9)
    assert (info.value.field, info.value.rule) == ("lease_id", "must name a lease")
    assert s.to_bytes() == before


def test_a_tick_counts_an_occurrence_timer_that_ends_and_goes_on_past_a_retry():
    """An occurrence timer (a schedule with a webhook) settles when its last occurrence
    fires: the tick's counts, fired views and invariants; a webhook retry coming due in the
    same tick as later fires does not stop the tick before them."""
    T = 1_000_000
    s = State()
    s.create(T, [TimerSpec("occ", T + 1000, every_ms=60_000, max_count=2, delivery=hook(2)),
                 TimerSpec("w", T + 1000, delivery=hook(2))])

    def deliver(now, ok=True):
        for tenant, i in s.deliveries_due():
            timer, n = s.delivery_due(tenant, i)
            s.delivery_attempt(now, tenant, i, timer.fire_id, n, 200 if ok else 500, 1, "" if ok else "http_status",
                               b"", None if ok else now + 60_000 - 1000)

    r = s.tick(T + 1000)
    assert [t.id for t in r.fired] == ["occ", "w"] and s.deliveries_due() == [("default", "w"), ("default", "occ@5")]
    deliver(T + 1001, ok=False)                     # w and occ@5 fail: retries at T + 61000
    s.check_invariants()
    s.create(T + 2000, [TimerSpec("late", T + 61_000), TimerSpec("first", T + 120_500)])
    r = s.tick(T + 61_000)              # the retries, occ's next occurrence (skipped: one in flight), "late"
    assert [(e.kind.name, e.timer_id) for e in r.events] == [
        ("DELIVERY_DUE", "w"), ("DELIVERY_DUE", "occ@5"), ("ARMED", "occ"), ("FIRED", "late"), ("SETTLED", "late")]
    assert [t.id for t in r.fired] == ["late"]
    assert {st.name: n for st, n in s.counts().items() if n} == {"ARMED": 2, "SETTLED": 1, "DELIVERING": 2}
    s.check_invariants()
    deliver(T + 61_001)
    r = s.tick(T + 121_000)                         # "first" settles, then occ's last occurrence
    assert [(e.kind.name, e.timer_id) for e in r.events] == [
        ("FIRED", "first"), ("SETTLED", "first"), ("FIRED", "occ"), ("DELIVERY_DUE", "occ@27"), ("SETTLED", "occ")]
    assert [t.id for t in r.fired] == ["first", "occ"]
    assert {st.name: n for st, n in s.counts().items() if n} == {"SETTLED": 5, "DELIVERING": 1}
    s.check_invariants()
    deliver(T + 121_001)
    assert {st.name: n for st, n in s.counts().items() if n} == {"SETTLED": 6}
    s.check_invariants()


def test_a_bad_delivery_outcome_names_its_field():
    s, fid = fired()
    before = s.to_bytes()
    for args, field in [(("x", 1, 200, 1, "", b"", None), "fire_id"), ((fid, 0, 200, 1, "", b"", None), "attempt"),
                        ((fid, 1, 200, 1, 5, b"", None), "error"), ((fid, 1, 200, 1, "", "text", None), "body")]:
        with pytest.raises(InvalidArgument) as info:
            s.delivery_attempt(120, "default", "w", *args)
        assert info.value.field == field
    assert s.to_bytes() == before
