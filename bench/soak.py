"""Soak: a steady create -> fire -> settle -> purge workload on a local cluster, to show
that memory and snapshots stay flat when ended timers leave after their retention.

Run it as ``minoots bench soak --rate 1000/s --minutes 10`` (``--help`` lists the options).

A ``--nodes`` cluster (LocalCluster in a temp dir) gets the default retention
``--retention`` (``SetRetention("*")``); one loader thread creates ``--rate`` timers
a second, in ``--batches`` ``create_many`` calls a second, each due ``--delay``
after its create and settling when it fires (no ack), so it is purged ``--retention``
after firing. Timers held should settle near rate x (delay + retention).

Every ``--sample-every`` seconds (60: "per minute") the harness records each node's
VmRSS (and RssAnon, its heap), takes a snapshot through the leader (its size and
timers) and reads the timers the leader holds (Cluster.Status). The verdict: every
node's VmRSS at the last sample within ``RSS_TOLERANCE`` of its VmRSS at minute 3
(the first sample when the run is shorter than 4 minutes), and timers held never
above ``HELD_FACTOR`` x rate x (delay + retention + one sample period).

VmRSS counts the pages of every LMDB map a node touched: besides the timer state,
the event history, the audit ledger and the Raft log, each bounded by its own
retention (by default 4 GiB of events, 1M audit facts, a log compacted every
250,000 entries or 300 s). At 1000 timers/s (~5 events, each an audit fact) the
defaults reach those bounds only after several minutes, so RSS rises until then
whatever the timer state does. The nodes therefore run with ``--events-budget``
(default 16MiB), ``--audit-keep`` (default 20,000) and ``--compaction-seconds``
(default 60) so that those stores are at their bounds before minute 3 and the
verdict is about the timer state; the table also shows each node's heap (RssAnon).
The cluster, the loader and the sampler share one machine.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from minoots.api.client import Client
from minoots.raft.testing import LocalCluster, harness_token

from .load import vmrss

__all__ = ["run", "parse_rate", "format_table", "SoakError", "RSS_TOLERANCE", "HELD_FACTOR"]

RSS_TOLERANCE = 0.10       # last sample's VmRSS within 10 % of minute 3's
HELD_FACTOR = 2.0          # timers held at most twice the steady-state estimate
REFERENCE_S = 180          # "minute 3"
MAX_RATE = 100_000


class SoakError(Exception):
    """Bad parameters or a cluster that could not be started."""


def parse_rate(text) -> int:
    """'1000/s', '1000', '60000/m' -> timers per second (an int >= 1)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:/\s*([sm]))?\s*", str(text))
    if m is None:
        raise SoakError(f"expected a rate like 1000/s or 60000/m, got {text!r}")
    n = int(m.group(1))
    rate = n // 60 if m.group(2) == "m" else n
    if not 1 <= rate <= MAX_RATE:
        raise SoakError(f"rate must be 1..{MAX_RATE} timers per second, got {text!r}")
    return rate


class _Loader(threading.Thread):
    """Creates `rate` timers a second in `batches` create_many calls, each due `delay_ms`
    after its create, paced by the monotonic clock (a late batch is sent at once, never
    skipped, so the count created is rate x elapsed)."""

    def __init__(self, addrs: list[str], rate: int, batches: int, delay_ms: int, tenant: str) -> None:
        super().__init__(daemon=True, name="soak-loader")
        self.client = Client(addrs, tenant=tenant, timeout=60)
        self.rate, self.batches, self.delay_ms = rate, batches, delay_ms
        self.created = 0
        self.errors: list[str] = []
        self.behind_s = 0.0                    # worst lag behind the schedule
        self._halt = threading.Event()

    def run(self) -> None:
        period = 1.0 / self.batches
        per = [self.rate // self.batches + (1 if i < self.rate % self.batches else 0) for i in range(self.batches)]
        start = time.monotonic()
        k = 0
        while not self._halt.is_set():
            due = start + k * period
            wait = due - time.monotonic()
            if wait > 0:
                if self._halt.wait(wait):
                    break
            else:
                self.behind_s = max(self.behind_s, -wait)
            n = per[k % self.batches]
            k += 1
            if not n:
                continue
            try:
                self.client.create_many([{"delay": self.delay_ms / 1000} for _ in range(n)])
                self.created += n
            except Exception as exc:       # recorded and reported: the verdict names it
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                if len(self.errors) > 100:
                    break

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=120)
        self.client.close()


