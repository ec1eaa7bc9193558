"""The etcd peer of ``bench.load``: a timer is a lease with a TTL and a key attached to it.

Three ``etcd`` members (Debian's ``etcd-server``, from PATH) are started on
free loopback ports in a temporary directory (``--initial-cluster``, fsync on:
etcd's default, comparable to MINOOTS ``--sync durable``). Raft-replicated,
like MINOOTS.

The client is etcd's own v3 JSON API (the gRPC gateway every member serves on
its client port: ``/v3/lease/grant``, ``/v3/kv/put``, ``/v3/watch``) through
``http.client`` from the standard library: no extra package. (The ``etcd3``
PyPI client is unmaintained and its generated code does not load with current
protobuf.) All requests go to the leader.

Per timer, from ``clients`` threads: grant a lease with
``TTL = max(MIN_TTL_S, ceil(seconds until the timer's deadline))`` (TTLs are
whole seconds and etcd raises anything below ~1.5 s to its minimum), then
``PUT t/<id>`` with that lease. The deadline etcd promises is
``grant time + TTL`` (grant time = when the grant request was sent, so the
lateness is an upper bound, by at most one grant round trip). One watcher on
the prefix ``t/`` (``NOPUT`` filter, started before the load) records each
DELETE with its receive time: lateness = receive time - deadline.

The leader looks for expired leases every 500 ms and revokes at most ~1,000
leases a second (etcd's ``leaseRevokeRate``): a window denser than that fires
late by construction. That is etcd's behaviour, not the harness's.
"""
from __future__ import annotations

import base64
import http.client
import json
import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Optional

from minoots.raft.clock import now_ms

MEMBERS = 3
PREFIX = "t/"
MIN_TTL_S = 2          # etcd's minimum lease TTL is 1.5 x election timeout (1 s by default), rounded up
DEFAULT_MAX_TIMERS = 20_000


def _b64(s) -> str:
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def default_timers(timers: int) -> int:
    """The etcd run's timer count when ``--etcd-timers`` is not given."""
    return min(timers, DEFAULT_MAX_TIMERS)


def ttl_for(deadline_ms: int, now_ms: int) -> int:
    """Whole-second lease TTL for a timer due at ``deadline_ms``, granted at ``now_ms``."""
    return max(MIN_TTL_S, math.ceil((deadline_ms - now_ms) / 1000.0))


def default_lead(n: int) -> float:
    """Seconds from the load's start to the first deadline: assumes >= 400 timers/s (two round trips each)."""
    return 10.0 + n / 400.0


