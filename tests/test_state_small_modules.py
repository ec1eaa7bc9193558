"""The kernel's small modules (queue stats, errors, retention, quota, bulk, endpoints) as
mutation testing (ops/mutation.py, seventh pass, issue 17) found them under-read: each test
names the lines and the mutants it kills."""
from __future__ import annotations

import pickle

import pytest

from minoots.kernel import State, TimerSpec
from minoots.kernel import errors as E
from minoots.kernel.bulk import MAX_BULK, cancel_each, reschedule_each
from minoots.kernel.delivery import (MAX_ATTEMPTS, MAX_ENDPOINT_ID_LEN, MAX_ERROR_LEN, MAX_QUEUE_LEN, MAX_URL_LEN,
                                     RESERVED_HEADERS, Delivery, DeliveryPolicy, Webhook, check_delivery,
                                     check_endpoint_id, check_error_class, check_queue, is_success)
from minoots.kernel.errors import InvalidArgument
from minoots.kernel.queue_stats import queue_stats
from minoots.kernel.quota import TenantLimit
from minoots.kernel.recurrence import MAX_FLEX_MS, MAX_SEED, check_policies, resume_at, upcoming
from minoots.kernel.retention import MAX_RETENTION_MS, RetentionPolicy, check_retention
from minoots.kernel.schedule import (MAX_OCCURRENCES, NO_UNTIL, Schedule, check_schedule, first_occurrence,
                                     next_occurrence, zone)
from minoots.kernel.validate import MAX_TIME

T0 = 1_800_000_000_000


def _queue(queue: str, attempts: int) -> Delivery:
    return Delivery(None, DeliveryPolicy(max_attempts=attempts), queue)


def test_queue_stats_skip_webhooks_and_other_tenants_and_count_every_bucket():
    """queue_stats L28 (`or` -> `and`: a webhook timer counted under queue None, another
    tenant's queue counted), L29 (`continue` -> `break`: everything after the first skipped
    record lost), L33 (`row[3] += 1` -> `= 1`: two dead count as one) and L35 (the waiting
    index 2 -> 3)."""
    s = State()
    hook = Delivery(Webhook("http://x.test/h"), DeliveryPolicy())
    s.create(T0, [TimerSpec("hook", T0 + 5, tenant="t", delivery=hook),          # first in the records
                  TimerSpec("theirs", T0 + 5, tenant="u", delivery=_queue("jobs", 1))])
    s.create(T0, [TimerSpec("d0", T0 + 10, tenant="t", delivery=_queue("jobs", 1)),
                  TimerSpec("d1", T0 + 10, tenant="t", delivery=_queue("jobs", 1)),
                  TimerSpec("w", T0 + 11, tenant="t", delivery=_queue("jobs", 3)),
                  TimerSpec("l", T0 + 12, tenant="t", delivery=_queue("jobs", 3)),
                  TimerSpec("v", T0 + 13, tenant="t", delivery=_queue("jobs", 3)),
                  TimerSpec("o", T0 + 13, tenant="t", delivery=_queue("other", 3))])
    s.tick(T0 + 13)
    now = T0 + 20
    for lease in s.lease(now, "t", "jobs", 2, 1000).leases:                     # d0, d1: last attempt
        assert lease.timer.id in ("d0", "d1")
        s.nack_lease(now, "t", lease.timer.id, lease.lease_id, None)
    (w,) = s.lease(now, "t", "jobs", 1, 1000).leases
    assert w.timer.id == "w"
    s.nack_lease(now, "t", "w", w.lease_id, now + 60_000)                       # waiting for its retry
    (held,) = s.lease(now, "t", "jobs", 1, 1000).leases
    assert held.timer.id == "l"
    # [visible, leased, waiting, dead]
    assert queue_stats(s, "t") == {"jobs": [1, 1, 1, 2], "other": [1, 0, 0, 0]}
    assert queue_stats(s, "t", "jobs") == {"jobs": [1, 1, 1, 2]}
    assert queue_stats(s, "t", "other") == {"other": [1, 0, 0, 0]}
    assert queue_stats(s, "u") == {"jobs": [1, 0, 0, 0]}
    assert list(queue_stats(s, "t")) == ["jobs", "other"]


