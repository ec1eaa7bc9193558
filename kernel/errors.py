"""Typed errors of the timer kernel.

Every command either applies completely or raises one of these and leaves the
state untouched, so the Raft layer can apply a rejected command on every node
and get the same (unchanged) state and the same error everywhere. Each class
carries a gRPC-style `code` so the API layer can map it without a table.
"""

from __future__ import annotations

__all__ = [
    "KernelError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "QuotaExceeded",
    "SnapshotError",
]


class KernelError(Exception):
    """Base class of every error the kernel raises on purpose."""

    code = "INTERNAL"


class InvalidArgument(KernelError, ValueError):
    """A command argument breaks a rule; `field` names it, `rule` says what it must be."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"invalid {field}: {rule}")


class NotFound(KernelError, LookupError):
    """The named timer does not exist in that tenant."""

    code = "NOT_FOUND"

    def __init__(self, tenant: str, timer_id: str) -> None:
        self.tenant = tenant
        self.timer_id = timer_id
        super().__init__(f"timer {timer_id!r} not found in tenant {tenant!r}")


class AlreadyExists(KernelError):
    """A create named an id the tenant already uses (without a matching idempotency key)."""

    code = "ALREADY_EXISTS"

    def __init__(self, tenant: str, timer_id: str, field: str = "id") -> None:
        self.tenant = tenant
        self.timer_id = timer_id
        self.field = field
        super().__init__(f"{field}: timer {timer_id!r} already exists in tenant {tenant!r}")


class FailedPrecondition(KernelError):
    """The timer exists but its lifecycle state does not allow the command."""

    code = "FAILED_PRECONDITION"


class QuotaExceeded(KernelError):
    """A create would take a tenant past one of its limits; the whole group is refused.

    `limit` names the limit ("max_timers" or "max_payload_bytes"), `quota` its
    value, `held` what the tenant holds now and `adding` what the group adds."""

    code = "RESOURCE_EXHAUSTED"

    _WHAT = {"max_timers": "outstanding timers", "max_payload_bytes": "payload bytes of outstanding timers"}

    def __init__(self, tenant: str, limit: str, quota: int, held: int, adding: int) -> None:
        self.tenant = tenant
        self.limit = limit
        self.quota = quota
        self.held = held
        self.adding = adding
        what = self._WHAT.get(limit, limit)
        super().__init__(
            f"quota of tenant {tenant!r} exceeded: {limit} is {quota}; it holds {held} {what} "
            f"and this request adds {adding}"
        )

    def __reduce__(self):
        return type(self), (self.tenant, self.limit, self.quota, self.held, self.adding)


class SnapshotError(KernelError):
    """Snapshot bytes are corrupt, truncated, foreign or of an unsupported version."""

    code = "DATA_LOSS"
