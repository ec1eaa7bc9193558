"""`minoots subscription create|list|get|delete|consume`: durable event subscriptions.

A subscription is a named cursor kept by the cluster: retention keeps every event it
has not committed (up to the hard events budget; past it the subscription is marked
overrun with the number of events it lost). `consume` prints its events from the
committed cursor and commits as it goes, so a consumer started again goes on where the
last one stopped. Authentication as for `minoots token`.
"""
from __future__ import annotations

import json
import sys

import click

from .cluster import _out, _sdk, connection, json_option



def _json(s) -> dict:
    return {"tenant": s.tenant, "name": s.name, "all_tenants": s.all_tenants,
            "kinds": [k.name.lower() for k in s.kinds], "cursor": s.cursor,
            "created_at": s.created_at.isoformat() if s.created_at else None, "overrun": s.overrun,
            "lost": s.lost, "commits": s.commits, "node_event_floor": s.node_event_floor,
            "node_event_head": s.node_event_head}


def _show(s) -> None:
    kinds = ",".join(k.name.lower() for k in s.kinds) or "all"
    scope = "every tenant" if s.all_tenants else f"tenant {s.tenant}"
    click.echo(f"subscription {s.name} ({scope}; kinds {kinds})")
    click.echo(f"  cursor    {s.cursor} (next event not committed; {max(0, s.node_event_head + 1 - s.cursor)} behind)")
    click.echo(f"  commits   {s.commits}")
    if s.overrun:
        click.echo(f"  OVERRUN   lost {s.lost} events to the events budget (raise --events-budget, commit faster)")


def _kinds(values) -> list:
    from minoots.api.types import EventKind
    try:
        return [EventKind.parse(k) for k in values]
    except (ValueError, KeyError) as exc:
        raise click.BadParameter(str(exc), param_hint="--kind") from None


@click.group()
def subscription() -> None:
    """Durable event subscriptions: named cursors the cluster keeps, holding retention back."""


@subscription.command("create")
@click.argument("name")
@click.option("--tenant", default=None, help="The tenant it belongs to and whose events it sees (default: yours).")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (repeatable): created, armed, fired, settled, rescheduled, cancelled.")
@click.option("--from", "from_", default=0, type=click.IntRange(0), show_default=True,
              help="First event sequence (0: the next event committed).")
@click.option("--all-tenants", is_flag=True, help="Every tenant's events (tokens that see every tenant only).")
@json_option
@connection()
def create_cmd(name, tenant, kinds, from_, all_tenants, as_json, conn) -> None:
    """Create subscription NAME."""
    parsed = _kinds(kinds)
    s = _sdk(conn, lambda c: c.create_subscription(name, tenant=tenant, kinds=parsed, from_sequence=from_,
                                                    all_tenants=all_tenants))
    _out(_json(s), as_json, lambda _: _show(s))


@subscription.command("get")
@click.argument("name")
@click.option("--tenant", default=None)
@json_option
@connection()
def get_cmd(name, tenant, as_json, conn) -> None:
    """Show subscription NAME: its cursor, how far behind it is, and any overrun."""
    s = _sdk(conn, lambda c: c.get_subscription(name, tenant=tenant))
    _out(_json(s), as_json, lambda _: _show(s))


@subscription.command("list")
@click.option("--tenant", default=None)
@json_option
@connection()
def list_cmd(tenant, as_json, conn) -> None:
    """The subscriptions of a tenant."""
    subs = _sdk(conn, lambda c: c.list_subscriptions(tenant=tenant))
    _out([_json(s) for s in subs], as_json, lambda _: [_show(s) for s in subs] or click.echo("no subscriptions"))


@subscription.command("delete")
@click.argument("name")
@click.option("--tenant", default=None)
@json_option
@connection()
def delete_cmd(name, tenant, as_json, conn) -> None:
    """Delete subscription NAME (retention no longer keeps events for it)."""
    s = _sdk(conn, lambda c: c.delete_subscription(name, tenant=tenant))
    _out(_json(s), as_json, lambda _: click.echo(f"deleted subscription {s.name}"))


@subscription.command("consume")
@click.argument("name")
@click.option("--tenant", default=None)
@click.option("--limit", default=None, type=click.IntRange(1), help="Stop after this many events (then commit).")
@click.option("--resync", is_flag=True,
              help="If its events are gone, count the loss, print the timers that fired meanwhile and go on.")
@connection()
def consume_cmd(name, tenant, limit, resync, conn) -> None:
    """Print NAME's events as JSON lines from its committed cursor, committing as it goes."""
    def run(c):
        n = 0
        with c.subscribe(name, tenant=tenant, on_loss="resync" if resync else "raise") as sub:
            reported = 0
            for ev in sub:
                for t in sub.resynced[reported:]:
                    click.echo(json.dumps({"resynced": t.to_dict()}, sort_keys=True, default=str))
                reported = len(sub.resynced)
                click.echo(json.dumps(ev.to_dict(), sort_keys=True, separators=(",", ":")))
                sys.stdout.flush()
                n += 1
                if limit is not None and n >= limit:
                    break
            if sub.lost:
                click.echo(f"lost {sub.lost} events (resynced {len(sub.resynced)} fired timers)", err=True)
    try:
        _sdk(conn, run)
    except KeyboardInterrupt:
        pass
