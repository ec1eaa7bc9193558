"""`minoots mcp`: the Model Context Protocol server for agents (tools over the SDK; api/mcp_server.py)."""
from __future__ import annotations

import click

from .common import ca_option, grpc_addresses, node_option, tls_option


@click.command("mcp")
@node_option
@tls_option
@ca_option
@click.option("--http", "http_address", default=None, metavar="HOST:PORT",
              help="Serve MCP over streamable HTTP at http://HOST:PORT/mcp instead of stdio. It has no "
                   "authentication of its own: whoever reaches it acts with this process's token, so "
                   "bind loopback (binds exactly HOST).")
def mcp_cmd(nodes, tls, ca, http_address) -> None:
    """Serve MINOOTS to an MCP host (Claude Desktop, IDEs, agent runtimes) on stdio.

    Tools: schedule_timer, get_timer, list_timers, cancel_timer, extend_timer, ack_timer,
    wait_for_timer. The token is the SDK's: $MINOOTS_TOKEN, else the file named by
    $MINOOTS_TOKEN_FILE, else ./minoots-data/admin.token; --node (or $MINOOTS_NODES) names
    any members' gRPC addresses. Logs go to stderr; stdout carries the protocol.
    """
    from minoots.api.mcp_server import serve

    seeds = grpc_addresses(nodes)
    serve(seeds, tls=ca if ca else bool(tls), http=http_address)
