"""disk-full: one node's LMDB map is small enough for the workload to fill; then it is
restarted with a big map and must catch up. N rounds (default 1).

    minoots chaos disk-full [--report FILE]

n3 starts with `--map-size 1MiB` (its Raft journal's LMDB map; the workload fills it in seconds). The drill makes it the leader if it
can (TransferLeadership), since that is where a full journal meets client
writes, then lets the workload run until n3 fails or --round-timeout passes.
What it observes is reported as it is, not assumed:

* whether n3 refused writes with a clear error (creates sent straight to its
  gRPC API: the message is recorded), kept running, crashed (exit code and the
  last lines of its log mentioning the full map), or never filled;
* that the cluster kept acknowledging writes through the other nodes;
* that n3, restarted with an 8 GiB map over the same data dir, catches up.

Checked: nothing acknowledged was lost (the ledger), the cluster kept serving
(`writes_stopped_while_full` = 0), the restarted node caught up
(`no_recovery` = 0), and, when the node did fill, that it did not crash
(`full_node_crashed`: the issue asks for a clear refusal instead).
"""
from __future__ import annotations

import time
import uuid

import grpc

import minoots

from minoots.raft.testing import authed_channel
from minoots.v1 import timers_pb2, timers_pb2_grpc

from .clock_skew import transfer
from .drill import drill
from .workload import now_ms

SMALL_MAP = "1MiB"
BIG_MAP = "8GiB"


def configure(cluster, args, ctx) -> None:
    nid = list(cluster.nodes)[-1]
    node = cluster.nodes[nid]
    node.extra_args = tuple(node.extra_args) + ("--map-size", SMALL_MAP)
    ctx.info["small_map_node"] = nid
    ctx.info["small_map"] = SMALL_MAP


def direct_create(address: str, tenant: str, token: str) -> str | None:
    """One create straight to `address`; None when acknowledged, else the error text."""
    tid = "df-" + uuid.uuid4().hex
    spec = timers_pb2.TimerSpec(id=tid, tenant=tenant + "-probe", idempotency_key=tid)
    spec.fire_at.FromMilliseconds(now_ms() + 3_600_000)
    with authed_channel(address, token) as ch:
        try:
            timers_pb2_grpc.TimersStub(ch).CreateTimer(timers_pb2.CreateTimerRequest(timer=spec), timeout=3.0)
            return None
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"


@drill("disk-full", "a node's LMDB map fills up; it must refuse writes clearly and recover with a bigger map",
       default_rounds=1, configure=configure)
def run(ctx) -> None:
    cluster = ctx.cluster
    nid = ctx.info["small_map_node"]
    node = cluster.nodes[nid]
    for n in range(1, ctx.args.rounds + 1):
        leader = transfer(ctx, nid) if node.alive() else ctx.caught_up()
        ctx.info.setdefault("leader_when_filling", []).append(leader)
        t0 = now_ms()
        deadline = time.monotonic() + max(ctx.args.round_timeout, 20.0)
        refusals = []
        filled = False
        acked_before = len(ctx.ledger.creates)
        filler = minoots.Client(ctx.addresses, timeout=5.0, attempt_timeout=3.0, tenant=ctx.ledger.tenant + "-filler")
        while time.monotonic() < deadline and node.alive():
            # Filler: batches of big timers due in an hour (outside the ledger's horizon), to fill
            # the journal within the round. Their outcome is counted, not checked.
            try:
                filler.create_many([{"delay": 3600, "payload": b"x" * 2048} for _ in range(100)])
                ctx.info["filler_batches_acked"] = ctx.info.get("filler_batches_acked", 0) + 1
            except minoots.MinootsError as exc:
                ctx.info["filler_batches_failed"] = ctx.info.get("filler_batches_failed", 0) + 1
                ctx.info["filler_last_error"] = str(exc)[:300]
            if "MapFull" in _log_tail(node) or "map is full" in _log_tail(node).lower():
                filled = True
                err = direct_create(node.grpc, ctx.ledger.tenant, ctx.cluster.admin_token())
                refusals.append(err)
                if len(refusals) >= 3:
                    break
            time.sleep(0.2)
        filler.close()
        time.sleep(1.0)
        crashed = not node.alive()
        if crashed:
            filled = filled or "full" in _log_tail(node).lower()
        code = node.proc.returncode if crashed else None
        full_lines = [ln[:300] for ln in _log_tail(node).splitlines() if "full" in ln.lower()][-3:]
        # The cluster must keep acknowledging writes through the other nodes.
        acked_mid = len(ctx.ledger.creates)
        time.sleep(2.0)
        progress = len(ctx.ledger.creates) - acked_mid
        ctx.check("writes_stopped_while_full", int(progress == 0))
        ctx.check("full_node_crashed", int(filled and crashed))
        ctx.check("map_never_filled", int(not filled))   # the drill did not exercise its fault
        ctx.windows.append((t0, now_ms()))
        behaviour = ("never filled within the round" if not filled else
                     f"crashed (exit code {code})" if crashed else
                     "kept running; direct creates answered: " + "; ".join(str(r) for r in refusals[:3]))
        print(f"    round {n}: {nid} with a {SMALL_MAP} map: {behaviour}", flush=True)
        # Restart with a big map over the same data dir; it must catch up.
        if node.alive():
            code = cluster.terminate(nid)
        node.extra_args = tuple(a if a != SMALL_MAP else BIG_MAP for a in node.extra_args)
        cluster.start_node(nid)
        try:
            ctx.caught_up(timeout=60)
            recovered = True
        except TimeoutError:
            recovered = False
            ctx.expected_down.add(nid)
        ctx.check("no_recovery", int(not recovered))
        ctx.info.setdefault("rounds", []).append({
            "round": n, "filled": filled, "crashed": crashed, "exit_code": code, "behaviour": behaviour,
            "direct_create_answers": refusals[:3], "log_lines_about_full": full_lines,
            "acknowledged_during_round": len(ctx.ledger.creates) - acked_before,
            "cluster_progress_after_fill": progress, "recovered_with_big_map": recovered})
        if n < ctx.args.rounds:
            node.extra_args = tuple(a if a != BIG_MAP else SMALL_MAP for a in node.extra_args)
            # A map cannot shrink below its data: later rounds would not start; one round is the drill.
            break


def _log_tail(node, n: int = 4000) -> str:
    try:
        with open(node.log_file, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
