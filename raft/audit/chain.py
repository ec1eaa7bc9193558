"""The audit ledger's format: canonical records, their hash chain, signed checkpoints, and
the offline verification of an exported chain. Pure functions: no LMDB, no threads, no clock.

Record (one line of an export; the bytes stored are exactly these):

    {"at_ms":1764500000123,"data":{...},"kind":"token.created","node":"n1",
     "prev":"<64 hex>","seq":17,"type":"record","v":1}

Canonical encoding: JSON with keys sorted, no whitespace (separators "," and ":"),
ASCII only (other characters escaped as \\uXXXX, lowercase hex, as Python's
`json.dumps(obj, sort_keys=True, separators=(",", ":"))` writes them), integers only (no
floats), null for a missing value. A record's hash is SHA-256 of its canonical bytes;
`prev` is the hash of record seq-1, or 64 zeros for seq 1 (the genesis). `seq` counts
records 1, 2, 3, ... with no gap, so a record's seq is also the number of records up to and
including it. `at_ms` is the appending node's clock; `data` depends on `kind` (the kinds are
listed in raft/audit/ledger.py).

Timer lifecycle events come in two layouts, and a chain may hold both (a ledger written by
an older node and continued by a newer one): one record per event, kind `timer.<event>`
with data {"event_seq", "tenant", "timer_id", "at_ms", "revision", "state", "fire_at",
"fire_id"} (the first layout), or one record per apply batch, kind `timer.events`, whose
data holds the batch's events as columns in event order, and their count. A column is a
list of one value per event; or a single value (not a list) when every event has that
value; or {"cycle": [a, b]} when the values repeat a, b, a, b, ... (event i has
cycle[i % len(cycle)]; a created/armed or fired/settled pair per timer). `event_seq` as a
single integer is the first of consecutive seqs (the seq of event i is first + i). The
events of a create of three timers:

    {"at_ms":1700000000000,"count":6,"event_seq":1,"fire_at":[1700000000010,1700000000010,
     1700000000010,1700000000010,1700000000500,1700000000500],"fire_id":null,
     "kind":{"cycle":["created","armed"]},"revision":{"cycle":[1,2]},
     "state":{"cycle":["scheduled","armed"]},"tenant":"a","timer_id":["p1","p1","p2","p2","p3","p3"]}

`facts(record)` reads either as the same per-event (kind, data) pairs. The hash, the
chain and the checkpoints do not depend on the layout: a changed, dropped or reordered
event inside a batch changes its record's hash like any other change.

Checkpoint (stored beside the records; in an export it follows the record it covers):

    {"at_ms":...,"hash":"<hash of record seq>","key":"<64 hex public key>","node":"n1",
     "reason":"every","seq":1000,"sig":"<128 hex>","type":"checkpoint","v":1}

`sig` is the Ed25519 signature, by the cluster's audit key, of the checkpoint's canonical
bytes without the "sig" key. It vouches for record `seq` and, through the chain, for every
record before it: changing, dropping, inserting or reordering any of them changes a hash
the checkpoint pins. When old records are trimmed, the checkpoint at the trim point stays
as the anchor: verification of what remains starts from its signed (seq, hash). A node
without a key writes checkpoints with "key" and "sig" null; `verify` refuses those.

Each node's chain is its own: replicated facts (token changes, member names, timer
lifecycle events) appear in every node's chain in Raft log order, interleaved with what
only that node saw (denied requests, operator calls, leaders seen), so two nodes' chains
differ and each is verified on its own with the cluster's one public key.
"""
from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring_ascii as _quote
from dataclasses import dataclass, field
from typing import Iterable, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat, NoEncryption

__all__ = ["FORMAT_VERSION", "GENESIS", "TIMER_EVENTS", "EVENT_FIELDS", "canonical", "digest", "make_record",
           "make_checkpoint", "timer_record", "timer_event_data", "timer_event_kind", "timer_events_data",
           "timer_events_record",
           "timer_events", "facts",
           "new_private_key", "private_key_from_text", "public_key_hex", "parse_public_key",
           "check_signature", "VerifyError", "Verified", "verify_lines"]