def test_every_kernel_error_carries_its_code_fields_and_message():
    """errors.py: `KernelError.code` (L25, "INTERNAL" -> "XX…"/None), NotFound's `tenant` (L45)
    and each class's fields, message and code, as the API layer maps them."""
    assert E.KernelError("boom").code == "INTERNAL" and str(E.KernelError("boom")) == "boom"
    e = E.InvalidArgument("specs[0].id", "must be 1..128 characters")
    assert (e.code, e.field, e.rule, str(e)) == ("INVALID_ARGUMENT", "specs[0].id", "must be 1..128 characters",
                                                 "invalid specs[0].id: must be 1..128 characters")
    assert isinstance(e, ValueError) and isinstance(e, E.KernelError)
    e = E.NotFound("acme", "t-1")
    assert (e.code, e.tenant, e.timer_id, str(e)) == ("NOT_FOUND", "acme", "t-1",
                                                      "timer 't-1' not found in tenant 'acme'")
    assert isinstance(e, LookupError)
    e = E.AlreadyExists("acme", "t-1")
    assert (e.code, e.tenant, e.timer_id, e.field, str(e)) == (
        "ALREADY_EXISTS", "acme", "t-1", "id", "id: timer 't-1' already exists in tenant 'acme'")
    e = E.AlreadyExists("acme", "t-1", "specs[2].id")
    assert (e.field, str(e)) == ("specs[2].id", "specs[2].id: timer 't-1' already exists in tenant 'acme'")
    assert E.FailedPrecondition("ended").code == "FAILED_PRECONDITION"
    assert E.SnapshotError("torn").code == "DATA_LOSS"
    e = E.QuotaExceeded("acme", "max_timers", 10, 9, 2)
    assert (e.code, e.tenant, e.limit, e.quota, e.held, e.adding) == ("RESOURCE_EXHAUSTED", "acme", "max_timers",
                                                                      10, 9, 2)
    assert str(e) == ("quota of tenant 'acme' exceeded: max_timers is 10; it holds 9 outstanding timers "
                      "and this request adds 2")
    e = E.QuotaExceeded("acme", "max_payload_bytes", 100, 90, 20)
    assert str(e).endswith("it holds 90 payload bytes of outstanding timers and this request adds 20")
    assert str(E.QuotaExceeded("acme", "other", 1, 1, 1)).endswith("it holds 1 other and this request adds 1")
    back = pickle.loads(pickle.dumps(e))        # its __reduce__ keeps every field
    assert type(back) is E.QuotaExceeded and (back.limit, back.quota, back.held, back.adding, str(back)) == \
        ("max_payload_bytes", 100, 90, 20, str(e))
    assert sorted(E.__all__) == sorted(["KernelError", "InvalidArgument", "NotFound", "AlreadyExists",
                                        "FailedPrecondition", "QuotaExceeded", "SnapshotError"])


def test_a_bad_retention_names_its_field_and_the_range():
    """retention.py L30: the message of a refused retention (a string mutant survived)."""
    for bad in (-1, MAX_RETENTION_MS + 1, True, 1.5, "10", None):
        with pytest.raises(InvalidArgument) as err:
            check_retention("retention default", bad)
        assert str(err.value) == ("invalid retention default: must be an integer number of ms in "
                                  f"0..{MAX_RETENTION_MS} (0: at once)")
    assert check_retention("x", 0) == 0 and check_retention("x", MAX_RETENTION_MS) == MAX_RETENTION_MS
    with pytest.raises(InvalidArgument) as err:
        RetentionPolicy({"acme": -5})
    assert err.value.field == "retention['acme']"


