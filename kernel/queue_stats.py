"""Per-queue counts of a tenant's pull-queue timers: what `minoots queue stats` shows.

A read over the delivery records (timers with a webhook or queue only), never a
command: visible (available to lease now), leased (a live lease), waiting (a nack's
backoff running) and dead (dead-lettered, not yet purged).
"""
from __future__ import annotations

from typing import Optional

from .timer import TimerState

__all__ = ["queue_stats"]

_DELIVERING = int(TimerState.DELIVERING)
_DEAD = int(TimerState.DEAD_LETTERED)


def queue_stats(state, tenant: str, queue: Optional[str] = None) -> dict[str, list[int]]:
    """queue -> [visible, leased, waiting, dead], for `tenant` (one queue, or all of them)."""
    t = state._table
    ti = t.tenant_index.get(tenant)
    out: dict[str, list[int]] = {}
    if ti is None:
        return out
    for o, rec in t.deliv.items():
        q = rec.spec.queue
        if q is None or t.tenant[o] != ti or (queue is not None and q != queue):
            continue
        st = t.state[o]
        row = out.setdefault(q, [0, 0, 0, 0])
        if st == _DEAD:
            row[3] += 1
        elif st == _DELIVERING:
            row[1 if rec.lease else 2 if rec.waiting else 0] += 1
    return dict(sorted(out.items()))