FORMAT_VERSION = 1
GENESIS = "0" * 64           # the `prev` of record 1
ALGORITHM = "ed25519"


def canonical(obj: dict) -> bytes:
    """The one byte encoding of a record or checkpoint (see the module doc)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("utf-8")


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def make_record(seq: int, prev: str, at_ms: int, node: str, kind: str, data: dict) -> bytes:
    return canonical({"v": FORMAT_VERSION, "type": "record", "seq": seq, "prev": prev, "at_ms": at_ms,
                      "node": node, "kind": kind, "data": data})


def timer_event_data(e) -> dict:
    """The `data` of a `timer.<kind>` record: one kernel lifecycle event (kernel/timer.py Event)."""
    return {"event_seq": e.seq, "tenant": e.tenant, "timer_id": e.timer_id, "at_ms": e.at_ms,
            "revision": e.revision, "state": _lower(e.state, _STATES), "fire_at": e.fire_at, "fire_id": e.fire_id}


def timer_event_kind(e) -> str:
    return "timer." + _lower(e.kind, _KINDS)


_KINDS: dict = {}
_STATES: dict = {}     # apart: EventKind.CREATED == TimerState.SCHEDULED == 1 (IntEnums)


def _lower(enum, cache: dict) -> str:
    name = cache.get(enum)
    if name is None:
        name = cache[enum] = enum.name.lower()
    return name


_TIMER_RECORD = ('{"at_ms":%d,"data":{"at_ms":%d,"event_seq":%d,"fire_at":%d,"fire_id":%s,"revision":%d,'
                 '"state":"%s","tenant":%s,"timer_id":%s},"kind":"timer.%s","node":%s,"prev":"%s","seq":%d,'
                 '"type":"record","v":1}')


def timer_record(seq: int, prev: str, at_ms: int, node: str, e) -> bytes:
    """make_record(seq, prev, at_ms, node, timer_event_kind(e), timer_event_data(e)), byte for byte
    (a test holds them equal), five times faster: every lifecycle event of every timer is one."""
    return (_TIMER_RECORD % (at_ms, e.at_ms, e.seq, e.fire_at, "null" if e.fire_id is None else int(e.fire_id),
                             e.revision, _lower(e.state, _STATES), _quote(e.tenant), _quote(e.timer_id),
                             _lower(e.kind, _KINDS),
                             _quote(node), prev, seq)).encode("ascii")


TIMER_EVENTS = "timer.events"     # the kind of a batch record
#: The fields of one timer event, as the per-event layout's data holds them (plus "kind").
EVENT_FIELDS = ("event_seq", "kind", "tenant", "timer_id", "at_ms", "revision", "state", "fire_at", "fire_id")


class _Names(dict):
    """An enum's lowercase names by value, filled on first use (kernel enums, not imported here)."""

    def __missing__(self, enum):
        name = self[enum] = enum.name.lower()
        return name


_KIND_NAMES = _Names()
_STATE_NAMES = _Names()


def _shorten(col, n: int):
    """("one", v) when every event has v, ("cycle", (a, b)) when they go a, b, a, b, ...
    (at least 5 events), else ("list", col). C-level count and compare: no step per event."""
    first = col[0]
    if col.count(first) == n:
        return "one", first
    if n > 4 and col[2:] == col[:-2]:
        return "cycle", (first, col[1])
    return "list", col


def _columns(events):
    """(n, the event_seq value, [(name, form, value)] in key order) of kernel events in seq order."""
    cols = tuple(zip(*events))
    n = len(events)
    seq = cols[0]
    return n, (seq[0] if seq[-1] - seq[0] == n - 1 else seq), [(name, *_shorten(cols[i], n)) for name, i in _COLUMNS]


#: (name, index in Event), in the canonical (sorted) key order of the data
_COLUMNS = (("at_ms", 4), ("fire_at", 7), ("fire_id", 8), ("kind", 1), ("revision", 5), ("state", 6),
            ("tenant", 2), ("timer_id", 3))
