"""Telemetry of the API layer: a grpc.aio server interceptor (request metrics and one
server span per call), event-retention and watcher metrics, and the SDK's client
interceptors that carry the caller's trace context (W3C `traceparent`) to the node.

Metrics (added to the node's registry, raft/telemetry.py):

| metric | type | what |
| --- | --- | --- |
| minoots_grpc_requests_total{service,method,code} | counter | finished calls, by gRPC status code name |
| minoots_grpc_request_duration_seconds{service,method} | histogram | unary calls only (a stream lasts as long as its client wants) |
| minoots_grpc_streams_active{service,method} | gauge | streaming calls in progress |
| minoots_events_oldest_sequence / _newest_sequence | gauge | the event sequences this node retains for WatchEvents |
| minoots_events_write_errors_total | counter | event batches this node failed to store |
| minoots_watchers_active | gauge | WatchEvents streams open on this node |
| minoots_watchers_dropped_total | counter | streams ended because retention or a snapshot install overtook their cursor |
| minoots_events_bytes / minoots_events_budget_bytes | gauge | disk the retained events occupy / may occupy (--events-budget) |
| minoots_events_budget_full | gauge | 1 while the budget is what trims (the oldest events go as new ones come) |
| minoots_events_budget_trimmed_total | counter | events trimmed because of the budget |
| minoots_events_trimmed_young_total | counter | of those, events younger than --events-min-age (raise the budget) |
| minoots_watchers_near_trim | gauge | watchers within 10 % of the retained range above the floor while the budget trims (Cluster.Status `lagging`) |
| minoots_watchers_near_trim_warnings_total | counter | near-trim warnings logged (one per watcher per 30 s at most) |

Spans: one SERVER span per call named `<service>/<method>` (e.g.
`minoots.v1.Timers/CreateTimer`) with the rpc.* attributes; its parent is the
trace context the client sent (extracted from the invocation metadata with the
configured OTel propagator, W3C trace context by default). Unary handlers run
with it as the current span, so the Raft proposal of a write is its child.
Nothing of this costs more than a flag check when tracing is off (raft/tracing.py).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import namedtuple
from typing import Optional

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from minoots.raft import tracing

log = logging.getLogger("minoots.api.telemetry")

__all__ = ["ServerTelemetry", "EventsCollector", "TraceContextClientInterceptor",
           "AioTraceContextClientInterceptor", "GRPC_LATENCY_BUCKETS"]

GRPC_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Server span status per OTel's gRPC conventions: these codes are server errors.
_SERVER_ERRORS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS})


def _failed_code(exc: BaseException, context) -> grpc.StatusCode:
    """The status a call that raised `exc` ends with."""
    if isinstance(exc, grpc.aio.AbortError):
        return _code(context, grpc.StatusCode.UNKNOWN)
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class ServerTelemetry(grpc.aio.ServerInterceptor):
    """Counts, times and traces every call the server handles.

    `registry`: the node's CollectorRegistry (None: no metrics, spans only).
    Labels are the registered service and method names, so their number is bounded
    by the services the server has (unknown methods never reach an interceptor's handler).
    """

    def __init__(self, registry=None) -> None:
        self.requests = self.latency = self.streams = None
        if registry is not None:
            from prometheus_client import Counter, Gauge, Histogram

            self.requests = Counter("minoots_grpc_requests", "gRPC calls handled, by method and status code.",
                                    ["service", "method", "code"], registry=registry)
            self.latency = Histogram("minoots_grpc_request_duration_seconds",
                                     "Time to answer a unary gRPC call.", ["service", "method"],
                                     buckets=GRPC_LATENCY_BUCKETS, registry=registry)
            self.streams = Gauge("minoots_grpc_streams_active", "Streaming gRPC calls in progress.",
                                 ["service", "method"], registry=registry)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        metadata = details.invocation_metadata
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._wrap(handler.unary_unary, service, method, metadata, False))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._wrap(handler.unary_stream, service, method, metadata, True))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._wrap(handler.stream_unary, service, method, metadata, False))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._wrap(handler.stream_stream, service, method, metadata, True))
        return handler

    # ---- wrapping -----------------------------------------------------------------

    def _start_span(self, service: str, method: str, metadata):
        if not tracing.enabled():
            return None
        carrier = {}
        for item in metadata or ():
            key, value = item[0], item[1]
            if isinstance(value, str):
                carrier[key] = value
        parent = propagate.extract(carrier)
        return tracing.tracer().start_span(
            f"{service}/{method}", context=parent, kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method})

    def _finish(self, span, service: str, method: str, code: grpc.StatusCode, started: float,
                unary: bool, exc: Optional[BaseException] = None, context=None) -> None:
        try:
            if self.requests is not None:
                self.requests.labels(service, method, code.name).inc()
                if unary:
                    self.latency.labels(service, method).observe(time.perf_counter() - started)
            if span is not None:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in _SERVER_ERRORS:
                    details = None
                    try:
                        details = context.details() if context is not None else None
                    except Exception:
                        pass
                    if isinstance(details, bytes):
                        details = details.decode("utf-8", "replace")
                    span.set_status(Status(StatusCode.ERROR, details or code.name))
                if exc is not None and not isinstance(exc, (grpc.aio.AbortError, asyncio.CancelledError)):
                    span.record_exception(exc)
                span.end()
        except Exception:
            log.exception("gRPC telemetry failed")

    def _wrap(self, behavior, service: str, method: str, metadata, streaming: bool):
        if inspect.isasyncgenfunction(behavior):
            return self._wrap_asyncgen(behavior, service, method, metadata)
        if inspect.iscoroutinefunction(behavior):
            return self._wrap_coroutine(behavior, service, method, metadata, streaming)
        return behavior   # a synchronous handler (none here): left alone

    def _wrap_coroutine(self, behavior, service, method, metadata, streaming: bool):
        async def wrapped(request, context):
            span = self._start_span(service, method, metadata)
            started = time.perf_counter()
            if streaming and self.streams is not None:
                self.streams.labels(service, method).inc()
            exc = None
            try:
                if span is not None:
                    with trace.use_span(span, end_on_exit=False, record_exception=False,
                                        set_status_on_exception=False):
                        result = await behavior(request, context)
                else:
                    result = await behavior(request, context)
                code = _code(context, grpc.StatusCode.OK)
                return result
            except BaseException as e:
                exc, code = e, _failed_code(e, context)
                raise
            finally:
                if streaming and self.streams is not None:
                    self.streams.labels(service, method).dec()
                self._finish(span, service, method, code, started, not streaming, exc, context)
        return wrapped

    def _wrap_asyncgen(self, behavior, service, method, metadata):
        async def wrapped(request, context):
            # The span is not made current across yields (each resumption may run in
            # another context); a stream's handler starts no child spans anyway.
            span = self._start_span(service, method, metadata)
            started = time.perf_counter()
            if self.streams is not None:
                self.streams.labels(service, method).inc()
            exc = None
            code = grpc.StatusCode.OK
            try:
                async for item in behavior(request, context):
                    yield item
                code = _code(context, grpc.StatusCode.OK)
            except BaseException as e:
                exc, code = e, _failed_code(e, context)
                raise
            finally:
                if self.streams is not None:
                    self.streams.labels(service, method).dec()
                self._finish(span, service, method, code, started, False, exc, context)
        return wrapped


def _code(context, default: grpc.StatusCode) -> grpc.StatusCode:
    try:
        code = context.code()
    except Exception:
        return default
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    for c in grpc.StatusCode:        # some versions hand back the integer
        if c.value[0] == code:
            return c
    return default


class EventsCollector:
    """Event retention and watcher numbers of this node's EventLog, read at scrape time."""

    def __init__(self, events) -> None:
        self.events = events

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ev = self.events
        newest = ev.visible
        yield GaugeMetricFamily("minoots_events_oldest_sequence",
                                "Oldest event sequence this node serves (its retention floor).",
                                value=min(ev.floor, newest + 1) if newest else ev.floor)
        yield GaugeMetricFamily("minoots_events_newest_sequence", "Newest event sequence stored on this node.",
                                value=newest)
        yield CounterMetricFamily("minoots_events_write_errors", "Event batches this node failed to store.",
                                  value=ev.write_errors)
        yield GaugeMetricFamily("minoots_watchers_active", "WatchEvents streams open on this node.",
                                value=getattr(ev, "watchers", 0))
        yield CounterMetricFamily("minoots_watchers_dropped",
                                  "WatchEvents streams ended because retention or a snapshot install "
                                  "overtook their cursor (OUT_OF_RANGE / DATA_LOSS mid-stream).",
                                  value=getattr(ev, "watchers_dropped", 0))
        yield GaugeMetricFamily("minoots_events_bytes", "Disk the retained events occupy (their LMDB pages).",
                                value=ev.used_bytes())
        yield GaugeMetricFamily("minoots_events_budget_bytes", "Disk the retained events may occupy "
                                "(--events-budget).", value=ev.budget)
        yield GaugeMetricFamily("minoots_events_budget_full", "1 while the disk budget is what trims events.",
                                value=int(ev.budget_full))
        yield CounterMetricFamily("minoots_events_budget_trimmed", "Events trimmed because of the disk budget.",
                                  value=ev.budget_trimmed)
        yield CounterMetricFamily("minoots_events_trimmed_young",
                                  "Events the disk budget trimmed although younger than --events-min-age.",
                                  value=ev.trimmed_young)
        yield GaugeMetricFamily("minoots_watchers_near_trim",
                                "WatchEvents streams whose cursor is within 10 % of the retained range above the "
                                "retention floor while the disk budget trims.", value=len(ev.near_trim()))
        yield CounterMetricFamily("minoots_watchers_near_trim_warnings",
                                  "Near-trim warnings logged (one per watcher per 30 s at most).",
                                  value=ev.near_trim_warnings)


# ---- the SDK side: carry the caller's trace context ------------------------------------

_Details = namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"))


class _ClientCallDetails(_Details, grpc.ClientCallDetails):
    pass


def _trace_headers() -> Optional[dict]:
    """The propagator's headers for the caller's current context, or None when there is no
    valid current span (the common case without tracing: nothing is added)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict = {}
    propagate.inject(carrier)
    return carrier or None


class TraceContextClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `traceparent` (and whatever else the configured propagator injects) to each call's
    metadata when the calling thread has a current span."""

    @staticmethod
    def _details(d):
        headers = _trace_headers()
        if headers is None:
            return d
        metadata = list(d.metadata or ()) + list(headers.items())
        return _ClientCallDetails(d.method, d.timeout, metadata, d.credentials,
                                  getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)


class AioTraceContextClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """The asyncio client's: unary calls only (the context of a long watch stream is moot,
    and an intercepted stream call object behaves differently on cancellation)."""

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        headers = _trace_headers()
        if headers is not None:
            d = client_call_details
            metadata = grpc.aio.Metadata(*tuple(d.metadata or ()))
            for k, v in headers.items():
                metadata.add(k, v)
            client_call_details = grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials,
                                                             d.wait_for_ready)
        return await continuation(client_call_details, request)


