"""One node's audit ledger: appended from listeners, written by its own thread, kept in LMDB.

What goes in (record kinds; the format is raft/audit/chain.py's):

* replicated facts, from the FSM's listeners, so every node records them in Raft log order:
  `token.created`, `token.revoked`, `token.refused` (a PutToken/RevokeToken the state
  machine refused), `quota.set`, `quota.cleared`, `retention.set` (and `quota.set_refused`, ...),
  `member.named`, `member.forgotten`, `member.grpc` (SetMemberName and SetMemberGrpc:
  membership changes carry the member's name after PySyncObj's own change), and every timer
  lifecycle event (created, armed, fired, settled, rescheduled, cancelled, purged, ...):
  one `timer.events` record per apply that emitted at least `BATCH_MIN` events (at most
  `EVENTS_PER_RECORD` events each; a bigger apply takes several), holding them as columns
  (chain.py); an apply with fewer gets one `timer.<event>` record per event, which costs
  less for so few (a single create or fire: two). A chain mixes both layouts. A node
  started with `batch_events=False` writes the first layout instead, one
  `timer.<event>` record per event; readers and the verifier read both (`chain.facts`).
  Token, quota and member records carry the Raft log `index`; timer events the kernel's
  `event_seq`. Security facts stay one record each.
* node-local facts, appended by the node that saw them: `request.denied` (sampled by the
  API: at most a few per second per principal, with a count of those left out),
  `operator.call` (snapshot exports and other admin/operator RPCs, with the principal and
  the outcome), `leader.seen` (the leader this node knows changed; polled every 0.25 s),
  `snapshot.loaded` (a snapshot replaced the state: at start-up, from the leader, or a
  restore), `ledger.opened` (with the public key, or the fact that it does not sign) and
  `ledger.dropped` (records lost to a full queue or a failed write: the chain stays intact
  and says how many are missing).

Side effects stay out of the apply path: the listeners only put a tuple on a bounded
queue (they run in PySyncObj's tick thread, under the machine lock); one writer thread
encodes, hashes, writes and signs. A full queue drops what does not fit and the next
record written says how much (`ledger.dropped`): the Raft log never waits for the ledger.

Replays: after a restart PySyncObj re-applies the log after its snapshot, so listeners see
facts again. The ledger keeps two watermarks with its records (the last Raft index of a
token/member record, the last kernel event seq) and skips what it already holds. Facts
lost with a crash before they were written come again with that replay, as long as the log
still has them. (A disaster-recovery restore of an older snapshot rewinds both counters:
facts below the watermarks are then not recorded again; `snapshot.loaded` says when.)

Storage: `<data-dir>/audit`, its own LMDB environment (key: seq as big-endian u64),
opened without fsync per commit and synced once a second, like the event store. Retention
and the checkpoint interval count facts, not records (a `timer.events` record counts its
events, any other record one), so batching changes neither the space kept nor how much a
checkpoint covers: at most `keep` facts plus up to one checkpoint interval; trimming deletes
records up to a checkpoint and keeps that checkpoint as the anchor, so what remains still
verifies. The `facts` table maps the running fact count after each batch record to its seq
(records before the first entry, e.g. those of an older node, count one each).
Checkpoints are signed at the first record that completes `checkpoint_every` facts since
the last one, after `checkpoint_seconds` with unsigned records, at export (the export ends
on it) and at close.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import logging
import struct
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Optional

import lmdb

from .. import commands as c
from . import chain

log = logging.getLogger("minoots.raft.audit")

__all__ = ["AuditLedger", "AUDIT_DIR", "AUDIT_KEEP", "AUDIT_KEY_FILE", "load_key", "write_key"]

AUDIT_DIR = "audit"
AUDIT_KEY_FILE = "audit.key"
AUDIT_KEEP = 1_000_000            # facts retained (newest), plus up to one checkpoint interval
AUDIT_MAP_SIZE = 4 << 30          # address space; the file grows as used
CHECKPOINT_EVERY = 1000           # facts between signed checkpoints
EVENTS_PER_RECORD = 4096          # timer events in one timer.events record at most
BATCH_MIN = 4                     # fewer events from one apply: one record each (cheaper than a batch)
CHECKPOINT_SECONDS = 60.0
QUEUE_MAX = 200_000               # facts waiting for the writer; beyond: dropped and counted
WRITE_BATCH = 4096                # facts written per LMDB transaction at most
TRIM_CHUNK = 4096                 # records deleted per transaction at most
SYNC_SECONDS = 1.0
LEADER_POLL_SECONDS = 0.25
READ_BATCH = 512

_U64 = struct.Struct(">Q")
_LAST_INDEX = b"last_index"
_LAST_EVENT = b"last_event_seq"
_ANCHOR = b"anchor"

_EVENTS, _REPLICATED, _LOCAL, _CALL = range(4)


def load_key(path):
    """The Ed25519 private key of an audit key file (0600, like the cluster secret)."""
    from .. import peer_secret

    return chain.private_key_from_text(peer_secret.load(Path(path)).decode())


def write_key(path) -> None:
    """Write a new audit key file (0600; never over an existing file: peer_secret.SecretError)."""
    from .. import peer_secret

    peer_secret.generate(Path(path), chain.new_private_key().encode())


def _k(seq: int) -> bytes:
    return _U64.pack(seq)


class AuditLedger:
    """A node's chain. Appenders: any thread (queue only). Writer: its own thread. Readers: any thread."""

    def __init__(self, path, node_id: str, *, key=None, keep: int = AUDIT_KEEP,
                 checkpoint_every: int = CHECKPOINT_EVERY, checkpoint_seconds: float = CHECKPOINT_SECONDS,
                 queue_max: int = QUEUE_MAX, map_size: int = AUDIT_MAP_SIZE,
                 clock: Optional[Callable[[], int]] = None, batch_events: bool = True) -> None:
        if keep < 1 or checkpoint_every < 1:
            raise ValueError("audit keep and checkpoint interval must be at least 1")
        self.node = node_id
        self.key = key
        self.public_key = chain.public_key_hex(key) if key is not None else None
        self.keep = keep
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.queue_max = queue_max
        self.batch_events = batch_events
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=4, subdir=True, sync=False,
                              metasync=False, readahead=False)
        self._records = self._env.open_db(b"records")
        self._checkpoints = self._env.open_db(b"checkpoints")
        self._meta = self._env.open_db(b"meta")
        self._facts = self._env.open_db(b"facts")        # running fact count -> seq, of batch records
        with self._env.begin() as txn:
            self._last_index = self._meta_int(txn, _LAST_INDEX)
            self._last_event = self._meta_int(txn, _LAST_EVENT)
            anchor = txn.get(_ANCHOR, db=self._meta)
            self._anchor = bytes(anchor) if anchor is not None else None
            cur = txn.cursor(db=self._records)
            if cur.last():
                self.head_seq = _U64.unpack(cur.key())[0]
                self.head_hash = chain.digest(bytes(cur.value()))
            elif self._anchor is not None:
                a = chain_obj(self._anchor)
                self.head_seq, self.head_hash = a["seq"], a["hash"]
            else:
                self.head_seq, self.head_hash = 0, chain.GENESIS
            cur = txn.cursor(db=self._checkpoints)
            self.signed_seq = _U64.unpack(cur.key())[0] if cur.last() else 0
            cur = txn.cursor(db=self._facts)
            # facts - seq: what the batch records up to the head hold beyond one fact each
            self._extra = _U64.unpack(cur.key())[0] - _U64.unpack(cur.value())[0] if cur.last() else 0
        self._unsigned_facts = self.head_seq - self.signed_seq     # (batch records among them count one)
        self._last_checkpoint_at = time.monotonic()
        self._q: collections.deque = collections.deque()
        self._pending = 0
        self._dropped = 0
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._machine = None
        self._leader_seen = None
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        self.append("ledger.opened", {"signing": key is not None, "public_key": self.public_key,
                                      "head_seq": self.head_seq})
        if key is None:
            log.warning("audit ledger runs WITHOUT signing: no --audit-key-file given; its checkpoints "
                        "are unsigned and `minoots audit verify` refuses them", extra={"path": str(path)})

    def _meta_int(self, txn, name: bytes) -> int:
        raw = txn.get(name, db=self._meta)
        return _U64.unpack(raw)[0] if raw is not None else 0

    # ---- appending (any thread; never blocks, never raises) -----------------------

    def _put(self, item: tuple, n: int = 1) -> None:
        with self._cond:
            if self._closing:
                return
            if self._pending + n > self.queue_max:
                if not self._dropped:
                    log.error("audit queue full: dropping facts (the ledger records how many)",
                              extra={"pending": self._pending})
                self._dropped += n
                return
            self._q.append(item)
            self._pending += n
            self._cond.notify()

    def append(self, kind: str, data: dict) -> None:
        """A node-local fact."""
        self._put((_LOCAL, kind, data, self._clock()))

    def attach(self, machine) -> None:
        """Node machine hook (before the tick thread starts): listen to every apply."""
        self._machine = machine
        machine.event_listeners.append(self._on_events)
        machine.result_listeners.append(self._on_result)
        machine.snapshot_listeners.append(self._on_snapshot)

    def _on_events(self, events) -> None:
        if events:
            self._put((_EVENTS, tuple(events), self._clock()), len(events))

    def _on_result(self, command, result) -> None:
        fact = _replicated_fact(command, result)
        if fact is None:
            return
        # PySyncObj counts an entry as applied once its apply returned: this one is the next.
        applied = getattr(self._machine, "raftLastApplied", None)
        index = applied + 1 if isinstance(applied, int) else None
        self._put((_REPLICATED, index, fact[0], fact[1], self._clock()))

    def _on_snapshot(self, seq: int) -> None:
        self.append("snapshot.loaded", {"event_seq": seq})

    # ---- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            with self._cond:
                if not self._q and not self._closing:
                    self._cond.wait(LEADER_POLL_SECONDS)
                facts, calls = [], []
                n = 0
                while self._q and n < WRITE_BATCH:
                    item = self._q.popleft()
                    if item[0] == _CALL:
                        calls.append(item)       # answered after the facts queued before it
                        continue
                    facts.append(item)
                    n += _size(item)
                self._pending -= n
                dropped, self._dropped = self._dropped, 0
                closing = self._closing and not self._q
            try:
                self._poll_leader()
                if facts or dropped:
                    self._write(facts, dropped)
            except Exception as exc:
                self.write_errors += 1
                log.error("audit write failed; the next record counts what was lost", extra={"error": repr(exc)})
                with self._cond:
                    self._dropped += dropped + sum(_size(i) for i in facts)
            for _, fn, fut in calls:
                try:
                    fut.set_result(fn())
                except Exception as exc:
                    fut.set_exception(exc)
            try:
                self._maybe_checkpoint()
                self._trim()
                if time.monotonic() - last_sync >= SYNC_SECONDS or closing:
                    self._env.sync(True)
                    last_sync = time.monotonic()
            except Exception as exc:
                self.write_errors += 1
                log.error("audit checkpoint, trim or sync failed", extra={"error": repr(exc)})
            if closing:
                return

    def _records_of(self, facts: list):
        """(kind, data, at_ms, facts held) of each record to write for what is not already held
        (see the module doc on replays). kind None: one timer event, data the Event; kind
        TIMER_EVENTS: data the events."""
        for item in facts:
            tag = item[0]
            if tag == _EVENTS:
                _, events, at = item
                last = self._last_event
                if events[-1].seq <= last:        # a replay of what is held (events come in seq order)
                    continue
                if events[0].seq <= last:
                    events = [e for e in events if e.seq > last]
                self._last_event = events[-1].seq
                if not self.batch_events or len(events) < BATCH_MIN:
                    for e in events:
                        yield None, e, at, 1       # a per-event record (chain.timer_record)
                    continue
                for lo in range(0, len(events), EVENTS_PER_RECORD):
                    part = events[lo:lo + EVENTS_PER_RECORD]
                    yield chain.TIMER_EVENTS, part, at, len(part)     # (chain.timer_events_record)
            elif tag == _REPLICATED:
                _, index, kind, data, at = item
                if index is None:                 # no log index known (a machine without Raft)
                    yield kind, data, at, 1
                elif index > self._last_index:
                    self._last_index = index
                    yield kind, {"index": index, **data}, at, 1
            else:
                yield item[1], item[2], item[3], 1

    def _write(self, facts: list, dropped: int) -> None:
        seq, prev, signed = self.head_seq, self.head_hash, self.signed_seq
        extra, unsigned = self._extra, self._unsigned_facts
        every = self.checkpoint_every
        with self._env.begin(write=True) as txn:
            put = txn.put
            records = self._records_of(facts)
            if dropped:
                records = itertools.chain([("ledger.dropped", {"count": dropped}, self._clock(), 1)], records)
            for kind, data, at, n in records:
                seq += 1
                if kind is None:
                    raw = chain.timer_record(seq, prev, at, self.node, data)
                elif kind == chain.TIMER_EVENTS:
                    raw = chain.timer_events_record(seq, prev, at, self.node, data)
                else:
                    raw = chain.make_record(seq, prev, at, self.node, kind, data)
                put(_k(seq), raw, db=self._records, append=True)
                prev = chain.digest(raw)
                if kind == chain.TIMER_EVENTS:  # (only these hold more than one fact)
                    extra += n - 1
                    put(_k(seq + extra), _k(seq), db=self._facts, append=True)
                unsigned += n
                if unsigned >= every:           # every N facts, in the same transaction
                    put(_k(seq), chain.make_checkpoint(self.node, seq, prev, at, "every", self.key),
                        db=self._checkpoints)
                    signed, unsigned = seq, 0
            put(_LAST_INDEX, _U64.pack(self._last_index), db=self._meta)
            put(_LAST_EVENT, _U64.pack(self._last_event), db=self._meta)
        self.head_seq, self.head_hash = seq, prev
        self._extra, self._unsigned_facts = extra, unsigned
        if signed != self.signed_seq:
            self.signed_seq = signed
            self._last_checkpoint_at = time.monotonic()

    def _maybe_checkpoint(self) -> None:
        if self.head_seq > self.signed_seq and time.monotonic() - self._last_checkpoint_at >= self.checkpoint_seconds:
            self._checkpoint("idle")

    def _checkpoint(self, reason: str) -> int:
        """Sign (seq, hash) of the head (writer thread); returns the seq it covers."""
        if self.head_seq == 0 or self.head_seq == self.signed_seq:
            return self.signed_seq
        raw = chain.make_checkpoint(self.node, self.head_seq, self.head_hash, self._clock(), reason, self.key)
        with self._env.begin(write=True) as txn:
            txn.put(_k(self.head_seq), raw, db=self._checkpoints)
        self.signed_seq = self.head_seq
        self._unsigned_facts = 0
        self._last_checkpoint_at = time.monotonic()
        return self.signed_seq

    def _trim_limit(self, txn) -> int:
        """The last record that may go: the newest one after which `keep` facts remain."""
        target = self.head_seq + self._extra - self.keep      # facts that may go
        if target <= 0:
            return 0
        cur = txn.cursor(db=self._facts)
        if cur.set_range(_k(target + 1)):       # the first batch record that must stay (in part)
            stop = _U64.unpack(cur.value())[0] - 1
            found = cur.prev()
        else:
            stop = self.head_seq
            found = cur.last()
        extra = _U64.unpack(cur.key())[0] - _U64.unpack(cur.value())[0] if found else 0
        return min(stop, target - extra)       # records between batch records count one each

    def _trim(self) -> None:
        """Drop the oldest records down to `keep` facts, up to a checkpoint, which becomes the anchor."""
        anchor_seq = chain_obj(self._anchor)["seq"] if self._anchor is not None else 0
        if self.head_seq + self._extra - self.keep <= anchor_seq:
            return                              # (facts >= seq: nothing can go)
        with self._env.begin() as txn:
            limit = self._trim_limit(txn)
            if limit <= anchor_seq:
                return
            cur = txn.cursor(db=self._checkpoints)
            found = cur.prev() if cur.set_range(_k(limit + 1)) else cur.last()
            if not found:
                return
            cp_seq, cp = _U64.unpack(cur.key())[0], bytes(cur.value())
        if cp_seq <= anchor_seq:
            return
        # The anchor moves first: a reader never sees records without a checkpoint before them.
        with self._env.begin(write=True) as txn:
            txn.put(_ANCHOR, cp, db=self._meta)
        self._anchor = cp
        start = anchor_seq + 1
        while start <= cp_seq:
            stop = min(cp_seq, start + TRIM_CHUNK - 1)
            with self._env.begin(write=True) as txn:
                _delete_range(txn, self._records, start, stop)
                _delete_range(txn, self._checkpoints, 0 if start == anchor_seq + 1 else start, min(stop, cp_seq - 1))
            start = stop + 1
        with self._env.begin(write=True) as txn:
            _forget_facts(txn, self._facts, cp_seq)

    def _poll_leader(self) -> None:
        m = self._machine
        if m is None:
            return
        try:
            addr = m.leader_address()
            term = m.raftCurrentTerm
        except Exception:
            return
        if addr == self._leader_seen:
            return
        self._leader_seen = addr
        nid = {a: n for n, a in m.names.items()}.get(addr, addr) if addr else None
        self.append("leader.seen", {"leader": nid, "address": addr, "term": term})

    # ---- requests to the writer -------------------------------------------------------

    def _call(self, fn: Callable, timeout: float = 10.0):
        fut: Future = Future()
        with self._cond:
            if self._closing:
                raise RuntimeError("the audit ledger is closed")
            self._q.append((_CALL, fn, fut))
            self._cond.notify()
        return fut.result(timeout)

    def checkpoint_now(self, reason: str = "export", timeout: float = 10.0) -> int:
        """Wait until everything queued so far is written, sign the head; returns its seq."""
        return self._call(lambda: self._checkpoint(reason), timeout)

    # ---- reading (any thread) -----------------------------------------------------------

    @property
    def first_seq(self) -> int:
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._records)
            return _U64.unpack(cur.key())[0] if cur.first() else 0

    def export(self, from_seq: int = 1, to_seq: Optional[int] = None, batch: int = READ_BATCH):
        """Lines (canonical bytes) from the signed anchor before `from_seq` to the checkpoint at
        `to_seq` (default: the head, signed now), in batches. Raises LookupError when records it
        needs were trimmed while it read."""
        if to_seq is None:
            to_seq = self.checkpoint_now("export")
        with self._env.begin() as txn:
            start_line, start = self._start(txn, max(1, from_seq))
        if start_line is not None:
            yield [start_line]
        seq = start
        while seq <= to_seq:
            out = []
            with self._env.begin() as txn:
                rec = txn.cursor(db=self._records)
                cps = self._checkpoints
                if not rec.set_key(_k(seq)):
                    raise LookupError(f"audit record {seq} was trimmed during the export; export again")
                for key, value in rec:
                    s = _U64.unpack(key)[0]
                    if s != seq or s > to_seq or len(out) >= batch:
                        break
                    out.append(bytes(value))
                    cp = txn.get(key, db=cps)
                    if cp is not None:
                        out.append(bytes(cp))
                    seq += 1
            if not out:
                raise LookupError(f"audit record {seq} is missing; export again")
            yield out

    def _start(self, txn, from_seq: int):
        """(the checkpoint line to start from or None for the genesis, the first record's seq)."""
        anchor = self._anchor                 # read once: the writer may move it meanwhile
        anchor_seq = chain_obj(anchor)["seq"] if anchor is not None else 0
        if from_seq <= anchor_seq + 1:
            return anchor, anchor_seq + 1
        cur = txn.cursor(db=self._checkpoints)
        if cur.set_range(_k(from_seq)):
            found = cur.prev()
        else:
            found = cur.last()
        if found:
            s = _U64.unpack(cur.key())[0]
            if s > anchor_seq:
                return bytes(cur.value()), s + 1
        return anchor, anchor_seq + 1

    # ---- closing -------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, sign a last checkpoint, sync and close (idempotent)."""
        if self._closed:
            return
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("audit writer did not finish in time; the ledger is left open", extra={"timeout": timeout})
            return
        try:
            self._checkpoint("shutdown")
        except Exception as exc:
            log.error("audit shutdown checkpoint failed", extra={"error": repr(exc)})
        self._env.sync(True)
        self._env.close()
        self._closed = True
        log.info("audit ledger closed", extra={"head_seq": self.head_seq, "signed_seq": self.signed_seq})


