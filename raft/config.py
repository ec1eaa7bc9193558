"""A node's configuration, with its defaults: `minoots node run`'s flags read them from here.

Kept free of PySyncObj and the node's machinery so the CLI can show the defaults
without loading either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .net import split_address
from .store import DEFAULT_MAP_SIZE, DEFAULT_SYNC

DEFAULT_CLUSTER = "minoots"
SNAPSHOT_KEEP = 3
# Ticks are tiny entries: snapshotting a big state every 50k of them cost more than the log it dropped.
COMPACTION_ENTRIES = 250_000
COMPACTION_SECONDS = 300.0


def _seconds(default: float, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class RaftTiming:
    """PySyncObj timers (seconds), tuned for failover under 2 s on a 2-core machine (see chaos/failover.py).

    Each field is also a `minoots node run` flag (raft_min_timeout: --raft-min-timeout), helped by its metadata.
    """

    raft_min_timeout: float = _seconds(0.5, "Election timeout, lower bound: a follower that hears no leader "
                                            "for a random time in [min, max] starts an election.")
    raft_max_timeout: float = _seconds(1.0, "Election timeout, upper bound.")
    append_entries_period: float = _seconds(0.05, "Leader heartbeat period (below --raft-min-timeout).")
    connection_timeout: float = _seconds(1.5, "A peer connection silent this long is dropped.")
    connection_retry_time: float = _seconds(0.25, "Reconnect to a lost peer this often.")
    leader_fallback_timeout: float = _seconds(2.0, "A leader that sees no quorum this long steps down.")

    def validate(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be above 0, got {value}")
        if self.raft_min_timeout > self.raft_max_timeout:
            raise ValueError("--raft-min-timeout must not exceed --raft-max-timeout")
        if self.append_entries_period >= self.raft_min_timeout:
            raise ValueError("--append-entries-period must be below --raft-min-timeout "
                             "(followers would start elections between heartbeats)")


@dataclass
class NodeConfig:
    node_id: str
    raft: str
    data_dir: Path
    peers: dict[str, str] = field(default_factory=dict)   # node id -> raft address
    cluster: str = DEFAULT_CLUSTER
    init: bool = False
    sync: str = DEFAULT_SYNC
    map_size: int = DEFAULT_MAP_SIZE
    snapshot_keep: int = SNAPSHOT_KEEP
    compaction_entries: int = COMPACTION_ENTRIES
    compaction_seconds: float = COMPACTION_SECONDS
    clock_offset_ms: int = 0
    # Listen for Raft here instead of on `raft`, which stays the address peers know this
    # node by (the chaos drills' partition proxy sits on `raft` and forwards to this).
    raft_bind: str | None = None
    timing: RaftTiming = field(default_factory=RaftTiming)
    metrics: str | None = None      # HOST:PORT serving Prometheus /metrics (off when None)
    # Peer authentication (raft/peer_secret.py): the secret file every member holds. None
    # means <data-dir>/cluster.secret (written at --init for a node without peers).
    cluster_secret_file: Path | None = None
    insecure_peers: bool = False    # run the Raft port unauthenticated (tests of the guard only)

    def validate(self) -> None:
        if self.metrics:
            split_address(self.metrics)
            if self.metrics in (self.raft, self.raft_bind):
                raise ValueError(f"--metrics {self.metrics} is also this node's Raft address")
        split_address(self.raft)
        if self.raft_bind:
            split_address(self.raft_bind)
        for pid, addr in self.peers.items():
            split_address(addr)
            if pid == self.node_id:
                raise ValueError(f"--peer {pid}={addr} names this node itself")
            if addr == self.raft:
                raise ValueError(f"peer {pid} has this node's own Raft address {addr}")
        if len(set(self.peers.values())) != len(self.peers):
            raise ValueError("two peers share one Raft address")
        self.timing.validate()
