"""`minoots webhook …`: the tenant's signing secret, and checking a received webhook."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import fail, sdk_call, sdk_client
from .timer import common_options


@click.group()
def webhook() -> None:
    """Webhook signing secrets, and verifying a received webhook (Standard Webhooks)."""


@webhook.command("rotate-secret")
@click.option("--secret", default=None, metavar="whsec_...",
              help="Use this secret (whsec_ + base64 of 24..64 bytes) instead of a fresh random one.")
@common_options
def rotate_secret(secret, conn, as_json, tenant) -> None:
    """Set the tenant's webhook signing secret and print it: the only time it is shown.
    Webhooks sent from then on are signed with it (receivers must switch to it)."""
    with sdk_client(conn) as c:
        value = sdk_call(lambda: c.rotate_webhook_secret(tenant=tenant, secret=secret))
    if as_json:
        click.echo(json.dumps({"tenant": tenant or "default", "secret": value}, sort_keys=True))
    else:
        click.echo(value)


@webhook.command("verify")
@click.option("--secret", required=True, envvar="MINOOTS_WEBHOOK_SECRET", metavar="whsec_...",
              help="The tenant's secret (or $MINOOTS_WEBHOOK_SECRET).")
@click.option("--header", "headers", multiple=True, metavar="NAME: VALUE",
              help="A received header (repeatable): webhook-id, webhook-timestamp, webhook-signature.")
@click.option("--body", "body_file", default="-", metavar="FILE", help="The received body (default: stdin).")
@click.option("--tolerance", default=300, show_default=True, type=click.IntRange(0),
              help="Seconds a timestamp may be off (replay protection).")
def verify(secret, headers, body_file, tolerance) -> None:
    """Check a received webhook's signature; exit 0 and print its webhook-id when valid."""
    from minoots.api.client.webhooks import WebhookVerificationError, verify_webhook

    hdrs = {}
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep:
            fail(f"--header expects 'NAME: VALUE', got {h!r}", code=2)
        hdrs[name.strip()] = value.strip()
    try:
        body = sys.stdin.buffer.read() if body_file == "-" else Path(body_file).read_bytes()
    except OSError as exc:
        fail(f"cannot read {body_file}: {exc.strerror or exc}", code=2)
    try:
        click.echo(verify_webhook(secret, hdrs, body, tolerance_s=tolerance))
    except WebhookVerificationError as exc:
        fail(f"not a valid webhook: {exc}")
