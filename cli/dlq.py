"""`minoots dlq list|replay|purge`: a tenant's dead-lettered timers.

`replay` re-arms them (attempts reset, attempt history and webhook-id kept) and `purge`
deletes them, each in one replicated command of at most 1,000 timers, with a result per
timer; a selection larger than that says so (run it again).
"""
from __future__ import annotations

import json

import click

from .common import fail, sdk_call, sdk_client
from .timer import _parsed, common_options, parse_label


@click.group()
def dlq() -> None:
    """Dead letters: list, replay (deliver again) or purge them."""


def _select(fn):
    fn = click.option("--queue", default=None, metavar="QUEUE", help="Only timers of this pull queue.")(fn)
    fn = click.option("--endpoint", default=None, metavar="ID", help="Only timers of this endpoint.")(fn)
    return fn


@dlq.command("list")
@_select
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE", help="Only timers with this label.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@common_options
def list_cmd(queue, endpoint, selectors, limit, conn, as_json, tenant) -> None:
    """Dead-lettered timers: ID, where they went, attempts, last error."""
    if queue and endpoint:
        fail("give --queue or --endpoint, not both", code=2)
    labels = dict(_parsed(parse_label, s) for s in selectors) or None
    with sdk_client(conn) as c:
        timers, more = sdk_call(lambda: c.dead_letters(queue=queue, endpoint=endpoint, labels=labels, limit=limit,
                                                       tenant=tenant))
    if as_json:
        click.echo(json.dumps({"timers": [t.to_dict() for t in timers], "truncated": more}, sort_keys=True,
                              separators=(",", ":")))
        return
    for t in timers:
        where = t.queue and f"queue {t.queue}" or (t.endpoint and f"endpoint {t.endpoint}") or f"webhook {t.webhook}"
        last = t.delivery_attempts[-1] if t.delivery_attempts else None
        err = f"{last.error_class or 'ok'} {last.status_code or ''}".strip() if last else "-"
        click.echo(f"{t.id}  {where}  attempts {len(t.delivery_attempts)}  last {err}")
    if not timers:
        click.echo("no dead letters")
    if more:
        click.echo(f"(more than {limit}: raise --limit or narrow the selection)")


def _act(what: str, ids, queue, endpoint, selectors, all_, conn, as_json, tenant) -> None:
    labels = dict(_parsed(parse_label, s) for s in selectors) or None
    if ids and (queue or endpoint or labels or all_):
        fail("give IDs or a selection (--queue/--endpoint/--selector/--all), not both", code=2)
    if not ids and not (queue or endpoint or labels or all_):
        fail("give IDs, or select with --queue, --endpoint, --selector k=v or --all", code=2)
    with sdk_client(conn) as c:
        res = sdk_call(lambda: getattr(c, what)(list(ids), queue=queue, endpoint=endpoint, labels=labels, all=all_,
                                                tenant=tenant))
    if as_json:
        click.echo(json.dumps({"results": [{"id": i, "ok": ok, "error": e} for i, ok, e in res.results],
                               "truncated": res.truncated}, sort_keys=True, separators=(",", ":")))
    else:
        verb = "replayed" if what.startswith("replay") else "purged"
        for i, ok, e in res.results:
            click.echo(f"{i}  {verb if ok else 'refused: ' + e}")
        click.echo(f"{len(res.ok)} of {len(res.results)} {verb}" + ("; more remain: run again" if res.truncated else ""))
    if len(res.ok) < len(res.results):
        raise SystemExit(1)


@dlq.command("replay")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_select
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE", help="Timers with this label.")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the tenant (up to 1,000 per run).")
@common_options
def replay(ids, queue, endpoint, selectors, all_, conn, as_json, tenant) -> None:
    """Deliver dead letters again: attempts reset, history and webhook-id kept."""
    _act("replay_dead_letters", ids, queue, endpoint, selectors, all_, conn, as_json, tenant)


@dlq.command("purge")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@_select
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE", help="Timers with this label.")
@click.option("--all", "all_", is_flag=True, help="Every dead letter of the tenant (up to 1,000 per run).")
@common_options
def purge(ids, queue, endpoint, selectors, all_, conn, as_json, tenant) -> None:
    """Delete dead letters now (instead of at the end of their retention)."""
    _act("purge_dead_letters", ids, queue, endpoint, selectors, all_, conn, as_json, tenant)