def chain_obj(raw: bytes) -> dict:
    return json.loads(raw)


def _size(item: tuple) -> int:
    return len(item[1]) if item[0] == _EVENTS else 1


def _forget_facts(txn, db, seq: int) -> None:
    """Delete the fact counts of batch records trimmed up to `seq`, all but the last of them
    (it still counts for the records kept up to the next batch record)."""
    cur = txn.cursor(db=db)
    if not cur.first():
        return
    while cur.next() and _U64.unpack(cur.value())[0] <= seq:
        cur.prev()
        cur.delete()                # the cursor is then on the entry just checked


def _delete_range(txn, db, lo: int, hi: int) -> None:
    """Delete the keys in [lo, hi]."""
    cur = txn.cursor(db=db)
    if not cur.set_range(_k(lo)):
        return
    while True:
        key = cur.key()
        if not key or _U64.unpack(key)[0] > hi or not cur.delete():
            return


#: Replicated settings recorded field by field, by command kind (raft/commands.py).
_SETTINGS = {"set_quota": "quota.set", "clear_quota": "quota.cleared", "set_retention": "retention.set"}


def _replicated_fact(command, result):
    """(kind, data) of a token or member command, or None for any other command."""
    failed = isinstance(result, Exception)
    if isinstance(command, (c.PutToken, c.RevokeToken)):
        if failed:
            return "token.refused", {"op": command.kind, "id": command.token_id,
                                     "error": str(getattr(result, "code", type(result).__name__)),
                                     "reason": str(result)}
        data = {"id": result.id, "name": result.name, "role": result.role}
        if isinstance(command, c.RevokeToken):
            return "token.revoked", data
        return "token.created", {**data, "tenants": list(result.tenants), "expires_at_ms": result.expires_at_ms}
    kind = _SETTINGS.get(getattr(command, "kind", None))
    if kind is not None:                    # quotas: the command's fields are the change
        if failed:
            return kind + "_refused", {"error": str(getattr(result, "code", type(result).__name__)),
                                       "reason": str(result)}
        return kind, {f.name: getattr(command, f.name) for f in dataclasses.fields(command)}
    if failed:
        return None
    if isinstance(command, c.SetMemberName):
        if command.address is None:
            return "member.forgotten", {"node_id": command.node_id}
        return "member.named", {"node_id": command.node_id, "address": command.address}
    if isinstance(command, c.SetMemberGrpc):
        return "member.grpc", {"node_id": command.node_id, "address": command.address}
    return None
