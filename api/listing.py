"""ListTimers: a filtered scan of the local applied state, in pages.

Reads are local: a node answers from what it has applied, which on a follower
may trail the leader by a few entries (a write acknowledged by *this* node is
always visible here: the bridge answers only after the local apply).

A page token is a position in creation order (the kernel's ordinal, which is
append-only and identical on every replica, so a token works on any node).
Paging therefore returns every timer that existed when the listing began exactly
once, plus any created meanwhile; each timer's fields are as of the moment its
page was read. The scan holds the machine lock for one bounded chunk at a time
(`CHUNK` positions) and gives it back in between, so a million-timer scan never
stalls the apply thread for long; a request scans at most `SCAN_BUDGET`
positions and may then return a short (even empty) page with a next token:
only an empty `next_page_token` means the end.
"""
from __future__ import annotations

from minoots.kernel import State

from .validation import ListQuery

__all__ = ["scan", "CHUNK", "SCAN_BUDGET", "PAGE_BYTES"]

CHUNK = 16_384           # positions examined per lock hold
SCAN_BUDGET = 262_144    # positions examined per request at most
PAGE_BYTES = 4 << 20     # stop filling a page past ~4 MiB of payloads (the reply must fit)


def scan(state: State, q: ListQuery, start: int, want: int, byte_budget: int) -> tuple[list, int, bool, int]:
    """Examine positions start.. (at most CHUNK) under the caller's lock.

    Returns (timers, next_position, at_end, bytes_used). This is the one place in
    the API layer that reads the kernel's column store directly (by position, so a
    page can resume); the kernel has no public positional scan yet.
    """
    t = state._table
    n = len(t)
    ti = t.tenant_index.get(q.tenant)
    if ti is None or start >= n:
        return [], max(start, n), True, 0
    stop = min(n, start + CHUNK)
    tenant_col, state_col, fire_col, extra = t.tenant, t.state, t.fire_at, t.extra
    states = q.states
    lo, hi = q.fire_from, q.fire_to
    labels = q.labels
    out = []
    used = 0
    o = start
    while o < stop:
        if tenant_col[o] != ti or (states and state_col[o] not in states):
            o += 1
            continue
        fa = fire_col[o]
        if (lo is not None and fa < lo) or (hi is not None and fa >= hi):
            o += 1
            continue
        if labels:
            ex = extra[o]
            if ex is None or not _has_labels(ex.labels, labels):
                o += 1
                continue
        timer = t.view(o)
        out.append(timer)
        used += 256 + len(timer.payload) + len(timer.action) + len(timer.name) \
            + sum(len(k) + len(v) for k, v in timer.labels.items())
        o += 1
        if len(out) >= want or used >= byte_budget:
            break
    return out, o, o >= n, used


def _has_labels(pairs: tuple, wanted: tuple) -> bool:
    have = dict(pairs)
    return all(have.get(k) == v for k, v in wanted)