def test_a_bad_retention_policy_names_its_field_and_a_policy_is_unhashable():
    """retention.py L41 (the default's field name) and L56 (`__hash__ = None` -> "")."""
    with pytest.raises(InvalidArgument) as err:
        RetentionPolicy(default=-1)
    assert err.value.field == "retention default"
    with pytest.raises(TypeError, match="unhashable type: 'RetentionPolicy'"):
        hash(RetentionPolicy())


def _bulk_state():
    s = State()
    s.create(T0, [TimerSpec("a", T0 + 100, tenant="t", labels={"k": "v"}), TimerSpec("b", T0 + 100, tenant="t"),
                  TimerSpec("c", T0 + 100, tenant="t", labels={"k": "v"}),
                  TimerSpec("d", T0 + 100, tenant="t", labels={"k": "w"})])
    s.cancel(T0, [("t", "c")])
    return s


def test_bulk_commands_report_each_timer_on_its_own_with_its_message():
    """bulk.py L55 (the NOT_FOUND message), L56 (`continue` -> `break`: the timers after a
    missing one lost), L60 (the NO_MATCH message), L67-68 (the per-timer message loses the
    single command's "refs[0]: " prefix)."""
    s = _bulk_state()
    res = cancel_each(s, T0 + 1, "t", ["zz", "a", "b", "c", "d"], {"k": "v"})
    got = [(i.id, i.code, i.message, i.timer.state.name if i.timer else None) for i in res.items]
    assert got == [
        ("zz", "NOT_FOUND", "timer 'zz' not found in tenant 't'", None),
        ("a", "OK", "", "CANCELLED"),
        ("b", "NO_MATCH", "the timer does not carry the selector's labels", "ARMED"),
        ("c", "FAILED_PRECONDITION", "timer 'c' in tenant 't' is CANCELLED; only scheduled, armed, fired or "
                                     "delivering timers can be cancelled", "CANCELLED"),
        ("d", "NO_MATCH", "the timer does not carry the selector's labels", "ARMED")]
    assert [(e.kind.name, e.timer_id) for e in res.events] == [("CANCELLED", "a")]
    res = reschedule_each(s, T0 + 2, "t", ["zz", "b", "c"], extend_by=5)
    got = [(i.id, i.code, i.message, i.timer.fire_at if i.timer else None) for i in res.items]
    assert got == [("zz", "NOT_FOUND", "timer 'zz' not found in tenant 't'", None),
                   ("b", "OK", "", T0 + 105),
                   ("c", "FAILED_PRECONDITION",
                    "timer 'c' in tenant 't' is CANCELLED; only scheduled or armed timers can be rescheduled",
                    T0 + 100)]


def test_bulk_refusals_name_the_field_and_change_nothing():
    """bulk.py L38-44: each refusal's field and message; L39 `<= MAX_BULK` (exactly MAX_BULK
    ids is allowed)."""
    s = _bulk_state()
    before = s.to_bytes()
    cases = [
        (dict(tenant="", ids=["a"]), "tenant"),
        (dict(tenant="t", ids=[]), "ids", f"must name 1..{MAX_BULK} timers"),
        (dict(tenant="t", ids=["x"] * (MAX_BULK + 1)), "ids", f"must name 1..{MAX_BULK} timers"),
        (dict(tenant="t", ids="a"), "ids", f"must name 1..{MAX_BULK} timers"),
        (dict(tenant="t", ids=["a", "bad id"]), "ids[1]"),
        (dict(tenant="t", ids=["a", "b", "a"]), "ids", "names a timer twice"),
        (dict(tenant="t", ids=["a"], labels={"": "v"}), "labels['']"),
    ]
    for case in cases:
        kw, field = case[0], case[1]
        with pytest.raises(InvalidArgument) as err:
            cancel_each(s, T0 + 1, **kw)
        assert err.value.field == field, (kw, err.value)
        if len(case) > 2:
            assert err.value.rule == case[2]
    for kw, field in [(dict(), "fire_at"), (dict(fire_at=T0 + 5, extend_by=5), "fire_at"),
                      (dict(fire_at=-1), "fire_at"), (dict(extend_by="5"), "extend_by")]:
        with pytest.raises(InvalidArgument) as err:
            reschedule_each(s, T0 + 1, "t", ["a"], **kw)
        assert err.value.field == field, (kw, err.value)
        if len(kw) != 1:
            assert err.value.rule == "give exactly one of fire_at and extend_by"
    assert s.to_bytes() == before
    res = cancel_each(s, T0 + 1, "t", [f"n{i}" for i in range(MAX_BULK)])      # the bound itself is allowed
    assert len(res.items) == MAX_BULK and {i.code for i in res.items} == {"NOT_FOUND"}


