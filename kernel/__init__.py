"""The deterministic timer kernel: the timing wheel and the timer state machine.

Knows nothing of clocks, Raft, LMDB or gRPC: time is always an argument.
"""
from ._wheel import MAX_KEY, MAX_TIME, Wheel

__all__ = ["MAX_KEY", "MAX_TIME", "Wheel"]
