"""Typing stub for the compiled timing wheel (kernel/_wheel.pyx)."""
from typing import Iterable

MAX_TIME: int  # 253402300799999 == 9999-12-31T23:59:59.999Z in ms since the Unix epoch
MAX_KEY: int   # 2**64 - 1

class Wheel:
    """Hierarchical timing wheel over int64 milliseconds; keys are uint64 chosen by the caller.

    A timer with deadline d expires in the first advance(now) with now >= d, never earlier.
    Expired keys come out ordered by (deadline, key). Deadlines <= self.now at insert
    expire on the next advance. Valid deadlines: 0 <= d <= MAX_TIME.
    """
    def __init__(self, now: int = 0) -> None: ...
    @property
    def now(self) -> int: ...            # time of the last advance (or the start time)
    def __len__(self) -> int: ...
    def __contains__(self, key: int) -> bool: ...
    def insert(self, key: int, deadline: int) -> None: ...      # KeyError if key present; ValueError if deadline out of range
    def cancel(self, key: int) -> bool: ...                     # True if it was present and is now removed
    def reschedule(self, key: int, deadline: int) -> None: ...  # KeyError if absent; ValueError if deadline out of range
    def deadline(self, key: int) -> int: ...                    # KeyError if absent
    def next_deadline(self) -> int | None: ...                  # earliest deadline held, None if empty
    def advance(self, now: int) -> list[int]: ...               # expired keys by (deadline, key); now < self.now acts as self.now
    def advance_items(self, now: int) -> list[tuple[int, int]]: ...  # same, as (key, deadline) pairs
    # insert_many: all-or-nothing (validates every pair first; a duplicate key, held or
    # repeated in the batch, is KeyError and undoes the batch). Fast path: when keys is a
    # 1-D contiguous uint64 buffer (array('Q'), memoryview 'Q') and deadlines a 1-D
    # contiguous int64 buffer (array('q'), memoryview 'q'), both are read in place with
    # no Python object per timer; any other iterable or buffer format takes the generic
    # per-item path, with the same results and errors (TypeError for non-int items).
    def insert_many(self, keys: Iterable[int], deadlines: Iterable[int]) -> None: ...
    def cancel_many(self, keys: Iterable[int]) -> int: ...      # number actually removed; uint64 buffers read in place
    def items(self) -> list[tuple[int, int]]: ...               # (key, deadline) sorted by key, for snapshots
    def memory_bytes(self) -> int: ...                          # bytes allocated by the wheel's C arrays
