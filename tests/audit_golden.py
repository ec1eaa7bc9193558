"""A fixed audit-ledger scenario for the golden ledger files (tests/data/audit_*.jsonl).

`golden_lines(path, batch)` writes one node's ledger for a fixed sequence of replicated
commands and local facts, with a fixed key and clock, and returns its export. Ed25519
signatures are deterministic, so the bytes are too. It also runs under builds that predate
the batched layout (no `batch_events` parameter): that is how audit_per_event_v1.jsonl was
made, by the build at dde6988:

    cd tests && /work/main/.venv/bin/python -c \\
        "import audit_golden as g, pathlib, tempfile; pathlib.Path('data/audit_per_event_v1.jsonl')\\
         .write_bytes(b'\\n'.join(g.golden_lines(tempfile.mkdtemp(), None)) + b'\\n')"
"""
from __future__ import annotations

from pathlib import Path

from minoots.kernel import TimerSpec
from minoots.raft import commands as c
from minoots.raft.audit import AuditLedger
from minoots.raft.audit import chain
from minoots.raft.fsm import TimerFSM
from minoots.raft.tokens import token_hash

T0 = 1_700_000_000_000
#: The test key of the golden files (a constant: never a real cluster's key).
PRIVATE_KEY = "5f" * 32
PUBLIC_KEY = chain.public_key_hex(chain.private_key_from_text(PRIVATE_KEY))


class Machine:
    """The parts of a TimerMachine the ledger listens to, over a real TimerFSM: each apply
    advances raftLastApplied after the listeners ran, as PySyncObj does."""

    def __init__(self):
        self.fsm = TimerFSM({"n1": "127.0.0.1:1"})
        self.event_listeners = self.fsm.event_listeners
        self.result_listeners = self.fsm.result_listeners
        self.snapshot_listeners = []
        self.raftLastApplied = 0

    def apply(self, command):
        result = self.fsm.apply(c.encode(command))
        self.raftLastApplied += 1
        return result


def scenario(ledger, m: Machine) -> None:
    """Tokens, a member, a quota, plain and general creates, fires, acks, cancels, a refusal, a denial."""
    tid = "0123456789abcdef"
    m.apply(c.PutToken(tid, token_hash("golden-token"), "ops", "writer", ("a",), T0, 0))
    m.apply(c.SetMemberName("n2", "127.0.0.1:2"))
    ledger.checkpoint_now("test")
    m.apply(c.create_timers(T0, ((TimerSpec(id="p1", fire_at=T0 + 10, tenant="a"),
                                  TimerSpec(id="p2", fire_at=T0 + 10, tenant="a"),
                                  TimerSpec(id="p3", fire_at=T0 + 500, tenant="a")),)))
    m.apply(c.CreateTimers(T0 + 1, ((TimerSpec(id="t1", fire_at=T0 + 10, tenant="a"),
                                     TimerSpec(id="t2", fire_at=T0 + 20, tenant="b", ack_required=True)),)))
    m.apply(c.Tick(T0 + 30))
    m.apply(c.CancelTimers(T0 + 31, (("a", "t1"),)))          # settled already: refused, no event
    m.apply(c.CreateTimers(T0 + 40, ((TimerSpec(id="t3", fire_at=T0 + 1000, tenant="a"),),)))
    m.apply(c.CancelTimers(T0 + 41, (("a", "t3"), ("a", "p3"))))
    m.apply(c.RevokeToken(tid))
    m.apply(c.RevokeToken(tid))                                 # refused: unknown
    ledger.append("request.denied", {"method": "/minoots.v1.Auth/CreateToken", "principal": "x",
                                     "code": "PERMISSION_DENIED", "left_out": 0})


def golden_lines(path, batch) -> list:
    """The export of the scenario's ledger; `batch` None: the build's default layout."""
    kw = {} if batch is None else {"batch_events": batch}
    ledger = AuditLedger(Path(path) / "audit", "n1", key=chain.private_key_from_text(PRIVATE_KEY),
                         clock=lambda: T0, checkpoint_every=7, **kw)
    try:
        m = Machine()
        ledger.attach(m)
        scenario(ledger, m)
        return [line for b in ledger.export(1) for line in b]
    finally:
        ledger.close()
