"""A small worker loop over a pull queue: lease, handle, ack (or nack when the handler raises)."""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from ..types import Lease, MinootsError, Timer

log = logging.getLogger("minoots.worker")

__all__ = ["run_worker"]


def run_worker(client, queue: str, handle: Callable[[Timer], None], *, visibility: float = 30.0,
               wait: float = 10.0, max_timers: int = 1, stop: Optional[threading.Event] = None,
               tenant: Optional[str] = None) -> int:
    """Lease timers of `queue` and call `handle(timer)` for each: return -> ack (settled),
    raise -> nack (retried per the timer's policy, dead-lettered after its last attempt).
    Runs until `stop` is set; returns how many it acked. `visibility` (seconds) must
    outlast `handle`, or the lease expires and another worker gets the timer (at least
    once: make handlers idempotent, e.g. on timer.fire_id)."""
    stop = stop or threading.Event()
    acked = 0
    while not stop.is_set():
        for lease in client.lease(queue, max_timers=max_timers, visibility=visibility, wait=wait, tenant=tenant):
            acked += _one(client, lease, handle)
    return acked


def _one(client, lease: Lease, handle) -> int:
    try:
        handle(lease.timer)
    except Exception as exc:       # the handler's failure: give the timer back
        log.warning("handler failed; nack", extra={"timer": lease.timer.id, "error": repr(exc)})
        try:
            client.nack_lease(lease)
        except MinootsError as err:    # the lease expired meanwhile: it is redelivered anyway
            log.warning("nack refused", extra={"timer": lease.timer.id, "error": str(err)})
        return 0
    try:
        client.ack_lease(lease)
    except MinootsError as err:
        log.warning("ack refused (lease expired?)", extra={"timer": lease.timer.id, "error": str(err)})
        return 0
    return 1
