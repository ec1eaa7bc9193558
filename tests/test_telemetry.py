"""Metrics, traces and logs of a node.

* End to end: a real 3-node LocalCluster (node processes), scraped over HTTP at
  each node's /metrics while a timer is created, fires and is cancelled too late.
* Tracing: one node with its gRPC API run in this process (api.process.serve on
  its own event loop thread) with an SDK TracerProvider + InMemorySpanExporter
  injected before start: a create traced by the client yields a server span in
  the client's trace, and the span of the tick that fired it links to it.
* Small checks: the create command is unchanged without tracing, traceparents
  round-trip, the log filter adds the trace id, two registries in one process.

Nothing asserts on speed; waits are bounded by generous timeouts only.
"""
from __future__ import annotations

import asyncio
import os
import functools
import io
import json
import logging
import re
import threading
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import minoots
from minoots.raft import tracing
from minoots.raft.testing import LocalCluster, free_ports

import support

WAIT = 30.0


# ---------------------------------------------------------------- helpers


def scrape(url: str) -> dict:
    """{(sample name, frozenset(labels)): value} of one /metrics page."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def has(samples: dict, name: str) -> bool:
    return any(n == name for n, _ in samples)


# any error counts as "not yet" (e.g. a node not answering while it starts)
wait_for = functools.partial(support.wait_for, timeout=WAIT, retry_on=(Exception,))


# ---------------------------------------------------------------- end to end: /metrics of a 3-node cluster


@pytest.mark.cluster
def test_metrics_of_a_real_cluster(tmp_path):
    with LocalCluster(tmp_path / "c", size=3) as cluster:
        nodes = list(cluster.nodes.values())
        assert all(n.metrics for n in nodes)
        urls = {n.node_id: n.metrics_url for n in nodes}
        leader = cluster.leader(timeout=WAIT)

        def one_leader():
            flags = {nid: value(scrape(u), "minoots_raft_is_leader") for nid, u in urls.items()}
            return flags if sorted(flags.values()) == [0, 0, 1] and flags[leader] == 1 else None

        flags = wait_for(one_leader, "is_leader == 1 on exactly one node")
        assert flags[leader] == 1

        before = {nid: scrape(u) for nid, u in urls.items()}
        with minoots.Client([n.grpc for n in nodes], timeout=WAIT) as client:
            t = client.create(delay=0.5, name="telemetry")
            wait_for(lambda: client.get(t.id).state == minoots.TimerState.SETTLED, "the timer to fire")
            with pytest.raises(minoots.FailedPrecondition):
                client.cancel(t.id)      # too late: a counted kernel error

        def fired_everywhere():
            now = {nid: scrape(u) for nid, u in urls.items()}
            ok = all(value(now[nid], "minoots_fires_total") >= value(before[nid], "minoots_fires_total") + 1
                     and value(now[nid], "minoots_fire_lateness_seconds_count")
                     >= value(before[nid], "minoots_fire_lateness_seconds_count") + 1
                     and value(now[nid], "minoots_timer_commands_total", command="cancel") >= 1
                     for nid in urls)
            return now if ok else None

        after = wait_for(fired_everywhere, "every node to count the firing and its lateness")

        for nid in urls:
            a, b = after[nid], before[nid]
            # the lateness histogram is a real histogram: buckets up to +Inf, sum >= 0
            assert value(a, "minoots_fire_lateness_seconds_bucket", le="+Inf") == \
                value(a, "minoots_fire_lateness_seconds_count")
            assert value(a, "minoots_fire_lateness_seconds_bucket", le="10.0") >= 1
            assert has(a, "minoots_fire_lateness_seconds_sum") and value(a, "minoots_fire_lateness_seconds_sum") >= 0
            # the create and the failed cancel, counted by outcome on every node (replicated facts)
            assert value(a, "minoots_timer_commands_total", command="create", outcome="ok") >= \
                value(b, "minoots_timer_commands_total", command="create", outcome="ok") + 1
            assert value(a, "minoots_timer_commands_total", command="cancel", outcome="FAILED_PRECONDITION") >= 1
            assert value(a, "minoots_timers", state="settled") >= 1
            assert value(a, "minoots_raft_term") >= 1
            assert value(a, "minoots_raft_applied_index") >= 1
            assert value(a, "minoots_raft_commit_index") >= value(a, "minoots_raft_applied_index") - 1
            assert has(a, "minoots_raft_log_entries")
            assert value(a, "minoots_node_info", node=nid) == 1
            assert value(a, "minoots_raft_leader_changes_total") >= 1
            assert has(a, "minoots_watchers_active") and value(a, "minoots_watchers_active") >= 0
            assert has(a, "minoots_events_newest_sequence") and has(a, "minoots_events_oldest_sequence")
            assert value(a, "minoots_events_newest_sequence") >= 4    # created, armed, fired, settled

        # the gRPC interceptor counted the SDK's calls (on whichever nodes took them)
        creates = sum(value(after[nid], "minoots_grpc_requests_total", method="CreateTimer", code="OK")
                      - value(before[nid], "minoots_grpc_requests_total", method="CreateTimer", code="OK")
                      for nid in urls)
        assert creates >= 1
        assert sum(value(after[nid], "minoots_grpc_requests_total", method="CancelTimer",
                         code="FAILED_PRECONDITION") for nid in urls) >= 1
        assert sum(value(after[nid], "minoots_grpc_request_duration_seconds_count", method="CreateTimer")
                   for nid in urls) >= 1

        # the leader proposed the tick and sees both followers' replication lag
        lead = after[leader]
        assert value(lead, "minoots_ticks_committed_total") >= 1
        assert value(lead, "minoots_ticks_proposed_total") >= value(lead, "minoots_ticks_committed_total")
        followers = {dict(ls).get("follower") for (n, ls) in lead if n == "minoots_raft_follower_lag_entries"}
        assert followers == {nid for nid in urls if nid != leader}
        for nid in urls:
            if nid != leader:
                assert not any(n == "minoots_raft_follower_lag_entries" for n, _ in after[nid])

        # a snapshot is counted, sized and timed
        with minoots.Client([cluster.nodes[leader].grpc], timeout=WAIT) as client:
            client.take_snapshot()
        snap = wait_for(lambda: (lambda s: s if value(s, "minoots_snapshots_total", outcome="ok") >= 1 else None)(
            scrape(urls[leader])), "the snapshot metrics")
        assert value(snap, "minoots_snapshot_last_bytes") > 0
        assert value(snap, "minoots_snapshot_duration_seconds_count") >= 1
        assert value(snap, "minoots_snapshots_kept") >= 1

        # labels stay bounded: no timer id or tenant anywhere on the page
        for nid in urls:
            assert not any(t.id in str(ls) for _, ls in after[nid])

        # every series the Grafana dashboard queries is one the nodes export
        exported = {n for page in [*after.values(), snap] for n, _ in page}
        assert dashboard_series() <= exported, dashboard_series() - exported


def dashboard_series() -> set:
    path = Path(__file__).resolve().parent.parent / "ops" / "grafana" / "minoots.json"
    dash = json.loads(path.read_text())
    titles = " | ".join(p["title"] for p in dash["panels"])
    for needed in ("lateness P50 / P95 / P99", "Fires / s", "Timers outstanding", "Leader", "Term",
                   "Follower replication lag", "gRPC error rate"):
        assert needed in titles, needed
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets") or ()]
    assert any("histogram_quantile(0.99" in e and "minoots_fire_lateness_seconds_bucket" in e for e in exprs)
    return {name for e in exprs for name in re.findall(r"minoots_[a-z_]+", e)}


# ---------------------------------------------------------------- tracing, in process


class InProcessNode:
    """One node with its gRPC API on an event loop in a thread of this process."""

    def __init__(self, root) -> None:
        from minoots.api.process import ApiConfig
        from minoots.raft import peer_secret
        from minoots.raft.node import NodeConfig

        raft, grpc_port, metrics = free_ports(3)
        self.grpc = f"127.0.0.1:{grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.cfg = NodeConfig(node_id="n1", raft=f"127.0.0.1:{raft}", data_dir=root / "n1", init=True,
                              sync="relaxed", metrics=f"127.0.0.1:{metrics}")
        token_file = root / "admin.token"
        peer_secret.generate(token_file, os.environ["MINOOTS_TOKEN"].encode())
        self.api = ApiConfig(grpc=self.grpc, admin_token_file=token_file)
        self._loop = None
        self._stop = None
        self._ready = threading.Event()
        self.error = None
        self._thread = threading.Thread(target=self._run, name="in-process-node", daemon=True)

    def _run(self) -> None:
        from minoots.api.process import serve

        loop = self._loop = asyncio.new_event_loop()
        try:
            self._stop = asyncio.Event()
            self._ready.set()
            loop.run_until_complete(serve(self.cfg, self.api, self._stop))
        except BaseException as exc:   # reported by stop()
            self.error = exc
        finally:
            self._ready.set()
            loop.close()

    def start(self) -> "InProcessNode":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        self._thread.join(30)
        assert not self._thread.is_alive(), "the in-process node did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield provider, exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


@pytest.mark.cluster
def test_create_trace_reaches_the_server_and_the_fire_links_to_it(tmp_path, spans):
    provider, exporter = spans
    assert tracing.enabled()
    node = InProcessNode(tmp_path).start()
    try:
        with minoots.Client([node.grpc], timeout=WAIT) as client:
            wait_for(lambda: client.status().leader, "the node to lead")
            tracer = provider.get_tracer("test-client")
            with tracer.start_as_current_span("client create") as client_span:
                t = client.create(delay=0.3, name="traced")
            untraced = client.create(delay=0.3, name="untraced")
            wait_for(lambda: all(client.get(x.id).state == minoots.TimerState.SETTLED for x in (t, untraced)),
                     "both timers to fire")
            client.take_snapshot()
        cs = client_span.get_span_context()

        def find():
            done = exporter.get_finished_spans()
            server = [s for s in done if s.name == "minoots.v1.Timers/CreateTimer"
                      and s.context.trace_id == cs.trace_id]
            ticks = [s for s in done if s.name == "raft.tick"]
            snaps = [s for s in done if s.name == "raft.snapshot"]
            return (done, server, ticks, snaps) if server and ticks and snaps else None

        done, server, ticks, snaps = wait_for(find, "the server, tick and snapshot spans", timeout=10)
        (srv,) = server
        # the server span continues the client's trace (traceparent from the gRPC metadata)
        assert srv.parent is not None and srv.parent.span_id == cs.span_id
        assert srv.kind.name == "SERVER"
        assert srv.attributes["rpc.method"] == "CreateTimer"
        assert srv.attributes["rpc.grpc.status_code"] == 0
        # the Raft proposal of the create is a child of the server span
        proposals = [s for s in done if s.name == "raft.propose" and s.parent is not None
                     and s.parent.span_id == srv.context.span_id]
        assert proposals and proposals[0].attributes["minoots.command"] == "create"
        assert proposals[0].context.trace_id == cs.trace_id
        # the tick that fired the timer links to the creating request's span
        linked = [tk for tk in ticks if any(l.context.span_id == srv.context.span_id
                                            and l.context.trace_id == cs.trace_id for l in tk.links)]
        assert linked, [(tk.attributes, [l.context for l in tk.links]) for tk in ticks]
        assert linked[0].attributes["minoots.fired"] >= 1
        assert linked[0].context.trace_id != cs.trace_id     # a link, not a child
        # the untraced create made a server span of its own trace, with no link into ours
        other = [s for s in done if s.name == "minoots.v1.Timers/CreateTimer" and s.context.trace_id != cs.trace_id]
        assert other and other[0].parent is None
        assert snaps[0].attributes["minoots.bytes"] > 0

        # the in-process node serves its own metrics registry too
        page = scrape(node.metrics_url)
        assert value(page, "minoots_fires_total") >= 2
        assert value(page, "minoots_raft_is_leader") == 1
    finally:
        node.stop()


# ---------------------------------------------------------------- small checks


class _FakeBridge:
    def __init__(self) -> None:
        self.commands = []

    def propose(self, command, **kw):
        self.commands.append((command, kw))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result([RuntimeError("not applied")] * len(command.groups))
        return fut


def _spec(i: int):
    from minoots.kernel import TimerSpec

    return TimerSpec(id=f"t{i}", fire_at=10_000_000 + i)


def test_create_command_unchanged_without_tracing():
    from minoots.api.batcher import CreateBatcher

    assert not tracing.enabled()
    bridge = _FakeBridge()

    async def go():
        await CreateBatcher(bridge, lambda: 1).create([_spec(1)])

    asyncio.run(go())
    (command, kw), = bridge.commands
    assert command.kind == "create" and command.traceparents is None and kw == {}


def test_create_command_carries_the_traceparent(spans):
    from minoots.api.batcher import CreateBatcher

    provider, _ = spans
    bridge = _FakeBridge()

    async def go():
        with provider.get_tracer("t").start_as_current_span("req") as span:
            await CreateBatcher(bridge, lambda: 1).create([_spec(1)])
        return span

    span = asyncio.run(go())
    (command, kw), = bridge.commands
    assert command.traceparents == (tracing.traceparent_of(span.get_span_context()),)
    assert tracing.parse_traceparent(command.traceparents[0]).span_id == span.get_span_context().span_id


def test_fire_links_follow_the_lifecycle():
    from minoots.kernel import State, TimerSpec

    from minoots.raft.commands import CreateTimers, Tick

    k = State()
    links = tracing.FireLinks(cap=2)
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    specs = [TimerSpec(id=f"t{i}", fire_at=100 + i) for i in range(3)]
    cmd = CreateTimers(1, ((specs[0],), (specs[1],)), (tp, None))
    res = [k.create(1, [specs[0]]), k.create(1, [specs[1]])]
    links.on_result(cmd, res)
    assert links.get("default", "t0") == tp and links.get("default", "t1") is None
    tick = k.tick(200)
    links.on_result(Tick(200), tick)
    got = links.links_for(tick.events)
    assert [l.context.span_id for l in got] == [0xb7ad6b7169203331]   # still there right after the tick
    links.on_result(Tick(201), k.tick(201))                        # evicted at the next apply
    assert len(links) == 0
    # bounded
    many = [TimerSpec(id=f"m{i}", fire_at=10_000 + i) for i in range(5)]
    links.on_result(CreateTimers(1, tuple((s,) for s in many), (tp,) * 5),
                    [k.create(202, [s]) for s in many])
    assert len(links) == 2


def test_traceparent_round_trip_and_garbage():
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = tracing.parse_traceparent(tp)
    assert ctx is not None and tracing.traceparent_of(ctx) == tp
    for bad in (None, "", "xx", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "ff-" + tp[3:], 12):
        assert tracing.parse_traceparent(bad) is None


def test_log_lines_carry_the_trace_id(spans):
    from minoots.raft import jsonlog

    provider, _ = spans
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        jsonlog.setup("n9", "info", stream=stream)
        log = logging.getLogger("minoots.test")
        log.info("outside")
        with provider.get_tracer("t").start_as_current_span("work") as span:
            log.info("inside", extra={"k": 1})
        log.debug("hidden at info")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["event"] for x in lines] == ["outside", "inside"]
    assert "trace_id" not in lines[0]
    assert lines[1]["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert lines[1]["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert lines[1]["node"] == "n9" and lines[1]["k"] == 1


def test_two_nodes_in_one_process_have_separate_registries():
    from types import SimpleNamespace

    from minoots.raft.telemetry import NodeMetrics

    def fake(nid):
        return SimpleNamespace(machine=None, ticker=None, leader_changes=0, clock=SimpleNamespace(offset_ms=0),
                               cfg=SimpleNamespace(node_id=nid, cluster="c"))

    a, b = NodeMetrics(fake("a")), NodeMetrics(fake("b"))
    a.fires.inc(3)
    assert a.registry.get_sample_value("minoots_fires_total") == 3
    assert b.registry.get_sample_value("minoots_fires_total") == 0
    assert a.registry.get_sample_value("minoots_node_info", {"node": "a", "cluster": "c"}) == 1
    a.lateness.observe_many([0.0005, 0.003, 20.0])
    assert a.registry.get_sample_value("minoots_fire_lateness_seconds_bucket", {"le": "0.001"}) == 1
    assert a.registry.get_sample_value("minoots_fire_lateness_seconds_bucket", {"le": "0.005"}) == 2
    assert a.registry.get_sample_value("minoots_fire_lateness_seconds_bucket", {"le": "+Inf"}) == 3
    assert a.registry.get_sample_value("minoots_fire_lateness_seconds_count") == 3


def test_metrics_flag(tmp_path):
    from click.testing import CliRunner

    from minoots.cli import main

    r = CliRunner().invoke(main, ["node", "run", "--help"])
    assert r.exit_code == 0 and "--metrics" in r.output
    r = CliRunner().invoke(main, ["up", "--help"])
    assert r.exit_code == 0 and "--metrics-port" in r.output


# ---------------------------------------------------------------- OTLP export from a node process


@pytest.mark.cluster
def test_node_process_exports_spans_over_otlp(tmp_path, monkeypatch):
    """A node started with OTEL_EXPORTER_OTLP_ENDPOINT exports its spans to that collector
    (here a minimal OTLP/gRPC TraceService in this process); the SDK client's trace id arrives."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            for rs in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        received.append((attrs, span.name, span.trace_id.hex(), [l.span_id.hex() for l in span.links]))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "minoots-test")
    provider = TracerProvider()
    tracing.use_provider(provider)   # the client side of this test traces in-process
    try:
        with LocalCluster(tmp_path / "c", size=1) as cluster:
            (node,) = cluster.nodes.values()
            with minoots.Client([node.grpc], timeout=WAIT) as client:
                wait_for(lambda: client.status().leader, "the node to lead")
                with provider.get_tracer("test").start_as_current_span("client") as span:
                    t = client.create(delay=0.2)
                wait_for(lambda: client.get(t.id).state == minoots.TimerState.SETTLED, "the timer to fire")
            trace_id = f"{span.get_span_context().trace_id:032x}"

            def arrived():
                names = {name for _, name, tid, _ in received if tid == trace_id}
                ticks = [r for r in received if r[1] == "raft.tick"]
                return (names, ticks) if {"minoots.v1.Timers/CreateTimer", "raft.propose"} <= names and ticks \
                    else None

            names, ticks = wait_for(arrived, "the node's spans at the collector", timeout=15)
            server_ids = {tid for _, name, tid, _ in received if name == "minoots.v1.Timers/CreateTimer"}
            assert trace_id in server_ids
            assert all(attrs.get("service.name") == "minoots-test" and attrs.get("service.instance.id") == "n1"
                       for attrs, *_ in received)
            assert any(links for *_, links in ticks)
    finally:
        tracing.use_provider(None)
        provider.shutdown()
        server.stop(0)
