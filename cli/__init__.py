"""The `minoots` command line (click).

Thin by design: each command parses its arguments and calls a function in the
layer that owns the work (`minoots.bench`, later the SDK and the node), then
prints. Command groups live in their own submodules and are attached to `main`
here, so adding `node`, `up`, `timer` or `cluster` is one module and one
`add_command` line.

Errors meant for users are raised as `click.ClickException` (or a subclass):
click prints "Error: <message>" and exits with status 1; bad arguments exit
with status 2 and a usage line. No traceback reaches the terminal for either.
"""
from __future__ import annotations

import click

from .audit import audit
from .bench import bench
from .chaos import chaos
from .cluster import cluster, snapshot
from .mcp import mcp_cmd
from .node import node, up
from .subscription import subscription
from .tenant import tenant
from .timer import timer
from . import timer_recurring  # noqa: F401  (adds pause, resume, trigger and next to `timer`)
from .webhook import webhook
from .queue import queue
from .endpoint import endpoint
from .dlq import dlq
from .token import token

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """MINOOTS: a durable, Raft-replicated timer service."""


@main.command()
def version() -> None:
    """Print the installed version."""
    import minoots

    click.echo(minoots.__version__)


main.add_command(bench)
main.add_command(node)
main.add_command(up)
main.add_command(cluster)
main.add_command(snapshot)
main.add_command(timer)
main.add_command(webhook)
main.add_command(queue)
main.add_command(endpoint)
main.add_command(dlq)
main.add_command(chaos)
main.add_command(token)
main.add_command(tenant)
main.add_command(subscription)
main.add_command(audit)
main.add_command(mcp_cmd)

__all__ = ["main"]
