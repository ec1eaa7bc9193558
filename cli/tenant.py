"""`minoots tenant set-quota|get-quota|set-retention|get-retention`: tenant quotas and
retention (set: admin; get: admin, operator, or a writer/reader token for its own tenants).

Limits are 0 for unlimited; a flag not given keeps the current value. TENANT "*" is
the default of every tenant without a quota of its own; `--clear` removes a tenant's
own quota so the default applies again. Authentication as for `minoots token`.
"""
from __future__ import annotations

import click

from .cluster import _out, _sdk, connection, json_option
from .common import fail, format_size, parse_size


def _json(q) -> dict:
    return {"tenant": q.tenant, "inherited": q.inherited, "max_timers": q.quota.max_timers,
            "max_payload_bytes": q.quota.max_payload_bytes, "create_rate": q.quota.create_rate,
            "create_burst": q.quota.create_burst, "timers": q.timers, "payload_bytes": q.payload_bytes}


def _limit(n: int, fmt=str) -> str:
    return fmt(n) if n else "unlimited"


def _show(q) -> None:
    where = " (the default, *)" if q.inherited else ""
    click.echo(f"tenant {q.tenant}{where}")
    held = q.tenant != "*"
    click.echo(f"  max timers         {_limit(q.quota.max_timers):<14}" + (f"holds {q.timers}" if held else ""))
    click.echo(f"  max payload bytes  {_limit(q.quota.max_payload_bytes, format_size):<14}"
               + (f"holds {format_size(q.payload_bytes) if q.payload_bytes else 0}" if held else ""))
    rate = f"{q.quota.create_rate}/s" if q.quota.create_rate else "unlimited"
    click.echo(f"  create rate        {rate}")
    if q.quota.create_rate:
        click.echo(f"  create burst       {q.quota.create_burst or q.quota.create_rate}")


def _size(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_size(value)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message), ctx=ctx, param=param) from None


@click.group()
def tenant() -> None:
    """Tenant quotas (what a tenant may hold, how fast it may create) and retention
    (how long its ended timers stay readable)."""


@tenant.command("set-quota")
@click.argument("tenant_name", metavar="TENANT")
@click.option("--timers", type=click.IntRange(0), default=None,
              help="Outstanding (scheduled, armed or fired) timers it may hold; 0: unlimited.")
@click.option("--payload-bytes", callback=_size, default=None,
              help="Payload bytes those timers may hold, e.g. 64MiB; 0: unlimited.")
@click.option("--create-rate", type=click.IntRange(0), default=None,
              help="Timers it may create per second (at the leader, before proposing); 0: unlimited.")
@click.option("--create-burst", type=click.IntRange(0), default=None,
              help="Timers it may create at once above the rate; 0: one second's worth.")
@click.option("--clear", is_flag=True, help="Remove the tenant's own quota: the default (*) applies again.")
@json_option
@connection()
def set_quota_cmd(tenant_name, timers, payload_bytes, create_rate, create_burst, clear, as_json, conn) -> None:
    """Set TENANT's quota ("*": the default of tenants without their own); flags not given keep their value."""
    given = {"max_timers": timers, "max_payload_bytes": payload_bytes, "create_rate": create_rate,
             "create_burst": create_burst}
    if clear and any(v is not None for v in given.values()):
        fail("--clear takes no limits", code=2)
    if not clear and all(v is None for v in given.values()):
        fail("give at least one of --timers, --payload-bytes, --create-rate, --create-burst (or --clear)", code=2)
    q = _sdk(conn, lambda c: c.set_quota(tenant_name, clear=clear, **given))
    _out(_json(q), as_json, lambda _: _show(q))


@tenant.command("get-quota")
@click.argument("tenant_name", metavar="TENANT")
@json_option
@connection()
def get_quota_cmd(tenant_name, as_json, conn) -> None:
    """The quota that applies to TENANT and what it holds now."""
    q = _sdk(conn, lambda c: c.get_quota(tenant_name))
    _out(_json(q), as_json, lambda _: _show(q))


def _retention_json(r) -> dict:
    return {"tenant": r.tenant, "retention_ms": r.retention_ms, "inherited": r.inherited}


def _show_retention(r) -> None:
    where = " (inherited from the default)" if r.inherited else ""
    ms = r.retention_ms
    text = "0 (removed when they end)" if not ms else _human_ms(ms)
    click.echo(f"tenant {r.tenant}: ended timers kept {text}{where}")


