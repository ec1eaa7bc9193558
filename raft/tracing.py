"""OpenTelemetry tracing for a node: the tracer, W3C trace context strings, and fire links.

Spans a node records (names are stable; see also api/telemetry.py):

| span                                   | where                       | what                                    |
| -------------------------------------- | --------------------------- | --------------------------------------- |
| `minoots.v1.Timers/CreateTimer`, ...   | api/telemetry.py (server)   | one per gRPC call; parent = the caller's `traceparent` |
| `raft.propose`                         | api/bridge.py, api/batcher.py | a write from proposal to commit+apply on this node |
| `raft.tick`                            | raft/ticker.py (leader)     | a tick that fired timers: `minoots.fired`, links to the creates |
| `raft.snapshot`                        | raft/machine.py             | a snapshot from capture to durable      |

Cost when nothing exports: no SDK TracerProvider is installed, so the global
tracer is OpenTelemetry's no-op, and every place that would do extra work for a
span (formatting a traceparent, collecting links) first asks `enabled()`, which
is a single isinstance check. `setup_from_env()` installs an SDK provider with an
OTLP exporter only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter then reads the
standard OTel environment variables (protocol, headers, timeouts, sampler,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`). Tests inject a provider with
`use_provider()` instead (no global state that outlives them).

Fire links. The span recording a firing (`raft.tick`, on the leader) links to the
span of the request that created each fired timer. The kernel must not learn
about tracing, and the fire happens on the leader, which need not be the node
that took the create. So when tracing is on, the node taking a create puts the
request's `traceparent` string into the replicated `create` command (a 4th
element: one string or None per group; absent when tracing is off, so the log
is unchanged then), and every node keeps (tenant, id) -> traceparent in a bounded
`FireLinks` map, outside the kernel state: it is filled when the create applies,
read when the timer fires, and dropped when it settles or is cancelled (the
oldest entries go first past `cap`). The map never influences replicated state.
Links are best effort: the map is not in snapshots, so a node that restarted or
installed a snapshot has no links for timers created before that.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Iterable, Optional

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags

log = logging.getLogger("minoots.raft.tracing")

__all__ = ["tracer", "enabled", "use_provider", "setup_from_env", "shutdown", "traceparent_of",
           "parse_traceparent", "current_traceparent", "context_of", "FireLinks", "MAX_LINKS"]

INSTRUMENTATION = "minoots"
MAX_LINKS = 128          # the SDK's default span link limit; more are dropped anyway
DEFAULT_LINKS_CAP = 65_536

_override = None         # a provider injected by use_provider (tests, embedding applications)
_tracer = trace.get_tracer(INSTRUMENTATION)   # a proxy: follows the global provider once set
_installed = None        # the provider setup_from_env installed (shut down at exit)


def tracer() -> trace.Tracer:
    return _tracer


def enabled() -> bool:
    """True when spans are recorded somewhere (an SDK provider is installed or injected)."""
    if _override is not None:
        return True
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def use_provider(provider) -> None:
    """Record this process's spans with `provider` (None: back to the global one)."""
    global _override, _tracer
    _override = provider
    _tracer = provider.get_tracer(INSTRUMENTATION) if provider is not None else trace.get_tracer(INSTRUMENTATION)


def setup_from_env(node_id: Optional[str] = None) -> bool:
    """Install an SDK TracerProvider exporting over OTLP when the OTel env asks for it.

    Returns True when tracing was enabled. Without OTEL_EXPORTER_OTLP_ENDPOINT /
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT nothing is installed (the no-op tracer stays).
    """
    global _installed
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    try:
        if protocol.startswith("http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        log.error("OTLP exporter not installed; tracing stays off",
                  extra={"protocol": protocol, "error": repr(exc)})
        return False
    attrs = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "minoots"}
    if node_id:
        attrs["service.instance.id"] = node_id
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES (and OTEL_SERVICE_NAME wins over ours).
    provider = TracerProvider(resource=Resource.create(attrs))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _installed = provider
    log.info("tracing enabled", extra={"protocol": protocol,
                                       "endpoint": os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                                       or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")})
    return True


def shutdown() -> None:
    """Flush and stop the provider setup_from_env installed (process exit)."""
    global _installed
    provider, _installed = _installed, None
    if provider is not None:
        try:
            provider.shutdown()
        except Exception as exc:
            log.warning("tracing shutdown failed", extra={"error": repr(exc)})


# ---- W3C trace context strings ------------------------------------------------------


def traceparent_of(ctx: SpanContext) -> Optional[str]:
    """The W3C `traceparent` of a span context (None for an invalid one)."""
    if ctx is None or not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value) -> Optional[SpanContext]:
    """A remote SpanContext from a `traceparent` string; None when malformed."""
    if not isinstance(value, str) or len(value) < 55:
        return None
    parts = value.split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0xFF))


def current_traceparent() -> Optional[str]:
    """The `traceparent` of the current span, when tracing is on and there is one."""
    if not enabled():
        return None
    return traceparent_of(trace.get_current_span().get_span_context())


def context_of(span_context: Optional[SpanContext]):
    """An OTel Context whose current span is `span_context` (for a span's parent)."""
    if span_context is None or not span_context.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_context))


# ---- creating trace of each live timer -------------------------------------------------


class FireLinks:
    """(tenant, id) -> the `traceparent` of the request that created the timer.

    Filled and emptied from the apply path (PySyncObj's tick thread) by `on_result`,
    read by the leader's ticker right after a tick applied (same thread). Eviction of
    settled/cancelled timers is deferred to the next apply, so the ticker still finds
    the links of the timers a tick fired and settled at once. Never raises.
    """

    def __init__(self, cap: int = DEFAULT_LINKS_CAP) -> None:
        self.cap = cap
        self._map: OrderedDict = OrderedDict()
        self._evict: list = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._map)

    def get(self, tenant: str, timer_id: str) -> Optional[str]:
        return self._map.get((tenant, timer_id))

    def on_result(self, command, result) -> None:
        try:
            self._on_result(command, result)
        except Exception:
            log.exception("fire links bookkeeping failed")

    def _on_result(self, command, result) -> None:
        m = self._map
        if self._evict:
            with self._lock:
                for key in self._evict:
                    m.pop(key, None)
                self._evict = []
        if command.kind == "create":
            if not command.traceparents or not isinstance(result, list):
                return
            with self._lock:
                for parent, res in zip(command.traceparents, result):
                    if not parent or isinstance(res, Exception):
                        continue
                    for item in res.items:
                        if item.created:
                            t = item.timer
                            m[(t.tenant, t.id)] = parent
                while len(m) > self.cap:
                    m.popitem(last=False)
            return
        if not m or isinstance(result, Exception) or result is None:
            return
        events = getattr(result, "events", None)
        if not events:
            return
        from minoots.kernel import EventKind

        done = (EventKind.SETTLED, EventKind.CANCELLED, EventKind.DEAD_LETTERED)
        self._evict = [(e.tenant, e.timer_id) for e in events if e.kind in done]

    def links_for(self, events: Iterable, limit: int = MAX_LINKS) -> list[Link]:
        """Span links to the creating requests of the FIRED events among `events`."""
        from minoots.kernel import EventKind

        out: list[Link] = []
        seen = set()
        for e in events:
            if e.kind != EventKind.FIRED:
                continue
            tp = self._map.get((e.tenant, e.timer_id))
            if tp is None or tp in seen:
                continue
            ctx = parse_traceparent(tp)
            if ctx is not None:
                seen.add(tp)
                out.append(Link(ctx, {"minoots.link": "created_by"}))
                if len(out) >= limit:
                    break
        return out