def test_a_tenant_limit_defaults_to_unlimited_zeros():
    """quota.py L31-32: the defaults are 0 (unlimited), not None."""
    assert TenantLimit() == (0, 0) and TenantLimit().unlimited
    assert TenantLimit(max_timers=1) == (1, 0) and TenantLimit(max_payload_bytes=1) == (0, 1)
    assert not TenantLimit(max_timers=1).unlimited and not TenantLimit(max_payload_bytes=1).unlimited


def test_a_schedule_row_defaults_to_no_cron_and_no_zone():
    """schedule.py L60-61: an every-schedule's cron and zone are "" (what the rows store), not None."""
    s = Schedule(1000, NO_UNTIL, 0)
    assert (s.cron, s.tz) == ("", "") and s == (1000, -1, 0, "", "")


def test_a_zone_name_is_taken_only_in_its_canonical_spelling():
    """schedule.py L67 (`or` -> `and`): a name the pattern refuses is never looked up, though
    the path it makes would open a real zone file ("Europe//Paris" is Europe/Paris on disk)."""
    assert zone("Europe/Paris").key == "Europe/Paris"
    for name in ("Europe//Paris", "/Europe/Paris", "Europe/Paris/", "../zoneinfo/UTC", "Europe/Paris "):
        with pytest.raises(KeyError):
            zone(name)


def test_schedule_integers_refuse_bools_and_name_the_type():
    """schedule.py L77 (`or` -> `and`: a bool passed as an int) and L78 (the message)."""
    for kw, field, typ in ((dict(every_ms=True), "s.every_ms", "bool"), (dict(max_count=1.0), "s.max_count", "float"),
                           (dict(until="9"), "s.until", "str")):
        args = dict(every_ms=1000, until=None, max_count=0, cron=None, tz=None) | kw
        with pytest.raises(InvalidArgument) as err:
            check_schedule("s", fire_at=T0, ack=False, **args)
        assert (err.value.field, err.value.rule) == (field, f"must be an int, not {typ}")


def test_check_schedule_defaults_bounds_and_refusal_texts():
    """schedule.py L104-105 (cron and tz default to "", not "XXXX"), L110 and L113 (refusal
    texts), L114 (`every_ms <= MAX_TIME` -> `<`: the largest interval is allowed)."""
    base = dict(every_ms=0, until=None, max_count=0, cron=None, tz=None, fire_at=T0, ack=False)
    assert check_schedule("s", **base | dict(every_ms=1000)) == Schedule(1000, NO_UNTIL, 0, "", "")
    assert check_schedule("s", **base | dict(every_ms=MAX_TIME)) == Schedule(MAX_TIME, NO_UNTIL, 0, "", "")
    assert check_schedule("s", **base) is None
    for kw, field, rule in (
            (dict(max_count=3), "s.every_ms", "until, max_count and tz need an every_ms or a cron"),
            (dict(every_ms=1000, cron="* * * * *"), "s.cron", "give every_ms or cron, not both"),
            (dict(every_ms=MAX_TIME + 1), "s.every_ms", None)):
        with pytest.raises(InvalidArgument) as err:
            check_schedule("s", **base | kw)
        assert err.value.field == field
        if rule is not None:
            assert err.value.rule == rule