def _human_ms(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _retention_arg(ctx, param, value):
    if value is None:
        return None
    if value.strip() == "0":
        return 0
    from .timer import ParseError, parse_duration
    try:
        return parse_duration(value)
    except ParseError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@tenant.command("set-retention")
@click.argument("tenant_name", metavar="TENANT")
@click.argument("retention", metavar="DURATION", required=False, callback=_retention_arg)
@click.option("--clear", is_flag=True, help="Remove the tenant's own retention: the default (*) applies again.")
@json_option
@connection()
def set_retention_cmd(tenant_name, retention, clear, as_json, conn) -> None:
    """Keep TENANT's settled, cancelled and dead-lettered timers readable for DURATION
    (e.g. 24h, 15m; 0: remove them when they end), then remove them (GetTimer answers
    NOT_FOUND; their events stay; their idempotency keys are forgotten). TENANT "*" sets
    the default (built in: 24h). Applies to timers that end from then on. Admin only."""
    if clear == (retention is not None):
        fail("give a DURATION or --clear", code=2)
    r = _sdk(conn, lambda c: c.set_retention(tenant_name, retention, clear=clear))
    _out(_retention_json(r), as_json, lambda _: _show_retention(r))


@tenant.command("get-retention")
@click.argument("tenant_name", metavar="TENANT")
@json_option
@connection()
def get_retention_cmd(tenant_name, as_json, conn) -> None:
    """How long TENANT's ended timers stay readable."""
    r = _sdk(conn, lambda c: c.get_retention(tenant_name))
    _out(_retention_json(r), as_json, lambda _: _show_retention(r))


def _parse_ms(ctx, param, value):
    if value is None:
        return None
    from .timer import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@tenant.command("set-delivery-defaults")
@click.argument("tenant_name", metavar="TENANT")
@click.option("--max-attempts", type=click.IntRange(1, 50), default=None, help="Attempts (default 5).")
@click.option("--backoff-base", callback=_parse_ms, default=None, metavar="DURATION", help="First retry wait (1s).")
@click.option("--backoff-cap", callback=_parse_ms, default=None, metavar="DURATION", help="Longest retry wait (60s).")
@click.option("--attempt-timeout", callback=_parse_ms, default=None, metavar="DURATION", help="Per attempt (10s).")
@click.option("--ack-deadline", callback=_parse_ms, default=None, metavar="DURATION",
              help="Queue lease visibility (30s).")
@click.option("--clear", is_flag=True, help="Remove the tenant's own defaults: the built-in ones apply again.")
@json_option
@connection()
def set_delivery_defaults_cmd(tenant_name, max_attempts, backoff_base, backoff_cap, attempt_timeout, ack_deadline,
                              clear, as_json, conn) -> None:
    """Set the delivery policy TENANT's new webhook, endpoint and queue timers take for every
    field they do not give themselves (fields not given here: the built-in defaults). Taken
    when a timer is created; a change applies to timers created after it. Writer role."""
    given = {"max_attempts": max_attempts, "backoff_base": backoff_base, "backoff_cap": backoff_cap,
             "attempt_timeout": attempt_timeout, "ack_deadline": ack_deadline}
    if clear and any(v is not None for v in given.values()):
        fail("--clear takes no policy options", code=2)
    kw = {k: (v if k == "max_attempts" or v is None else v / 1000) for k, v in given.items()}
    d = _sdk(conn, lambda c: c.set_delivery_defaults(tenant=tenant_name, clear=clear, **kw))
    _out(d.to_dict(), as_json, lambda _: _show_defaults(d))


@tenant.command("get-delivery-defaults")
@click.argument("tenant_name", metavar="TENANT")
@json_option
@connection()
def get_delivery_defaults_cmd(tenant_name, as_json, conn) -> None:
    """The delivery policy TENANT's new timers default to."""
    d = _sdk(conn, lambda c: c.get_delivery_defaults(tenant=tenant_name))
    _out(d.to_dict(), as_json, lambda _: _show_defaults(d))


def _show_defaults(d) -> None:
    r = d.to_dict()
    click.echo(f"tenant {d.tenant}" + (" (built-in defaults)" if d.built_in else ""))
    click.echo(f"  max attempts     {r['max_attempts']}")
    for k in ("backoff_base_ms", "backoff_cap_ms", "attempt_timeout_ms", "ack_deadline_ms"):
        click.echo(f"  {k[:-3].replace('_', ' '):<16} {_human_ms(r[k])}")
