"""What a recurring webhook timer's occurrences cost one node's state machine (kernel/occurrences.py).

Run it as ``minoots bench occurrences [--count 10000]``.

One `every 1s` webhook schedule; each step ticks its occurrence (the schedule's `fired`
event, the occurrence timer "<id>@<fire id>" with attempt 1 due, the re-arm) and records a
successful attempt (the occurrence timer settles), as the replicated commands do. Reports
the apply cost per occurrence (tick + outcome) and what each ended occurrence timer holds
until its tenant's retention purges it: RSS delta per timer and snapshot bytes per timer.
"""
from __future__ import annotations

import time

from minoots.kernel import State, TimerSpec
from minoots.kernel.delivery import Delivery, Webhook

from .kernel import _rss_bytes

START_MS = 1_764_000_000_000
DEFAULT_COUNT = 10_000


def run(count: int = DEFAULT_COUNT) -> dict:
    s = State()
    s.create(START_MS, [TimerSpec("report", START_MS + 1000, every_ms=1000,
                                  delivery=Delivery(Webhook("https://example.com/hook")))])
    snap0 = len(s.to_bytes())
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    for k in range(1, count + 1):
        now = START_MS + k * 1000
        fid = s.tick(now).events[0].fire_id
        s.delivery_attempt(now + 5, "default", f"report@{fid}", fid, 1, 200, 3, "", b"", None)
    apply_s = time.perf_counter() - t0
    rss1 = _rss_bytes()
    return {"occurrences": count, "held": len(s), "apply_us": apply_s / count * 1e6,
            "bytes_per_timer": (rss1 - rss0) / count, "snapshot_per_timer": (len(s.to_bytes()) - snap0) / count}


def format_table(r: dict) -> str:
    day = 86_400
    rows = [
        ("occurrences (each settled)", f"{r['occurrences']:,}", f"{r['held']:,} timers held"),
        ("apply per occurrence (tick + outcome)", f"{r['apply_us']:.0f} us", ""),
        ("state bytes per ended occurrence timer", f"{r['bytes_per_timer']:.0f}", "RSS delta"),
        ("snapshot bytes per ended occurrence timer", f"{r['snapshot_per_timer']:.0f}", ""),
        ("1/s schedule, 24 h retention", f"{day * r['bytes_per_timer'] / 1e6:.0f} MB",
         f"{day:,} occurrence timers held"),
    ]
    w = max(len(a) for a, _, _ in rows)
    v = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{w}}  {b:>{v}}  {c}".rstrip() for a, b, c in rows)