def test_check_policies_types_defaults_and_field_names():
    """recurrence.py L102 (the seed defaults to 0), L107 (`or` -> `and`: a non-string catch_up
    with no overlap), L108 (its text) and L109 (the seed's field name)."""
    every = Schedule(60_000, NO_UNTIL, 0)
    r = check_policies("p", None, None, every, T0, flex_ms=500)
    assert (r.flex_ms, r.seed, r.nominal) == (500, 0, T0)
    for args, kw, field, rule in (
            ((5, None), {}, "p.catch_up", "catch_up and overlap must be strings"),
            ((None, 5), {}, "p.catch_up", "catch_up and overlap must be strings"),
            ((None, None), dict(flex_ms=500, seed=True), "p.flex_seed", "must be an int, not bool"),
            ((None, None), dict(flex_ms=1.5), "p.flex_ms", "must be an int, not float")):
        with pytest.raises(InvalidArgument) as err:
            check_policies("p", *args, every, T0, **kw)
        assert (err.value.field, err.value.rule) == (field, rule)


def test_every_schedule_refusal_text_and_the_bounds_themselves():
    """schedule.py L115-116, L118, L123, L132, L134, L140, L152: each refusal's exact text;
    L133 (`max_count <= MAX_OCCURRENCES` -> `<`) and L139 (`until <= MAX_TIME` -> `<`): the
    bounds themselves are allowed."""
    base = dict(every_ms=1000, until=None, max_count=0, cron=None, tz=None, fire_at=T0, ack=False)
    cron = base | dict(every_ms=0, cron="0 9 * * *", tz="UTC")
    assert check_schedule("s", **base | dict(max_count=MAX_OCCURRENCES)).max_count == MAX_OCCURRENCES
    assert check_schedule("s", **base | dict(until=MAX_TIME)).until == MAX_TIME
    for kw, field, rule in (
            (base | dict(every_ms=999), "s.every_ms", f"must be 0 (no recurrence) or 1000..{MAX_TIME} ms, got 999"),
            (base | dict(tz="UTC"), "s.tz", "a time zone goes with a cron expression"),
            (cron | dict(tz=None), "s.tz", "a cron timer needs an IANA time zone (e.g. Europe/Paris, UTC)"),
            (cron | dict(cron="0 9 * *"), "s.cron", "'0 9 * *' is not a valid 5- or 6-field cron expression"),
            (base | dict(max_count=MAX_OCCURRENCES + 1), "s.max_count", f"must be within 0..{MAX_OCCURRENCES} "
                                                                         "(0: unbounded)"),
            (base | dict(until=T0 - 1), "s.until", f"must be within fire_at..{MAX_TIME} ms, got {T0 - 1}")):
        with pytest.raises(InvalidArgument) as err:
            check_schedule("s", **kw)
        assert (err.value.field, err.value.rule) == (field, rule)
    sched = check_schedule("s", **cron | dict(until=T0 + 1000))       # 09:00 UTC is not within the second
    with pytest.raises(InvalidArgument) as err:
        first_occurrence("s", sched, T0 + 1)
    assert (err.value.field, err.value.rule) == ("s.cron", "has no occurrence between the start and until "
                                                           "(or year 9999)")


def test_the_first_cron_occurrence_is_never_before_the_start_and_the_last_deadline_is_reachable():
    """schedule.py L150 (`start - 1` -> `start - 2`: a start 1 ms past a whole second got the
    second before it) and L169 (`nxt > MAX_TIME` -> `>=`: an every-occurrence at MAX_TIME)."""
    every_second = Schedule(0, NO_UNTIL, 0, "* * * * * *", "UTC")
    assert first_occurrence("s", every_second, T0 + 1) == T0 + 1000
    assert first_occurrence("s", every_second, T0) == T0
    assert next_occurrence(Schedule(1000, NO_UNTIL, 0), MAX_TIME - 1000, MAX_TIME - 1000, 1) == MAX_TIME
    assert next_occurrence(Schedule(1000, NO_UNTIL, 0), MAX_TIME, MAX_TIME, 1) is None