class DeliveryCollector:
    """The leader's webhook dispatcher (api/dispatcher.py), read at scrape time: attempts by
    outcome, attempts waiting here, and each endpoint's circuit breaker (1 = open)."""

    MAX_ENDPOINT_SERIES = 200      # bounded label cardinality: the first endpoints by name

    def __init__(self, dispatcher) -> None:
        self.dispatcher = dispatcher

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.dispatcher.stats()
        attempts = CounterMetricFamily("minoots_webhook_attempts", "Webhook attempts this node made, by outcome.",
                                       labels=["outcome"])
        attempts.add_metric(["ok"], s["attempts_ok"])
        attempts.add_metric(["failed"], s["attempts_failed"])
        yield attempts
        yield GaugeMetricFamily("minoots_webhook_pending", "Delivery attempts queued or in flight at this node.",
                                value=s["pending"])
        circuit = GaugeMetricFamily("minoots_webhook_circuit_open",
                                    "1 while an endpoint's circuit breaker pauses it.", labels=["endpoint"])
        queued = GaugeMetricFamily("minoots_webhook_endpoint_queued", "Attempts waiting for an endpoint.",
                                   labels=["endpoint"])
        for key, e in list(s["endpoints"].items())[:self.MAX_ENDPOINT_SERIES]:
            circuit.add_metric([key], 1 if e["state"] == "open" else 0)
            queued.add_metric([key], e["queued"])
        yield circuit
        yield queued
