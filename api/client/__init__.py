"""The MINOOTS Python SDK: `Client` (blocking) and `AsyncClient` (asyncio, `minoots.api.aio`).

    import minoots
    with minoots.Client(["127.0.0.1:7201", "127.0.0.1:7202", "127.0.0.1:7203"]) as c:
        t = c.create(delay=30, name="reminder", labels={"team": "ops"})
        for event in c.watch(from_sequence=1):
            print(event.sequence, event.kind.name, event.timer_id)

How calls find a node
---------------------
The client is given a few seed addresses (gRPC HOST:PORT of any members). On
first use it asks one of them for `Cluster.Status`, which names every member's
gRPC address and the leader's, and from then on sends every call to the leader
when it knows it (a follower would forward writes there anyway: one hop fewer,
and reads see the caller's own writes) and to any member otherwise. It asks
again after a failure and every `refresh_interval` seconds.

Retries
-------
Each call has a total deadline (`timeout`, per client or per call) and each
attempt a shorter one (`attempt_timeout`). When an attempt fails with
UNAVAILABLE (node down, connection refused or reset, no leader while an
election runs, Raft could not commit) or its attempt deadline passes, the
client forgets the leader, rotates to another member and retries after an
exponential backoff with full jitter (sleep uniform(0, min(backoff_max,
backoff_base * 2**n))), until the total deadline. A leader failover that
resolves within the deadline is therefore never seen by the caller. Every
other status is final and raised at once as a typed error (`NotFound`, ...).

Which calls are retried, and why that is safe:

* reads (`get`, `list`, `status`) and `watch`: no effects.
* `create`/`create_many`: made idempotent. A spec without an id gets one
  (`uuid4().hex`), and a spec without an idempotency key uses its id as the
  key. The cluster answers a create whose (tenant, key) it has already seen
  with the timer that key created, so a retry after an ambiguous failure
  (the first attempt committed but its answer was lost) returns the original
  timer (`created=False`), never a second one.
* `cancel`, `ack`, `reschedule(fire_at=...)`: setting an absolute state twice
  is harmless, but the second attempt of a cancel that did commit would be
  refused (the timer is no longer cancellable). So when such a call fails with
  FAILED_PRECONDITION *after* an ambiguous attempt, the client reads the timer
  and returns it if it is already in the state the call asked for (cancelled;
  settled with that fire id; fire_at equal to the one asked). That cannot tell
  the caller's cancel from a concurrent one, but the outcome is the same.
* `extend(by=...)` is NOT idempotent: applied twice it moves the deadline
  twice. It is retried only when the failure shows the request never reached
  Raft (the connection was refused; the node said there is no leader or it is
  not the leader). After an ambiguous failure it raises
  `Unavailable(ambiguous=True)`: read the timer to see whether it moved, or
  use `reschedule(fire_at=...)`, which is safe to retry.
* cluster changes (`add_node`, `remove_node`, `transfer_leadership`) go to
  the leader a fresh `Status` names, wherever the seeds point, and may use the
  whole deadline per attempt (a configuration change commits slowly). They are
  not idempotent, so after an ambiguous failure, or a refusal, the client reads
  the membership back and returns the result when the change is already in
  place (see `LeaderCall`); a refusal from a node that stopped leading is
  retried at the new leader.
* `take_snapshot`, `list_snapshots`, `export_snapshot`: answered by the leader
  when known (snapshots are per node; each result names its node), retried
  like reads. An export is checked (size, SHA-256) and retried from its start.

Layout
------
One module a job; the blocking and the asyncio client share everything but
their I/O:

* `wire`     -- protobuf messages <-> the SDK's values (`minoots.api.types`),
                and the requests built from a call's arguments
* `policy`   -- defaults, routing (`Router`), the retry decision, cluster
                changes (`LeaderCall`), the settings both clients take
* `watch`    -- a watch's exactly-once cursor, reconnection and liveness policy
* `snapshot` -- checking and writing a snapshot export
* `sync`     -- `Client` and its `Watch` (grpc, threads)
* `aio`      -- `AsyncClient` and its `AsyncWatch` (grpc.aio)
* `webhooks` -- Standard Webhooks signing and `verify_webhook` for receivers (stdlib only)
* `worker`   -- `run_worker`: a lease / handle / ack-or-nack loop over a pull queue
"""
from __future__ import annotations

from .policy import DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT, Router
from .snapshot import SnapshotReceiver
from .sync import Client, Watch
from .watch import WatchCursor
from .webhooks import WebhookVerificationError, verify_webhook
from .worker import run_worker
from .wire import duration_to_pb, spec_to_pb

__all__ = [
    "Client", "Watch", "DEFAULT_TIMEOUT", "DEFAULT_ATTEMPT_TIMEOUT", "verify_webhook", "WebhookVerificationError", "run_worker",
    # Building blocks some callers import from here (their homes are the submodules).
    "Router", "WatchCursor", "SnapshotReceiver", "duration_to_pb", "spec_to_pb",
]
