"""`minoots token create|list|revoke|whoami`: API tokens (admin role; whoami: any token).

The CLI authenticates like the SDK: $MINOOTS_TOKEN, else $MINOOTS_TOKEN_FILE, else
the admin token `minoots up` wrote (./minoots-data/admin.token or $MINOOTS_DATA).
A new token is printed once, on its own line; only its hash is kept.
"""
from __future__ import annotations

import re

import click

from .cluster import _out, _sdk, connection, json_option
from .common import fail

ROLES = ("admin", "operator", "writer", "reader", "worker")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(text: str | None) -> int:
    if not text:
        return 0
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise click.BadParameter(f"expected a duration like 90s, 12h or 30d, got {text!r}", param_hint="--expires")
    return int(m.group(1)) * _SECONDS[m.group(2)]


def _info_json(i) -> dict:
    return {"id": i.id, "name": i.name, "role": i.role, "tenants": list(i.tenants),
            "created_at": i.created_at.isoformat(), "expires_at": i.expires_at.isoformat() if i.expires_at else None}


def _line(i) -> str:
    tenants = ",".join(i.tenants) or "*"
    expires = i.expires_at.isoformat() if i.expires_at else "never"
    return f"{i.id}  {i.role:<8}  tenants {tenants}  expires {expires}  {i.name}"


@click.group()
def token() -> None:
    """API tokens: every call to a node carries one."""


@token.command("create")
@click.option("--name", default="", help="Who or what the token is for (required without --cert-subject).")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="admin: everything; operator: status, snapshots, read all tenants; "
                   "writer: write and read its tenants; reader: read its tenants; "
                   "worker: lease, ack, nack and extend queue timers of its tenants.")
@click.option("--tenant", "tenants", multiple=True,
              help="A tenant the token may use (repeat; writer, reader, worker).")
@click.option("--expires", default=None, help="Lifetime, e.g. 12h, 30d (default: never).")
@click.option("--cert-subject", default="", help="Mutual TLS: bind the role to client certificates with this "
              "subject (e.g. 'CN=agent-7,O=acme') instead of making a token.")
@json_option
@connection()
def create_cmd(name, role, tenants, expires, cert_subject, as_json, conn) -> None:
    """Make a token (printed once), or bind a certificate subject to a role."""
    if not name and not cert_subject:
        fail("--name is required (or --cert-subject)", code=2)
    if role in ("writer", "reader", "worker") and not tenants:
        fail(f"a {role} token needs at least one --tenant", code=2)
    if role not in ("writer", "reader", "worker") and tenants:
        fail(f"a {role} token sees every tenant; give no --tenant", code=2)
    ttl = parse_ttl(expires)
    secret, info = _sdk(conn, lambda c: c.create_token(name, role, tenants, ttl_seconds=ttl,
                                                       cert_subject=cert_subject))
    if as_json:
        _out({"token": secret, **_info_json(info)}, True, None)
    elif cert_subject:
        click.echo(f"bound {cert_subject!r}: {_line(info)}")
    else:
        click.echo(secret)
        click.echo(f"({_line(info)}; shown once: store it now)", err=True)


@token.command("list")
@json_option
@connection()
def list_cmd(as_json, conn) -> None:
    """The tokens the cluster accepts (ids and roles, never the tokens)."""
    infos = _sdk(conn, lambda c: c.list_tokens())
    _out([_info_json(i) for i in infos], as_json, lambda rows: [click.echo(_line(i)) for i in infos])


@token.command("revoke")
@click.argument("token_id")
@json_option
@connection()
def revoke_cmd(token_id, as_json, conn) -> None:
    """Revoke token TOKEN_ID: calls with it fail from then on."""
    info = _sdk(conn, lambda c: c.revoke_token(token_id))
    _out(_info_json(info), as_json, lambda _: click.echo(f"revoked {_line(info)}"))


@token.command("whoami")
@json_option
@connection()
def whoami_cmd(as_json, conn) -> None:
    """Who the node takes this CLI's token for."""
    me = _sdk(conn, lambda c: c.whoami())
    obj = {"principal": me.principal, "role": me.role, "tenants": list(me.tenants)}
    _out(obj, as_json, lambda _: click.echo(f"{me.principal}  role {me.role}  tenants {','.join(me.tenants) or '*'}"))