def test_every_policy_refusal_text_and_the_largest_window():
    """recurrence.py L116-117, L119-120, L122, L124, L126: each refusal's exact text; L118
    (`flex_ms <= MAX_FLEX_MS` -> `<`): the largest window is allowed."""
    cron = Schedule(0, NO_UNTIL, 0, "0 9 * * *", "UTC")
    every = Schedule(60_000, NO_UNTIL, 0)
    assert check_policies("p", None, None, cron, T0, flex_ms=MAX_FLEX_MS).flex_ms == MAX_FLEX_MS
    for args, kw, field, rule in (
            (("all", None, None), {}, "p.catch_up", "a catch-up or overlap policy or a flexible window needs an "
                                                    "every_ms or a cron"),
            ((None, None, every), dict(flex_ms=60_000), "p.flex_ms",
             f"must be within 0..{MAX_FLEX_MS} ms and shorter than the interval, got 60000"),
            ((None, None, cron), dict(flex_ms=MAX_FLEX_MS + 1), "p.flex_ms",
             f"must be within 0..{MAX_FLEX_MS} ms and shorter than the interval, got {MAX_FLEX_MS + 1}"),
            ((None, None, every), dict(flex_ms=5, seed=-1), "p.flex_seed", f"must be within 0..{MAX_SEED}"),
            (("late", None, every), {}, "p.catch_up", "must be one of once, all, skip, got 'late'"),
            ((None, "queue", every), {}, "p.overlap", "must be one of skip, buffer_one, allow_all, got 'queue'")):
        with pytest.raises(InvalidArgument) as err:
            check_policies("p", *args, T0, **kw)
        assert (err.value.field, err.value.rule) == (field, rule)


def test_a_webhook_may_not_set_any_header_the_dispatcher_sets():
    """delivery.py L50: every reserved header name (a mutant of one of them survived)."""
    names = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "host",
             "transfer-encoding", "connection")
    assert RESERVED_HEADERS == frozenset(names)
    for name in names:
        for spelled in (name, name.upper()):
            hook = Delivery(Webhook("http://x.test/h", ((spelled, "v"),)), DeliveryPolicy())
            with pytest.raises(InvalidArgument) as err:
                check_delivery("d", hook)
            assert (err.value.field, err.value.rule) == ("d.webhook.headers[0].name", f"{name!r} is set by "
                                                                                        "MINOOTS itself")
    ok = check_delivery("d", Delivery(Webhook("http://x.test/h", (("X-Trace", "1"),)), DeliveryPolicy()))
    assert ok.webhook.headers == (("x-trace", "1"),)


def test_a_resumed_timer_due_exactly_now_moves_to_its_next_occurrence():
    """recurrence.py L193 (`fire_at > now` -> `>=`): a pending occurrence at exactly the
    resume time is in the past, as every occurrence at or before `now` is."""
    every = Schedule(1000, NO_UNTIL, 3)
    assert resume_at(every, T0 + 1, T0) == T0 + 1
    assert resume_at(every, T0, T0) == T0 + 1000
    assert resume_at(every, T0 - 2500, T0) == T0 + 500          # max_count does not end a resume


def test_upcoming_occurrences_stop_at_until_and_reach_max_time():
    """recurrence.py L206 (`at > MAX_TIME` -> `>=`; `or` -> `and`: a first occurrence past
    until listed) and L207 (`break` -> `continue`: that case loops for ever)."""
    assert upcoming(Schedule(1000, NO_UNTIL, 0), MAX_TIME - 1000, 0, 5) == [MAX_TIME - 1000, MAX_TIME]
    assert upcoming(Schedule(1000, T0 + 2000, 0), T0, 0, 10) == [T0, T0 + 1000, T0 + 2000]
    assert upcoming(Schedule(1000, T0 - 1, 0), T0, 0, 3) == []
    assert upcoming(Schedule(1000, NO_UNTIL, 0), MAX_TIME + 1, 0, 3) == []
    assert upcoming(Schedule(1000, NO_UNTIL, 2), T0, 1, 3) == [T0]
    assert upcoming(Schedule(1000, NO_UNTIL, 2), T0, 2, 3) == []


