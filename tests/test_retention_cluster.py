"""Retention on a real 3-node cluster: ended timers leave every node after their
tenant's retention (GetTimer NOT_FOUND, events kept), DeleteTimer, and set-retention
through auth (admin only; a tenant token reads its own retention only)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cluster


def _client(cluster, **kw):
    import minoots
    from support import cluster_grpc

    return minoots.Client(cluster_grpc(cluster), timeout=60, **kw)


def _gone_everywhere(cluster, tenant, timer_id) -> bool:
    import minoots

    for n in cluster.nodes.values():
        with minoots.Client([n.grpc], timeout=60) as c:
            try:
                c.get(timer_id, tenant=tenant)
                return False
            except minoots.NotFound:
                pass
    return True


def test_ended_timers_are_purged_after_a_short_retention_and_deleted_on_request(real_cluster):
    import minoots
    from minoots.api.types import EventKind, TimerState
    from support import wait_for

    with _client(real_cluster) as admin:
        r = admin.set_retention("ret-a", 1_500)
        assert (r.tenant, r.retention_ms, r.inherited) == ("ret-a", 1_500, False)
        assert admin.get_retention("ret-other").retention_ms == 24 * 3600 * 1000
        t = admin.create(delay=0.2, id="short", tenant="ret-a", idempotency_key="key-1")
        wait_for(lambda: admin.get("short", tenant="ret-a").state == TimerState.SETTLED, "the timer to settle")
        wait_for(lambda: _gone_everywhere(real_cluster, "ret-a", "short"), "every node to purge it")
        with pytest.raises(minoots.NotFound):
            admin.get("short", tenant="ret-a")
        events = []
        w = admin.watch(from_sequence=1, tenant="ret-a")
        try:
            for e in w:
                events.append((e.kind, e.timer_id))
                if e.kind == EventKind.PURGED:
                    break
        finally:
            w.close()
        assert events == [(EventKind.CREATED, "short"), (EventKind.ARMED, "short"), (EventKind.FIRED, "short"),
                          (EventKind.SETTLED, "short"), (EventKind.PURGED, "short")]
        # The key went with it: the same create makes a new timer.
        again = admin.create(delay=3600, id="short", tenant="ret-a", idempotency_key="key-1")
        assert again.created is True and again.created_at_ms > t.created_at_ms
        # DeleteTimer: a live timer is refused, an ended one goes at once (default retention: 24 h).
        admin.create(delay=3600, id="keep", tenant="ret-b")
        with pytest.raises(minoots.FailedPrecondition, match="cancel it first"):
            admin.delete("keep", tenant="ret-b")
        admin.cancel("keep", tenant="ret-b")
        assert admin.get("keep", tenant="ret-b").state == TimerState.CANCELLED
        gone = admin.delete("keep", tenant="ret-b")
        assert gone.state == TimerState.CANCELLED and gone.id == "keep"
        wait_for(lambda: _gone_everywhere(real_cluster, "ret-b", "keep"), "every node to drop the deleted timer")
        with pytest.raises(minoots.NotFound):
            admin.delete("keep", tenant="ret-b")


def test_set_retention_is_admin_only_and_tenant_tokens_see_their_own(real_cluster):
    import minoots
    from support import cluster_grpc

    with _client(real_cluster) as admin:
        writer, _ = admin.create_token("ret-writer", "writer", ["ret-w"])
        admin.set_retention("ret-w", 0)
        admin.set_retention("ret-secret", 7_000)
    with minoots.Client(cluster_grpc(real_cluster), timeout=60, token=writer, tenant="ret-w") as w:
        with pytest.raises(minoots.PermissionDenied):
            w.set_retention("ret-w", 5_000)
        with pytest.raises(minoots.PermissionDenied):
            w.get_retention("ret-secret")
        assert w.get_retention().retention_ms == 0
        # Retention 0: the timer is gone in the tick that settles it; its own tenant only.
        w.create(delay=0.1, id="zero")
        from support import wait_for
        wait_for(lambda: _gone_everywhere(real_cluster, "ret-w", "zero"), "the timer to go at once")
        with pytest.raises(minoots.PermissionDenied):
            w.delete("zero", tenant="ret-secret")
    with _client(real_cluster) as admin:
        with pytest.raises(minoots.InvalidArgument):
            admin.set_retention("ret-w", 11 * 366 * 24 * 3600 * 1000)
        assert admin.get_retention("ret-w").retention_ms == 0
        with pytest.raises(minoots.NotFound):
            admin.set_retention("never-set", clear=True)
        assert admin.set_retention("ret-w", clear=True).inherited


def test_cli_set_and_get_retention_and_timer_delete(real_cluster):
    from support import cluster_grpc

    env = dict(os.environ, MINOOTS_NODES=",".join(cluster_grpc(real_cluster)))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "minoots", *args], capture_output=True, text=True,
                              timeout=120, env=env)

    r = run("tenant", "set-retention", "cli-r", "90m")
    assert r.returncode == 0, r.stderr
    assert "kept 90m" in r.stdout
    r = run("tenant", "get-retention", "cli-r", "--json")
    assert json.loads(r.stdout) == {"tenant": "cli-r", "retention_ms": 90 * 60_000, "inherited": False}
    r = run("tenant", "set-retention", "cli-r")
    assert r.returncode == 2 and "DURATION or --clear" in r.stderr
    r = run("tenant", "set-retention", "cli-r", "forever")
    assert r.returncode == 2 and "duration" in r.stderr
    r = run("timer", "create", "--in", "1h", "--tenant", "cli-r", "--json")
    assert r.returncode == 0, r.stderr
    tid = json.loads(r.stdout)["id"]
    r = run("timer", "delete", tid, "--tenant", "cli-r")
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr and "Traceback" not in r.stderr
    assert run("timer", "cancel", tid, "--tenant", "cli-r").returncode == 0
    r = run("timer", "delete", tid, "--tenant", "cli-r", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "cancelled"
    r = run("timer", "get", tid, "--tenant", "cli-r")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr
    r = run("tenant", "set-retention", "cli-r", "--clear")
    assert r.returncode == 0 and "inherited" in r.stdout
