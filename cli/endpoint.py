"""`minoots endpoint add|list|get|rotate-secret|remove`: a tenant's managed webhook endpoints.

`add` and `rotate-secret` print the endpoint's `whsec_` secret (in `--json` too): the
only time it is shown. Timers reach an endpoint with `minoots timer create --endpoint ID`.
"""
from __future__ import annotations

import json

import click

from .common import sdk_call, sdk_client
from .timer import _parsed, common_options, parse_duration, parse_header


@click.group()
def endpoint() -> None:
    """Managed webhook endpoints, each with its own signing secret (writer role to change)."""


def _print(ep, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(ep.to_dict(), sort_keys=True, separators=(",", ":")))
        return
    click.echo(f"{ep.id}  {ep.url}" + (f"  timeout {ep.timeout_ms} ms" if ep.timeout_ms else "")
               + "".join(f"  {k}: {v}" for k, v in sorted(ep.headers.items())))
    if ep.secret:
        click.echo(f"secret {ep.secret}  (shown once: give it to the receiver now)")


@endpoint.command("add")
@click.argument("url")
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE", help="An extra request header (repeatable).")
@click.option("--attempt-timeout", "attempt_timeout", default=None, metavar="DURATION",
              help="Attempt timeout for its timers (≤ 120s; default: the timer's policy).")
@click.option("--secret", default=None, metavar="whsec_...", help="Use this secret instead of a fresh random one.")
@common_options
def add(url, headers, attempt_timeout, secret, conn, as_json, tenant) -> None:
    """Add an endpoint for URL; prints its id and its secret (the only time it is shown)."""
    timeout_ms = 0 if attempt_timeout is None else _parsed(parse_duration, attempt_timeout)
    hdrs = dict(_parsed(parse_header, h) for h in headers)
    with sdk_client(conn) as c:
        ep = sdk_call(lambda: c.create_endpoint(url, headers=hdrs, timeout_ms=timeout_ms, secret=secret,
                                                tenant=tenant))
    _print(ep, as_json)


@endpoint.command("list")
@common_options
def list_cmd(conn, as_json, tenant) -> None:
    """The tenant's endpoints (never their secrets)."""
    with sdk_client(conn) as c:
        eps = sdk_call(lambda: c.list_endpoints(tenant=tenant))
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in eps], sort_keys=True, separators=(",", ":")))
        return
    for e in eps:
        _print(e, False)
    if not eps:
        click.echo("no endpoints")


@endpoint.command("get")
@click.argument("endpoint_id", metavar="ID")
@common_options
def get(endpoint_id, conn, as_json, tenant) -> None:
    """One endpoint (never its secret)."""
    with sdk_client(conn) as c:
        _print(sdk_call(lambda: c.get_endpoint(endpoint_id, tenant=tenant)), as_json)


@endpoint.command("rotate-secret")
@click.argument("endpoint_id", metavar="ID")
@click.option("--secret", default=None, metavar="whsec_...", help="Use this secret instead of a fresh random one.")
@common_options
def rotate_secret(endpoint_id, secret, conn, as_json, tenant) -> None:
    """Give the endpoint a new secret and print it; the old one keeps signing beside it for 24 h."""
    with sdk_client(conn) as c:
        _print(sdk_call(lambda: c.rotate_endpoint_secret(endpoint_id, secret=secret, tenant=tenant)), as_json)


@endpoint.command("remove")
@click.argument("endpoint_id", metavar="ID")
@common_options
def remove(endpoint_id, conn, as_json, tenant) -> None:
    """Remove an endpoint; refused while a timer that has not ended uses it."""
    with sdk_client(conn) as c:
        ep = sdk_call(lambda: c.delete_endpoint(endpoint_id, tenant=tenant))
    if as_json:
        click.echo(json.dumps(ep.to_dict(), sort_keys=True, separators=(",", ":")))
    else:
        click.echo(f"removed {ep.id}")