_NAMED = {"kind": _KIND_NAMES, "state": _STATE_NAMES}


def timer_events_data(events) -> dict:
    """The `data` of a `timer.events` record: kernel events (kernel/timer.py Event, in seq
    order) as columns, each shortened when it repeats (see the module doc). The reference
    for timer_events_record, which writes the same bytes faster."""
    n, seq, cols = _columns(events)
    out = {"count": n, "event_seq": seq}
    for name, form, v in cols:
        names = _NAMED.get(name)
        if names is not None:
            v = names[v] if form == "one" else [names[x] for x in v]
        out[name] = {"cycle": list(v)} if form == "cycle" else v
    return out


class _Quoted(_Names):
    def __missing__(self, enum):
        name = self[enum] = _quote(enum.name.lower())
        return name


def _int_json(v) -> str:
    return "null" if v is None else int.__repr__(v)


def _ints_json(col) -> str:
    try:
        return ",".join(map(int.__repr__, col))
    except TypeError:               # a null among them (fire_id)
        return ",".join(map(_int_json, col))


_QUOTED = {"kind": _Quoted(), "state": _Quoted(), "tenant": None, "timer_id": None}


def timer_events_record(seq: int, prev: str, at_ms: int, node: str, events) -> bytes:
    """make_record(seq, prev, at_ms, node, TIMER_EVENTS, timer_events_data(events)), byte for
    byte (a property test holds them equal), with C-level joins of the columns instead of
    the JSON encoder's per-call setup: small batches cost little more than one event."""
    n, first, cols = _columns(events)
    parts = ['"count":%d,"event_seq":%s' % (n, first if type(first) is int else "[" + _ints_json(first) + "]")]
    for name, form, v in cols:
        if name in _QUOTED:
            q = _QUOTED[name]
            one = q.__getitem__ if q is not None else _quote
            if form == "list":
                text = "[" + ",".join(map(one, v)) + "]"
            else:
                text = one(v) if form == "one" else '{"cycle":[%s,%s]}' % (one(v[0]), one(v[1]))
        elif form == "list":
            text = "[" + _ints_json(v) + "]"
        else:
            text = _int_json(v) if form == "one" else '{"cycle":[%s,%s]}' % (_int_json(v[0]), _int_json(v[1]))
        parts.append('"%s":%s' % (name, text))
    # "count" and "event_seq" sort between "at_ms" and "fire_at"
    data = parts[1] + "," + parts[0] + "," + ",".join(parts[2:])
    return ('{"at_ms":%d,"data":{%s},"kind":"timer.events","node":%s,"prev":"%s","seq":%d,"type":"record","v":1}'
            % (at_ms, data, _quote(node), prev, seq)).encode("ascii")


