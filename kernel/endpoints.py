"""Which timers use a managed webhook endpoint: what deleting the endpoint must respect.

An endpoint (raft/endpoints.py) is referenced by the delivery records of the timers
created with it (Delivery.endpoint). Deleting it while a timer that has not ended still
needs it would leave that timer unable to sign its webhook, so the delete is refused
(FAILED_PRECONDITION) while such timers exist. Dead-lettered timers do not hold the
endpoint: their replay is refused once the endpoint is gone.

The count is a walk over the delivery records (timers with a webhook or queue only),
in ordinal order: deterministic, and paid only by the rare endpoint delete.
"""
from __future__ import annotations

from .timer import TimerState

__all__ = ["live_endpoint_refs"]

_TERMINAL = frozenset(int(s) for s in TimerState if s.terminal)


def live_endpoint_refs(state, tenant: str, endpoint: str, limit: int = 1) -> list[str]:
    """Ids (up to `limit`, in ordinal order) of `tenant`'s timers that use `endpoint` and
    have not ended (scheduled, armed, fired or delivering)."""
    t = state._table
    ti = t.tenant_index.get(tenant)
    if ti is None:
        return []
    out: list[str] = []
    for o in sorted(t.deliv):
        rec = t.deliv[o]
        if rec.spec.endpoint == endpoint and t.tenant[o] == ti and t.state[o] not in _TERMINAL:
            out.append(t.ids[o])
            if len(out) >= limit:
                break
    return out
