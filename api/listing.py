"""ListTimers: a filtered scan of the local applied state, in pages.

Reads are local: a node answers from what it has applied, which on a follower
may trail the leader by a few entries (a write acknowledged by *this* node is
always visible here: the bridge answers only after the local apply).

A page token is a position (the kernel's ordinal, identical on every replica, so
a token works on any node). Paging returns every timer that existed when the
listing began and still exists when its page is read exactly once, plus those
created meanwhile, except one created in a position a purged timer freed behind
the cursor (State.scan); each timer's fields are as of the moment its page was read. The scan holds the machine lock for one bounded chunk at a time
(`CHUNK` positions) and gives it back in between, so a million-timer scan never
stalls the apply thread for long; a request scans at most `SCAN_BUDGET`
positions and may then return a short (even empty) page with a next token:
only an empty `next_page_token` means the end.
"""
from __future__ import annotations

from minoots.kernel import MAX_TIME, State

from .validation import ListQuery

__all__ = ["scan", "CHUNK", "SCAN_BUDGET", "PAGE_BYTES"]

CHUNK = 16_384           # positions examined per lock hold
SCAN_BUDGET = 262_144    # positions examined per request at most
PAGE_BYTES = 4 << 20     # stop filling a page past ~4 MiB of payloads (the reply must fit)


def scan(state: State, q: ListQuery, start: int, want: int, byte_budget: int) -> tuple[list, int, bool, int]:
    """Examine positions start.. (at most CHUNK) under the caller's lock.

    Returns (timers, next_position, at_end, bytes_used), through the kernel's
    positional scan (`State.cursor`): positions are its ordinals.
    """
    n = state.positions
    lo, hi = q.fire_from, q.fire_to
    # The request's bounds are not range-checked: fold them onto the kernel's 0..MAX_TIME.
    if (lo is not None and lo > MAX_TIME) or (hi is not None and hi <= 0) or start >= n:
        return [], max(start, n), True, 0
    cur = state.cursor(start, start + CHUNK, tenant=q.tenant, states=q.states,
                       fire_at_from=lo if lo is not None and lo > 0 else None,
                       fire_at_to=hi if hi is not None and hi <= MAX_TIME else None,
                       labels=dict(q.labels) if q.labels else None)
    out = []
    used = 0
    fired_from, fired_to = q.fired_from, q.fired_to
    fired = fired_from is not None or fired_to is not None
    for timer in cur:
        if fired and (timer.fired_at is None or (fired_from is not None and timer.fired_at < fired_from)
                      or (fired_to is not None and timer.fired_at >= fired_to)):
            continue
        out.append(timer)
        used += 256 + len(timer.payload) + len(timer.action) + len(timer.name) \
            + sum(len(k) + len(v) for k, v in timer.labels.items())
        if len(out) >= want or used >= byte_budget:
            break
    return out, cur.position, cur.position >= n, used