def test_a_webhook_attempt_succeeds_only_with_a_2xx_and_no_error():
    """delivery.py L119: `status < 300` -> `<= 300` / `< 301`, and `and` -> `or`."""
    assert is_success(200, "") and is_success(299, "") and is_success(204, "")
    for status, error in ((300, ""), (199, ""), (500, ""), (0, "connect"), (200, "timeout"), (0, "")):
        assert not is_success(status, error), (status, error)


def test_delivery_refusals_name_the_field_and_the_url_bound_itself_is_allowed():
    """delivery.py L125 (the bound's text), L135 (not a Delivery), L143 (the endpoint's field),
    L147 (the url's field) and L148 (`len(url) > MAX_URL_LEN` -> `>=`)."""
    url = "http://x.test/" + "a" * (MAX_URL_LEN - len("http://x.test/"))
    assert check_delivery("d", Delivery(Webhook(url), DeliveryPolicy())).webhook.url == url
    for d, field, rule in (
            ("hook", "d", "must be a Delivery, not str"),
            (Delivery(Webhook(url + "a"), DeliveryPolicy()), "d.webhook.url", None),
            (Delivery(Webhook(b"http://x.test/"), DeliveryPolicy()), "d.webhook.url", None),
            (Delivery(Webhook("http://x.test/"), DeliveryPolicy(), None, "bad id"), "d.endpoint",
             "must be 1..64 characters of [A-Za-z0-9_-]"),
            (Delivery(Webhook("http://x.test/"), DeliveryPolicy(max_attempts=0)), "d.policy.max_attempts",
             f"must be within 1..{MAX_ATTEMPTS}, got 0")):
        with pytest.raises(InvalidArgument) as err:
            check_delivery("d", d)
        assert err.value.field == field, (d, err.value)
        if rule is not None:
            assert err.value.rule == rule


def test_webhook_url_and_header_refusals_by_field_and_text_and_endpoint_id_bounds():
    """delivery.py L151-152 (the URL rule's text), L162-163 (a header name's and value's
    field), L171 (a repeated header's text) and L182 (an endpoint id of 1 and of 64 characters
    is allowed)."""
    def hook(url="http://x.test/", headers=()):
        return Delivery(Webhook(url, headers), DeliveryPolicy())

    for d, field, rule in (
            (hook("ftp://x.test/"), "d.webhook.url",
             f"must be an http:// or https:// URL of at most {MAX_URL_LEN} ASCII characters without spaces"),
            (hook(headers=((5, "v"),)), "d.webhook.headers[0].name", None),
            (hook(headers=(("X-A", "1"), ("x-b", 7))), "d.webhook.headers[1].value", None),
            (hook(headers=(("X-A", "1"), ("x-a", "2"))), "d.webhook.headers[1].name", "header 'x-a' is given twice")):
        with pytest.raises(InvalidArgument) as err:
            check_delivery("d", d)
        assert err.value.field == field, (d, err.value)
        if rule is not None:
            assert err.value.rule == rule
    assert check_endpoint_id("e", "a") == "a"
    assert check_endpoint_id("e", "e" * MAX_ENDPOINT_ID_LEN) == "e" * MAX_ENDPOINT_ID_LEN
    every_char = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"   # L182 `<=` -> `<`
    assert check_endpoint_id("e", every_char) == every_char
    for bad in ("", "e" * (MAX_ENDPOINT_ID_LEN + 1), "ep.1"):
        with pytest.raises(InvalidArgument):
            check_endpoint_id("e", bad)