def timer_events(data) -> list:
    """The events of a `timer.events` record's data as (kind, data) pairs, each exactly what
    the per-event layout's record holds (kind "timer.<event>"). ValueError when the columns
    are not well formed (missing, of another length, of the wrong types, seqs not increasing)."""
    if not isinstance(data, dict) or set(data) != {"count", *EVENT_FIELDS}:
        raise ValueError("a timer.events record holds the columns count, " + ", ".join(EVENT_FIELDS))
    n = data["count"]
    if type(n) is not int or n < 1:
        raise ValueError("a timer.events record's count is a positive integer")
    cols = []
    for name in EVENT_FIELDS:
        col = data[name]
        if isinstance(col, dict):               # {"cycle": [a, b, ...]}: event i has cycle[i % len]
            cycle = col.get("cycle")
            if set(col) != {"cycle"} or not isinstance(cycle, list) or not 1 < len(cycle) < n:
                raise ValueError(f"the {name} column of a timer.events record is a list, a value or a cycle")
            col = (cycle * (n // len(cycle) + 1))[:n]
        elif not isinstance(col, list):
            col = [col] * n                     # one value for every event
        elif len(col) != n:
            raise ValueError(f"the {name} column of a timer.events record does not hold its {n} events")
        cols.append(col)
    seqs = data["event_seq"]
    if type(seqs) is int:
        seqs = cols[0] = list(range(seqs, seqs + n))
    if any(type(x) is not int for x in seqs) or any(a >= b for a, b in zip(seqs, seqs[1:])):
        raise ValueError("a timer.events record's event_seq column increases")
    if any(type(x) is not str for x in cols[1]):
        raise ValueError("a timer.events record's kind column holds names")
    out = []
    for row in zip(*cols):
        d = dict(zip(EVENT_FIELDS, row))
        out.append(("timer." + d.pop("kind"), d))
    return out


def facts(record: dict) -> list:
    """The facts of one parsed record as (kind, data) pairs: the events of a `timer.events`
    record one by one, any other record as itself. Readers use this so that they read
    per-event and batched ledgers alike."""
    if record.get("kind") == TIMER_EVENTS:
        return timer_events(record.get("data"))
    return [(record.get("kind"), record.get("data"))]


def make_checkpoint(node: str, seq: int, hash_: str, at_ms: int, reason: str,
                    key: Optional[Ed25519PrivateKey]) -> bytes:
    body = {"v": FORMAT_VERSION, "type": "checkpoint", "node": node, "seq": seq, "hash": hash_,
            "at_ms": at_ms, "reason": reason, "key": public_key_hex(key) if key is not None else None}
    body["sig"] = key.sign(canonical(body)).hex() if key is not None else None
    return canonical(body)


# ---- keys -----------------------------------------------------------------------


def new_private_key() -> str:
    """A new Ed25519 private key as the text of a key file (hex of the raw 32 bytes)."""
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return raw.hex()


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    try:
        raw = bytes.fromhex(text.strip())
        if len(raw) != 32:
            raise ValueError
        return Ed25519PrivateKey.from_private_bytes(raw)
    except ValueError:
        raise ValueError("an audit key file holds 64 hex digits (an Ed25519 private key)") from None


def public_key_hex(key) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key as `minoots audit pubkey` prints it: 64 hex digits (an "ed25519:" prefix is allowed)."""
    t = text.strip()
    if t.lower().startswith(ALGORITHM + ":"):
        t = t[len(ALGORITHM) + 1:]
    try:
        raw = bytes.fromhex(t)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValueError("a public key is 64 hex digits (as `minoots audit pubkey` prints it)") from None


def check_signature(cp: dict, public_key: Ed25519PublicKey) -> bool:
    sig = cp.get("sig")
    if not isinstance(sig, str):
        return False
    body = {k: v for k, v in cp.items() if k != "sig"}
    try:
        public_key.verify(bytes.fromhex(sig), canonical(body))
        return True
    except (InvalidSignature, ValueError):
        return False


# ---- verification -----------------------------------------------------------------


class VerifyError(Exception):
    """The chain does not verify; the message says where and why, in one line."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass
class Verified:
    node: str
    first_seq: int           # first record in the file (0: none)
    last_seq: int            # last record, covered by a signed checkpoint
    records: int
    checkpoints: int
    anchor: str              # "genesis" or "checkpoint <seq>"
    kinds: dict = field(default_factory=dict)   # facts by kind (a timer.events record's events one by one)

    def summary(self) -> str:
        return (f"ok: node {self.node}, records {self.first_seq}..{self.last_seq} ({self.records}), "
                f"{self.checkpoints} signed checkpoint(s), chain from {self.anchor}")


_RECORD_KEYS = {"v", "type", "seq", "prev", "at_ms", "node", "kind", "data"}
_CHECKPOINT_KEYS = {"v", "type", "node", "seq", "hash", "at_ms", "reason", "key", "sig"}


def _int(obj: dict, name: str, line: int) -> int:
    v = obj.get(name)
    if type(v) is not int or v < 0:
        raise VerifyError(line, f"{obj.get('type')} field {name!r} is not a non-negative integer")
    return v


def verify_lines(lines: Iterable, public_key: Ed25519PublicKey) -> Verified:
    """Verify an exported chain (JSON lines, str or bytes); raises VerifyError on the first fault.

    Passes only when: the first line is a checkpoint signed by `public_key` (the anchor) or
    record 1 (chained to the genesis); every record has the next seq and the previous
    record's hash as its `prev`; every checkpoint is signed by `public_key` and pins the
    record just before it; and the last record is pinned by a checkpoint.
    """
    node = None
    expect_seq = None        # the seq the next record must have
    head_hash = None         # hash of the last record (or the anchor's)
    first = last = 0
    n_records = n_checkpoints = 0
    anchor = None
    signed_to = 0            # the last record pinned by a signed checkpoint
    kinds: dict = {}
    for i, raw in enumerate(lines, 1):
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise VerifyError(i, "not UTF-8") from None
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            raise VerifyError(i, "not a JSON object") from None
        if not isinstance(obj, dict) or obj.get("v") != FORMAT_VERSION:
            raise VerifyError(i, f"not an audit record of format version {FORMAT_VERSION}")
        kind = obj.get("type")
        seq = _int(obj, "seq", i)
        if node is None:
            node = obj.get("node")
        elif obj.get("node") != node:
            raise VerifyError(i, f"{kind} {seq} is from node {obj.get('node')!r}, the chain is node {node!r}'s")
        if kind == "checkpoint":
            if set(obj) != _CHECKPOINT_KEYS:
                raise VerifyError(i, f"checkpoint {seq} has fields {sorted(obj)}")
            if obj.get("sig") is None:
                raise VerifyError(i, f"checkpoint {seq} is not signed (the node ran without an audit key)")
            if not check_signature(obj, public_key):
                raise VerifyError(i, f"checkpoint {seq}: bad signature (altered, or not signed by this public key)")
            if expect_seq is None:                       # the anchor
                expect_seq, head_hash, anchor = seq + 1, obj["hash"], f"checkpoint {seq}"
            elif seq != expect_seq - 1:
                raise VerifyError(i, f"checkpoint {seq} is out of place (it follows record {expect_seq - 1})")
            elif obj["hash"] != head_hash:
                raise VerifyError(i, f"checkpoint {seq} does not match record {seq}: a record up to {seq} "
                                     "was changed")
            n_checkpoints += 1
            signed_to = seq
        elif kind == "record":
            if set(obj) != _RECORD_KEYS:
                raise VerifyError(i, f"record {seq} has fields {sorted(obj)}")
            if expect_seq is None:
                if seq != 1:
                    raise VerifyError(i, f"the chain starts at record {seq} without a signed checkpoint before it "
                                         "to anchor it (export with a lower --from, or keep the export's first line)")
                expect_seq, head_hash, anchor = 1, GENESIS, "genesis"
            if seq > expect_seq:
                raise VerifyError(i, f"record {expect_seq} is missing (next is {seq}): a record was dropped or moved")
            if seq < expect_seq:
                raise VerifyError(i, f"record {seq} is out of order (expected {expect_seq}): records were reordered "
                                     "or repeated")
            if obj["prev"] != head_hash:
                raise VerifyError(i, f"record {seq} does not chain to record {seq - 1}: record {seq - 1} was "
                                     "changed or replaced")
            head_hash = digest(canonical(obj))
            expect_seq = seq + 1
            first = first or seq
            last = seq
            n_records += 1
            try:
                for k, _ in facts(obj):
                    kinds[k] = kinds.get(k, 0) + 1
            except ValueError as exc:
                raise VerifyError(i, f"record {seq}: {exc}") from None
        else:
            raise VerifyError(i, f"unknown line type {kind!r}")
    if node is None:
        raise VerifyError(0, "no records: the file is empty")
    if last > signed_to:
        raise VerifyError(0, f"records {max(first, signed_to + 1)}..{last} are not covered by a signed checkpoint: "
                             "the export was cut short, or its last checkpoint dropped")
    return Verified(node, first, last, n_records, n_checkpoints, anchor, kinds)
