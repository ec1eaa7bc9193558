"""The deterministic timer kernel: the timing wheel and the timer state machine.

Knows nothing of clocks, Raft, LMDB or gRPC: time is always an argument. The
layers above feed it commands (each stamped with `now_ms`) in replicated order
and persist the events it returns.
"""

from . import errors, timer, validate
from ._wheel import MAX_KEY, MAX_TIME, Wheel
from .errors import *  # noqa: F401,F403  (every typed error; see errors.__all__)
from .quota import TenantLimit, TenantUsage
from .snapshot import SnapshotCapture
from .state import ScanCursor, State
from .timer import *  # noqa: F401,F403  (the value types; see timer.__all__)
from .validate import *  # noqa: F401,F403  (the limits; see LIMITS below)

#: The size and count limits every layer checks against.
LIMITS = [name for name in validate.__all__ if name.startswith("MAX_") and name != "MAX_TIME"]

__all__ = ["State", "ScanCursor", "SnapshotCapture", "Wheel", "MAX_KEY", "MAX_TIME", "TenantLimit", "TenantUsage",
           *timer.__all__, *errors.__all__, *LIMITS]
