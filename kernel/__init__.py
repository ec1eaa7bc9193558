"""The deterministic timer kernel: the timing wheel and the timer state machine.

Knows nothing of clocks, Raft, LMDB or gRPC: time is always an argument. The
layers above feed it commands (each stamped with `now_ms`) in replicated order
and persist the events it returns.
"""

from ._wheel import MAX_KEY, MAX_TIME, Wheel
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KernelError,
    NotFound,
    SnapshotError,
)
from .snapshot import SnapshotCapture
from .state import ScanCursor, State
from .timer import (
    DEFAULT_TENANT,
    AckResult,
    CancelResult,
    CreateItem,
    CreateResult,
    Event,
    EventKind,
    RescheduleResult,
    TickResult,
    Timer,
    TimerRef,
    TimerSpec,
    TimerState,
)
from .validate import (
    MAX_ACTION_BYTES,
    MAX_BATCH,
    MAX_ID_LEN,
    MAX_IDEMPOTENCY_KEY_LEN,
    MAX_LABEL_KEY_LEN,
    MAX_LABEL_VALUE_LEN,
    MAX_LABELS,
    MAX_NAME_LEN,
    MAX_PAYLOAD_BYTES,
    MAX_TENANT_LEN,
)

__all__ = [
    "State",
    "ScanCursor",
    "SnapshotCapture",
    "Wheel",
    "MAX_KEY",
    "MAX_TIME",
    "DEFAULT_TENANT",
    "TimerSpec",
    "TimerRef",
    "Timer",
    "TimerState",
    "Event",
    "EventKind",
    "CreateItem",
    "CreateResult",
    "CancelResult",
    "RescheduleResult",
    "TickResult",
    "AckResult",
    "KernelError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "SnapshotError",
    "MAX_ID_LEN",
    "MAX_TENANT_LEN",
    "MAX_NAME_LEN",
    "MAX_PAYLOAD_BYTES",
    "MAX_ACTION_BYTES",
    "MAX_LABELS",
    "MAX_LABEL_KEY_LEN",
    "MAX_LABEL_VALUE_LEN",
    "MAX_IDEMPOTENCY_KEY_LEN",
    "MAX_BATCH",
]
