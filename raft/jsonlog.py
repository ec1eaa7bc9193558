"""Structured logs: one JSON object per line on stderr, one line per event.

A line written while a span is current (a gRPC call being handled, with tracing
on) carries that span's `trace_id` and `span_id` (hex, as trace back ends show
them), so a log line leads to its trace and back.
"""
from __future__ import annotations

import json
import logging
import sys
import time

_RESERVED = set(vars(logging.makeLogRecord({})))


class TraceContextFilter(logging.Filter):
    """Adds `trace_id`/`span_id` of the current OpenTelemetry span to a record, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            try:
                from opentelemetry import trace

                ctx = trace.get_current_span().get_span_context()
                if ctx.is_valid:
                    record.trace_id = f"{ctx.trace_id:032x}"
                    record.span_id = f"{ctx.span_id:016x}"
            except Exception:   # logging must never fail for tracing's sake
                pass
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as {"ts", "level", "node", "logger", "event", ...extra fields}."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": self.node_id,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(node_id: str | None, level: str = "info", stream=None) -> None:
    """Route every logger (ours and PySyncObj's) to JSON lines on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(node_id))
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
