"""Golden bytes of the plain batch create record (raft/commands.py number 48,
CreatePlainTimers), in tests/data/commands_perfbatch_v1.bin: today's encoder must write
exactly those bytes, and replaying them must reach the recorded digest on every replica.

Regenerate ONLY for a new record version (never to paper over a change):
    python tests/test_perfbatch_commands.py --write
"""
from __future__ import annotations

import struct
import sys
from array import array
from pathlib import Path

from minoots.kernel import KernelError, TimerSpec, TimerState
from minoots.raft import commands as c
from minoots.raft.plain_record import PlainGroup
from support import read_framed
from test_delivery_commands import digest, replay

GOLDEN = Path(__file__).parent / "data" / "commands_perfbatch_v1.bin"
NOW = 1_764_000_000_000


def golden_commands() -> list:
    return [
        c.CreatePlainTimers(NOW, (
            PlainGroup("default", ["a1", "a2", "a3"], array("q", [NOW + 100, NOW + 50, NOW + 100]), b"\x02\x02\x03",
                       [b"p" * 8, b"", b"\x00\xff"]),
            PlainGroup("acme", ["b1"], array("q", [NOW + 10]), b"\x00", [b"x"]),
        )),
        c.CreatePlainTimers(NOW + 1, (
            PlainGroup("default", ["a2", "a4"], array("q", [NOW + 7, NOW + 7]), b"\x02\x02", [b"", b""]),  # a2: replay
            PlainGroup("default", ["a5", "a1"], array("q", [NOW, NOW]), b"\x00\x00", [b"", b""]),  # a1 exists
            PlainGroup("default", ["bad id"], array("q", [NOW]), b"\x00", [b""]),                  # refused
        )),
        c.Tick(NOW + 60),
        c.create_timers(NOW + 70, ((TimerSpec("c1", NOW + 80, tenant="acme", payload=b"pp", idempotency_key="c1"),),)),
    ]


def read_golden() -> list[bytes]:
    return read_framed(GOLDEN)


def test_todays_encoder_writes_the_golden_bytes():
    assert [c.encode(cmd) for cmd in golden_commands()] == read_golden()


def test_golden_bytes_decode_to_the_same_records():
    assert [c.decode(b) for b in read_golden()] == golden_commands()


def test_golden_replay_reaches_the_recorded_digest_on_every_replica():
    runs = [replay(read_golden()) for _ in range(3)]
    assert len({digest(fsm) for fsm, _ in runs}) == 1
    fsm, results = runs[0]
    assert digest(fsm) == Path(str(GOLDEN) + ".sha256").read_text().strip()
    first, second = results[0], results[1]
    assert [[i.timer.id for i in r.items] for r in first] == [["a1", "a2", "a3"], ["b1"]]
    assert [(i.timer.id, i.created) for i in second[0].items] == [("a2", False), ("a4", True)]
    assert isinstance(second[1], KernelError) and "specs[1].id" in str(second[1])
    assert isinstance(second[2], KernelError) and "specs[0].id" in str(second[2])
    assert [t.id for t in results[2].fired] == ["a4", "b1", "a2"]
    assert fsm.kernel.get("default", "a3").ack_required and fsm.kernel.get("default", "a3").idempotency_key == "a3"
    assert fsm.kernel.get("acme", "c1").state == TimerState.ARMED and fsm.kernel.get("acme", "c1").payload == b"pp"
    assert len(fsm.kernel) == 6


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    sys.path.insert(0, str(Path(__file__).parent))
    entries = [c.encode(cmd) for cmd in golden_commands()]
    GOLDEN.write_bytes(b"".join(struct.pack("<I", len(e)) + e for e in entries))
    fsm, _ = replay(entries)
    Path(str(GOLDEN) + ".sha256").write_text(digest(fsm) + "\n")
    print("written", GOLDEN, digest(fsm))
