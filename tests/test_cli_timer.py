"""`minoots timer …`: the parsers (with hypothesis: a value or a clean error, never a traceback),
error paths, every command against the fake cluster (fake_grpc.py, fixture `fake`), and
`create --in 2s` then `watch --from 1 --json` against a real 3-node cluster (marked `cluster`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minoots.cli import main
from minoots.cli.common import grpc_addresses
from minoots.cli.timer import MAX_TIME_MS, ParseError, parse_duration, parse_label, parse_time


def assert_one_line_error(result, *needles, code=None):
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for n in needles:
        assert n in result.output, result.output


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize("text,ms", [
    ("90s", 90_000), ("1h30m", 5_400_000), ("250ms", 250), ("2d", 172_800_000), ("1w", 604_800_000),
    ("1.5s", 1500), ("0.0001ms", 1), (".5s", 500), ("1h 30m", 5_400_000), (" 10s ", 10_000),
    ("1m1s1ms", 61_001), ("0s", 0), ("+5s", 5000), ("5.s", 5000),
])
def test_parse_duration(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "30", "5x", "s", "1h30", "--5s", "1.2.3s", "ms", "٣s", "1e3s", "-5s",
                                  "9" * 80 + "s", "300000000000000d"])
def test_parse_duration_rejects(text):
    with pytest.raises(ParseError):
        parse_duration(text)


def test_parse_duration_negative_only_when_allowed():
    assert parse_duration("-10s", allow_negative=True) == -10_000
    with pytest.raises(ParseError, match="negative"):
        parse_duration("-10s")
    with pytest.raises(ParseError, match="add a unit"):
        parse_duration("30")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_parse_duration_never_crashes(text):
    try:
        v = parse_duration(text, allow_negative=True)
    except ParseError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(v, int) and abs(v) <= MAX_TIME_MS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h", "d"])),
                min_size=1, max_size=4))
def test_parse_duration_sums_its_parts(parts):
    unit = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    assert parse_duration("".join(f"{n}{u}" for n, u in parts)) == sum(n * unit[u] for n, u in parts)


# ---------------------------------------------------------------- times


@pytest.mark.parametrize("text,expect", [
    ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, tzinfo=timezone.utc)),
    ("2026-12-01t10:00:00z", datetime(2026, 12, 1, 10, tzinfo=timezone.utc)),
    ("2026-12-01 11:00:00.250+01:00", datetime(2026, 12, 1, 10, 0, 0, 250_000, tzinfo=timezone.utc)),
    ("2026-12-01T05:30:00-04:30", datetime(2026, 12, 1, 10, tzinfo=timezone.utc)),
    ("2026-12-01T10:00:00.0000001Z", datetime(2026, 12, 1, 10, 0, 0, 1, tzinfo=timezone.utc)),
    ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=timezone.utc)),
    ("9999-12-31T23:59:59.999Z", datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=timezone.utc)),
])
def test_parse_time(text, expect):
    assert parse_time(text) == expect


@pytest.mark.parametrize("text,needle", [
    ("2026-12-01T10:00:00", "time zone"), ("2026-12-01", "RFC 3339"), ("tomorrow", "RFC 3339"),
    ("2026-13-01T10:00:00Z", "invalid"), ("2026-02-30T10:00:00Z", "invalid"), ("2026-12-01T24:00:00Z", "invalid"),
    ("2026-12-01T10:00:60Z", "invalid"), ("2026-12-01T10:00:00+24:00", "invalid"),
    ("1969-12-31T23:59:59Z", "1970"), ("0001-01-01T00:00:00+01:00", "invalid"), ("", "RFC 3339"),
])
def test_parse_time_rejects(text, needle):
    with pytest.raises(ParseError, match=needle):
        parse_time(text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40),
                 st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                               r"([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z")))
def test_parse_time_never_crashes(text):
    try:
        v = parse_time(text)
    except ParseError as exc:
        assert "\n" not in str(exc)
    else:
        assert v.tzinfo is not None and 1970 <= v.year <= 9999


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.just(timezone.utc)))
def test_parse_time_round_trips(dt):
    assert parse_time(dt.isoformat().replace("+00:00", "Z")) == dt


def test_parse_label():
    assert parse_label("a=b=c") == ("a", "b=c")
    assert parse_label("team=") == ("team", "")
    for bad in ("novalue", "=x", ""):
        with pytest.raises(ParseError):
            parse_label(bad)


# ---------------------------------------------------------------- addresses


def test_grpc_addresses_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MINOOTS_NODES", raising=False)
    monkeypatch.setenv("MINOOTS_DATA", str(tmp_path))
    assert grpc_addresses(("a:1", "b:2,c:3")) == ["a:1", "b:2", "c:3"]
    (tmp_path / "cluster.json").write_text(json.dumps({"nodes": [{"id": "n1", "grpc": "g:1"},
                                                                  {"id": "n2", "grpc": "g:2"}]}))
    assert grpc_addresses(()) == ["g:1", "g:2"]
    monkeypatch.setenv("MINOOTS_NODES", "e:1, e:2")
    assert grpc_addresses(()) == ["e:1", "e:2"]


# ---------------------------------------------------------------- error paths (no cluster needed)


@pytest.mark.parametrize("args,needle", [
    (["create"], "exactly one of --in"),
    (["create", "--in", "5s", "--at", "2026-12-01T10:00:00Z"], "exactly one of --in"),
    (["create", "--in", "5 parsecs"], "duration"),
    (["create", "--in", "30"], "add a unit"),
    (["create", "--at", "2026-12-01T10:00:00"], "time zone"),
    (["create", "--in", "5s", "--label", "nokey"], "KEY=VALUE"),
    (["create", "--in", "5s", "--payload", "@/nonexistent/file"], "cannot read payload"),
    (["extend", "x", "--by", "soon"], "duration"),
    (["reschedule", "x"], "exactly one of --at"),
    (["list", "--state", "sleeping"], "unknown timer state"),
    (["watch", "--kind", "exploded"], "unknown event kind"),
])
def test_bad_input_is_one_clean_line(runner, args, needle):
    result = runner.invoke(main, ["timer", *args, "--node", "127.0.0.1:1"])
    assert_one_line_error(result, needle, code=2)


def test_no_node_anywhere(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("MINOOTS_NODES", raising=False)
    monkeypatch.setenv("MINOOTS_DATA", str(tmp_path))
    assert_one_line_error(runner.invoke(main, ["timer", "get", "x"]), "no node given")


def test_unreachable_cluster_is_one_clean_line(runner):
    result = runner.invoke(main, ["timer", "get", "x", "--node", "127.0.0.1:1", "--timeout", "0.3"])
    assert_one_line_error(result, "UNAVAILABLE", code=1)


# ---------------------------------------------------------------- every command against the fake cluster


def _invoke(runner, fake, *args):
    result = runner.invoke(main, ["timer", *args, "--node", fake.nodes[1], "--timeout", "10"])
    return result


def test_commands_against_the_fake(runner, fake, tmp_path):
    payload = tmp_path / "p.bin"
    payload.write_bytes(b"\x00\xffbinary")
    r = _invoke(runner, fake, "create", "--in", "1h", "--id", "t1", "--name", "hello", "--label", "team=ops",
                "--label", "tier=1", "--payload", "@" + str(payload), "--ack-required", "--json")
    assert r.exit_code == 0, r.output
    t = json.loads(r.output)
    assert t["id"] == "t1" and t["state"] == "armed" and t["labels"] == {"team": "ops", "tier": "1"}
    assert t["ack_required"] is True and "payload_base64" in t and t["created"] is True

    r = _invoke(runner, fake, "create", "--at", "2030-01-01T00:00:00Z", "--payload", "text")
    assert r.exit_code == 0 and r.output.startswith("created") and "2030-01-01T00:00:00.000Z" in r.output

    r = _invoke(runner, fake, "create", "--in", "1h", "--id", "t1")
    assert r.exit_code == 0 and "already existed" in r.output

    r = _invoke(runner, fake, "get", "t1")
    assert r.exit_code == 0 and "hello" in r.output and "team=ops,tier=1" in r.output

    r = _invoke(runner, fake, "list", "--json")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2
    r = _invoke(runner, fake, "list", "--label", "team=ops")
    assert r.exit_code == 0 and "t1" in r.output and len(r.output.splitlines()) == 2  # header + one
    r = _invoke(runner, fake, "list", "--state", "cancelled")
    assert r.exit_code == 0 and r.output.strip() == "no timers"
    r = _invoke(runner, fake, "list", "--limit", "1", "--json")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 1

    before = json.loads(_invoke(runner, fake, "get", "t1", "--json").output)["fire_at"]
    r = _invoke(runner, fake, "extend", "t1", "--by", "1h30m", "--json")
    assert r.exit_code == 0, r.output
    moved = datetime.fromisoformat(json.loads(r.output)["fire_at"])
    assert moved - datetime.fromisoformat(before) == timedelta(hours=1, minutes=30)
    r = _invoke(runner, fake, "extend", "t1", "--by=-30m", "--json")
    assert datetime.fromisoformat(json.loads(r.output)["fire_at"]) - moved == timedelta(minutes=-30)

    r = _invoke(runner, fake, "reschedule", "t1", "--at", "2031-05-05T05:05:05.5+02:00", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["fire_at"] == "2031-05-05T03:05:05.500Z"

    fake.tick(datetime_ms("2031-05-05T03:05:05.500Z"))
    fired = json.loads(_invoke(runner, fake, "get", "t1", "--json").output)
    assert fired["state"] == "fired"
    r = _invoke(runner, fake, "ack", "t1", "--fire-id", str(fired["fire_id"] + 100))
    assert_one_line_error(r, "FAILED_PRECONDITION", code=1)
    r = _invoke(runner, fake, "ack", "t1", "--fire-id", str(fired["fire_id"]))
    assert r.exit_code == 0 and "settled" in r.output

    r = _invoke(runner, fake, "cancel", "t1")
    assert_one_line_error(r, "FAILED_PRECONDITION", code=1)
    r = _invoke(runner, fake, "get", "nope")
    assert_one_line_error(r, "NOT_FOUND", code=1)

    r = _invoke(runner, fake, "watch", "--from", "1", "--limit", "4", "--json")
    assert r.exit_code == 0, r.output
    evs = [json.loads(line) for line in r.output.splitlines()]
    assert [e["sequence"] for e in evs] == [1, 2, 3, 4]
    assert [e["kind"] for e in evs[:2]] == ["created", "armed"]
    r = _invoke(runner, fake, "watch", "--from", "1", "--limit", "2", "--kind", "fired")
    assert r.exit_code == 0 and "fired" in r.output and "t1" in r.output


def test_tls_options(runner, tls_fake):
    backend, cert = tls_fake
    r = runner.invoke(main, ["timer", "create", "--in", "1m", "--id", "tls1", "--node", backend.nodes[0],
                             "--ca", str(cert), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["id"] == "tls1", r.output
    r = runner.invoke(main, ["timer", "get", "tls1", "--node", backend.nodes[0], "--ca", "/nonexistent.pem"])
    assert_one_line_error(r, "cannot read the TLS root certificates", code=2)


def datetime_ms(text: str) -> int:
    dt = parse_time(text)
    return int((dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(milliseconds=1))


# ---------------------------------------------------------------- against a real 3-node cluster


def _read_lines_until(proc, pred, timeout: float):
    """Lines of proc's stdout until pred(line) (or EOF, or the bound); the reader never blocks the test."""
    import queue
    import threading

    q: queue.Queue = queue.Queue()

    def reader():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        lines.append(line)
        if pred(line):
            break
    return lines


