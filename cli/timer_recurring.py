"""`minoots timer pause|resume|trigger|next ID`: the controls and the preview of a recurring
timer (kernel/recurrence.py), attached to the `timer` group of cli/timer.py."""
from __future__ import annotations

import click

from ..api.types import _iso
from .common import fail
from .timer import _client, _emit_json, _fmt_rel, _fmt_time, _run, _show_timer, common_options, timer

__all__ = ["pause", "resume", "trigger", "next_cmd"]


@timer.command("pause")
@click.argument("timer_id", metavar="ID")
@common_options
def pause(timer_id, conn, as_json, tenant) -> None:
    """Pause a recurring timer: no occurrence fires until `minoots timer resume`."""
    with _client(conn) as c:
        t = _run(lambda: c.pause(timer_id, tenant=tenant))
    _show_timer(t, as_json, "paused")


@timer.command("resume")
@click.argument("timer_id", metavar="ID")
@common_options
def resume(timer_id, conn, as_json, tenant) -> None:
    """Resume a paused timer at its next occurrence after now (those due while it was
    paused do not fire)."""
    with _client(conn) as c:
        t = _run(lambda: c.resume(timer_id, tenant=tenant))
    _show_timer(t, as_json, "resumed")


@timer.command("trigger")
@click.argument("timer_id", metavar="ID")
@common_options
def trigger(timer_id, conn, as_json, tenant) -> None:
    """Fire one extra occurrence of a recurring timer now (its own fire_id); the schedule
    is unchanged and max_count does not count it."""
    with _client(conn) as c:
        t = _run(lambda: c.trigger(timer_id, tenant=tenant))
    _show_timer(t, as_json, f"triggered (fire_id {t.fire_id})")


@timer.command("next")
@click.argument("timer_id", metavar="ID")
@click.option("--count", "-n", type=int, default=5, show_default=True, help="How many occurrences (1..100).")
@common_options
def next_cmd(timer_id, count, conn, as_json, tenant) -> None:
    """Show a timer's next occurrences, computed by the server with the kernel's own code."""
    if not 1 <= count <= 100:
        fail(f"--count must be within 1..100, got {count}", code=2)
    with _client(conn) as c:
        times = _run(lambda: c.next_occurrences(timer_id, count, tenant=tenant))
    if as_json:
        _emit_json({"id": timer_id, "occurrences": [_iso(t) for t in times]})
        return
    if not times:
        click.echo("no occurrences left")
    for t in times:
        click.echo(f"{_fmt_time(t)}  ({_fmt_rel(t)})")
