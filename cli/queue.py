"""`minoots queue …`: pull queues for workers (lease, ack, nack, extend) over the SDK."""
from __future__ import annotations

import json
from datetime import timedelta

import click

from .common import fail, sdk_call, sdk_client
from .timer import _parsed, common_options, parse_duration


@click.group()
def queue() -> None:
    """Lease fired queue timers and settle them (workers; role worker, writer or admin)."""


def _lease_ref(timer_id: str, lease_id: str, tenant):
    from minoots.api.types import Lease, Timer, TimerState

    # ack/nack/extend need only the names; the SDK takes a Lease.
    stub = Timer(id=timer_id, tenant=tenant or "", name="", fire_at=None, state=TimerState.UNSPECIFIED, revision=0)
    return Lease(stub, lease_id, 0, None)


@queue.command("lease")
@click.argument("name", metavar="QUEUE")
@click.option("--max", "max_timers", default=1, show_default=True, type=click.IntRange(1, 100))
@click.option("--visibility", default="30s", show_default=True, metavar="DURATION",
              help="How long the lease lasts unless extended; then the timer is redelivered.")
@click.option("--wait", default="0s", show_default=True, metavar="DURATION", help="Long-poll up to this (≤ 20s).")
@common_options
def lease(name, max_timers, visibility, wait, conn, as_json, tenant) -> None:
    """Lease fired timers of QUEUE: prints `TIMER_ID LEASE_ID ATTEMPT EXPIRES` per lease."""
    vis = timedelta(milliseconds=_parsed(parse_duration, visibility))
    w = timedelta(milliseconds=_parsed(parse_duration, wait))
    with sdk_client(conn) as c:
        leases = sdk_call(lambda: c.lease(name, max_timers=max_timers, visibility=vis, wait=w, tenant=tenant))
    for x in leases:
        if as_json:
            click.echo(json.dumps(x.to_dict(), sort_keys=True, separators=(",", ":")))
        else:
            click.echo(f"{x.timer.id} {x.lease_id} {x.attempt} {x.expires_at.isoformat()}")


def _settle(what: str, timer_id: str, lease_id: str, conn, as_json, tenant, **kw) -> None:
    with sdk_client(conn) as c:
        ref = _lease_ref(timer_id, lease_id, tenant or c.tenant)
        result = sdk_call(lambda: getattr(c, what)(ref, **kw))
    timer = getattr(result, "timer", result)
    if as_json:
        click.echo(json.dumps(result.to_dict(), sort_keys=True, separators=(",", ":")))
    else:
        click.echo(f"{timer.id} {timer.state.name.lower()}")


@queue.command("ack")
@click.argument("timer_id", metavar="ID")
@click.argument("lease_id", metavar="LEASE_ID")
@common_options
def ack(timer_id, lease_id, conn, as_json, tenant) -> None:
    """Done: the leased timer settles."""
    _settle("ack_lease", timer_id, lease_id, conn, as_json, tenant)


@queue.command("nack")
@click.argument("timer_id", metavar="ID")
@click.argument("lease_id", metavar="LEASE_ID")
@common_options
def nack(timer_id, lease_id, conn, as_json, tenant) -> None:
    """Give it back: retried per its policy, dead-lettered after the last attempt."""
    _settle("nack_lease", timer_id, lease_id, conn, as_json, tenant)


@queue.command("extend")
@click.argument("timer_id", metavar="ID")
@click.argument("lease_id", metavar="LEASE_ID")
@click.option("--visibility", default="30s", show_default=True, metavar="DURATION")
@common_options
def extend(timer_id, lease_id, visibility, conn, as_json, tenant) -> None:
    """Heartbeat: the lease expires VISIBILITY from now."""
    vis = timedelta(milliseconds=_parsed(parse_duration, visibility))
    if vis.total_seconds() <= 0:
        fail("--visibility must be positive", code=2)
    _settle("extend_lease", timer_id, lease_id, conn, as_json, tenant, visibility=vis)


@queue.command("stats")
@click.argument("name", metavar="[QUEUE]", required=False)
@common_options
def stats(name, conn, as_json, tenant) -> None:
    """Per queue of the tenant: timers visible (leasable now), leased, waiting (a nack's
    backoff) and dead-lettered."""
    with sdk_client(conn) as c:
        rows = sdk_call(lambda: c.queue_stats(name, tenant=tenant))
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], sort_keys=True, separators=(",", ":")))
        return
    click.echo(f"{'QUEUE':<32} {'VISIBLE':>8} {'LEASED':>8} {'WAITING':>8} {'DEAD':>8}")
    for r in rows:
        click.echo(f"{r.queue:<32} {r.visible:>8} {r.leased:>8} {r.waiting:>8} {r.dead:>8}")