def test_queue_names_at_their_bounds_and_backoff_refusals_by_field_and_text():
    """delivery.py L190 (a queue name of 1 and of MAX_QUEUE_LEN characters, and one using every
    allowed character, is allowed), L191 (its rule's text), L198-199 (the backoff fields'
    names) and L201 (the cap-below-base text)."""
    every_char = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:~-"
    for name in ("q", "q" * MAX_QUEUE_LEN, every_char):
        assert check_queue("q", name) == name
    for bad in ("", "q" * (MAX_QUEUE_LEN + 1), "a/b"):
        with pytest.raises(InvalidArgument) as err:
            check_queue("q", bad)
        assert err.value.rule == f"must be 1..{MAX_QUEUE_LEN} characters of [A-Za-z0-9._:~-]"
    for pol, field, rule in ((DeliveryPolicy(backoff_base_ms=0), "d.policy.backoff_base_ms", None),
                             (DeliveryPolicy(backoff_cap_ms=0), "d.policy.backoff_cap_ms", None),
                             (DeliveryPolicy(backoff_base_ms=500, backoff_cap_ms=400), "d.policy.backoff_cap_ms",
                              "must be >= backoff_base_ms (500), got 400")):
        with pytest.raises(InvalidArgument) as err:
            check_delivery("d", Delivery(Webhook("http://x.test/"), pol))
        assert err.value.field == field
        if rule is not None:
            assert err.value.rule == rule


def test_policy_lower_bounds_and_error_classes_at_their_bounds():
    """delivery.py L204 (an attempt timeout of 1 ms is allowed), L205 (the ack deadline's
    field), L210 (an error class of MAX_ERROR_LEN is allowed; `or` -> `and`: a short non-ASCII
    class such as "é", which isalnum() accepts) and L211 (its rule's text)."""
    ok = check_delivery("d", Delivery(Webhook("http://x.test/"), DeliveryPolicy(attempt_timeout_ms=1)))
    assert ok.policy.attempt_timeout_ms == 1
    with pytest.raises(InvalidArgument) as err:
        check_delivery("d", Delivery(None, DeliveryPolicy(ack_deadline_ms=1), "jobs"))
    assert err.value.field == "d.policy.ack_deadline_ms"
    assert check_error_class("e", "x" * MAX_ERROR_LEN) == "x" * MAX_ERROR_LEN
    assert check_error_class("e", "http_status.5-xx") == "http_status.5-xx"
    for bad in ("é", "x" * (MAX_ERROR_LEN + 1), "a b", "a/b"):
        with pytest.raises(InvalidArgument) as err:
            check_error_class("e", bad)
        assert err.value.rule == f"must be at most {MAX_ERROR_LEN} characters of [A-Za-z0-9_.-]"


def test_a_created_timer_is_shown_as_it_is_stored_until_0_and_the_default_policies_included():
    """table.timer_of builds the create result of a schedule with default policies; it must
    equal what a read shows (L155-157: the until of 0, epoch time, is a time and not "none";
    `until` and `max_count` each in their own field; the default overlap is skip)."""
    s = State()
    r = s.create(T0, [TimerSpec("e", T0 + 1000, every_ms=1000),
                      TimerSpec("u", T0 + 1000, every_ms=1000, until=T0 + 10_000, max_count=3),
                      TimerSpec("c", T0 + 60_000, cron="* * * * *", tz="UTC"),
                      TimerSpec("z", 0, every_ms=1000, until=0),
                      TimerSpec("o", T0 + 1000)])
    assert [i.timer for i in r.items] == [s.get("default", i) for i in ("e", "u", "c", "z", "o")]
    by = {i.timer.id: i.timer for i in r.items}
    assert (by["u"].until, by["u"].max_count, by["e"].until) == (T0 + 10_000, 3, None)
    assert (by["z"].until, by["z"].fire_at) == (0, 0)
    assert (by["e"].catch_up, by["e"].overlap) == ("once", "skip")


def test_a_plain_timer_delivers_no_escalation_step_and_a_create_item_is_an_unhashable_pair():
    """timer.py L189 (the default step 0: a plain timer is no escalation timer), L246-249."""
    s = State()
    item = s.create(T0, [TimerSpec("a", T0 + 1000)]).items[0]
    assert s.get("default", "a").escalation_step == 0 and item.timer.escalation_step == 0
    with pytest.raises(TypeError, match="unhashable type"):
        hash(item)
    assert repr(item) == f"CreateItem(timer={item.timer!r}, created=True)"
    assert tuple(item) == (item.timer, True)
