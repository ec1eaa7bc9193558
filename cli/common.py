"""Helpers every `minoots` command shares: errors, sizes, finding a node to talk to, the SDK client."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

LOCAL_CLUSTER_FILE = "cluster.json"
DEFAULT_DATA_ROOT = "./minoots-data"     # where `minoots up` keeps its nodes (and LOCAL_CLUSTER_FILE)
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|mib|gib|tib|kb|mb|gb|tb)?\s*$", re.I)
_UNITS = {None: 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error (no traceback) and exit non-zero."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise click.BadParameter(f"expected a size like 512MiB or 8GiB, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).lower() if m.group(2) else None]


def format_size(n: int) -> str:
    """A byte count as parse_size reads it back, in the largest binary unit that divides it (8GiB)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if n and n % _UNITS[unit.lower()] == 0:
            return f"{n // _UNITS[unit.lower()]}{unit}"
    return str(n)


def grpc_addresses(explicit: tuple[str, ...]) -> list[str]:
    """gRPC addresses to seed the SDK with: --node values, else $MINOOTS_NODES, else the local `minoots up` cluster.

    `--node` and $MINOOTS_NODES may hold comma-separated lists too. The local
    cluster file lists each node's "grpc" address.
    """
    def split(values) -> list[str]:
        return [a.strip() for v in values for a in v.split(",") if a.strip()]

    if explicit:
        return split(explicit)
    env = os.environ.get("MINOOTS_NODES")
    if env and split([env]):
        return split([env])
    root = Path(os.environ.get("MINOOTS_DATA", DEFAULT_DATA_ROOT))
    f = root / LOCAL_CLUSTER_FILE
    if f.is_file():
        try:
            nodes = json.loads(f.read_text())["nodes"]
            addrs = [n["grpc"] for n in nodes if n.get("grpc")]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"cannot read the local cluster description {f}: {exc}")
        if addrs:
            return addrs
        fail(f"the local cluster description {f} lists no gRPC addresses; pass --node HOST:PORT")
    fail("no node given: pass --node HOST:PORT (gRPC), set MINOOTS_NODES, or run `minoots up` here first")
    return []


# ---------------------------------------------------------------- the SDK, for commands that talk to a cluster

node_option = click.option("--node", "nodes", multiple=True, metavar="HOST:PORT",
                           help="A member's gRPC address (repeatable; default $MINOOTS_NODES or the local cluster).")
tls_option = click.option("--tls", is_flag=True, envvar="MINOOTS_TLS",
                          help="Connect over TLS, trusting the system's root certificates.")
ca_option = click.option("--ca", type=click.Path(dir_okay=False), default=None, envvar="MINOOTS_CA",
                         help="Connect over TLS, trusting the PEM certificates in this file.")


def timeout_option(default: float = 30.0):
    return click.option("--timeout", default=default, show_default=True, type=click.FloatRange(0.1, 3600),
                        help="Seconds to keep trying (leader elections are ridden out).")


def sdk_client(conn: dict):
    """A minoots.Client for conn = {"nodes", "timeout", "tls", "ca"} (the connection options)."""
    from minoots.api.client import Client
    from minoots.api.types import MinootsError

    tls = conn["ca"] if conn["ca"] else bool(conn["tls"])
    try:
        return Client(grpc_addresses(conn["nodes"]), timeout=conn["timeout"], tls=tls)
    except MinootsError as exc:
        fail(str(exc), code=2)


def sdk_call(fn):
    """Call the SDK; turn its errors into one clean line (exit 1)."""
    from minoots.api.types import MinootsError

    try:
        return fn()
    except MinootsError as exc:
        fail(f"{exc.code}: {exc.message}")
