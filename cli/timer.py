"""`minoots timer …`: create, inspect, change and watch timers (thin over the SDK).

Every command takes `--node HOST:PORT` (any member's gRPC address; repeatable;
default $MINOOTS_NODES, comma-separated, else the cluster `minoots up` runs in
./minoots-data), `--tenant`, `--timeout`, `--tls` / `--ca FILE` and `--json`
(one JSON object per line). Durations are like 90s, 1h30m, 250ms, 2d; times are RFC 3339
(2026-12-01T10:00:00Z, 2026-12-01T11:00:00.250+01:00).

Bad input and server errors print one line, `error: …`, and exit non-zero
(2 for bad input, 1 for errors from the cluster); never a traceback.
"""
from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Optional

import click

from .common import ca_option, fail, node_option, sdk_call, sdk_client, timeout_option, tls_option

# 9999-12-31T23:59:59.999Z, the kernel's MAX_TIME (kept here so the CLI does not import the kernel).
MAX_TIME_MS = 253402300799999
MAX_INPUT = 64

_UNIT_MS = {"ms": Fraction(1), "s": Fraction(1000), "m": Fraction(60_000), "h": Fraction(3_600_000),
            "d": Fraction(86_400_000), "w": Fraction(604_800_000)}
_DUR_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d|w)", re.ASCII)
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))", re.ASCII)
DURATION_HINT = "expected a duration like 90s, 1h30m, 250ms or 2d"
TIME_HINT = "expected an RFC 3339 time like 2026-12-01T10:00:00Z or 2026-12-01T11:00:00.250+01:00"


class ParseError(ValueError):
    """Bad user input; the message is one line meant for the terminal."""


def parse_duration(text: str, *, allow_negative: bool = False) -> int:
    """'1h30m' -> 5400000: a duration in whole milliseconds (fractions of a ms round up).

    Units ms, s, m, h, d, w; parts may repeat and carry decimals ('1.5h');
    spaces between parts are ignored. A leading '-' only with allow_negative.
    A bare number is refused: '30' could mean seconds or milliseconds.
    """
    if not isinstance(text, str):
        raise ParseError(DURATION_HINT)
    s = text.strip().replace(" ", "")
    if not s or len(s) > MAX_INPUT:
        raise ParseError(f"{DURATION_HINT}, got {text[:MAX_INPUT]!r}")
    sign = 1
    if s[0] in "+-":
        if s[0] == "-":
            if not allow_negative:
                raise ParseError(f"a negative duration is not allowed here, got {text!r}")
            sign = -1
        s = s[1:]
    total = Fraction(0)
    pos = 0
    while pos < len(s):
        m = _DUR_PART.match(s, pos)
        if m is None:
            hint = "; add a unit (ms, s, m, h, d, w)" if re.fullmatch(r"[0-9.]+", s, re.ASCII) else ""
            raise ParseError(f"{DURATION_HINT}, got {text!r}{hint}")
        total += Fraction(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ParseError(f"{DURATION_HINT}, got {text!r}")
    ms = -((-total.numerator) // total.denominator)  # ceil
    if ms > MAX_TIME_MS:
        raise ParseError(f"duration {text!r} is too long (beyond year 9999)")
    return sign * ms


def parse_time(text: str) -> datetime:
    """An RFC 3339 time -> aware UTC datetime (within 1970..9999)."""
    if not isinstance(text, str):
        raise ParseError(TIME_HINT)
    s = text.strip()
    if not s or len(s) > MAX_INPUT:
        raise ParseError(f"{TIME_HINT}, got {text[:MAX_INPUT]!r}")
    m = _RFC3339.fullmatch(s)
    if m is None:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:.]+", s, re.ASCII):
            raise ParseError(f"time {text!r} has no time zone; add Z (UTC) or an offset like +02:00")
        raise ParseError(f"{TIME_HINT}, got {text!r}")
    y, mo, d, h, mi, sec, frac, z, osign, oh, om = m.groups()
    try:
        if z:
            tz = timezone.utc
        else:
            if int(oh) > 23 or int(om) > 59:
                raise ValueError("bad UTC offset")
            off = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(off if osign == "+" else -off)
        us = 0
        if frac:
            digits = frac[1:]
            us = int(digits[:6].ljust(6, "0"))
            if len(digits) > 6 and int(digits[6:]) > 0:
                us += 1           # never round a deadline down
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), tzinfo=tz)
        dt = (dt + timedelta(microseconds=us)).astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ParseError(f"invalid time {text!r}: {exc}") from None
    if dt.year < 1970:
        raise ParseError(f"time {text!r} is before 1970")
    return dt


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParseError(f"--label expects KEY=VALUE, got {text!r}")
    return key.strip(), value


