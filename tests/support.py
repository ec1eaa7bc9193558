"""Plain helpers shared by the test modules (no fixtures: those are in conftest.py).

Test modules import this as `support` (`from support import wait_for`): pytest puts the
tests/ folder on sys.path for its conftest.py and for test modules outside a package.
The fake gRPC nodes of the SDK/CLI tests are in fake_grpc.py.
"""
from __future__ import annotations

import asyncio
import shutil
import time

from minoots.kernel import Event, EventKind, State, TimerSpec, TimerState

# ---------------------------------------------------------------- waiting and addresses


def require_tool(name: str, package: str) -> None:
    """Fail with a hint, never skip, when a command the test needs is missing (the test
    session installs it first with ops/test-prereqs.sh when it can)."""
    if shutil.which(name) is None:
        import pytest
        pytest.fail(f"`{name}` is not installed: this test needs Debian's {package}; run "
                    "`bash ops/test-prereqs.sh` (as root or with passwordless sudo)", pytrace=False)


def wait_for(pred, what: str = "condition", timeout: float = 60.0, interval: float = 0.05, retry_on=()):
    """Poll pred() until it returns something truthy, and return that.

    An exception of a type in `retry_on` counts as "not yet" (e.g. a node not answering
    while it starts). The timeout is a bound against hanging on a loaded machine, not a
    timing assertion: past it, an AssertionError names `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except retry_on as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def collect_watch(watch, out: list, stop, errors: list) -> None:
    """Thread body: append `watch`'s events to `out` until `stop` (a threading.Event) is
    set at the next event; an exception it raises goes to `errors` (the test reports it)."""
    try:
        for ev in watch:
            out.append(ev)
            if stop.is_set():
                return
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def free_addresses(n: int, host: str = "127.0.0.1") -> list[str]:
    """n distinct HOST:PORT addresses nothing listens on right now (to bind, or as dead seeds)."""
    from minoots.raft.testing import free_ports

    return [f"{host}:{port}" for port in free_ports(n, host)]


# ---------------------------------------------------------------- real clusters


def cluster_grpc(cluster, nids=None) -> list[str]:
    """The gRPC addresses of a LocalCluster's nodes (all of them, or those in `nids`)."""
    return [cluster.nodes[n].grpc for n in (nids or cluster.nodes)]


def start_cluster(root, prepare=None, size: int = 3, **options):
    """Start a LocalCluster under `root` and wait until it has a leader and every member's
    gRPC address is announced (through Raft, shortly after start). `prepare(cluster)` runs
    before the start (e.g. to put proxies between the nodes); `options` go to LocalCluster
    (e.g. http=True, node_args=(...)). The caller stops it."""
    import minoots
    from minoots.raft.testing import LocalCluster

    c = LocalCluster(root, size=size, **options)
    if prepare is not None:
        prepare(c)
    c.start()
    try:
        c.leader(timeout=60)
        with minoots.Client(cluster_grpc(c), timeout=60) as client:
            wait_for(lambda: (s := client.status()).leader and all(m.grpc_address for m in s.members),
                     "every member's gRPC address")
    except BaseException:
        c.stop()
        raise
    return c


# ---------------------------------------------------------------- kernel states

T0 = 1_700_000_000_000      # a "now" in ms for kernel-level tests


def busy_state() -> State:
    """A state that exercises every field and state: tenants, extras, idempotency keys,
    fired (awaiting an ack), settled and cancelled timers."""
    s = State()
    s.create(T0, [
        TimerSpec("a", T0 + 10),
        TimerSpec("b", T0 + 10, ack_required=True, name="bee ☃", payload=b"\x00\xff" * 10,
                  labels={"example.com/team": "core", "env": "prod"}, action=b"http", idempotency_key="kb"),
        TimerSpec("a", T0 + 20, tenant="acme", idempotency_key="ka"),
        TimerSpec("c", T0 + 30, tenant="acme", ack_required=True),
        TimerSpec("d", T0 + 5_000, labels={"x": ""}),
        TimerSpec("e", T0 + 6_000),
    ])
    s.tick(T0 + 25)                      # a settles, b fires (awaits ack), acme/a settles
    s.cancel(T0 + 26, [("acme", "c")])
    s.reschedule(T0 + 27, "default", "d", extend_by=-1_000)
    s.tick(T0 + 28)
    return s


# ---------------------------------------------------------------- the API's event store


def ev(seq: int, timer: str = "t", kind: EventKind = EventKind.CREATED, tenant: str = "default",
       at: int = 1000) -> Event:
    return Event(seq, kind, tenant, timer, at, seq, TimerState.SCHEDULED, 5000, None)


def evs(first: int, last: int, **kw) -> tuple:
    """Events first..last (inclusive), of timers t<seq>."""
    return tuple(ev(s, f"t{s}", **kw) for s in range(first, last + 1))


class FakeMachine:
    """Stands in for the replicated state machine an EventLog attaches to: the test emits
    event batches and snapshot loads the way the tick thread does. `pin` plays the lowest
    durable-subscription cursor (raft/subscriptions.py)."""

    def __init__(self):
        self.event_listeners = []
        self.snapshot_listeners = []
        self.pin = None

    def subscription_pin(self):
        return self.pin

    def emit(self, events):
        for fn in self.event_listeners:
            fn(events)

    def load_snapshot(self, seq):
        for fn in self.snapshot_listeners:
            fn(seq)


class NotifyingBridge:
    """The part of the API bridge a watch uses: wait_events() returns once notify() was
    called (or after the timeout). Create it inside the running event loop."""

    def __init__(self):
        self.waiter = asyncio.get_running_loop().create_future()

    async def wait_events(self, timeout):
        await asyncio.wait((self.waiter,), timeout=timeout)

    def notify(self):
        w, self.waiter = self.waiter, asyncio.get_running_loop().create_future()
        w.set_result(None)


class ProposalBridge:
    """The part of the API bridge the create batcher uses: records each proposal with its
    future; the test decides when (and whether) each one lands. `fail_with`: propose raises."""

    def __init__(self, fail_with: Exception | None = None):
        self.proposed: list[tuple] = []       # (command, future)
        self.fail_with = fail_with

    def propose(self, command, trace_parent=None, trace_links=None):
        if self.fail_with is not None:
            raise self.fail_with
        fut = asyncio.get_running_loop().create_future()
        self.proposed.append((command, fut))
        return fut


def read_framed(path) -> list[bytes]:
    """The records of a golden file: each a little-endian u32 length, then that many bytes."""
    import struct
    from pathlib import Path
    d = Path(path).read_bytes()
    out, o = [], 0
    while o < len(d):
        (n,) = struct.unpack_from("<I", d, o)
        out.append(d[o + 4:o + 4 + n])
        o += 4 + n
    return out
