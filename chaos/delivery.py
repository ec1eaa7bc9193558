"""delivery: webhook timers in flight while the leader is SIGKILLed; N rounds.

    minoots chaos delivery [--rounds 2] [--report FILE]

The nodes run with --webhook-allow-hosts 127.0.0.1 and a receiver in this process
(chaos/receiver.py) answers every webhook 200. Before each round a batch of webhook
timers is created, due over the next ~2 s; then the leader is killed (measured like
leader-kill), restarted after the pause, and the next round waits for it to catch up.
Checked after the rounds, besides the ledger:

* every webhook timer ends SETTLED (webhook_timers_not_settled = 0);
* every one reached the receiver with a 2xx (webhooks_lost = 0): at least once;
* every request carried `webhook-id` = msg_<fire id of its timer> and a signature that
  `minoots.verify_webhook` accepts with the tenant's secret (webhook_id_mismatch = 0,
  bad_signatures = 0). Duplicates (a fire delivered again by a new leader) are
  allowed and counted in the report.
"""
from __future__ import annotations

import json
import time

from .drill import drill
from .receiver import WebhookReceiver

PER_ROUND = 60
SPREAD_MS = 2000
TENANT = "chaos-webhooks"


def configure(cluster, args, ctx) -> None:
    for node in cluster.nodes.values():
        node.extra_args = tuple(node.extra_args) + ("--webhook-allow-hosts", "127.0.0.1")
    receiver = WebhookReceiver().start()
    ctx.info["receiver"] = receiver
    ctx.cleanup.append(receiver.stop)


@drill("delivery", "SIGKILL the leader while webhooks are in flight", default_rounds=2, configure=configure)
def run(ctx) -> None:
    import minoots

    receiver: WebhookReceiver = ctx.info.pop("receiver")
    ids: list[str] = []
    with minoots.Client(ctx.addresses, timeout=60, tenant=TENANT) as c:
        secret = c.rotate_webhook_secret()
        for n in range(1, ctx.args.rounds + 1):
            for i in range(PER_ROUND):
                t = c.create(delay=0.2 + i * SPREAD_MS / PER_ROUND / 1000, webhook=receiver.url,
                             max_attempts=10, backoff_base=0.1, backoff_cap=1.0)
                ids.append(t.id)
            r = ctx.measure_failover(n)
            ctx.pause()
            ctx.cluster.start_node(r["killed"])
            ctx.caught_up()
        deadline = time.monotonic() + 90
        timers = {}
        while time.monotonic() < deadline:
            try:
                timers = {i: c.get(i) for i in ids}
            except minoots.MinootsError:
                time.sleep(0.5)
                continue
            if all(t.state == minoots.TimerState.SETTLED for t in timers.values()):
                break
            time.sleep(0.5)
    _verdict(ctx, ids, timers, receiver, secret)


def _verdict(ctx, ids, timers, receiver, secret) -> None:
    import minoots

    fire_of = {i: t.fire_id for i, t in timers.items()}
    delivered: dict[str, int] = {}
    mismatched = bad_sig = 0
    for hit in list(receiver.hits):
        try:
            tid = json.loads(hit.body)["data"]["timer_id"]
        except (ValueError, KeyError):
            mismatched += 1
            continue
        if hit.headers.get("webhook-id") != f"msg_{fire_of.get(tid)}":
            mismatched += 1
        try:
            minoots.verify_webhook(secret, hit.headers, hit.body)
        except minoots.WebhookVerificationError:
            bad_sig += 1
        if 200 <= hit.status < 300:
            delivered[tid] = delivered.get(tid, 0) + 1
    not_settled = sum(1 for i in ids if timers.get(i) is None or timers[i].state != minoots.TimerState.SETTLED)
    ctx.check("webhook_timers_not_settled", not_settled)
    ctx.check("webhooks_lost", sum(1 for i in ids if not delivered.get(i)))
    ctx.check("webhook_id_mismatch", mismatched)
    ctx.check("bad_signatures", bad_sig)
    ctx.info["webhooks"] = {"timers": len(ids), "requests": len(receiver.hits),
                            "duplicates": sum(v - 1 for v in delivered.values() if v > 1)}
    ctx.note(f"{len(ids)} webhook timers, {len(receiver.hits)} requests, "
             f"{ctx.info['webhooks']['duplicates']} duplicate deliveries (same webhook-id)")