def run(rate: int = 1000, minutes: float = 10.0, sample_every: float = 60.0, retention_s: float = 10.0,
        delay_s: float = 1.0, nodes: int = 3, batches: int = 10, events_budget: str = "16MiB",
        out: Optional[str] = None, say=None, audit_keep: int = 20_000, compaction_s: float = 60.0) -> dict:
    """Run the soak; returns the report (rows, verdict, params) and writes results.json and
    soak.png (matplotlib) into `out` (default: a new temp dir)."""
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    if not 0 < minutes <= 24 * 60 or not 1 <= sample_every <= minutes * 60:
        raise SoakError("need 0 < --minutes <= 1440 and 1 <= --sample-every <= the run's length in seconds")
    if not 0 <= retention_s <= 3600 or not 0 <= delay_s <= 3600 or not 1 <= batches <= min(rate, 100):
        raise SoakError("need 0 <= --retention, --delay <= 1h and 1 <= --batches <= min(rate, 100)")
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="minoots-soak-out-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="minoots-soak-"))
    harness_token()
    cluster = LocalCluster(tmp / "cluster", size=nodes,
                           node_args=("--events-budget", events_budget, "--audit-keep", str(audit_keep),
                                      "--compaction-seconds", f"{compaction_s:g}"))
    expected_held = rate * (delay_s + retention_s)
    report: dict = {"params": {"rate": rate, "minutes": minutes, "sample_every_s": sample_every,
                               "retention_s": retention_s, "delay_s": delay_s, "nodes": nodes,
                               "batches_per_s": batches, "events_budget": events_budget, "audit_keep": audit_keep,
                               "compaction_s": compaction_s,
                               "cpus": os.cpu_count(), "python": sys.version.split()[0]},
                    "rows": [], "out": str(out_dir)}
    loader = None
    try:
        say(f"starting a {nodes}-node cluster in {tmp}")
        cluster.start()
        cluster.leader(timeout=60)
        addrs = [n.grpc for n in cluster.nodes.values()]
        with Client(addrs, timeout=60) as admin:
            admin.set_retention("*", int(retention_s * 1000))
            loader = _Loader(addrs, rate, batches, int(delay_s * 1000), "soak")
            t0 = time.monotonic()
            loader.start()
            samples = max(1, int(minutes * 60 // sample_every))
            for k in range(1, samples + 1):
                wait = t0 + k * sample_every - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                row = _sample(cluster, admin, time.monotonic() - t0, loader)
                report["rows"].append(row)
                say(_row_line(row, list(cluster.nodes)))
            loader.stop()
        report["created"] = loader.created
        report["loader_errors"] = loader.errors[:10]
        report["loader_behind_max_s"] = round(loader.behind_s, 3)
    finally:
        if loader is not None and loader.is_alive():
            loader.stop()
        cluster.stop()
    report["verdict"] = verdict(report["rows"], list(cluster.nodes), expected_held, rate * sample_every,
                                report.get("loader_errors"))
    with open(out_dir / "results.json", "w") as f:
        json.dump(report, f, indent=2)
    report["plot"] = plot(report, out_dir / "soak.png", say)
    return report


def _sample(cluster: LocalCluster, admin: Client, t: float, loader: _Loader) -> dict:
    row: dict = {"t_s": round(t, 1), "minute": round(t / 60, 2), "created": loader.created, "rss": {}, "heap": {}}
    for nid, n in cluster.nodes.items():
        pid = n.pid if n.alive() else None
        row["rss"][nid] = vmrss(pid)
        row["heap"][nid] = vmrss(pid, "RssAnon")
    try:
        snap = admin.take_snapshot()
        row["snapshot_bytes"], row["snapshot_timers"] = snap.size, snap.timers
    except Exception as exc:
        row["snapshot_bytes"] = row["snapshot_timers"] = None
        row["snapshot_error"] = f"{type(exc).__name__}: {exc}"[:200]
    try:
        row["held"] = sum(admin.status().timers.values())
    except Exception as exc:
        row["held"] = None
        row["status_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return row


def verdict(rows: list, nids: list, expected_held: float, per_sample: float, errors=None) -> dict:
    """RSS flat (last vs minute 3, or the first sample of a shorter run) and timers held bounded."""
    if not rows:
        return {"ok": False, "why": "no samples"}
    ref = next((r for r in rows if r["t_s"] >= REFERENCE_S - 1), None)
    if ref is None or ref is rows[-1]:
        ref = rows[0]
    last = rows[-1]
    growth = {}
    for nid in nids:
        a, b = ref["rss"].get(nid), last["rss"].get(nid)
        growth[nid] = None if not a or not b else (b - a) / a
    rss_ok = all(g is not None and abs(g) <= RSS_TOLERANCE for g in growth.values())
    bound = HELD_FACTOR * (expected_held + per_sample)
    held = [r["held"] for r in rows if r.get("held") is not None]
    held_ok = len(held) == len(rows) and max(held) <= bound
    ok = rss_ok and held_ok and not errors
    return {"ok": ok, "rss_reference_minute": ref["minute"], "rss_last_minute": last["minute"],
            "rss_growth": {k: (None if v is None else round(v, 4)) for k, v in growth.items()},
            "rss_ok": rss_ok, "held_max": max(held) if held else None, "held_bound": int(bound),
            "held_ok": held_ok, "loader_errors": len(errors or ())}


def _mib(v) -> str:
    return "-" if v is None else f"{v / 2**20:,.1f}"


def _kib(v) -> str:
    return "-" if v is None else f"{v / 1024:,.1f}"


def _row_line(row: dict, nids: list) -> str:
    rss = "  ".join(f"{nid} {_mib(row['rss'].get(nid))} MiB" for nid in nids)
    return (f"minute {row['minute']:5.2f}: {rss}; snapshot {_kib(row.get('snapshot_bytes'))} KiB; "
            f"held {row.get('held')}; created {row['created']:,}")


def format_table(report: dict) -> str:
    rows, p = report["rows"], report["params"]
    nids = list(rows[0]["rss"]) if rows else []
    head = ["minute"] + [f"RSS {n} MiB" for n in nids] + [f"heap {n} MiB" for n in nids] + \
        ["snapshot KiB", "timers held", "created"]
    lines = [f"soak: {p['rate']}/s for {p['minutes']} min, delay {p['delay_s']} s, retention {p['retention_s']} s, "
             f"{p['nodes']} nodes, events budget {p['events_budget']}, audit keep {p['audit_keep']:,}, "
             f"log compaction every {p['compaction_s']:g} s",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [f"{r['minute']:.2f}"] + [_mib(r["rss"].get(n)) for n in nids] + \
            [_mib(r["heap"].get(n)) for n in nids] + \
            [_kib(r.get("snapshot_bytes")), "-" if r.get("held") is None else f"{r['held']:,}", f"{r['created']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    v = report.get("verdict") or {}
    if v.get("rss_growth") is not None:
        growth = ", ".join(f"{k} {'-' if g is None else f'{g:+.1%}'}" for k, g in v["rss_growth"].items())
        lines.append(f"verdict: {'PASS' if v['ok'] else 'FAIL'} -- RSS minute {v['rss_last_minute']:.2f} vs "
                     f"minute {v['rss_reference_minute']:.2f}: {growth} (within {RSS_TOLERANCE:.0%}: "
                     f"{'yes' if v['rss_ok'] else 'NO'}); timers held max {v['held_max']} <= {v['held_bound']}: "
                     f"{'yes' if v['held_ok'] else 'NO'}; loader errors {v['loader_errors']}")
    else:
        lines.append(f"verdict: FAIL -- {v.get('why')}")
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    return "\n".join(lines)


def plot(report: dict, path: Path, say) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no plot (pip install 'minoots[bench]')")
        return None
    rows = report["rows"]
    if not rows:
        return None
    mins = [r["minute"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for nid in rows[0]["rss"]:
        a1.plot(mins, [(r["rss"].get(nid) or 0) / 2**20 for r in rows], marker="o", label=f"{nid} VmRSS")
        a1.plot(mins, [(r["heap"].get(nid) or 0) / 2**20 for r in rows], linestyle="--", label=f"{nid} heap")
    a1.set_xlabel("minute"); a1.set_ylabel("MiB"); a1.set_ylim(bottom=0); a1.grid(True); a1.legend(fontsize=7)
    a1.set_title("node memory")
    a2.plot(mins, [r.get("held") or 0 for r in rows], marker="o", label="timers held")
    a2.set_xlabel("minute"); a2.set_ylabel("timers"); a2.set_ylim(bottom=0); a2.grid(True)
    b2 = a2.twinx()
    b2.plot(mins, [(r.get("snapshot_bytes") or 0) / 1024 for r in rows], color="tab:red", marker="s",
            label="snapshot KiB")
    b2.set_ylabel("snapshot KiB"); b2.set_ylim(bottom=0)
    a2.legend(loc="upper left", fontsize=7); b2.legend(loc="upper right", fontsize=7)
    a2.set_title("timers held and snapshot size")
    p = report["params"]
    fig.suptitle(f"soak {p['rate']}/s, retention {p['retention_s']} s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
