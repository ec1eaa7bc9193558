"""The grpc.aio server of one node: Timers, Cluster, grpc.health.v1 and server reflection.

`build_server` only assembles; api/process.py runs it on a uvloop loop next to
the Raft node. Health: the "" and "minoots.v1.Timers" services are SERVING while
this node leads, or follows a known leader and has applied everything that was
committed one check earlier (a node replaying its log or cut off from the leader
is NOT_SERVING, and so is a follower cut off from its leader); "minoots.v1.Cluster" is always SERVING (status answers even
without a leader).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from minoots.raft import tracing
from minoots.v1 import (audit_pb2, audit_pb2_grpc, auth_pb2, auth_pb2_grpc, cluster_pb2, cluster_pb2_grpc,
                        timers_pb2, timers_pb2_grpc)
from minoots.v1 import subscriptions_pb2, subscriptions_pb2_grpc
from minoots.v1 import tenants_pb2, tenants_pb2_grpc
from minoots.v1 import delivery_pb2, delivery_pb2_grpc

from .audit_service import AuditCalls, AuditService, DenialSampler
from .auth import AuthInterceptor, Authenticator
from .auth_service import AuthService
from .bridge import leader_reachable
from .endpoints_service import EndpointService
from .quotas import ApiLimits, WatcherCap
from .service import ClusterService, TimersService
from .subscriptions import SubscriptionsService
from .ssrf import AddressPolicy
from .tenants_service import TenantsService
from .telemetry import ServerTelemetry

log = logging.getLogger("minoots.api.server")

__all__ = ["TlsFiles", "build_server", "HealthMonitor", "MAX_RECEIVE_BYTES", "SERVICE_NAMES"]

MAX_RECEIVE_BYTES = 16 << 20    # a CreateTimers of 10,000 timers with small payloads is ~1-2 MiB
MAX_SEND_BYTES = 64 << 20

TIMERS_SERVICE = timers_pb2.DESCRIPTOR.services_by_name["Timers"].full_name
CLUSTER_SERVICE = cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name
AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["Auth"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name
TENANTS_SERVICE = tenants_pb2.DESCRIPTOR.services_by_name["Tenants"].full_name
SUBSCRIPTIONS_SERVICE = subscriptions_pb2.DESCRIPTOR.services_by_name["Subscriptions"].full_name
ENDPOINT_SERVICE = delivery_pb2.DESCRIPTOR.services_by_name["EndpointService"].full_name
SERVICE_NAMES = (TIMERS_SERVICE, CLUSTER_SERVICE, AUTH_SERVICE, AUDIT_SERVICE, TENANTS_SERVICE, SUBSCRIPTIONS_SERVICE,
                 ENDPOINT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
    # Never share a port with another process (gRPC sets SO_REUSEPORT by default on Linux,
    # so a second node on the same port would silently split the traffic).
    ("grpc.so_reuseport", 0),
    # Long-lived WatchEvents streams: find dead peers; accept client keepalive pings
    # down to every 10 s, also without calls in flight.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Optional[Path] = None     # mutual TLS: clients must present a certificate it signed

    def credentials(self) -> grpc.ServerCredentials:
        pair = [(Path(self.key).read_bytes(), Path(self.cert).read_bytes())]
        if self.client_ca is None:
            return grpc.ssl_server_credentials(pair)
        return grpc.ssl_server_credentials(pair, root_certificates=Path(self.client_ca).read_bytes(),
                                           require_client_auth=True)


def build_server(node, bridge, batcher, events, address: str, tls: Optional[TlsFiles] = None,
                 authenticator: Optional[Authenticator] = None,
                 audit=None, limits: Optional[ApiLimits] = None,
                 addresses: Optional[AddressPolicy] = None,
                 dispatcher=None) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    # Every call is counted and timed (when the node serves metrics) and gets a server span
    # (when tracing is on): api/telemetry.py. Then every call is authenticated and
    # authorized (api/auth.py), before its request is decoded.
    metrics = getattr(node, "metrics", None)
    interceptors = []
    if metrics is not None or tracing.enabled():
        interceptors.append(ServerTelemetry(metrics.registry if metrics is not None else None))
    # The audit ledger (raft/audit/, when the node keeps one) records denied calls (sampled)
    # and the security-relevant calls that passed (api/audit_service.audited_op), with their principal.
    interceptors.append(AuthInterceptor(authenticator or Authenticator(node.machine),
                                        on_denied=DenialSampler(audit) if audit is not None else None))
    if audit is not None:
        interceptors.append(AuditCalls(audit))
    # Caps (api/quotas.py): RPCs in flight (watch streams included; past it gRPC answers
    # RESOURCE_EXHAUSTED) and watch streams per principal.
    limits = limits or ApiLimits()
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors,
                             maximum_concurrent_rpcs=limits.max_concurrent_rpcs)
    timers_pb2_grpc.add_TimersServicer_to_server(
        TimersService(node, bridge, batcher, events, watchers=WatcherCap(limits.max_watchers_per_principal),
                      addresses=addresses), server)
    tenants_pb2_grpc.add_TenantsServicer_to_server(TenantsService(node, bridge), server)
    delivery_pb2_grpc.add_EndpointServiceServicer_to_server(EndpointService(node, bridge, addresses), server)
    subscriptions_pb2_grpc.add_SubscriptionsServicer_to_server(SubscriptionsService(node, bridge, events), server)
    cluster_pb2_grpc.add_ClusterServicer_to_server(ClusterService(node, bridge, events, dispatcher), server)
    auth_pb2_grpc.add_AuthServicer_to_server(AuthService(node, bridge), server)
    audit_pb2_grpc.add_AuditServicer_to_server(AuditService(node, audit), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    if tls is not None:
        server.add_secure_port(address, tls.credentials())
    else:
        server.add_insecure_port(address)
    return server, health_servicer


class HealthMonitor:
    """Recomputes the serving status every `period` seconds."""

    SERVING = health_pb2.HealthCheckResponse.SERVING
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

    def __init__(self, machine, servicer: health.aio.HealthServicer, period: float = 0.5) -> None:
        self._machine = machine
        self._servicer = servicer
        self.period = period
        self._prev_commit: Optional[int] = None
        self.status = None

    def serving(self) -> bool:
        m = self._machine
        commit = m.raftCommitIndex
        applied = m.raftLastApplied
        prev, self._prev_commit = self._prev_commit, commit
        if m.is_leader():
            return True
        if not leader_reachable(m):
            return False
        # Caught up: applied all that was committed (now, or one check ago: under load the
        # commit index runs a little ahead of the apply between two ticks).
        return applied >= commit or (prev is not None and applied >= prev)

    async def update(self) -> None:
        status = self.SERVING if self.serving() else self.NOT_SERVING
        if status != self.status:
            if self.status is None:
                await self._servicer.set(CLUSTER_SERVICE, self.SERVING)
            self.status = status
            await self._servicer.set("", status)
            await self._servicer.set(TIMERS_SERVICE, status)
            log.info("health changed", extra={"serving": status == self.SERVING})

    async def run(self) -> None:
        while True:
            try:
                await self.update()
            except Exception:
                log.exception("health update failed")
            await asyncio.sleep(self.period)
