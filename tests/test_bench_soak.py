"""`minoots bench soak` (bench/soak.py): the rate parser and verdict (fast), and a short
real run (marked bench): the table's shape, and timers held bounded while many more
are created, because ended timers are purged after the retention."""
from __future__ import annotations

import pytest

from minoots.bench import soak


@pytest.mark.parametrize("text, rate", [("1000/s", 1000), ("1000", 1000), (" 60000/m ", 1000), ("5/s", 5)])
def test_parse_rate(text, rate):
    assert soak.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "0/s", "-5/s", "10/h", "59/m", "1000001/s"])
def test_parse_rate_refuses(text):
    with pytest.raises(soak.SoakError):
        soak.parse_rate(text)


def _row(minute, rss, held):
    return {"t_s": minute * 60, "minute": minute, "rss": {"n1": rss}, "heap": {"n1": rss // 2}, "held": held,
            "created": 0}


def test_verdict_compares_the_last_sample_with_minute_3_and_bounds_timers_held():
    rows = [_row(m, 100 << 20, 1000) for m in range(1, 10)] + [_row(10, 109 << 20, 1000)]
    v = soak.verdict(rows, ["n1"], expected_held=1000, per_sample=600)
    assert v["ok"] and v["rss_reference_minute"] == 3 and v["rss_growth"]["n1"] == 0.09
    rows[-1] = _row(10, 111 << 20, 1000)
    assert not soak.verdict(rows, ["n1"], 1000, 600)["rss_ok"]
    rows[-1] = _row(10, 100 << 20, 5000)
    v = soak.verdict(rows, ["n1"], 1000, 600)
    assert v["rss_ok"] and not v["held_ok"] and not v["ok"]
    assert not soak.verdict(rows[:1], ["n1"], 10_000, 600, errors=["Unavailable"])["ok"]
    assert soak.verdict([], ["n1"], 1, 1) == {"ok": False, "why": "no samples"}


@pytest.mark.bench
def test_short_soak_holds_a_bounded_number_of_timers(tmp_path):
    report = soak.run(rate=40, minutes=0.5, sample_every=10, retention_s=1.0, delay_s=0.5, nodes=3, batches=4,
                      out=str(tmp_path), say=lambda m: None)
    rows = report["rows"]
    assert len(rows) == 3
    for r in rows:
        assert set(r["rss"]) == {"n1", "n2", "n3"} and all(v and v > 0 for v in r["rss"].values())
        assert r["snapshot_bytes"] and r["snapshot_bytes"] > 0 and r["held"] is not None
    assert report["created"] >= 40 * 25          # the loader kept (nearly) its rate
    # Steady state is ~40 x (0.5 + 1) = 60 timers; without purging it would be everything created.
    assert max(r["held"] for r in rows) <= 200 < report["created"] / 4
    assert rows[-1]["snapshot_timers"] <= 200
    table = soak.format_table(report).splitlines()
    assert table[1].startswith("| minute | RSS n1 MiB | RSS n2 MiB | RSS n3 MiB |")
    assert len(table) == 3 + len(rows) + 2 and table[-2].startswith("verdict: ")
    assert report["verdict"]["held_ok"] and report["verdict"]["loader_errors"] == 0
    assert (tmp_path / "results.json").exists() and (tmp_path / "soak.png").stat().st_size > 0