class Api:
    """One keep-alive HTTP connection to a member's v3 JSON gateway."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode()
        for attempt in (0, 1):
            try:
                self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt:
                    raise
        out = json.loads(raw or b"{}")
        if resp.status != 200 or "error" in out:
            raise RuntimeError(f"etcd {path}: HTTP {resp.status} {out}")
        return out

    def close(self) -> None:
        self.conn.close()


def _health(port: int) -> bool:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/health")
        r = c.getresponse()
        ok = r.status == 200 and json.loads(r.read()).get("health") in ("true", True)
        c.close()
        return ok
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _leader_port(cports: list[int]) -> int:
    """The client port of the current leader (from /v3/maintenance/status of each member)."""
    ids = {}
    leader = None
    for p in cports:
        a = Api(p, timeout=5)
        try:
            st = a.post("/v3/maintenance/status", {})
        finally:
            a.close()
        ids[str(st["header"]["member_id"])] = p
        leader = str(st.get("leader", leader))
    return ids.get(leader, cports[0])


class Watcher(threading.Thread):
    """Streams DELETE events under PREFIX from /v3/watch; records (key, received_ms)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True, name="etcd-watch")
        self.port = port
        self.deleted: list[tuple[str, int]] = []
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self.conn: Optional[http.client.HTTPConnection] = None
        self._halt = False

    def run(self) -> None:
        try:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=None)
            body = {"create_request": {"key": _b64(PREFIX), "range_end": _b64(PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)),
                                       "filters": ["NOPUT"]}}
            self.conn.request("POST", "/v3/watch", body=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            if resp.status != 200:
                raise RuntimeError(f"etcd /v3/watch: HTTP {resp.status}")
            dec = json.JSONDecoder()
            buf = ""
            while not self._halt:
                chunk = resp.read1(1 << 16)
                if not chunk:
                    break
                at = now_ms()
                buf += chunk.decode()
                while True:
                    s = buf.lstrip()
                    if not s:
                        buf = ""
                        break
                    try:
                        msg, end = dec.raw_decode(s)
                    except ValueError:
                        buf = s
                        break
                    buf = s[end:]
                    res = msg.get("result") or {}
                    if "error" in msg:
                        raise RuntimeError(f"etcd watch: {msg['error']}")
                    if res.get("created"):
                        self.ready.set()
                    for ev in res.get("events") or ():
                        if ev.get("type") == "DELETE":
                            self.deleted.append((base64.b64decode(ev["kv"]["key"]).decode(), at))
        except BaseException as exc:  # noqa: BLE001 - reported, not raised in a thread
            if not self._halt:
                self.error = exc
        finally:
            self.ready.set()

    def stop(self) -> None:
        self._halt = True
        if self.conn is not None:
            try:
                if self.conn.sock is not None:
                    import socket
                    self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.conn.close()
        self.join(5)


def _start_members(exe: str, tmp: Path, say) -> tuple[list[subprocess.Popen], list[int]]:
    from minoots.raft.testing import free_ports
    ports = free_ports(2 * MEMBERS)
    cports, pports = ports[:MEMBERS], ports[MEMBERS:]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{pports[i]}" for i in range(MEMBERS))
    procs = []
    for i in range(MEMBERS):
        d = tmp / f"m{i}"
        d.mkdir()
        procs.append(subprocess.Popen(
            [exe, "--name", f"m{i}", "--data-dir", str(d / "data"),
             "--listen-client-urls", f"http://127.0.0.1:{cports[i]}",
             "--advertise-client-urls", f"http://127.0.0.1:{cports[i]}",
             "--listen-peer-urls", f"http://127.0.0.1:{pports[i]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pports[i]}",
             "--initial-cluster", cluster, "--initial-cluster-token", "minoots-bench",
             "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"],
            stdout=open(d / "etcd.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    return procs, cports


def _stop_members(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(n: int, window: float, clients: int, payload: int, lead: Optional[float], progress: bool, say,
        install: bool = True) -> dict:
    from minoots.bench.debian import find_or_install
    from minoots.bench.load import dist, vmrss
    exe, why = find_or_install("etcd", "etcd-server", install, say)
    if exe is None:
        return {"skipped": why}
    tmp = Path(tempfile.mkdtemp(prefix="minoots-etcd-"))
    procs: list[subprocess.Popen] = []
    watcher = None
    try:
        procs, cports = _start_members(exe, tmp, say)
        t_end = time.monotonic() + 30
        while not all(_health(p) for p in cports):
            if time.monotonic() > t_end or any(p.poll() is not None for p in procs):
                return {"skipped": "etcd members did not become healthy within 30 s"}
            time.sleep(0.1)
        version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        lport = _leader_port(cports)
        say(f"etcd peer: {version}, {MEMBERS} members (pids {', '.join(str(p.pid) for p in procs)}), "
            f"leader on 127.0.0.1:{lport}")
        time.sleep(1.0)
        rss0 = [vmrss(p.pid) for p in procs]

        watcher = Watcher(lport)
        watcher.start()
        if not watcher.ready.wait(10) or watcher.error:
            return {"skipped": f"etcd watch did not start: {watcher.error!r}"}

        lead_s = max(lead or 0.0, default_lead(n))
        start_ms = now_ms()
        first_ms = start_ms + int(lead_s * 1000)
        win_ms = int(window * 1000)
        target = [first_ms + int(((j * 0.6180339887498949) % 1.0) * win_ms) for j in range(n)]
        value = _b64(b"x" * payload)
        deadline: dict[str, int] = {}      # key -> grant time + TTL (ms): what etcd promises
        clamped = [0]
        errors: list[str] = []
        grant_rtt: list[float] = []
        lock = threading.Lock()
        nxt = [0]

        say(f"etcd peer: loading {n:,} timers (lease + put each) from {clients} threads, "
            f"first deadline {lead_s:.0f}s after the load began, window {window:g}s")

        def loader() -> None:
            api = Api(lport)
            try:
                while True:
                    with lock:
                        j = nxt[0]
                        nxt[0] += 1
                    if j >= n:
                        return
                    key = f"{PREFIX}L{j}"
                    t_send = now_ms()
                    ttl = ttl_for(target[j], t_send)
                    try:
                        g = api.post("/v3/lease/grant", {"TTL": ttl})
                        t_g = now_ms()
                        api.post("/v3/kv/put", {"key": _b64(key), "value": value, "lease": g["ID"]})
                    except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}"[:200])
                        continue
                    with lock:
                        deadline[key] = t_send + ttl * 1000
                        grant_rtt.append(t_g - t_send)
                        if math.ceil((target[j] - t_send) / 1000.0) < MIN_TTL_S:
                            clamped[0] += 1       # raised to the minimum TTL: it was due (almost) already
            finally:
                api.close()

        t0 = time.monotonic()
        ts = [threading.Thread(target=loader, daemon=True) for _ in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(max(300.0, lead_s * 3))
        load_s = time.monotonic() - t0
        load_end_ms = now_ms()
        created = len(deadline)
        time.sleep(1.0)
        rss1 = [vmrss(p.pid) for p in procs]
        early_deletes = len(watcher.deleted)

        last_ms = max(deadline.values(), default=now_ms())
        say(f"etcd peer: {created:,} created in {load_s:.1f}s ({created / load_s:,.0f}/s); "
            f"firing, last due in {max(0, last_ms - now_ms()) / 1e3:.0f}s")
        fire_end = time.monotonic() + max(0, (last_ms - now_ms()) / 1e3) + 30
        while time.monotonic() < fire_end and len(watcher.deleted) < created and watcher.error is None:
            time.sleep(0.2)
        time.sleep(0.5)
        watcher.stop()

        counts = Counter(k for k, _ in watcher.deleted)
        want = set(deadline)
        lost = len(want - counts.keys())
        dup = sum(1 for c in counts.values() if c > 1)
        unknown = len(counts.keys() - want)
        late = [at - deadline[k] for k, at in watcher.deleted if k in deadline]
        early = sum(1 for v in late if v < 0)
        d = dist(late)
        per = [((b1 - b0) / created) if b0 and b1 and created else None for b0, b1 in zip(rss0, rss1)]
        per_ok = [v for v in per if v is not None]
        bpt = sum(per_ok) / len(per_ok) if per_ok else None
        ok = not lost and not dup and not unknown and not errors and created == n
        return {
            "replicated": f"yes (Raft x{MEMBERS})",
            "version": version,
            "timers": n,
            "lead_s": lead_s,
            "load": {"timers": created, "seconds": load_s, "timers_per_s": created / load_s if load_s else None,
                     "errors": len(errors), "first_errors": errors[:5], "grant_rtt_ms": dist(grant_rtt),
                     "load_end_after_first_deadline_s": (load_end_ms - first_ms) / 1e3,
                     "ttl_raised_to_minimum": clamped[0], "deleted_during_load": early_deletes},
            "rss": {f"m{i}": {"pid": procs[i].pid, "before": rss0[i], "full": rss1[i], "bytes_per_timer": per[i]}
                    for i in range(MEMBERS)},
            "lateness_ms": d,
            "correctness": {"ok": ok, "expected": len(want), "lost": lost, "duplicated": dup,
                            "unknown": unknown, "fired_early": early},
            "watcher_error": repr(watcher.error) if watcher.error else None,
            "summary": {"create": created / load_s if load_s else None, "p50": d["p50"], "p95": d["p95"],
                        "p99": d["p99"], "max": d["max"], "bpt": bpt},
            "note": (f"{n:,} timers; one lease grant + one put per timer (no batching: compare with MINOOTS "
                     f"single creates), {clients} threads, v3 JSON gateway to the leader; TTL whole seconds "
                     f"(min {MIN_TTL_S}s); lateness = watch DELETE received - (grant sent + TTL); "
                     f"B/timer = mean VmRSS growth of the {MEMBERS} members"),
            "_samples": late,          # for the plots; not written to results.json
        }
    finally:
        try:
            if watcher is not None and watcher.is_alive():
                watcher.stop()
        finally:
            _stop_members(procs)
            shutil.rmtree(tmp, ignore_errors=True)
