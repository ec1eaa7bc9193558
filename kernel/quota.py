"""Per-tenant usage of the timer table, and the limits a create is checked against.

A tenant's usage is what it holds now: its outstanding (non-terminal: scheduled,
armed or fired) timers and the payload bytes of those timers. State keeps both
as counters by tenant index, changed by every command that creates a timer or
moves one to a terminal state (no scans), and rebuilt from the columns when a
snapshot loads, so the snapshot format does not carry them.

Limits are data the caller passes into `State.create` (the Raft layer keeps the
replicated quotas; the kernel knows nothing of where they come from): a mapping
tenant -> TenantLimit plus an optional default for tenants not in it. A group
that would take a tenant past a limit is refused as a whole (QuotaExceeded) and
changes nothing.
"""
from __future__ import annotations

from collections import Counter
from itertools import compress, repeat
from operator import and_, is_not, not_
from typing import NamedTuple

from .table import Table
from .timer import TimerState

__all__ = ["TenantLimit", "TenantUsage", "payload_len", "usage_by_tenant"]


class TenantLimit(NamedTuple):
    """What one tenant may hold; 0 means unlimited."""

    max_timers: int = 0           # outstanding (non-terminal) timers
    max_payload_bytes: int = 0    # payload bytes of its outstanding timers

    @property
    def unlimited(self) -> bool:
        return not self.max_timers and not self.max_payload_bytes


class TenantUsage(NamedTuple):
    """What one tenant holds now."""

    timers: int                   # outstanding (non-terminal) timers
    payload_bytes: int            # payload bytes of those timers


def payload_len(extra) -> int:
    """Payload bytes of one timer from its extra column value (None, bytes or Extra)."""
    if extra is None:
        return 0
    if type(extra) is bytes:
        return len(extra)
    return len(extra.payload)


_OPEN = frozenset(int(s) for s in TimerState if not s.terminal)
#: bytes.translate table: a non-terminal state byte -> 1, every other byte -> 0.
OPEN_MASK = bytes(int(b in _OPEN) for b in range(256))


def usage_by_tenant(t: Table) -> tuple[list[int], list[int]]:
    """(outstanding timers, their payload bytes), each a list by tenant index, counted
    from the columns: what State keeps incrementally, rebuilt after a restore.

    C-level passes where it can: the state column's bytes give the open mask, the
    tenant counts come from one `count` per tenant, and only timers that have
    extras (a payload is an extra) and are open cost a Python step each.
    """
    k = len(t.tenant_names)
    live = [0] * k
    held = [0] * k
    n = len(t)
    if not n:
        return live, held
    open_ = t.state.tobytes().translate(OPEN_MASK)
    n_open = open_.count(1)
    if not n_open:
        return live, held
    if k == 1:
        live[0] = n_open
    elif n_open == n:
        for ti in range(k):
            live[ti] = t.tenant.count(ti)
    else:
        for ti, c in Counter(compress(t.tenant, open_)).items():
            live[ti] = c
    extra = t.extra
    if k == 1 and extra.count(None) != n:
        # One tenant (the usual restart): C-level sums, a Python step only per Extra.
        held_extras = list(compress(extra, map(and_, open_, map(is_not, extra, repeat(None)))))
        is_bytes = list(map(isinstance, held_extras, repeat(bytes)))
        held[0] = sum(map(len, compress(held_extras, is_bytes))) + \
            sum(len(ex.payload) for ex in compress(held_extras, map(not_, is_bytes)))
    elif extra.count(None) != n:
        for ti, ex in compress(zip(t.tenant, extra), map(and_, open_, map(is_not, extra, repeat(None)))):
            held[ti] += len(ex) if type(ex) is bytes else len(ex.payload)
    return live, held
