"""`minoots audit pubkey|export|verify|facts`: the audit ledger (raft/audit/; operator or admin role).

Each node keeps its own chain (the replicated facts in log order, plus what that node saw),
so `pubkey` and `export` talk to one node: the first `--node` given (or of $MINOOTS_NODES /
the local `minoots up` cluster) that answers, and say which. `verify` is offline: it reads
an export (JSON lines) and checks it against the cluster's public key; it prints one line
and exits 0 when the chain holds, or prints one line saying what is wrong and exits 1.
`facts` is offline too: an export's facts one per line, timer events one by one in either
record layout (raft/audit/chain.py `facts`), filtered by timer, tenant or kind.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click
import grpc

from .cluster import connection, json_option
from .common import fail, grpc_addresses, sdk_client


@click.group()
def audit() -> None:
    """The audit ledger: each node's hash-chained, signed record of security decisions and timer transitions."""


def _ask(conn: dict, what: str, call):
    """call(stub, timeout, address) on the first node that answers; returns (its result, address).
    Uses the SDK client's channels and credentials (token, TLS) for the connection."""
    from minoots.v1 import audit_pb2_grpc

    last = None
    with sdk_client(conn) as client:
        for addr in grpc_addresses(conn["nodes"]):
            stub = client.node_stub(addr, audit_pb2_grpc.AuditStub)
            try:
                return call(stub, conn["timeout"], addr), addr
            except grpc.RpcError as exc:
                last = exc
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    break
    fail(f"{what}: {last.code().name}: {last.details()}" if last is not None else f"{what}: no node answered")


@audit.command("pubkey")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Print the public key of this audit key file instead of asking a node (offline).")
@json_option
@connection(10.0)
def pubkey_cmd(key_file, as_json, conn) -> None:
    """Print the cluster's audit public key (hex), which `audit verify --pubkey` takes."""
    if key_file is not None:
        from minoots.raft.audit import load_key
        from minoots.raft.audit.chain import public_key_hex
        from minoots.raft.peer_secret import SecretError

        try:
            key = public_key_hex(load_key(key_file))
        except (SecretError, ValueError) as exc:
            fail(str(exc))
        _print_key({"public_key": key, "algorithm": "ed25519", "key_file": str(key_file)}, as_json)
        return
    from minoots.v1 import audit_pb2

    resp, addr = _ask(conn, "audit pubkey", lambda stub, t, a: stub.PublicKey(audit_pb2.AuditPublicKeyRequest(),
                                                                               timeout=t))
    if not resp.public_key:
        fail(f"node {resp.node} ({addr}) keeps an unsigned audit ledger: it runs without --audit-key-file")
    _print_key({"public_key": resp.public_key, "algorithm": resp.algorithm, "node": resp.node,
                "first_seq": resp.first_seq, "last_seq": resp.last_seq, "signed_seq": resp.signed_seq}, as_json)


def _print_key(obj: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(obj, indent=2, sort_keys=True))
    else:
        click.echo(obj["public_key"])


@audit.command("export")
@click.option("--from", "from_seq", default=1, show_default=True, type=click.IntRange(1),
              help="First record wanted; the export starts at the signed checkpoint before it.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON lines here (default: standard output).")
@connection(60.0)
def export_cmd(from_seq, out, conn) -> None:
    """Export one node's ledger from record --from as JSON lines (records and signed checkpoints)."""
    from minoots.v1 import audit_pb2

    target = out.parent if out is not None else Path(tempfile.gettempdir())
    try:
        fd, tmp = tempfile.mkstemp(prefix=".audit-export-", dir=target)
    except OSError as exc:
        fail(f"audit export: cannot write in {target}: {exc.strerror or exc}")
    os.close(fd)

    def receive(stub, timeout, addr):
        node, lines = "", 0
        with open(tmp, "wb") as f:      # afresh for each node tried
            for batch in stub.Export(audit_pb2.ExportAuditRequest(from_seq=from_seq), timeout=timeout):
                node = batch.node or node
                for line in batch.lines:
                    f.write(line + b"\n")
                    lines += 1
        return node, lines

    try:
        (node, lines), addr = _ask(conn, "audit export", receive)
        if out is None:
            with open(tmp, "rb") as f:
                while chunk := f.read(1 << 20):
                    sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            os.replace(tmp, out)
    except OSError as exc:
        fail(f"audit export: {exc.strerror or exc}: {exc.filename or out}")
    finally:
        Path(tmp).unlink(missing_ok=True)
    click.echo(f"exported {lines} lines of node {node}'s audit ledger (from {addr})"
               + (f" to {out}" if out is not None else ""), err=True)


@audit.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pubkey", required=True, envvar="MINOOTS_AUDIT_PUBKEY",
              help="The cluster's public key (64 hex digits, as `minoots audit pubkey` prints it), "
                   "or a file holding it.")
@json_option
def verify_cmd(file, pubkey, as_json) -> None:
    """Check an export offline: every record chained to the one before, every checkpoint
    signed by PUBKEY, the first anchored and the last covered. Exit 1 on the first fault."""
    from minoots.raft.audit import VerifyError, parse_public_key, verify_lines

    text = pubkey
    if len(pubkey) < 200 and Path(pubkey).is_file():
        try:
            text = Path(pubkey).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read the public key file {pubkey}: {exc}")
    try:
        key = parse_public_key(text)
    except ValueError as exc:
        fail(str(exc), code=2)
    try:
        with open(file, "rb") as f:
            result = verify_lines(f, key)
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    except VerifyError as exc:
        fail(f"{file}: NOT VERIFIED: {exc}")
    if as_json:
        click.echo(json.dumps({"ok": True, "node": result.node, "first_seq": result.first_seq,
                               "last_seq": result.last_seq, "records": result.records,
                               "checkpoints": result.checkpoints, "anchor": result.anchor,
                               "kinds": result.kinds}, indent=2, sort_keys=True))
    else:
        click.echo(result.summary())


@audit.command("facts")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--timer", "timer_id", default=None, help="Only this timer's events.")
@click.option("--tenant", default=None, help="Only this tenant's timer events.")
@click.option("--kind", default=None, help="Only facts of this kind (e.g. timer.fired, token.created).")
def facts_cmd(file, timer_id, tenant, kind) -> None:
    """Print the facts of an export one per line (JSON: seq of the record, kind, data), a
    timer.events record's events one by one, so a timer's history reads the same from
    ledgers of either layout. Offline; does not verify (run `audit verify` for that)."""
    from minoots.raft.audit import chain

    try:
        with open(file, "rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                    if not isinstance(obj, dict) or obj.get("type") != "record":
                        continue
                    facts = chain.facts(obj)
                except ValueError as exc:
                    fail(f"{file}: line {n}: {exc}")
                for k, d in facts:
                    if kind is not None and k != kind:
                        continue
                    if (timer_id is not None or tenant is not None) and not (
                            isinstance(d, dict) and "event_seq" in d
                            and (timer_id is None or d.get("timer_id") == timer_id)
                            and (tenant is None or d.get("tenant") == tenant)):
                        continue
                    click.echo(json.dumps({"seq": obj.get("seq"), "kind": k, "data": d}, sort_keys=True))
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
