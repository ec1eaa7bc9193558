"""The audit ledger (issue 12): the hash chain and its offline verification (changed, dropped,
reordered records and bad signatures are caught), retention with a signed anchor, replays,
the bounded queue, the denial sampler, the CLI's verify, and a real cluster end to end
(token, timers, export over gRPC with the CLI, verify with the printed public key)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minoots
from minoots.api.audit_service import DenialSampler
from minoots.cli import main
from minoots.kernel import Event, EventKind, TimerSpec, TimerState
from minoots.raft import commands as c
from minoots.raft.audit import AuditLedger, VerifyError, parse_public_key, verify_lines, write_key, load_key
from minoots.raft.audit import chain
from minoots.raft.fsm import TimerFSM
from minoots.raft.tokens import new_token, token_hash
from minoots.v1 import auth_pb2, auth_pb2_grpc, timers_pb2, timers_pb2_grpc

from audit_golden import Machine
from support import cluster_grpc, wait_for

T0 = 1_700_000_000_000


def key_file(tmp_path):
    path = tmp_path / "audit.key"
    if not path.exists():
        write_key(path)
    return path


def open_ledger(tmp_path, **kw):
    return AuditLedger(tmp_path / "audit", "n1", key=load_key(key_file(tmp_path)), clock=lambda: T0, **kw)


def public_key(tmp_path):
    return parse_public_key(chain.public_key_hex(load_key(key_file(tmp_path))))


def lines_of(ledger, from_seq=1) -> list[bytes]:
    return [line for batch in ledger.export(from_seq) for line in batch]


def busy(ledger, machine):
    """A token made and revoked, a member named, timers created, fired, acked and cancelled."""
    tid, token = new_token()
    machine.apply(c.PutToken(tid, token_hash(token), "ops", "writer", ("a",), T0, 0))
    machine.apply(c.SetMemberName("n2", "127.0.0.1:2"))
    ledger.checkpoint_now("test")          # a checkpoint in the middle (exports start at one)
    machine.apply(c.CreateTimers(T0, ((TimerSpec(id="t1", fire_at=T0 + 10, tenant="a"),
                                       TimerSpec(id="t2", fire_at=T0 + 20, tenant="a", ack_required=True)),)))
    machine.apply(c.Tick(T0 + 30))
    machine.apply(c.CancelTimers(T0 + 31, (("a", "t1"),)))        # settled already: refused, no event
    machine.apply(c.CreateTimers(T0 + 40, ((TimerSpec(id="t3", fire_at=T0 + 1000, tenant="a"),),)))
    machine.apply(c.CancelTimers(T0 + 41, (("a", "t3"),)))
    machine.apply(c.RevokeToken(tid))
    machine.apply(c.RevokeToken(tid))                              # refused: unknown
    ledger.append("request.denied", {"method": "/minoots.v1.Auth/CreateToken", "principal": "x",
                                     "code": "PERMISSION_DENIED", "left_out": 0})
    return tid


@pytest.fixture(params=[True, False], ids=["batched", "per-event"])
def filled(tmp_path, request):
    """A ledger of `busy` in each layout: one timer.events record per apply, or one record per event."""
    m = Machine()
    ledger = open_ledger(tmp_path, checkpoint_every=5, batch_events=request.param)
    ledger.attach(m)
    tid = busy(ledger, m)
    lines = lines_of(ledger)
    yield ledger, lines, tid
    ledger.close()


def records(lines):
    """The facts of the records, one per timer event in either layout (chain.facts), each as
    {"kind", "data"} with the seq of the record that holds it."""
    out = []
    for x in lines:
        obj = json.loads(x)
        if obj["type"] == "record":
            out.extend({"kind": k, "data": d, "seq": obj["seq"]} for k, d in chain.facts(obj))
    return out


def test_chain_holds_replicated_and_local_facts_in_order(filled, tmp_path):
    ledger, lines, tid = filled
    result = verify_lines(lines, public_key(tmp_path))
    assert result.anchor == "genesis" and result.first_seq == 1 and result.last_seq == ledger.head_seq
    recs = records(lines)
    kinds = [r["kind"] for r in recs]
    assert kinds[0] == "ledger.opened" and recs[0]["data"]["signing"] is True
    for k in ("token.created", "member.named", "timer.created", "timer.armed", "timer.fired", "timer.settled",
              "timer.cancelled", "token.revoked", "token.refused", "request.denied"):
        assert k in kinds, k
    # Replicated facts in log order (the token before the timers, its revocation after them),
    # with the Raft index or the kernel's event seq.
    assert kinds.index("token.created") < kinds.index("timer.created") < kinds.index("token.revoked")
    made = next(r for r in recs if r["kind"] == "token.created")
    assert made["data"] == {"index": 1, "id": tid, "name": "ops", "role": "writer", "tenants": ["a"],
                            "expires_at_ms": 0}
    seqs = [r["data"]["event_seq"] for r in recs if r["kind"].startswith("timer.")]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    refused = next(r for r in recs if r["kind"] == "token.refused")
    assert refused["data"]["error"] == "NOT_FOUND" and refused["data"]["op"] == "revoke_token"
    # Every record is canonical and chained; checkpoints are signed.
    prev = chain.GENESIS
    for raw in lines:
        obj = json.loads(raw)
        assert chain.canonical(obj) == raw
        if obj["type"] == "record":
            assert obj["prev"] == prev
            prev = chain.digest(raw)
    assert json.loads(lines[-1])["type"] == "checkpoint" and json.loads(lines[-1])["hash"] == prev


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(1, 2**63), at=st.integers(0, 2**62), tenant=st.text(min_size=1), timer=st.text(min_size=1),
       kind=st.sampled_from(list(EventKind)), state=st.sampled_from(list(TimerState)),
       fire_id=st.none() | st.integers(1, 2**63), node=st.text(min_size=1))
def test_the_fast_timer_record_is_the_canonical_one(seq, at, tenant, timer, kind, state, fire_id, node):
    e = Event(seq, kind, tenant, timer, at, 7, state, at + 5, fire_id)
    slow = chain.make_record(seq, "ab" * 32, at + 1, node, chain.timer_event_kind(e), chain.timer_event_data(e))
    assert chain.timer_record(seq, "ab" * 32, at + 1, node, e) == slow


def _tampered(lines, i, fn):
    out = list(lines)
    obj = json.loads(out[i])
    fn(obj)
    out[i] = chain.canonical(obj)
    return out


def _record_index(lines, kind):
    return next(i for i, x in enumerate(lines) if json.loads(x).get("kind") == kind)


def test_verify_detects_changed_dropped_reordered_records_and_bad_signatures(filled, tmp_path):
    ledger, lines, _ = filled
    key = public_key(tmp_path)
    verify_lines(lines, key)
    i = _record_index(lines, "token.created")

    def fails(bad, text):
        with pytest.raises(VerifyError, match=text):
            verify_lines(bad, key)

    # changed: the role of the token, then the last record (only its checkpoint pins it)
    fails(_tampered(lines, i, lambda o: o["data"].update(role="admin")), "does not chain to record")
    last = max(j for j, x in enumerate(lines) if json.loads(x)["type"] == "record")
    fails(_tampered(lines, last, lambda o: o["data"].update(principal="y")), "does not match record")
    # dropped: a record in the middle, or the last checkpoint
    fails(lines[:i] + lines[i + 1:], "is missing")
    fails(lines[:-1], "not covered by a signed checkpoint")
    # reordered: two neighbouring records swapped
    j = i + 1 if json.loads(lines[i + 1])["type"] == "record" else i + 2
    swapped = list(lines)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    fails(swapped, "is missing|out of order")
    # a record rewritten with a fresh seq and a fixed-up prev still breaks the next link
    fails(_tampered(lines, i, lambda o: o.update(at_ms=o["at_ms"] + 1)), "does not chain to record")
    # signatures: a changed checkpoint, a different key, an unsigned checkpoint
    cp = next(j for j, x in enumerate(lines) if json.loads(x)["type"] == "checkpoint")
    fails(_tampered(lines, cp, lambda o: o.update(at_ms=1)), "bad signature")
    other = parse_public_key(chain.public_key_hex(chain.private_key_from_text(chain.new_private_key())))
    with pytest.raises(VerifyError, match="bad signature"):
        verify_lines(lines, other)
    fails(_tampered(lines, cp, lambda o: o.update(sig=None)), "not signed")
    # garbage, another node's line, a chain that starts mid-way without its anchor
    fails(lines[:3] + [b"{not json"] + lines[3:], "not a JSON object")
    fails(_tampered(lines, i, lambda o: o.update(node="n9")), "from node")
    fails(lines[i:], "without a signed checkpoint")
    fails([], "empty")


def test_export_from_the_middle_starts_at_a_signed_checkpoint(filled, tmp_path):
    ledger, lines, _ = filled
    mid = json.loads(next(x for x in lines if json.loads(x)["type"] == "checkpoint"))
    assert mid["reason"] == "test"
    part = lines_of(ledger, from_seq=mid["seq"] + 3)
    first = json.loads(part[0])
    # the newest checkpoint before that record (the layouts put the "every" ones elsewhere)
    before = [json.loads(x) for x in lines if json.loads(x)["type"] == "checkpoint"
              and json.loads(x)["seq"] < mid["seq"] + 3]
    assert first == before[-1] and first["seq"] >= mid["seq"]
    result = verify_lines(part, public_key(tmp_path))
    assert result.anchor == f"checkpoint {first['seq']}" and result.first_seq == first["seq"] + 1


def test_trimmed_prefix_keeps_a_signed_anchor(tmp_path):
    m = Machine()
    ledger = open_ledger(tmp_path, keep=40, checkpoint_every=10)
    ledger.attach(m)
    try:
        for n in range(30):
            m.apply(c.CreateTimers(T0 + n, ((TimerSpec(id=f"t{n}", fire_at=T0 + 10_000),),)))
        ledger.checkpoint_now()
        wait_for(lambda: ledger.first_seq > 1, "the oldest records to be trimmed", timeout=10)
        # The anchor moves before the trimmed records are deleted; a call through the writer
        # thread returns only after that pass (trim included) has finished.
        ledger.checkpoint_now()
        assert ledger.head_seq - ledger.first_seq + 1 <= 40 + 10
        lines = lines_of(ledger)
        anchor = json.loads(lines[0])
        assert anchor["type"] == "checkpoint" and anchor["seq"] == ledger.first_seq - 1
        result = verify_lines(lines, public_key(tmp_path))
        assert result.anchor == f"checkpoint {anchor['seq']}" and result.last_seq == ledger.head_seq
        assert verify_lines(lines_of(ledger, from_seq=ledger.head_seq - 3), public_key(tmp_path)).records >= 4
        # The anchor is what vouches for the trimmed prefix: a forged one fails.
        forged = json.loads(lines[0])
        forged["hash"] = "1" * 64
        with pytest.raises(VerifyError, match="bad signature"):
            verify_lines([chain.canonical(forged)] + lines[1:], public_key(tmp_path))
    finally:
        ledger.close()
    # Reopened, the anchor is still there and the chain goes on from the head.
    again = open_ledger(tmp_path, keep=40, checkpoint_every=10)
    try:
        assert verify_lines(lines_of(again), public_key(tmp_path)).last_seq == again.head_seq
    finally:
        again.close()


@dataclasses.dataclass(frozen=True)
class QuotaLike:
    """Stands in for a quota command (recorded field by field, by its kind)."""

    tenant: str
    max_timers: int
    kind = "set_quota"


def test_settings_are_recorded_field_by_field(tmp_path):
    m = Machine()
    ledger = open_ledger(tmp_path)
    ledger.attach(m)
    try:
        for fn in m.result_listeners:
            fn(QuotaLike("a", 5), None)
        m.raftLastApplied += 1
        for fn in m.result_listeners:
            fn(QuotaLike("a", 6), ValueError("no"))
        recs = records(lines_of(ledger))
        assert [(r["kind"], r["data"]) for r in recs[1:]] == [
            ("quota.set", {"index": 1, "tenant": "a", "max_timers": 5}),
            ("quota.set_refused", {"index": 2, "error": "ValueError", "reason": "no"})]
    finally:
        ledger.close()


def test_a_replayed_log_is_not_recorded_twice(tmp_path):
    m = Machine()
    ledger = open_ledger(tmp_path)
    ledger.attach(m)
    tid, token = new_token()
    put = c.PutToken(tid, token_hash(token), "ops", "admin", (), T0, 0)
    create = c.CreateTimers(T0, ((TimerSpec(id="t1", fire_at=T0 + 10),),))
    m.apply(put)
    m.apply(create)
    ledger.close()
    # After a restart PySyncObj re-applies the log after its snapshot: same indexes, same event seqs.
    m2 = Machine()
    again = open_ledger(tmp_path)
    again.attach(m2)
    try:
        m2.apply(put)
        m2.apply(create)
        m2.apply(c.Tick(T0 + 20))          # new: recorded
        kinds = [r["kind"] for r in records(lines_of(again))]
        assert kinds.count("token.created") == 1 and kinds.count("timer.created") == 1
        assert kinds.count("timer.fired") == 1 and kinds.count("ledger.opened") == 2
        verify_lines(lines_of(again), public_key(tmp_path))
    finally:
        again.close()


def test_a_full_queue_drops_and_says_how_many(tmp_path):
    ledger = open_ledger(tmp_path, queue_max=10)
    try:
        with ledger._cond:                 # the writer cannot take anything meanwhile
            for n in range(15):
                ledger.append("test.fact", {"n": n})
        recs = records(lines_of(ledger))
        dropped = [r for r in recs if r["kind"] == "ledger.dropped"]
        assert len(dropped) == 1 and dropped[0]["data"]["count"] >= 5
        assert len([r for r in recs if r["kind"] == "test.fact"]) <= 10
        verify_lines(lines_of(ledger), public_key(tmp_path))
    finally:
        ledger.close()


def test_unsigned_ledger_runs_but_does_not_verify(tmp_path, caplog):
    ledger = AuditLedger(tmp_path / "audit", "n1", key=None)
    try:
        ledger.append("test.fact", {})
        lines = lines_of(ledger)
    finally:
        ledger.close()
    assert "WITHOUT signing" in caplog.text
    assert json.loads(lines[-1])["sig"] is None
    with pytest.raises(VerifyError, match="not signed"):
        verify_lines(lines, public_key(tmp_path))


def test_denials_are_sampled_per_principal():
    got = []

    class Sink:
        def append(self, kind, data):
            got.append(data)

    now = [100.0]
    sample = DenialSampler(Sink(), per_second=3, clock=lambda: now[0])
    for _ in range(10):
        sample("/minoots.v1.Timers/CreateTimer", "token:a", grpc.StatusCode.PERMISSION_DENIED)
        sample("/minoots.v1.Timers/CreateTimer", None, grpc.StatusCode.UNAUTHENTICATED)
    assert [d["principal"] for d in got].count("token:a") == 3
    assert [d["principal"] for d in got].count("unauthenticated") == 3
    now[0] += 1
    sample("/minoots.v1.Timers/CreateTimer", "token:a", grpc.StatusCode.PERMISSION_DENIED)
    assert got[-1] == {"method": "/minoots.v1.Timers/CreateTimer", "principal": "token:a",
                       "code": "PERMISSION_DENIED", "left_out": 7}


def test_key_files_are_private(tmp_path):
    path = key_file(tmp_path)
    assert path.stat().st_mode & 0o077 == 0
    path.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        load_key(path)


def test_cli_verify_one_line_and_exit_code(filled, tmp_path, runner):
    ledger, lines, _ = filled
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join(lines) + b"\n")
    pub = chain.public_key_hex(load_key(key_file(tmp_path)))
    r = runner.invoke(main, ["audit", "verify", str(good), "--pubkey", pub])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok: node n1, records 1..")
    bad = tmp_path / "bad.jsonl"
    i = _record_index(lines, "token.created")
    bad.write_bytes(b"\n".join(lines[:i] + lines[i + 1:]) + b"\n")
    for args, code, text in (([str(bad), "--pubkey", pub], 1, "NOT VERIFIED: line"),
                             ([str(good), "--pubkey", "00" * 32], 1, "bad signature"),
                             ([str(good), "--pubkey", "nope"], 2, "64 hex digits"),
                             ([str(tmp_path / "none.jsonl"), "--pubkey", pub], 1, "cannot read")):
        r = runner.invoke(main, ["audit", "verify", *args])
        assert r.exit_code == code, (args, r.output)
        assert text in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["audit", "pubkey", "--key-file", str(key_file(tmp_path))])
    assert r.exit_code == 0 and r.output.strip() == pub


# ---------------------------------------------------------------- a real cluster


@pytest.mark.cluster
def test_cluster_ledger_exported_with_the_cli_verifies(real_cluster, tmp_path):
    nodes = cluster_grpc(real_cluster)
    env = dict(os.environ, MINOOTS_NODES=nodes[1])     # every node keeps its own chain: ask one

    def cli(*args, token=None):
        e = dict(env, MINOOTS_TOKEN=token) if token else env
        return subprocess.run([sys.executable, "-m", "minoots", "audit", *args], capture_output=True, text=True,
                              timeout=120, env=e)

    with minoots.Client(nodes, timeout=60) as client:
        token, info = client.create_token("audit-test", "writer", ["audit-t"])
        now = int(time.time() * 1000)
        client.create(fire_at=now + 300, id="audit-1", tenant="audit-t")
        client.create(fire_at=now + 600, id="audit-2", tenant="audit-t")
        # a batch: its events are one timer.events record (single creates: a record per event)
        client.create_many([{"fire_at": now + 700, "id": f"audit-b{i}", "tenant": "audit-t"} for i in range(3)])
        wait_for(lambda: client.get("audit-2", tenant="audit-t").state.name in ("FIRED", "SETTLED"),
                 "the timers to fire")
    # A denied request on the node we export (n2): the writer token names another tenant.
    with grpc.insecure_channel(nodes[1]) as ch:
        get = timers_pb2_grpc.TimersStub(ch).GetTimer

        def denied():
            try:
                get(timers_pb2.GetTimerRequest(tenant="other-tenant", id="x"), timeout=5,
                    metadata=(("authorization", f"Bearer {token}"),))
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.PERMISSION_DENIED
            return False
        wait_for(denied, "n2 to know the new token and refuse the other tenant")
        # An admin call that fails on n2: recorded there with its principal and status.
        with pytest.raises(grpc.RpcError) as refused:
            auth_pb2_grpc.AuthStub(ch).RevokeToken(auth_pb2.RevokeTokenRequest(id="0" * 16), timeout=30,
                                                   metadata=(("authorization", f"Bearer {real_cluster.admin_token()}"),))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND

    r = cli("pubkey")
    assert r.returncode == 0, r.stderr
    pub = r.stdout.strip()
    assert len(pub) == 64 and pub == chain.public_key_hex(load_key(real_cluster.audit_key_file))
    out = tmp_path / "audit.jsonl"

    def exported_all():
        r = cli("export", "--from", "1", "--out", str(out))
        assert r.returncode == 0, r.stderr
        kinds = {r["kind"] for r in records(out.read_text().splitlines())}
        return {"token.created", "timer.created", "timer.fired", "request.denied", "leader.seen",
                "member.grpc"} <= kinds
    wait_for(exported_all, "the facts to reach n2's ledger", timeout=30)
    assert "exported" in cli("export", "--from", "1", "--out", str(out)).stderr

    r = cli("verify", str(out), "--pubkey", pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: node n2")
    assert {json.loads(x)["node"] for x in out.read_text().splitlines()} == {"n2"}
    # Timer events come one record per apply (timer.events) and read back one by one.
    assert any(json.loads(x).get("kind") == "timer.events" for x in out.read_text().splitlines())
    recs = records(out.read_text().splitlines())
    made = next(x for x in recs if x.get("kind") == "token.created" and x["data"]["name"] == "audit-test")
    assert made["data"]["id"] == info.id and made["data"]["role"] == "writer"
    fired = {x["data"]["timer_id"] for x in recs if x.get("kind") == "timer.fired"}
    assert {"audit-1", "audit-2"} <= fired
    created = {x["data"]["timer_id"] for x in recs if x.get("kind") == "timer.created"}
    assert {"audit-1", "audit-2", "audit-b0", "audit-b1", "audit-b2"} <= created
    denied = [x for x in recs if x.get("kind") == "request.denied"]
    assert any(info.id in x["data"]["principal"] and x["data"]["code"] == "PERMISSION_DENIED" for x in denied)
    calls = [x["data"] for x in recs if x.get("kind") == "operator.call"]
    assert any(d["op"] == "audit.export" and d["code"] == "OK" for d in calls)
    assert any(d["op"] == "token.revoke" and d["code"] == "NOT_FOUND" and d["principal"] == "bootstrap-admin"
               for d in calls)

    # Tampered with (a record's data changed), the export no longer verifies: one line, exit 1.
    text = out.read_text().replace('"name":"audit-test"', '"name":"audit-tesT"')
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text)
    r = cli("verify", str(bad), "--pubkey", pub)
    assert r.returncode == 1 and "NOT VERIFIED" in r.stderr and "Traceback" not in r.stderr
    # A reader may not export the ledger.
    r = cli("export", "--from", "1", token=token)
    assert r.returncode == 1 and "PERMISSION_DENIED" in r.stderr
