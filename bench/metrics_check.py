"""Cross-check a load run's counts against each node's Prometheus ``/metrics``.

The harness counts what it created (acknowledged creates) and what fired (FIRED events it
saw, or the nodes' state when its watcher failed); every node counts what it applied. The
two are read independently, so they agree only if nothing was lost or double counted on
either side. A node is scraped before the load and after the fire phase, and compared by
the difference:

- by state (``minoots_timers{state}``, read from the node's kernel at scrape time): timers
  held (all states) and timers that have fired (all but scheduled, armed and cancelled).
  This survives a restart of the node (it is the replicated state), but retention purging
  terminal timers during the run would lower it;
- by counter (``minoots_timer_commands_total{command="create",outcome="ok"}`` and
  ``minoots_fires_total``): counted since the node process started, so only compared for a
  node that did not restart in between (``process_start_time_seconds`` unchanged).

Against an existing cluster (``--cluster``) other clients' timers are counted too: the
comparison then says how far apart the two are, it cannot say which side is wrong.
"""
from __future__ import annotations

import urllib.request
from typing import Optional

NOT_FIRED_STATES = ("scheduled", "armed", "cancelled")


def scrape(address: str, timeout: float = 5.0) -> dict:
    """One node's metrics as a summary: {"node", "start", "created", "fires", "timers": {state: n}};
    {"error": ...} when it does not answer. `address` is HOST:PORT or a full URL."""
    from prometheus_client.parser import text_string_to_metric_families

    url = address if "://" in address else f"http://{address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError) as exc:
        return {"address": address, "error": f"{type(exc).__name__}: {exc}"}
    out: dict = {"address": address, "node": None, "start": None, "created": 0.0, "fires": 0.0, "timers": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "minoots_node_info":
                out["node"] = s.labels.get("node")
            elif s.name == "process_start_time_seconds":
                out["start"] = s.value
            elif s.name == "minoots_timer_commands_total" and s.labels.get("command") == "create" \
                    and s.labels.get("outcome") == "ok":
                out["created"] += s.value
            elif s.name == "minoots_fires_total":
                out["fires"] += s.value
            elif s.name == "minoots_timers":
                out["timers"][s.labels.get("state", "?")] = s.value
    return out


def scrape_all(addresses: list) -> dict:
    """{node id (or the address when the page has no node id): summary} for every address."""
    out = {}
    for a in addresses:
        s = scrape(a)
        out[s.get("node") or a] = s
    return out


def _held(s: dict) -> float:
    return sum(s.get("timers", {}).values())


def _fired(s: dict) -> float:
    return sum(v for k, v in s.get("timers", {}).items() if k not in NOT_FIRED_STATES)


def compare(before: dict, after: dict, created: int, created_max: int, fired: int) -> dict:
    """Per node: the metrics' differences against the harness's counts.

    `created`..`created_max`: acknowledged creates, plus those whose answer was lost (they
    may or may not exist); `fired`: distinct timers the harness saw fire. Returns
    {"ok": all compared values agree, "nodes": {id: row}}; a row says for each quantity
    the node's value, whether it matches, or why it was not compared."""
    rows, ok = {}, True
    for nid in sorted(set(before) | set(after)):
        b, a = before.get(nid) or {}, after.get(nid) or {}
        row: dict = {"address": a.get("address") or b.get("address")}
        if "error" in a or "error" in b or not a or not b:
            row["error"] = a.get("error") or b.get("error") or "not scraped before and after"
            rows[nid] = row
            ok = False
            continue
        held, fired_state = _held(a) - _held(b), _fired(a) - _fired(b)
        row["state_created"] = {"value": held, "match": created <= held <= created_max}
        row["state_fired"] = {"value": fired_state, "match": fired_state == fired}
        restarted = a.get("start") != b.get("start")
        if restarted:
            row["restarted"] = True
            row["counter_created"] = row["counter_fired"] = {"value": None, "match": None,
                                                             "why": "node restarted: counters began again"}
        else:
            dc, df = a["created"] - b["created"], a["fires"] - b["fires"]
            row["counter_created"] = {"value": dc, "match": created <= dc <= created_max}
            row["counter_fired"] = {"value": df, "match": df == fired}
        for k in ("state_created", "state_fired", "counter_created", "counter_fired"):
            if row[k]["match"] is False:
                ok = False
        rows[nid] = row
    return {"ok": ok and bool(rows), "created": created, "created_max": created_max, "fired": fired,
            "nodes": rows}


def format_check(chk: Optional[dict]) -> list:
    """The comparison as printed lines (none when there is nothing to print)."""
    if not chk:
        return []
    if chk.get("skipped"):
        return ["", f"metrics cross-check: not done ({chk['skipped']})"]
    want_c = (f"{chk['created']:,}" if chk["created"] == chk["created_max"]
              else f"{chk['created']:,}..{chk['created_max']:,}")
    head = ("node", "created (state)", "created (counter)", "fired (state)", "fired (counter)")
    lines = [("harness", want_c, want_c, f"{chk['fired']:,}", f"{chk['fired']:,}")]

    def cell(c):
        if c["value"] is None:
            return "n/a (restarted)"
        return f"{c['value']:,.0f} {'ok' if c['match'] else 'MISMATCH'}"
    for nid, row in chk["nodes"].items():
        if "error" in row:
            lines.append((nid, f"unreadable: {row['error']}", "", "", ""))
            continue
        lines.append((nid, cell(row["state_created"]), cell(row["counter_created"]), cell(row["state_fired"]),
                      cell(row["counter_fired"])))
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    out = ["", f"metrics cross-check (each node's /metrics after - before the run): "
               f"{'agree' if chk['ok'] else 'DISAGREE'}"]
    out += ["  " + "  ".join(f"{str(r[i]):<{widths[i]}}" for i in range(len(r))).rstrip() for r in [head, *lines]]
    return out