@pytest.mark.cluster
def test_real_cli_create_then_watch_shows_the_fire(runner, real_cluster, tmp_path, monkeypatch):
    # Default addresses: the local cluster description, as `minoots up` writes it.
    monkeypatch.delenv("MINOOTS_NODES", raising=False)
    monkeypatch.setenv("MINOOTS_DATA", str(tmp_path))
    real_cluster.write_description(tmp_path / "cluster.json")
    r = runner.invoke(main, ["timer", "create", "--in", "2s", "--name", "cli", "--label", "via=cli", "--json"])
    assert r.exit_code == 0, r.output
    tid = json.loads(r.output)["id"]

    env = {**os.environ, "MINOOTS_NODES": ",".join(n.grpc for n in real_cluster.nodes.values())}
    proc = subprocess.Popen([sys.executable, "-m", "minoots", "timer", "watch", "--from", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = _read_lines_until(
            proc, lambda ln: (e := json.loads(ln))["kind"] == "settled" and e["timer_id"] == tid, timeout=60)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    events = [json.loads(ln) for ln in lines]
    mine = [e["kind"] for e in events if e["timer_id"] == tid]
    assert mine == ["created", "armed", "fired", "settled"], lines
    seqs = [e["sequence"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    fired = next(e for e in events if e["timer_id"] == tid and e["kind"] == "fired")
    assert fired["at"] >= fired["fire_at"]      # RFC 3339 UTC strings of one format compare as times

    r = runner.invoke(main, ["timer", "get", tid])
    assert r.exit_code == 0 and "settled" in r.output and "via=cli" in r.output
    r = runner.invoke(main, ["timer", "list", "--label", "via=cli", "--state", "settled", "--json"])
    assert [json.loads(ln)["id"] for ln in r.output.splitlines()] == [tid]


@pytest.mark.cluster
def test_real_cli_every_command(runner, real_cluster):
    nodes = [a for n in real_cluster.nodes.values() for a in ("--node", n.grpc)]

    def run(*args):
        return runner.invoke(main, ["timer", *args, *nodes])

    r = run("create", "--at", "2030-01-01T00:00:00Z", "--id", "cli-every", "--ack-required", "--json")
    assert r.exit_code == 0, r.output
    r = run("extend", "cli-every", "--by", "1d", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["fire_at"] == "2030-01-02T00:00:00.000Z"
    r = run("reschedule", "cli-every", "--in", "300ms", "--json")
    assert r.exit_code == 0, r.output
    fired = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fired = json.loads(run("get", "cli-every", "--json").output)
        if fired["state"] == "fired":
            break
        time.sleep(0.1)
    assert fired["state"] == "fired", fired
    r = run("ack", "cli-every", "--fire-id", str(fired["fire_id"]))
    assert r.exit_code == 0 and "settled" in r.output, r.output
    assert_one_line_error(run("cancel", "cli-every"), "FAILED_PRECONDITION", code=1)
    assert_one_line_error(run("get", "cli-missing"), "NOT_FOUND", code=1)
    assert_one_line_error(run("create", "--in", "1s", "--id", "bad id"), "INVALID_ARGUMENT", code=1)
    r = run("watch", "--from", "1", "--kind", "settled", "--limit", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["kind"] == "settled"