def parse_header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ParseError(f"--webhook-header expects NAME=VALUE, got {text!r}")
    return key.strip(), value


def read_blob(value: Optional[str], what: str) -> bytes:
    """'@path' -> the file's bytes ('@-' = stdin), anything else -> its UTF-8 bytes."""
    if value is None:
        return b""
    if value.startswith("@"):
        path = value[1:]
        if path == "-":
            return sys.stdin.buffer.read()
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ParseError(f"cannot read {what} file {path!r}: {exc.strerror or exc}") from None
    return value.encode("utf-8")


def _parsed(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except ParseError as exc:
        fail(str(exc), code=2)


def _parsed_all(parse, values) -> list:
    """Each value through an SDK enum's `parse`; a bad one is a usage error (exit 2)."""
    from minoots.api.types import MinootsError

    try:
        return [parse(v) for v in values]
    except MinootsError as exc:
        fail(str(exc), code=2)


# ---------------------------------------------------------------- SDK plumbing


def _client(opts: dict):
    return sdk_client(opts)


def _run(fn):
    """Call the SDK; turn its errors into one clean line."""
    return sdk_call(fn)


def _fmt_time(dt: Optional[datetime]) -> str:
    if dt is None:
        return "-"
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fmt_rel(dt: datetime) -> str:
    delta = (dt - datetime.now(timezone.utc)).total_seconds()
    word = "in" if delta >= 0 else "ago"
    d = abs(delta)
    if d < 120:
        text = f"{d:.1f}s"
    elif d < 7200:
        text = f"{d / 60:.1f}m"
    elif d < 172800:
        text = f"{d / 3600:.1f}h"
    else:
        text = f"{d / 86400:.1f}d"
    return f"in {text}" if word == "in" else f"{text} ago"


def _emit_json(obj) -> None:
    click.echo(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def _show_timer(t, as_json: bool, headline: Optional[str] = None) -> None:
    if as_json:
        _emit_json(t.to_dict())
        return
    if headline:
        click.echo(headline)
    rows = [("id", t.id), ("tenant", t.tenant), ("state", t.state.name.lower()),
            ("fire_at", f"{_fmt_time(t.fire_at)} ({_fmt_rel(t.fire_at)})"), ("revision", t.revision)]
    if t.name:
        rows.append(("name", t.name))
    if t.labels:
        rows.append(("labels", ",".join(f"{k}={v}" for k, v in sorted(t.labels.items()))))
    if t.payload:
        d = t.to_dict()
        rows.append(("payload", d["payload"] if "payload" in d else f"base64:{d['payload_base64']}"))
    if t.ack_required:
        rows.append(("ack_required", "yes"))
    if t.every is not None or t.cron:
        ms = int(t.every / timedelta(milliseconds=1)) if t.every is not None else 0
        what = f"{ms / 1000:g}s" if ms else f"cron '{t.cron}' in {t.tz}"
        rows.append(("every", what + (f", until {_fmt_time(t.until)}" if t.until else "")
                     + (f", {t.max_count} occurrences" if t.max_count else "")))
        rows.append(("policies", f"catch-up {t.catch_up or 'once'}, overlap {t.overlap or 'skip'}"
                     + (", PAUSED" if t.paused else "")
                     + (f", {t.triggered} triggered" if t.triggered else "")
                     + (f", {t.skipped} skipped" if t.skipped else "")
                     + (f", flex {t.flex.total_seconds():g}s" if t.flex else "")
                     + ((f", in delivery: {', '.join(f'{t.id}@{f}' for f in t.pending_fire_ids)}"
                         if t.webhook or t.queue else f", awaiting acks of {list(t.pending_fire_ids)}")
                        if t.pending_fire_ids else "")
                     + (", one buffered" if t.buffered else "")))
    if t.idempotency_key and t.idempotency_key != t.id:
        rows.append(("idempotency_key", t.idempotency_key))
    for name in ("created_at", "armed_at", "fired_at", "settled_at"):
        v = getattr(t, name)
        if v is not None:
            rows.append((name, _fmt_time(v)))
    if t.attempts:
        rows.append(("attempts", t.attempts))
    if t.fire_id:
        rows.append(("fire_id", t.fire_id))
    if t.webhook or t.queue:
        rows.append(("webhook", t.webhook) if t.webhook else ("queue", t.queue))
        if t.endpoint:
            rows.append(("endpoint", t.endpoint))
        for a in t.delivery_attempts:
            outcome = a.error_class or "ok"
            rows.append((f"attempt {a.attempt}", f"{_fmt_time(a.at)}  status={a.status_code}  {outcome}  "
                                                 f"{a.latency_ms}ms"
                                                 + (f"  retry at {_fmt_time(a.next_attempt_at)}"
                                                    if a.next_attempt_at else "")))
        if t.next_attempt_at:
            rows.append(("next_attempt_at", _fmt_time(t.next_attempt_at)))
    rows += _graph_rows(t)
    for k, v in rows:
        click.echo(f"{k:<16}{v}")


def _graph_rows(t) -> list:
    rows = []
    if t.after:
        ms = 0 if t.after_delay is None else int(t.after_delay / timedelta(milliseconds=1))
        rows.append(("after", f"{','.join(t.after)}  on={t.on} mode={t.mode} delay={ms / 1000:g}s "
                              f"on_parent_cancel={t.on_parent_cancel}"))
        rows.append(("dependency", t.dependency + (f" (waiting on {','.join(t.waiting_on)})" if t.waiting_on else "")))
    if t.children:
        rows.append(("children", ",".join(t.children)))
    for k, (after, action) in enumerate(t.escalate):
        done = "escalated" if k < t.escalated else "pending"
        rows.append((f"escalate {k + 1}", f"{after.total_seconds():g}s  {action.decode('utf-8', 'replace')}  {done}"))
    return rows


def _event_line(ev) -> str:
    extra = f"  fire_id={ev.fire_id}" if ev.fire_id else ""
    if ev.escalation_step:          # the ladder step that came due and the action to take
        extra += f"  step={ev.escalation_step}  action={ev.to_dict()['action']!r}"
    return (f"{ev.sequence:>8}  {_fmt_time(ev.at)}  {ev.kind.name.lower():<11}  {ev.tenant}/{ev.timer_id}  "
            f"state={ev.state.name.lower()}  fire_at={_fmt_time(ev.fire_at)}  rev={ev.revision}{extra}")


# ---------------------------------------------------------------- options

json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
tenant_option = click.option("--tenant", default=None, help="Tenant (the server's default when omitted).")


def common_options(fn):
    """--node/--json/--tenant/--timeout/--tls/--ca; the connection ones arrive bundled as `conn`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, nodes, timeout, tls, ca, **kw):
        return fn(*args, conn={"nodes": nodes, "timeout": timeout, "tls": tls, "ca": ca}, **kw)

    for opt in (ca_option, tls_option, timeout_option(), tenant_option, json_option, node_option):
        wrapper = opt(wrapper)
    return wrapper


@click.group()
def timer() -> None:
    """Create, inspect, change and watch timers."""


@timer.command("create")
@click.option("--in", "in_", metavar="DURATION", help="Fire after this long, e.g. 30s, 1h30m.")
@click.option("--at", "at", metavar="TIME", help="Fire at this RFC 3339 time, e.g. 2026-12-01T10:00:00Z.")
@click.option("--id", "timer_id", default=None, help="Timer id (generated when omitted).")
@click.option("--name", default="", help="Free-form name.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (repeatable).")
@click.option("--payload", default=None, metavar="@FILE|TEXT", help="Payload: text, or @file (@- = stdin).")
@click.option("--action", default=None, metavar="@FILE|TEXT", help="Opaque action spec: text, or @file.")
@click.option("--idempotency-key", default=None, help="Retries with the same key return the original timer "
              "(default: the timer id).")
@click.option("--ack-required", is_flag=True, help="Stay FIRED until acknowledged (`minoots timer ack`).")
@click.option("--webhook", default=None, metavar="URL",
              help="When it fires, POST a signed JSON envelope here (Standard Webhooks); retried, then "
                   "DEAD_LETTERED. The tenant needs a secret first: minoots webhook rotate-secret.")
@click.option("--webhook-header", "webhook_headers", multiple=True, metavar="NAME=VALUE",
              help="An extra request header for the webhook (repeatable).")
@click.option("--endpoint", "endpoint", default=None, metavar="ID",
              help="Or: POST to this managed endpoint (minoots endpoint add), signed with its own secret.")
@click.option("--queue", "queue_name", default=None, metavar="QUEUE",
              help="Or: when it fires, make it available on this pull queue (minoots queue lease QUEUE).")
@click.option("--max-attempts", type=click.IntRange(1, 50), default=None,
              help="Webhook attempts or queue leases (default 5).")
@click.option("--backoff-base", default=None, metavar="DURATION",
              help="Retry n waits a random time up to min(cap, base*2^(n-1)) (default 1s).")
@click.option("--backoff-cap", default=None, metavar="DURATION", help="Longest retry wait (default 60s).")
@click.option("--attempt-timeout", default=None, metavar="DURATION", help="Per-attempt timeout (default 10s).")
@click.option("--every", default=None, metavar="DURATION",
              help="Recur: fire at the deadline, then every DURATION (at least 1s) after it, each occurrence "
                   "a fire of its own. Missed occurrences (an outage) fire once (see --catch-up); with "
                   "--ack-required each fire awaits its own ack (see --overlap).")
@click.option("--until", "until", default=None, metavar="TIME", help="With --every: last time an occurrence "
              "may be due (RFC 3339).")
@click.option("--max-count", type=click.IntRange(1, (1 << 32) - 1), default=None,
              help="With --every or --cron: occurrences in all.")
@click.option("--cron", default=None, metavar="EXPR",
              help="Recur at these cron times (5 fields, or 6 with seconds last), e.g. '0 9 * * 1-5', "
                   "in --tz; the first at or after --in/--at (default: now). A wall time skipped by a DST "
                   "jump fires right after it; one that happens twice fires twice.")
@click.option("--tz", default=None, metavar="ZONE", help="With --cron: an IANA time zone, e.g. Europe/Paris, UTC.")
@click.option("--after", "after", multiple=True, metavar="ID",
              help="Wait (SCHEDULED) until this timer meets --on; repeatable (at most 16 parents). "
                   "No --in/--at needed then (--at is the earliest fire time).")
@click.option("--on", "on", type=click.Choice(["fired", "settled", "dead_lettered", "cancelled"]), default=None,
              help="With --after: the parents' condition (default settled).")
@click.option("--mode", type=click.Choice(["all", "any"]), default=None,
              help="With several --after: all parents (default) or any one.")
@click.option("--delay", default=None, metavar="DURATION", help="With --after: fire this long after the condition.")
@click.option("--on-parent-cancel", type=click.Choice(["cancel", "release"]), default=None,
              help="With --after: a parent that can no longer meet the condition cancels this timer "
                   "(default) or releases it (counts as met).")
@click.option("--escalate", "escalate", multiple=True, metavar="DURATION:ACTION",
              help="With --ack-required: DURATION after the fire without an ack, an ESCALATED event for "
                   "ACTION (repeatable, at most 8, increasing); an ack stops the ladder. With --webhook, "
                   "--endpoint or --queue each step is also delivered there (timer ID@SEQ, timer.escalated).")
@click.option("--catch-up", "catch_up", type=click.Choice(["once", "all", "skip"]), default=None,
              help="With --every or --cron, when an outage left several occurrences due: fire once (default), "
                   "fire all (at most 100, the rest skipped and counted), or skip them.")
@click.option("--overlap", type=click.Choice(["skip", "buffer_one", "allow_all"]), default=None,
              help="With --every or --cron, an occurrence due while an earlier one awaits its ack "
                   "(--ack-required) or is still being delivered (--webhook, --endpoint, --queue: each occurrence "
                   "is a timer ID@FIRE_ID): skip it (default), buffer one until they end, or allow all (at most "
                   "100 pending).")
@click.option("--flex", default=None, metavar="DURATION",
              help="With --every or --cron: fire each occurrence at a time within [occurrence, occurrence + "
                   "DURATION] (a flexible window, at most 24h; with --every shorter than the interval).")
@common_options
def create(in_, at, timer_id, name, labels, payload, action, idempotency_key, ack_required, webhook,
           webhook_headers, endpoint, queue_name, max_attempts, backoff_base, backoff_cap, attempt_timeout, every,
           until, max_count, cron, tz, after, on, mode, delay, on_parent_cancel, escalate, catch_up, overlap, flex,
           conn, as_json, tenant) -> None:
    """Create a timer: give --in DURATION or --at TIME (the first occurrence with --every,
    the start with --cron; and --webhook URL to have it called), or --after ID
    [--on settled] [--delay 10s] to start it when other timers finish."""
    graph: dict = {}
    if after:
        graph = {"after": list(after), "on": on or "", "mode": mode or "", "on_parent_cancel": on_parent_cancel or ""}
        if in_ is not None:
            fail("--after and --in do not go together (use --delay: the time after the condition)", code=2)
    elif on or mode or delay or on_parent_cancel:
        fail("--on, --mode, --delay and --on-parent-cancel need --after", code=2)
    if escalate:
        steps = []
        for text in escalate:
            dur, sep, act = text.partition(":")
            if not sep:
                fail(f"--escalate {text!r}: expected DURATION:ACTION, e.g. 30s:page-oncall", code=2)
            steps.append((timedelta(milliseconds=_parsed(parse_duration, dur)), act.encode()))
        graph["escalate"] = steps
    if after:
        graph["delay"] = None if delay is None else timedelta(milliseconds=_parsed(parse_duration, delay))
        if at is None:
            in_ = None
    if cron is not None and in_ is None and at is None:
        in_ = "0s"
    if (in_ is None) == (at is None) and not after:
        fail("give exactly one of --in DURATION and --at TIME", code=2)
    if sum(x is not None for x in (webhook, endpoint, queue_name)) > 1:
        fail("give one of --webhook, --endpoint and --queue", code=2)
    if every is None and cron is None and (until is not None or max_count is not None):
        fail("--until and --max-count need --every or --cron", code=2)
    if (cron is None) != (tz is None):
        fail("--cron and --tz go together", code=2)
    if every is None and cron is None and (catch_up is not None or overlap is not None or flex is not None):
        fail("--catch-up, --overlap and --flex need --every or --cron", code=2)
    flex_d = None if flex is None else timedelta(milliseconds=_parsed(parse_duration, flex))
    every_d = None if every is None else timedelta(milliseconds=_parsed(parse_duration, every))
    until_t = None if until is None else _parsed(parse_time, until)
    delay = fire_at = None
    if in_ is not None:
        delay = timedelta(milliseconds=_parsed(parse_duration, in_))
    elif at is not None:
        fire_at = _parsed(parse_time, at)
    if after:
        delay = graph.pop("delay")
    label_map = dict(_parsed(parse_label, lab) for lab in labels)
    payload_b = _parsed(read_blob, payload, "payload")
    action_b = _parsed(read_blob, action, "action")
    delivery: dict = {}
    if endpoint is not None and webhook_headers:
        fail("--webhook-header needs --webhook (an endpoint has its own headers)", code=2)
    if webhook is not None or endpoint is not None:
        delivery = {"max_attempts": max_attempts}
        if endpoint is not None:
            delivery["endpoint"] = endpoint
        else:
            delivery.update(webhook=webhook,
                            webhook_headers=dict(_parsed(parse_header, h) for h in webhook_headers) or None)
        for key, value in (("backoff_base", backoff_base), ("backoff_cap", backoff_cap),
                           ("attempt_timeout", attempt_timeout)):
            if value is not None:
                delivery[key] = timedelta(milliseconds=_parsed(parse_duration, value))
    elif queue_name is not None:
        if webhook_headers or attempt_timeout:
            fail("--webhook-header and --attempt-timeout need --webhook", code=2)
        delivery = {"queue": queue_name, "max_attempts": max_attempts}
        for key, value in (("backoff_base", backoff_base), ("backoff_cap", backoff_cap)):
            if value is not None:
                delivery[key] = timedelta(milliseconds=_parsed(parse_duration, value))
    elif webhook_headers or max_attempts or backoff_base or backoff_cap or attempt_timeout:
        fail("--webhook-header, --max-attempts, --backoff-* and --attempt-timeout need --webhook, --endpoint "
             "or --queue",
             code=2)
    with _client(conn) as c:
        t = _run(lambda: c.create(fire_at=fire_at, delay=delay, id=timer_id, tenant=tenant, name=name,
                                  payload=payload_b, labels=label_map, action=action_b,
                                  idempotency_key=idempotency_key, ack_required=ack_required, every=every_d,
                                  until=until_t, max_count=max_count or 0, cron=cron or "", tz=tz or "",
                                  catch_up=catch_up or "", overlap=overlap or "", flex=flex_d, **delivery,
                                  **graph))
    _show_timer(t, as_json, "created" if t.created is not False else "already existed (same idempotency key)")


@timer.command("redrive")
@click.argument("timer_id", metavar="ID")
@common_options
def redrive(timer_id, conn, as_json, tenant) -> None:
    """Deliver a DEAD_LETTERED webhook timer again with a fresh attempt budget (same webhook-id).
    `minoots timer list --state dead_lettered` lists the dead-letter queue."""
    with _client(conn) as c:
        t = _run(lambda: c.redrive(timer_id, tenant=tenant))
    _show_timer(t, as_json, "redriven")


@timer.command("get")
@click.argument("timer_id", metavar="ID")
@common_options
def get(timer_id, conn, as_json, tenant) -> None:
    """Show one timer."""
    with _client(conn) as c:
        t = _run(lambda: c.get(timer_id, tenant=tenant))
    _show_timer(t, as_json)


@timer.command("list")
@click.option("--state", "states", multiple=True, metavar="STATE",
              help="Only timers in this state (repeatable): scheduled, armed, fired, delivering, settled, "
                   "cancelled, dead_lettered (the dead-letter queue).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Only timers with this label "
              "(repeatable; all must match).")
@click.option("--limit", default=None, type=click.IntRange(0), help="At most this many timers.")
@common_options
def list_(states, labels, limit, conn, as_json, tenant) -> None:
    """List timers (pages are fetched as needed)."""
    from minoots.api.types import TimerState

    parsed_states = _parsed_all(TimerState.parse, states)
    label_map = dict(_parsed(parse_label, lab) for lab in labels)
    n = 0
    with _client(conn) as c:
        it = c.list(tenant=tenant, states=parsed_states, labels=label_map or None, limit=limit)

        def drain():
            nonlocal n
            for t in it:
                n += 1
                if as_json:
                    _emit_json(t.to_dict())
                else:
                    if n == 1:
                        click.echo(f"{'ID':<34} {'TENANT':<12} {'STATE':<13} {'FIRE_AT':<25} NAME")
                    click.echo(f"{t.id:<34} {t.tenant:<12} {t.state.name.lower():<13} "
                               f"{_fmt_time(t.fire_at):<25} {t.name}")
        _run(drain)
    if not as_json and n == 0:
        click.echo("no timers")


@timer.command("cancel")
@click.argument("timer_ids", metavar="[ID]...", nargs=-1)
@click.option("--selector", default=None, metavar="K=V[,K=V]",
              help="Cancel every live timer of the tenant with these labels (all must match), in "
                   "replicated pages of up to 1,000; prints a result per timer.")
@common_options
def cancel(timer_ids, selector, conn, as_json, tenant) -> None:
    """Cancel a scheduled, armed or fired timer; several ids, or --selector, cancel in bulk."""
    if bool(timer_ids) == (selector is not None):
        fail("give timer ids or --selector", code=2)
    with _client(conn) as c:
        if len(timer_ids) == 1:
            t = _run(lambda: c.cancel(timer_ids[0], tenant=tenant))
            _show_timer(t, as_json, "cancelled")
            return
        results = _run(lambda: c.cancel_many(list(timer_ids) or None, selector=selector, tenant=tenant))
    _show_bulk(results, as_json, "cancelled")


def _show_bulk(results, as_json: bool, done: str) -> None:
    ok = sum(r.ok for r in results)
    for r in results:
        if as_json:
            _emit_json(r.to_dict())
        else:
            click.echo(f"{r.id:<34} {done if r.ok else r.code.lower():<20} {r.message}")
    if not as_json:
        click.echo(f"{ok} {done}, {len(results) - ok} not")
    if ok != len(results):
        raise SystemExit(1)


@timer.command("delete")
@click.argument("timer_id", metavar="ID")
@common_options
def delete(timer_id, conn, as_json, tenant) -> None:
    """Remove a settled, cancelled or dead-lettered timer now, before its tenant's
    retention ends (a live timer: cancel it first). Its events stay in the event log;
    its id and idempotency key are free again."""
    with _client(conn) as c:
        t = _run(lambda: c.delete(timer_id, tenant=tenant))
    _show_timer(t, as_json, "deleted")


@timer.command("extend")
@click.argument("timer_id", metavar="ID")
@click.option("--by", required=True, metavar="DURATION",
              help="Move the deadline by this much (e.g. 10s; --by=-10s pulls it in).")
@common_options
def extend(timer_id, by, conn, as_json, tenant) -> None:
    """Move a timer's deadline by a duration."""
    ms = _parsed(parse_duration, by, allow_negative=True)
    with _client(conn) as c:
        t = _run(lambda: c.extend(timer_id, timedelta(milliseconds=ms), tenant=tenant))
    _show_timer(t, as_json, "rescheduled")


@timer.command("reschedule")
@click.argument("timer_id", metavar="ID", required=False)
@click.option("--at", "at", metavar="TIME", help="The new deadline (RFC 3339).")
@click.option("--in", "in_", metavar="DURATION", help="The new deadline, from now.")
@click.option("--selector", default=None, metavar="K=V[,K=V]",
              help="Reschedule every scheduled or armed timer of the tenant with these labels (bulk, "
                   "replicated pages of up to 1,000; --in counts from when the cluster accepts each page).")
@common_options
def reschedule(timer_id, at, in_, selector, conn, as_json, tenant) -> None:
    """Set a timer's deadline: --at TIME (or --in DURATION from now); --selector for many."""
    if (in_ is None) == (at is None):
        fail("give exactly one of --at TIME and --in DURATION", code=2)
    if (timer_id is None) == (selector is None):
        fail("give a timer ID or --selector", code=2)
    if selector is not None:
        kw = {"fire_at": _parsed(parse_time, at)} if at is not None else {
            "delay": timedelta(milliseconds=_parsed(parse_duration, in_))}
        with _client(conn) as c:
            results = _run(lambda: c.reschedule_many(selector=selector, tenant=tenant, **kw))
        _show_bulk(results, as_json, "rescheduled")
        return
    if at is not None:
        when = _parsed(parse_time, at)
    else:
        when = datetime.now(timezone.utc) + timedelta(milliseconds=_parsed(parse_duration, in_))
    with _client(conn) as c:
        t = _run(lambda: c.reschedule(timer_id, when, tenant=tenant))
    _show_timer(t, as_json, "rescheduled")


@timer.command("graph")
@click.argument("timer_id", metavar="ID")
@click.option("--max", "max_nodes", default=200, type=click.IntRange(1, 10_000), help="Show at most this many timers.")
@common_options
def graph_(timer_id, max_nodes, conn, as_json, tenant) -> None:
    """Print a timer's dependency tree: its parents, then it and its dependents (children)."""
    with _client(conn) as c:
        nodes = _run(lambda: c.graph(timer_id, tenant=tenant, max_nodes=max_nodes))
    if as_json:
        for depth, t in nodes:
            _emit_json({"depth": depth, **t.to_dict()})
        return
    root = nodes[0][1]
    if root.after:
        click.echo(f"after {', '.join(root.after)} (on {root.on}, {root.mode})")
    for depth, t in nodes:
        cond = ""
        if t.after and depth:
            ms = 0 if t.after_delay is None else int(t.after_delay / timedelta(milliseconds=1))
            cond = f"  [{t.dependency}: on {t.on}" + (f" +{ms / 1000:g}s" if ms else "") + "]"
        esc = f"  escalated {t.escalated}/{len(t.escalate)}" if t.escalate else ""
        click.echo(f"{'    ' * max(depth - 1, 0)}{'└── ' if depth else ''}{t.id}  {t.state.name.lower()}  "
                   f"{_fmt_time(t.fire_at) if t.state.name != 'SCHEDULED' else '-'}{cond}{esc}")
    if len(nodes) >= max_nodes:
        click.echo(f"(first {max_nodes} shown; --max for more)")


@timer.command("ack")
@click.argument("timer_id", metavar="ID")
@click.option("--fire-id", required=True, type=click.IntRange(1), help="The fire to acknowledge (its fire_id).")
@common_options
def ack(timer_id, fire_id, conn, as_json, tenant) -> None:
    """Acknowledge a fired timer (one created with --ack-required)."""
    with _client(conn) as c:
        t = _run(lambda: c.ack(timer_id, fire_id, tenant=tenant))
    _show_timer(t, as_json, "acknowledged")


@timer.command("watch")
@click.option("--from", "from_", default=0, type=click.IntRange(0), show_default=True,
              help="First sequence number to show (0: only new events).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (repeatable): created, armed, fired, settled, rescheduled, cancelled.")
@click.option("--limit", default=None, type=click.IntRange(1), help="Stop after this many events.")
@common_options
def watch(from_, kinds, limit, conn, as_json, tenant) -> None:
    """Stream events live, one line each; resumes across node failures. Ctrl-C stops."""
    from minoots.api.types import EventKind

    parsed_kinds = _parsed_all(EventKind.parse, kinds)
    with _client(conn) as c:
        w = c.watch(from_sequence=from_, tenant=tenant, kinds=parsed_kinds)

        def stream():
            n = 0
            for ev in w:
                if as_json:
                    _emit_json(ev.to_dict())
                else:
                    click.echo(_event_line(ev))
                sys.stdout.flush()
                n += 1
                if limit is not None and n >= limit:
                    break
        try:
            _run(stream)
        except KeyboardInterrupt:
            pass
        finally:
            w.close()
