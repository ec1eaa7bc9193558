"""One node process with its API: the Raft node plus the gRPC server on a uvloop loop.

The composition lives here, in the API layer, so `raft` never imports `api`:

    main thread: uvloop event loop ── grpc.aio server (Timers, Cluster, health, reflection)
                                  ├── HTTP/JSON + SSE gateway (aiohttp, --http): calls the gRPC
                                  │   server over a unix socket in the data dir (api/gateway.py)
                                  ├── create batcher, watchers, health monitor, announcer
    PySyncObj tick thread ──────── apply → kernel → EventLog (LMDB) → wake the loop (bridge)
                                                  └─ audit queue → audit-writer thread (raft/audit/, LMDB)
    ticker thread ──────────────── as in raft/node.py

Start-up: the gRPC port is checked before anything touches the data dir; the
event store is opened from a Node machine hook (after the data dir passed its
checks, before the tick thread starts), and so is the audit ledger, then the node starts,
then the server.
SIGTERM/SIGINT: health goes NOT_SERVING, a leader hands leadership to a caught-up
follower (bounded, ~2 s), the server stops accepting and gives
in-flight RPCs a short grace, then the node stops (ticker, Raft, LMDB),
then the event store is synced and closed, and the audit ledger signs a last checkpoint.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from minoots.raft import commands, peer_secret, tracing
from minoots.raft.audit import AUDIT_DIR, AUDIT_KEEP, AuditLedger, load_key
from minoots.raft.config import NodeConfig
from minoots.raft.net import check_port_free, split_address
from minoots.raft.node import Node
from minoots.raft.store import DataDirError

from .auth import Authenticator
from .batcher import CreateBatcher
from .bridge import RaftBridge, leader_reachable
from .events import EVENTS_BUDGET, EVENTS_DIR, EVENTS_KEEP, EVENTS_MIN_AGE_MS, MIN_BUDGET, EventLog
from .dispatcher import WebhookDispatcher
from .quotas import ApiLimits
from .ssrf import AddressPolicy
from .server import HealthMonitor, TlsFiles, build_server
from .subscriptions import OverrunReporter
from .telemetry import EventsCollector

log = logging.getLogger("minoots.api.process")

__all__ = ["ApiConfig", "run_node", "serve"]

GRACE_S = 2.0
GATEWAY_SOCKET = "api.sock"
ANNOUNCE_PERIOD_S = 1.0
FLUSH_PERIOD_S = 1.0


@dataclass
class ApiConfig:
    grpc: str                                   # HOST:PORT to listen on
    advertise: Optional[str] = None             # HOST:PORT clients should use (default: grpc)
    tls: Optional[TlsFiles] = None
    # Event retention (api/events.py): a disk budget (the hard bound), at least min-age kept
    # when the budget allows, an optional max age and an optional count bound.
    events_budget: int = EVENTS_BUDGET
    events_min_age_s: float = EVENTS_MIN_AGE_MS / 1000
    events_keep: Optional[int] = EVENTS_KEEP
    events_max_age_s: Optional[float] = None
    events_map_size: Optional[int] = None       # None: sized for the budget (events_map_size)
    # A file holding the bootstrap admin token (0600): accepted as role admin besides the
    # replicated tokens, so the first tokens can be made. `minoots up` writes one.
    admin_token_file: Optional[Path] = None
    # The cluster's audit signing key (Ed25519, 0600; `minoots up` writes one): signs the
    # checkpoints of this node's audit ledger. None: the ledger runs unsigned (logged).
    audit_key_file: Optional[Path] = None
    audit_keep: int = AUDIT_KEEP
    # Caps of this node's API (api/quotas.py): concurrent RPCs, watchers per principal,
    # the create batcher's queue.
    limits: ApiLimits = field(default_factory=ApiLimits)
    # HOST:PORT of the HTTP/JSON + SSE gateway (api/gateway.py); None: no HTTP.
    http: Optional[str] = None
    # Webhook targets allowed although not public (api/ssrf.py): hosts, addresses, CIDRs.
    webhook_allow_hosts: tuple = ()

    def audit_key(self):
        if self.audit_key_file is None:
            return None
        try:
            return load_key(self.audit_key_file)
        except (peer_secret.SecretError, ValueError) as exc:
            raise DataDirError(f"--audit-key-file: {exc}") from None

    def admin_token(self) -> Optional[str]:
        if self.admin_token_file is None:
            return None
        try:
            return peer_secret.load(self.admin_token_file).decode()
        except peer_secret.SecretError as exc:
            raise DataDirError(str(exc)) from None

    def validate(self) -> None:
        split_address(self.grpc)
        if self.http:
            split_address(self.http)
            if self.http == self.grpc:
                raise ValueError(f"--http {self.http} is also the --grpc address")
        if self.advertise:
            split_address(self.advertise)
        if self.tls is not None:
            for what, f in (("--tls-cert", self.tls.cert), ("--tls-key", self.tls.key),
                            ("--tls-client-ca", self.tls.client_ca)):
                if f is not None and not Path(f).is_file():
                    raise ValueError(f"{what} {f} is not a readable file")
        self.limits.validate()
        AddressPolicy(self.webhook_allow_hosts)      # a bad entry list fails here
        if self.events_keep is not None and self.events_keep < 1:
            raise ValueError("--events-keep must be at least 1")
        if self.events_budget < MIN_BUDGET:
            raise ValueError(f"--events-budget must be at least {MIN_BUDGET} bytes")
        if self.events_min_age_s < 0:
            raise ValueError("--events-min-age must not be negative")
        if self.events_max_age_s is not None and self.events_max_age_s < self.events_min_age_s:
            raise ValueError(f"--events-max-age ({self.events_max_age_s:g} s) is below --events-min-age "
                             f"({self.events_min_age_s:g} s): retention cannot keep at least min-age and drop "
                             "everything older than max-age; lower --events-min-age or raise --events-max-age")

    @property
    def advertised(self) -> str:
        return self.advertise or self.grpc


def run_node(cfg: NodeConfig, api: ApiConfig) -> int:
    """Run a node with its gRPC API until SIGTERM/SIGINT; returns the exit code."""
    import uvloop

    api.validate()
    cfg.validate()
    tracing.setup_from_env(cfg.node_id)     # OTLP export only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        return uvloop.run(serve(cfg, api))
    finally:
        tracing.shutdown()


async def serve(cfg: NodeConfig, api: ApiConfig, stop: Optional[asyncio.Event] = None) -> int:
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _on_signal, sig, stop)
        except (NotImplementedError, RuntimeError):   # not the main thread (tests)
            pass
    if api.grpc in (cfg.raft, cfg.metrics):
        raise ValueError(f"--grpc {api.grpc} is also this node's Raft or metrics address")
    check_port_free(api.grpc, "gRPC")
    if api.http:
        if api.http in (cfg.raft, cfg.metrics):
            raise ValueError(f"--http {api.http} is also this node's Raft or metrics address")
        check_port_free(api.http, "HTTP")
    admin_token = api.admin_token()      # an unreadable or open token file fails here, before the node starts
    audit_key = api.audit_key()          # and so does a bad audit key file
    if api.tls is not None:
        api.tls.credentials()     # unreadable or malformed files fail here, before the node starts

    node = Node(cfg)
    box: dict = {}

    def open_events(machine) -> None:
        ev = EventLog(Path(cfg.data_dir) / EVENTS_DIR, budget=api.events_budget,
                      min_age_ms=int(api.events_min_age_s * 1000), keep=api.events_keep,
                      max_age_ms=int(api.events_max_age_s * 1000) if api.events_max_age_s else None,
                      map_size=api.events_map_size, clock=node.clock.now_ms)
        ev.attach(machine)
        box["events"] = ev

    def open_audit(machine) -> None:
        ledger = AuditLedger(Path(cfg.data_dir) / AUDIT_DIR, cfg.node_id, key=audit_key, keep=api.audit_keep,
                             clock=node.clock.now_ms)
        ledger.attach(machine)
        box["audit"] = ledger

    node.machine_hooks.append(open_events)
    node.machine_hooks.append(open_audit)
    try:
        node.start()
    except BaseException:
        if "events" in box:
            box["events"].close()
        if "audit" in box:
            box["audit"].close()
        raise
    ledger: AuditLedger = box["audit"]
    events: EventLog = box["events"]
    if node.metrics is not None:
        node.metrics.registry.register(EventsCollector(events))
    bridge = RaftBridge(node.machine, loop)
    events.on_new = bridge.notify_threadsafe
    OverrunReporter(node.machine, bridge, loop).attach(events)
    batcher = CreateBatcher(bridge, node.clock.now_ms, max_queued_requests=api.limits.max_queued_creates,
                            max_queued_timers=api.limits.max_queued_timers)
    tasks: list[asyncio.Task] = []
    server = None
    gateway = None
    dispatcher = None
    try:
        authenticator = Authenticator(node.machine, admin_token, clock_ms=node.clock.now_ms,
                                      mtls=api.tls is not None and api.tls.client_ca is not None)
        addresses = AddressPolicy(api.webhook_allow_hosts)
        dispatcher = WebhookDispatcher(node.machine, bridge, node.clock, addresses)
        if node.metrics is not None:
            node.metrics.registry.register(dispatcher.collector())
        server, health_servicer = build_server(node, bridge, batcher, events, api.grpc, api.tls, authenticator,
                                               audit=ledger, limits=api.limits, addresses=addresses,
                                               dispatcher=dispatcher)
        gateway = _gateway(api, server, Path(cfg.data_dir)) if api.http else None
        monitor = HealthMonitor(node.machine, health_servicer)
        await monitor.update()
        await server.start()
        log.info("gRPC serving", extra={"grpc": api.grpc, "advertise": api.advertised,
                                        "tls": api.tls is not None})
        if gateway is not None:
            await gateway.start()
        tasks = [asyncio.create_task(monitor.run(), name="health"),
                 asyncio.create_task(_announce(node, bridge, api.advertised), name="announce"),
                 asyncio.create_task(_flush(events, loop), name="events-flush"),
                 asyncio.create_task(dispatcher.run(), name="webhooks")]
        await stop.wait()
    finally:
        if gateway is not None:
            await gateway.stop()
        if server is not None:
            try:
                await health_servicer.enter_graceful_shutdown()
            except Exception:
                pass
        # A leader hands leadership over first (bounded, raft/node.py Node.hand_over), while its
        # server still answers: requests in flight are forwarded to the new leader, not cut off.
        await loop.run_in_executor(None, node.hand_over)
        if server is not None:
            await server.stop(GRACE_S)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if dispatcher is not None:
            await dispatcher.close()
        await loop.run_in_executor(None, node.stop)
        bridge.close()
        events.close()
        await loop.run_in_executor(None, ledger.close)
    return 0


def _gateway(api: ApiConfig, server, data_dir: Path):
    """The HTTP gateway, calling this node's gRPC server over a unix socket of its own in the
    data dir (0700: the node's user only; no TLS needed, the token still decides)."""
    from .gateway import Gateway, server_ssl_context

    sock = data_dir.resolve() / GATEWAY_SOCKET
    if len(str(sock)) > 100:                  # sun_path holds 108 bytes
        sock = Path(tempfile.mkdtemp(prefix="minoots-gw-")) / GATEWAY_SOCKET
    sock.unlink(missing_ok=True)              # left by a killed run of this node
    server.add_insecure_port(f"unix:{sock}")
    tls = api.tls
    ctx = server_ssl_context(tls.cert, tls.key, tls.client_ca) if tls is not None else None
    return Gateway(f"unix:{sock}", api.http, ssl_context=ctx)


def _on_signal(sig: int, stop: asyncio.Event) -> None:
    log.info("signal received", extra={"signal": signal.Signals(sig).name})
    stop.set()


async def _announce(node: Node, bridge: RaftBridge, address: str) -> None:
    """Record this node's gRPC address in the replicated member map (idempotent; again
    whenever it is missing, e.g. after this node was added by its Raft address only)."""
    m = node.machine
    me = node.cfg.node_id
    while True:
        try:
            if (leader_reachable(m) and m.names.get(me) == node.cfg.raft
                    and m.grpc_addresses.get(me) != address):
                await asyncio.wait_for(bridge.propose(commands.SetMemberGrpc(me, address)), 5.0)
                log.info("gRPC address announced", extra={"grpc": address})
        except (asyncio.TimeoutError, Exception) as exc:  # retried on the next round
            log.debug("gRPC address announcement failed", extra={"error": repr(exc)})
        await asyncio.sleep(ANNOUNCE_PERIOD_S)


async def _flush(events: EventLog, loop) -> None:
    while True:
        await asyncio.sleep(FLUSH_PERIOD_S)
        try:
            await loop.run_in_executor(None, events.flush)
        except Exception as exc:
            log.error("event store sync failed", extra={"error": repr(exc)})

