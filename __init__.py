"""MINOOTS: a durable, Raft-replicated timer kernel.

The repository root is this package; its top-level folders are the subpackages
(`minoots.kernel`, `minoots.raft`, `minoots.api`, ...).

The SDK's public names are re-exported here: `minoots.Client`,
`minoots.AsyncClient`, the result types (`Timer`, `Event`, `TimerState`, ...)
and the error hierarchy (`MinootsError`, `NotFound`, ...). The clients are
imported on first use, so `import minoots` does not load grpc.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("minoots")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

# Absolute, not relative: pytest imports this file on its own (as `__init__`, named after
# the checkout's directory) because the repository root is a package; the absolute import
# then resolves to the installed `minoots` whatever the checkout is called.
from minoots.api.types import (  # noqa: E402  (after __version__ on purpose: no grpc here)
    AlreadyExists,
    BulkResult,
    ClusterStatus,
    DeadlineExceeded,
    DeliveryAttempt,
    Event,
    Lease,
    EventKind,
    FailedPrecondition,
    InvalidArgument,
    Member,
    MinootsError,
    NotFound,
    OutOfRange,
    SnapshotInfo,
    Timer,
    TimerSpec,
    TimerState,
    Unauthenticated,
    Unavailable,
    PermissionDenied,
    ResourceExhausted,
)

_LAZY = {"Client": ("minoots.api.client", "Client"), "Watch": ("minoots.api.client", "Watch"),
         "AsyncClient": ("minoots.api.aio", "AsyncClient"), "AsyncWatch": ("minoots.api.aio", "AsyncWatch"),
         "verify_webhook": ("minoots.api.client.webhooks", "verify_webhook"),
         "run_worker": ("minoots.api.client.worker", "run_worker"),
         "WebhookVerificationError": ("minoots.api.client.webhooks", "WebhookVerificationError")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minoots' has no attribute {name!r}")


__all__ = [
    "__version__",
    "Client", "AsyncClient", "Watch", "AsyncWatch", "verify_webhook", "WebhookVerificationError", "DeliveryAttempt",
    "Lease", "run_worker", "BulkResult",
    "Timer", "TimerSpec", "TimerState", "Event", "EventKind", "ClusterStatus", "Member",
    "SnapshotInfo", "MinootsError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
    "OutOfRange", "Unavailable", "DeadlineExceeded", "Unauthenticated", "PermissionDenied", "ResourceExhausted",
]
