"""Where a batched create's time goes, stage by stage, in one process (no network, no fsync).

    python -m minoots.bench.create_path [--rounds 50] [--mode sdk|delay] [--profile]

One CreateTimers of 1,000 plain timers (64-byte payload) per round, through each stage a
cluster runs: the client's protobuf build and serialisation, the leader's parse and checks
(api/validation.py), the create record's encode (raft/commands.py), one peer frame (pickle +
the transport's zlib) and its decode on a follower, the apply (raft/fsm.py, with a real event
store in a tmp dir listening as on a node), and the leader's answer. Prints µs per timer per
stage; `--profile` adds a cProfile of the server-side stages. `--mode sdk`: ids, idempotency
key = id and fire_at, as the SDK sends; `delay`: no ids and a delay, as bench grpc-creates.
"""
from __future__ import annotations

import argparse
import cProfile
import pickle
import pstats
import tempfile
import time
import uuid

from minoots.api.events import EventLog
from minoots.api.service import _create_response
from minoots.api import validation
from minoots.raft import commands
from minoots.raft.fsm import TimerFSM
from minoots.raft.pysyncobj_compat import _bounded_decompress, compress_frame, peer_loads
from minoots.v1 import timers_pb2 as pb

N = 1000
NOW = 1_764_000_000_000
STAGES = ("client_build", "client_serialise", "server_parse", "checks", "record_encode", "frame_encode",
          "frame_decode", "apply", "answer", "answer_serialise")


def _request(mode: str) -> pb.CreateTimersRequest:
    if mode == "delay":
        ts = [pb.TimerSpec(payload=b"p" * 64) for _ in range(N)]
        for t in ts:
            t.delay.seconds = 3600
        return pb.CreateTimersRequest(timers=ts)
    ids = [uuid.uuid4().hex for _ in range(N)]
    ts = [pb.TimerSpec(id=i, idempotency_key=i, payload=b"p" * 64) for i in ids]
    for k, t in enumerate(ts):
        t.fire_at.FromMilliseconds(NOW + 3_600_000 + k)
    return pb.CreateTimersRequest(timers=ts)


def run(rounds: int = 50, mode: str = "sdk", profile: bool = False) -> dict:
    """µs per timer per stage, averaged over `rounds` requests."""
    fsm = TimerFSM({})
    with tempfile.TemporaryDirectory() as tmp:
        events = EventLog(tmp + "/events")
        fsm.event_listeners.append(events._on_events)
        spent = dict.fromkeys(STAGES, 0.0)
        prof = cProfile.Profile() if profile else None

        def stage(name, fn, *args):
            t0 = time.perf_counter()
            out = fn(*args)
            spent[name] += time.perf_counter() - t0
            return out

        for r in range(rounds):
            req = stage("client_build", _request, mode)
            wire = stage("client_serialise", req.SerializeToString)
            if prof:
                prof.enable()
            parsed = stage("server_parse", pb.CreateTimersRequest.FromString, wire)
            specs = stage("checks", validation.create_batch, parsed.timers, NOW)
            entry = stage("record_encode", lambda: commands.encode(commands.create_timers(NOW, (tuple(specs),))))
            frame = stage("frame_encode", lambda: compress_frame(pickle.dumps(
                {"type": "append_entries", "entries": [(entry, r + 1, 1)]}, 2)))
            msg = stage("frame_decode", lambda: peer_loads(_bounded_decompress(frame, 1 << 30)))
            res = stage("apply", fsm.apply, msg["entries"][0][0])
            resp = stage("answer", _create_response, res[0])
            stage("answer_serialise", resp.SerializeToString)
            if prof:
                prof.disable()
        events.close()
    out = {k: v / rounds / N * 1e6 for k, v in spent.items()}
    out["entry_bytes"], out["frame_bytes"], out["record"] = len(entry), len(frame), commands.decode(entry).KIND
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--mode", choices=("sdk", "delay"), default="sdk")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    r = run(a.rounds, a.mode, a.profile)
    for k in STAGES:
        print(f"{k:18s} {r[k]:7.2f} us/timer")
    print(f"{'total':18s} {sum(r[k] for k in STAGES):7.2f} us/timer  (record {r['record']}, entry {r['entry_bytes']:,} B, "
          f"frame {r['frame_bytes']:,} B)")


if __name__ == "__main__":
    main()
