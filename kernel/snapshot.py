"""Binary snapshot codec of the timer table (not pickle: stable, versioned,
checked, and fast for a million timers because columns go out as raw arrays).

Layout, all integers little-endian:

    header  "MNTSKRNL" | u16 version (1 or 2) | u16 flags (0) | u64 body length | u32 CRC32(body)
    body    i64 seq | i64 last_tick | u64 timers | u32 tenants | u64 extras
            then blocks, each "u64 byte length | bytes", in this order:
            tenant name lengths (u32[tenants]), tenant names (UTF-8 of ASCII, concatenated)
            one block per fixed column (table.COLUMNS order), raw array bytes
            ids (ASCII, each followed by "\n"; ids cannot contain it, and one
                C-level split decodes a million of them in milliseconds)
            ordinals of timers with extras (i64[extras], increasing)
            name lengths u32 + UTF-8 blob, payload lengths u32 + blob,
            action lengths u32 + blob, idempotency key lengths u32 (0 = none) + UTF-8 blob,
            label counts (u8[extras]), label key lengths u32 + blob, label value lengths u32 + UTF-8 blob
            version 2 only: the purge_at column (i64[timers]), then the recurring
            timers (schedule.py) as four blocks of i64[recurring]: ordinals
            (increasing), every_ms, until (-1: none), max_count; then cron lengths
            u32 + UTF-8 blob, time zone lengths u32 + UTF-8 blob; then, only with header
            flag FLAG_DELIVERY, one block: the delivery records (kernel/delivery.py) of the
            timers that have a webhook or a queue, as canonical JSON in ordinal order;
            then, only with header flag FLAG_GRAPH (8), one block: the dependencies and
            escalation ladders (kernel/graph.py) as canonical JSON in ordinal order
            then, only with header flag FLAG_RECUR, the recurring timers' controls and
            policies (kernel/recurrence.py) of the timers that have any: ordinals i64 (increasing),
            paused u8, catch_up u8, overlap u8, triggered i64, skipped i64, flex_ms i64, seed i64,
            nominal i64 (-1: none), buffered u8, pending counts u32, pending fire ids i64
            (all entries' ids, concatenated) (one block each)
            then, only with header flag FLAG_OCC (16), one block: the deliveries of recurring
            timers with a webhook or a queue and their occurrences in delivery
            (kernel/occurrences.py) as canonical JSON in ordinal order. Ids may then hold
            occurrence timers' "<id>@<fire id>" (up to MAX_OCCURRENCE_ID_LEN characters).

Version 2 adds the purge deadline of every terminal timer (retention), allows
free rows (state 0, empty id, tenant 0, no extras: a purged timer's ordinal),
holds the schedules of recurring timers and the delivery records.
A state is written as version 1 while version 1 says all of it: no row was ever
freed, no timer recurs, every purge deadline is the default one (settled_at + 24 h, capped at
MAX_TIME) and no timer has a delivery record. That keeps the bytes (and digests) of states from
before retention and delivery unchanged, and it is exactly how a version-1 snapshot is read: every
terminal timer of an old snapshot gets purge_at = min(settled_at + DEFAULT_RETENTION_MS,
MAX_TIME), the deadline the same timer gets when its log is replayed.
Header flags (version 2 only): bit 0 (FLAG_RETENTION_V1) says that, delivery records
aside, version 1 could still say the state (the kernel's sticky "v1" bit, so a replica
restored from the snapshot writes the same format as one that replayed the log); bit 1
(FLAG_DELIVERY): the delivery block is there; bit 2 (FLAG_RECUR): the recurrence block is
there. A state without delivery records is written byte for byte as the retention work's
format 2 (flags 0), and one without paused timers, catch-up/overlap policies or trigger and
skip counts as before FLAG_RECUR existed.

Capture (State.capture -> SnapshotCapture) copies what encode reads -- the
columns with one memcpy each, the id and extra lists as pointer copies (their
items are immutable str, bytes and tuples) -- so that the encoding itself can run
in another thread while the live state keeps changing, and still produce the
bytes of the moment of capture.

The wheel is not written: it is exactly the armed timers at their fire_at, and
State.from_bytes re-inserts them into Wheel(now=last_tick). Indexes (tenant and
id dicts) are rebuilt from the columns, so no dict order ever reaches the bytes.

The CRC catches corruption and truncation; after it, decode still checks the
structure (block sizes, the ranges of columns that index something or reach the
wheel, id charset, uniqueness of ids and idempotency keys) so that a damaged or
foreign snapshot is a SnapshotError and never a half-built state or a stray
IndexError. It does not re-run every per-field rule on free text (names, label
values) or on informative columns (times, revisions): snapshots come from our
own nodes, and the CRC vouches for their bytes.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
import zlib
from array import array
from itertools import accumulate, chain, compress, repeat
from operator import ge, is_not, not_
from typing import Optional, Union

from ._wheel import MAX_TIME
from .errors import KernelError, SnapshotError
from . import graph as _graph
from . import occurrences as _occ
from .delivery import Attempt, Delivery, DeliveryPolicy, DeliveryRecord, Webhook
from .retention import DEFAULT_RETENTION_MS
from .recurrence import CATCH_UP, MAX_FLEX_MS, MAX_PENDING, NO_NOMINAL, OVERLAP, Recur
from .schedule import MAX_OCCURRENCES, MIN_EVERY_MS, NO_UNTIL, Schedule, check_schedule
from .table import (COLUMNS, FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID, FLAGS_KNOWN, FREE, NO_TIME, ExtraField, Table,
                    as_extra, make_extra)
from .timer import TimerState
from .validate import MAX_ID_LEN, MAX_LABELS, MAX_TENANT_LEN, is_occurrence_id

__all__ = ["MAGIC", "VERSION", "VERSION_2", "VERSION_RETENTION", "VERSION_DELIVERY", "VERSIONS", "FLAG_RETENTION_V1",
           "FLAG_DELIVERY", "FLAG_RECUR", "FLAG_OCC", "SnapshotCapture", "encode", "decode"]

MAGIC = b"MNTSKRNL"
VERSION = 1            # written while it can say the state (see above)
VERSION_2 = 2          # written once it cannot: a row was freed, a timer recurs, a purge deadline is not
                       # the default one, or some timer has a delivery record
VERSION_RETENTION = VERSION_2   # the names the two branches that made format 2 used
VERSION_DELIVERY = VERSION_2
VERSIONS = (VERSION, VERSION_2)   # read
FLAG_RETENTION_V1 = 1  # header flags of a version-2 snapshot: see the module doc
FLAG_DELIVERY = 2
FLAG_GRAPH = 8         # the graph block (kernel/graph.py: dependencies, escalation ladders) is there
FLAG_RECUR = 4         # owned by the recurrence controls (kernel/recurrence.py)
FLAG_OCC = 16          # the schedules' deliveries block (kernel/occurrences.py) is there

_HEADER = struct.Struct("<8sHHQI")
_SCALARS = struct.Struct("<qqQIQ")
_LEN = struct.Struct("<Q")
_BIG = sys.byteorder == "big"
_ID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:~-"
_ID_CHARS_RE = re.compile(rb"[A-Za-z0-9._:~-]*")
_OK_STATES = bytes(range(min(TimerState), max(TimerState) + 1))
_OK_STATES_V2 = bytes([FREE]) + _OK_STATES
_TERMINAL = bytes(int(TimerState.SETTLED <= b <= TimerState.DEAD_LETTERED) for b in range(256))
_FREE_BYTE = bytes(int(b == FREE) for b in range(256))


# ---- encoding ------------------------------------------------------------------


def _le(a: array) -> bytes:
    """Array bytes in little-endian order whatever the host."""
    if _BIG and a.itemsize > 1:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _utf8_blocks(strs: list, code: str = "I") -> list[bytes]:
    enc = [s.encode("utf-8") for s in strs]
    return [_le(array(code, map(len, enc))), b"".join(enc)]


def _bytes_blocks(items: list) -> list[bytes]:
    return [_le(array("I", map(len, items))), b"".join(items)]


SLICE = 1 << 16     # items per C-level step of a long encode (see _Pieces)


class _Pieces(list):
    """One block given as consecutive byte strings (their join is the block). A million
    items joined or measured in one C call hold the GIL for tens of milliseconds, and
    with it the node's Raft thread; in slices of SLICE items the interpreter can switch
    threads between them. The bytes are the same."""


def _bytes_blocks_sliced(items) -> list:
    lens = array("I")
    blob = _Pieces()
    for i in range(0, len(items), SLICE):
        part = items[i:i + SLICE]
        lens.extend(map(len, part))
        blob.append(b"".join(part))
    return [_le(lens), blob]


def _ids_block(ids: list) -> "_Pieces":
    """Every id followed by a newline, ASCII (see the module doc)."""
    return _Pieces(("\n".join(ids[i:i + SLICE]) + "\n").encode("ascii") for i in range(0, len(ids), SLICE))


def _ordinals_block(ords) -> bytes:
    a = array("q")
    for i in range(0, len(ords), SLICE):
        a.extend(ords[i:i + SLICE])
    return _le(a)


class SnapshotCapture:
    """A private, consistent copy of everything `encode` reads from a table,
    plus the kernel counters, taken at one instant (see State.capture).

    Taking it costs a memcpy per column and a pointer copy of the id and extra
    lists (~tens of ms at a million timers); nothing in it is shared mutably
    with the live table -- ids are str, extras are tuples of str/bytes/tuples --
    so `to_bytes()` may run in any thread, later, while the state keeps
    applying commands, and returns what the state's `to_bytes()` returned at
    capture time. It holds no indexes (encode never reads them).
    """

    __slots__ = tuple(name for name, _ in COLUMNS) + ("ids", "extra", "tenant_names", "deliv", "seq", "last_tick",
                                                        "purge_at", "held", "v1", "schedules", "graph", "recur",
                                                        "occ", "esc")

    def __init__(self, table: Table, seq: int, last_tick: int, v1: bool = True) -> None:
        for name, _ in COLUMNS:
            setattr(self, name, getattr(table, name)[:])   # array slice: one memcpy
        self.purge_at = table.purge_at[:]
        self.ids: list[str] = table.ids[:]
        self.extra: list[ExtraField] = table.extra[:]
        self.tenant_names: list[str] = table.tenant_names[:]
        self.deliv = dict(table.deliv)       # immutable records: a shallow copy is a snapshot
        self.seq = seq
        self.last_tick = last_tick
        self.held = table.held
        self.v1 = v1
        self.schedules = dict(table.schedules)     # few: one entry per recurring timer
        self.graph = table.graph.copy() if table.graph else None
        self.recur = dict(table.recur)             # immutable Recur tuples
        self.occ = dict(table.occ)                 # immutable Occ tuples
        self.esc = dict(table.esc)                 # immutable Delivery tuples

    def __len__(self) -> int:
        """Timers held (free rows not counted)."""
        return self.held

    def to_bytes(self) -> bytes:
        """The snapshot bytes of the captured instant (safe to call from any thread)."""
        return encode(self, self.seq, self.last_tick, self.v1)

    def to_parts(self) -> list:
        """`to_bytes()` as the parts to write one after another (encode_parts)."""
        return encode_parts(self, self.seq, self.last_tick, self.v1)

    def __repr__(self) -> str:
        return f"<SnapshotCapture timers={len(self.ids)} seq={self.seq} last_tick={self.last_tick}>"


def _extra_blocks(table: Union[Table, SnapshotCapture], ex_ords) -> list:
    """The blocks of the timers with extras. When every extra is a bare payload (bytes: no
    name, action, key or labels), they are written from the column as it is, at C speed and
    without an object per timer (a million of them cost the writer thread ~1 s and the
    garbage collector's pauses); the bytes are the same as the general path's."""
    vals = [table.extra[o] for o in ex_ords] if len(ex_ords) < len(table.extra) else table.extra
    if all(set(map(type, vals[i:i + SLICE])) <= {bytes} for i in range(0, len(vals), SLICE)):
        k = len(vals)
        empty = [bytes(4 * k), b""]      # k zero u32 lengths, an empty blob
        none = [b"", b""]                 # no label pairs at all
        return [*empty, *_bytes_blocks_sliced(vals), *empty, *empty, bytes(k), *none, *none]
    return _extra_blocks_general(vals)


def _extra_blocks_general(vals: list) -> list[bytes]:
    """The extras' blocks through one Extra per timer (any mix of extra forms)."""
    extras = [as_extra(v) for v in vals]
    blocks = _utf8_blocks([e.name for e in extras])
    blocks += _bytes_blocks([e.payload for e in extras])
    blocks += _bytes_blocks([e.action for e in extras])
    blocks += _utf8_blocks([e.idempotency_key or "" for e in extras])
    blocks.append(_le(array("B", [len(e.labels) for e in extras])))
    pairs = [p for e in extras for p in e.labels]
    blocks += _utf8_blocks([k for k, _ in pairs])
    blocks += _utf8_blocks([v for _, v in pairs])
    return blocks


def encode(table: Union[Table, SnapshotCapture], seq: int, last_tick: int, v1: bool = True) -> bytes:
    """Serialise a table (or a capture of one) plus the kernel counters; `v1`: the
    state is one version 1 can say (see the module doc), else version 2 is written."""
    return b"".join(encode_parts(table, seq, last_tick, v1))


def encode_parts(table: Union[Table, SnapshotCapture], seq: int, last_tick: int, v1: bool = True) -> list:
    """`encode` as a list of byte strings to write one after the other (their join is
    `encode`'s result): a writer that streams them never holds a second whole copy."""
    n = len(table.ids)
    nones = table.extra.count(None)
    if nones == n:                     # the common case, at C speed
        ex_ords: list[int] = []
    elif nones == 0:                   # every timer has a payload: the other common case
        ex_ords = range(n)
    else:
        ex_ords = list(compress(range(n), map(is_not, table.extra, repeat(None))))
    blocks: list[bytes] = []
    blocks += _utf8_blocks(table.tenant_names)
    for name, _ in COLUMNS:
        blocks.append(_le(getattr(table, name)))
    blocks.append(_ids_block(table.ids) if n else b"")
    blocks.append(_ordinals_block(ex_ords))
    blocks += _extra_blocks(table, ex_ords)
    extras = ex_ords                  # only its length is read below
    graph = table.graph if table.graph else None
    version = VERSION if v1 and not table.deliv and graph is None and not table.occ and not table.esc \
        else VERSION_2
    if version == VERSION_2:
        blocks.append(_le(table.purge_at))
        rec = sorted(table.schedules.items())
        blocks.append(_le(array("q", [o for o, _ in rec])))
        for i in range(3):
            blocks.append(_le(array("q", [sched[i] for _, sched in rec])))
        blocks += _utf8_blocks([sched[3] for _, sched in rec])
        blocks += _utf8_blocks([sched[4] for _, sched in rec])
        if table.deliv:
            blocks.append(_encode_deliv(table.deliv))
        if graph is not None:
            blocks.append(_graph.encode(graph))
        if table.recur:
            blocks += _encode_recur(table.recur)
        if table.occ or table.esc:
            blocks.append(_occ.encode(table.occ, table.esc))

    parts = [_SCALARS.pack(seq, last_tick, n, len(table.tenant_names), len(extras))]
    for b in blocks:
        if type(b) is _Pieces:
            parts.append(_LEN.pack(sum(map(len, b))))
            parts.extend(b)
        else:
            parts.append(_LEN.pack(len(b)))
            parts.append(b)
    # CRC and length part by part; the caller joins them or streams them.
    crc = size = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
        size += len(p)
    flags = (_flags(version, v1, bool(table.deliv)) | (FLAG_GRAPH if graph is not None else 0)
             | (FLAG_RECUR if version == VERSION_2 and table.recur else 0)
             | (FLAG_OCC if version == VERSION_2 and (table.occ or table.esc) else 0))
    return [_HEADER.pack(MAGIC, version, flags, size, crc)] + parts


def _flags(version: int, v1: bool, deliv: bool) -> int:
    if version != VERSION_2:
        return 0
    return (FLAG_RETENTION_V1 if v1 else 0) | (FLAG_DELIVERY if deliv else 0)


def _encode_recur(recur: dict) -> list[bytes]:
    rows = sorted(recur.items())
    return [_le(array("q", [o for o, _ in rows])), _le(array("B", [int(r.paused) for _, r in rows])),
            _le(array("B", [r.catch_up for _, r in rows])), _le(array("B", [r.overlap for _, r in rows])),
            _le(array("q", [r.triggered for _, r in rows])), _le(array("q", [r.skipped for _, r in rows])),
            _le(array("q", [r.flex_ms for _, r in rows])), _le(array("q", [r.seed for _, r in rows])),
            _le(array("q", [r.nominal for _, r in rows])), _le(array("B", [int(r.buffered) for _, r in rows])),
            _le(array("I", [len(r.pending) for _, r in rows])),
            _le(array("q", [f for _, r in rows for f in r.pending]))]


def _decode_recur(r: "_Reader", t: Table, states: bytes) -> dict:
    o_arr = r.ordinals("recurrence ordinals")
    k = len(o_arr)
    paused = r.array("B", k, "recurrence paused")
    catch_up = r.array("B", k, "recurrence catch_up")
    overlap = r.array("B", k, "recurrence overlap")
    triggered = r.array("q", k, "recurrence triggered")
    skipped = r.array("q", k, "recurrence skipped")
    flex = r.array("q", k, "recurrence flex_ms")
    seeds = r.array("q", k, "recurrence seed")
    nominal = r.array("q", k, "recurrence nominal")
    buffered = r.array("B", k, "recurrence buffered")
    n_pending = r.array("I", k, "recurrence pending counts")
    if any(n > MAX_PENDING for n in n_pending):
        raise SnapshotError("snapshot recurrence holds too many pending fires")
    flat = r.array("q", sum(n_pending), "recurrence pending fires")
    ends = list(accumulate(n_pending))
    if not k or any(b <= a for a, b in zip(o_arr, o_arr[1:])):
        raise SnapshotError("snapshot recurrence ordinals are empty or not increasing")
    out = {}
    for j, (o, p, c, v, tr, sk, fl, sd, nm, bu) in enumerate(zip(o_arr, paused, catch_up, overlap, triggered, skipped,
                                                                  flex, seeds, nominal, buffered)):
        pend = tuple(flat[ends[j] - n_pending[j]:ends[j]])
        if (o not in t.schedules or p > 1 or c >= len(CATCH_UP) or v >= len(OVERLAP) or tr < 0 or sk < 0
                or (p and states[o] != TimerState.SCHEDULED and not _TERMINAL[states[o]])
                or not 0 <= fl <= MAX_FLEX_MS or sd < 0 or not (nm == NO_NOMINAL or 0 <= nm <= MAX_TIME)
                or (fl and nm == NO_NOMINAL and states[o] in (TimerState.ARMED, TimerState.SCHEDULED)) or bu > 1
                or ((pend or bu) and not t.flags[o] & FLAG_ACK_REQUIRED)
                or list(pend) != sorted(set(pend)) or (pend and pend[0] <= 0)):
            raise SnapshotError(f"snapshot recurrence of timer {o} is invalid")
        rec = Recur(bool(p), c, v, tr, sk, fl, sd, nm, pend, bool(bu))
        if rec == Recur():
            raise SnapshotError(f"snapshot recurrence of timer {o} holds only defaults")
        out[o] = rec
    return out


def _encode_deliv(deliv: dict) -> bytes:
    rows = []
    for o in sorted(deliv):
        r = deliv[o]
        wh, pol = r.spec.webhook, r.spec.policy
        rows.append([o, wh.url if wh else None, [list(h) for h in wh.headers] if wh else [], list(pol), r.attempt,
                     r.next_at, r.waiting,
                     [[a.attempt, a.fire_id, a.at_ms, a.status, a.latency_ms, a.error,
                       base64.b64encode(a.body).decode("ascii"), a.next_at] for a in r.log],
                     r.spec.queue, r.lease, r.avail]
                    + ([r.spec.endpoint] if r.spec.endpoint is not None or r.step else [])
                    + ([r.step] if r.step else []))
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _decode_deliv(blob: bytes, n: int, states: bytes) -> dict:
    deliv: dict = {}
    try:
        rows = json.loads(blob)
        for row in rows:
            # An endpoint timer's row has a twelfth field, its endpoint id (older rows: 11); an
            # escalation timer's a thirteenth, its ladder step (the twelfth then None or the id).
            o, url, headers, pol, attempt, next_at, waiting, log, queue, lease, avail = row[:11]
            endpoint = row[11] if len(row) >= 12 else None
            step = row[12] if len(row) == 13 else 0
            if len(row) not in (11, 12, 13) or (endpoint is not None and (type(endpoint) is not str or url is None)) \
                    or type(step) is not int or step < 0 or (len(row) == 13 and not step):
                raise SnapshotError("snapshot delivery record has the wrong fields")
            if type(o) is not int or not 0 <= o < n or o in deliv:
                raise SnapshotError(f"snapshot delivery record names timer {o!r} wrongly")
            if type(waiting) is not bool or (waiting and (states[o] != TimerState.DELIVERING
                                                          or not 0 <= next_at <= MAX_TIME)):
                raise SnapshotError(f"snapshot delivery record of timer {o} waits wrongly")
            if (url is None) == (queue is None) or type(lease) is not str or type(avail) is not int:
                raise SnapshotError(f"snapshot delivery record of timer {o} is inconsistent")
            hook = None if url is None else Webhook(url, tuple(tuple(h) for h in headers))
            spec = Delivery(hook, DeliveryPolicy(*pol), queue, endpoint)
            entries = tuple(Attempt(a[0], a[1], a[2], a[3], a[4], a[5], base64.b64decode(a[6], validate=True),
                                    a[7]) for a in log)
            deliv[o] = DeliveryRecord(spec, attempt, next_at, waiting, entries, lease, avail, step)
    except SnapshotError:
        raise
    except (ValueError, TypeError, IndexError) as e:
        raise SnapshotError(f"snapshot delivery records are malformed: {e}") from None
    return deliv


# ---- decoding ------------------------------------------------------------------


class _Reader:
    """Bounds-checked cursor over the body."""

    __slots__ = ("mv", "pos")

    def __init__(self, mv: memoryview) -> None:
        self.mv = mv
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.mv):
            raise SnapshotError(f"snapshot truncated in {what}")
        b = self.mv[self.pos:end]
        self.pos = end
        return b

    def block(self, what: str) -> memoryview:
        (n,) = _LEN.unpack(self.take(_LEN.size, what))
        return self.take(n, what)

    def array(self, code: str, count: int, what: str) -> array:
        b = self.block(what)
        a = array(code)
        if len(b) != count * a.itemsize:
            raise SnapshotError(f"snapshot {what} holds {len(b)} bytes, expected {count * a.itemsize}")
        a.frombytes(b)
        if _BIG and a.itemsize > 1:
            a.byteswap()
        return a

    def ordinals(self, what: str) -> array:
        """A block of i64 ordinals whose count is the block's own length."""
        b = self.block(what)
        if len(b) % 8:
            raise SnapshotError(f"snapshot {what} are not whole i64 values")
        a = array("q")
        a.frombytes(b)
        if _BIG:
            a.byteswap()
        return a


def _slices(lens: array, blob_len: int, what: str):
    """The slice of each item in a blob of concatenated items (an iterator, C-level)."""
    ends = list(accumulate(lens))
    if (ends[-1] if ends else 0) != blob_len:
        raise SnapshotError(f"snapshot {what} lengths do not add up to the blob size")
    return map(slice, chain((0,), ends), ends)


# Restart time at a million timers is mostly these lists: they are built with C-level
# map()s, and a column of empty items (no names, no keys: the usual case) costs one
# count instead of a million slices.

def _utf8_list(r: _Reader, count: int, what: str, code: str = "I") -> list[str]:
    lens = r.array(code, count, f"{what} lengths")
    blob = bytes(r.block(what))
    if not blob and lens.count(0) == count:
        return [""] * count
    pieces = _slices(lens, len(blob), what)
    if blob.isascii():      # byte offsets are character offsets: decode once
        return list(map(blob.decode("ascii").__getitem__, pieces))
    return [blob[piece].decode("utf-8") for piece in pieces]


def _bytes_list(r: _Reader, count: int, what: str) -> list[bytes]:
    lens = r.array("I", count, f"{what} lengths")
    blob = bytes(r.block(what))
    if not blob and lens.count(0) == count:
        return [b""] * count
    return list(map(blob.__getitem__, _slices(lens, len(blob), what)))


def _check_range(a: array, lo: int, hi: int, what: str) -> None:
    if len(a) and (min(a) < lo or max(a) > hi):
        raise SnapshotError(f"snapshot {what} has a value outside {lo}..{hi}")


# Byte values of bits 40..47 that put an int64 below MAX_TIME whatever its lower bits.
_SAFE_BYTE5 = bytes(range(MAX_TIME >> 40))


def _check_times(a: array, what: str) -> None:
    """Every value of an int64 column within 0..MAX_TIME.

    min()/max() make a Python int per value (~50 ms at a million), so first a
    byte-level test: a little-endian value whose bytes 7 and 6 are zero and
    whose byte 5 is below MAX_TIME >> 40 is in range (negative values have
    byte 7 = 0xFF). Only if some value fails it (a deadline near year 9999, or
    a bad one) does the exact check run.
    """
    n = len(a)
    if not n:
        return
    if not _BIG:
        with memoryview(a) as m, m.cast("B") as b:
            if (bytes(b[7::8]).count(0) == n and bytes(b[6::8]).count(0) == n
                    and not bytes(b[5::8]).translate(None, _SAFE_BYTE5)):
                return
    _check_range(a, 0, MAX_TIME, what)


def _schedules(r: _Reader, n: int, t: Table, free: set) -> dict:
    """The recurring timers' block of a version-2 snapshot, checked like what create accepts."""
    o_arr = r.ordinals("schedule ordinals")
    k = len(o_arr)
    every = r.array("q", k, "schedule every_ms")
    until = r.array("q", k, "schedule until")
    count = r.array("q", k, "schedule max_count")
    crons = _utf8_list(r, k, "schedule crons")
    tzs = _utf8_list(r, k, "schedule time zones")
    if any(b <= a for a, b in zip(o_arr, o_arr[1:])) or (k and not 0 <= o_arr[0] <= o_arr[-1] < n):
        raise SnapshotError("snapshot schedule ordinals are not increasing within the table")
    out = {}
    for o, e, u, c, cron, tz in zip(o_arr, every, until, count, crons, tzs):
        if (o in free or bool(e) == bool(cron)
                or not (not e or MIN_EVERY_MS <= e <= MAX_TIME) or bool(cron) != bool(tz)
                or not (u == NO_UNTIL or 0 <= u <= MAX_TIME) or not 0 <= c <= MAX_OCCURRENCES):
            raise SnapshotError(f"snapshot schedule of timer {o} is invalid")
        if cron:
            try:
                check_schedule("schedule", 0, None, 0, cron, tz, 0, False)
            except KernelError:
                raise SnapshotError(f"snapshot schedule of timer {o} has a bad cron or time zone") from None
        out[o] = Schedule(e, u, c, cron, tz)
    return out


def decode(data: bytes) -> tuple[Table, int, int, bool]:
    """Parse snapshot bytes into (table, seq, last_tick, written as version 1);
    SnapshotError if unusable."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SnapshotError(f"snapshot must be bytes, not {type(data).__name__}")
    try:
        return _decode(memoryview(data).cast("B"))
    except SnapshotError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, struct.error) as e:
        # Belt and braces: every path above is checked, but a foreign snapshot
        # must never surface as anything but a SnapshotError.
        raise SnapshotError(f"snapshot is malformed: {e}") from e


def _decode(mv: memoryview) -> tuple[Table, int, int, bool]:
    if len(mv) < _HEADER.size:
        if bytes(mv[:len(MAGIC)]) != MAGIC[:len(mv)]:
            raise SnapshotError("not a MINOOTS kernel snapshot (bad magic)")
        raise SnapshotError(f"snapshot truncated: {len(mv)} bytes, the header alone is {_HEADER.size}")
    magic, version, flags, body_len, crc = _HEADER.unpack(mv[:_HEADER.size])
    if magic != MAGIC:
        raise SnapshotError("not a MINOOTS kernel snapshot (bad magic)")
    if version not in VERSIONS:
        raise SnapshotError(f"unsupported snapshot format version {version} "
                            f"(this build reads {', '.join(map(str, VERSIONS))})")
    if flags & ~(FLAG_RETENTION_V1 | FLAG_DELIVERY | FLAG_GRAPH | FLAG_RECUR | FLAG_OCC) or (flags and version != VERSION_2):
        raise SnapshotError(f"snapshot header flags {flags:#x} are unknown for format version {version}")
    body = mv[_HEADER.size:]
    if len(body) != body_len:
        raise SnapshotError(
            f"snapshot body is {len(body)} bytes, header says {body_len} (truncated or padded)"
        )
    if zlib.crc32(body) != crc:
        raise SnapshotError("snapshot checksum mismatch (corrupt)")

    r = _Reader(body)
    seq, last_tick, n, n_tenants, n_extra = _SCALARS.unpack(r.take(_SCALARS.size, "counters"))
    if seq < 0:
        raise SnapshotError(f"snapshot seq {seq} is negative")
    if not 0 <= last_tick <= MAX_TIME:
        raise SnapshotError(f"snapshot last_tick {last_tick} is outside 0..{MAX_TIME}")
    if n_extra > n:
        raise SnapshotError(f"snapshot has {n_extra} extras for {n} timers")

    t = Table()
    t.tenant_names = _utf8_list(r, n_tenants, "tenant names")
    for name in t.tenant_names:
        if not 1 <= len(name) <= MAX_TENANT_LEN or _ID_CHARS_RE.fullmatch(name.encode()) is None:
            raise SnapshotError(f"snapshot tenant name {name!r} is invalid")
    for name, code in COLUMNS:
        setattr(t, name, r.array(code, n, f"column {name}"))
    # Range checks for the columns whose values index something or reach the
    # wheel; the purely informative ones (times, revision, fire_id) are left to
    # the CRC, since min()/max() over a million entries is not free.
    if n and (
        t.tenant.tobytes().count(0) != 4 * n   # one tenant: every index is 0 (a C-speed byte count)
        if n_tenants == 1 else max(t.tenant) >= n_tenants
    ):
        raise SnapshotError("snapshot column tenant names a tenant that is not in the table")
    states = t.state.tobytes()
    if states.translate(None, _OK_STATES if version == 1 else _OK_STATES_V2):
        raise SnapshotError("snapshot column state holds an unknown state")
    free = list(compress(range(n), states.translate(_FREE_BYTE))) if version > 1 and FREE in states else []
    if t.flags.tobytes().translate(None, bytes(range(FLAGS_KNOWN + 1))):
        raise SnapshotError("snapshot column flags holds unknown flags")
    _check_times(t.fire_at, "column fire_at")

    id_blob = bytes(r.block("ids"))
    if id_blob.translate(None, _ID_BYTES + b"@\n") or (n and id_blob[-1:] != b"\n") or (not n and id_blob):
        raise SnapshotError("snapshot ids are not newline-terminated [A-Za-z0-9._:~-] strings")
    ids = id_blob.decode("ascii").split("\n")
    ids.pop()  # the empty string after the last terminator
    if len(ids) != n:
        raise SnapshotError(f"snapshot holds {len(ids)} ids for {n} timers")
    # An empty id is an empty line: at the start or a doubled terminator (a free row's only).
    if n and (((id_blob[:1] == b"\n" or b"\n\n" in id_blob) and list(compress(range(n), map(not_, ids))) != free)
              or (max(map(len, ids)) > MAX_ID_LEN or b"@" in id_blob)
              and any((len(i) > MAX_ID_LEN or "@" in i) and not is_occurrence_id(i) for i in ids)):
        raise SnapshotError(f"snapshot holds an id that is empty or longer than {MAX_ID_LEN} characters "
                            "(an occurrence timer's <id>@<fire id> aside)")
    t.ids = ids

    ex_ords = r.array("q", n_extra, "extra ordinals")
    if any(map(ge, ex_ords, ex_ords[1:])) or (n_extra and not 0 <= ex_ords[0] <= ex_ords[-1] < n):
        raise SnapshotError("snapshot extra ordinals are not increasing within the table")
    names = _utf8_list(r, n_extra, "names")
    payloads = _bytes_list(r, n_extra, "payloads")
    actions = _bytes_list(r, n_extra, "actions")
    keys: list[Optional[str]] = [k or None for k in _utf8_list(r, n_extra, "idempotency keys")]
    label_counts = r.array("B", n_extra, "label counts")
    _check_range(label_counts, 0, MAX_LABELS, "label counts")
    n_pairs = sum(label_counts)
    lkeys = _utf8_list(r, n_pairs, "label keys")
    lvals = _utf8_list(r, n_pairs, "label values")
    ended = list(compress(range(n), states.translate(_TERMINAL)))
    if version == 1:
        purge_at = array("q", repeat(NO_TIME, n))
        settled_at = t.settled_at
        for o in ended:
            purge_at[o] = min(settled_at[o] + DEFAULT_RETENTION_MS, MAX_TIME)
        # settled_at now reaches the wheel (as a purge deadline): it must be a time.
        _check_times(array("q", map(settled_at.__getitem__, ended)), "column settled_at")
    else:
        purge_at = r.array("q", n, "column purge_at")
        deadlines = array("q", map(purge_at.__getitem__, ended))
        _check_times(deadlines, "column purge_at")
        if len(ended) + purge_at.count(NO_TIME) != n:
            raise SnapshotError("snapshot column purge_at gives a deadline to a timer that is not terminal")
        if any(t.tenant[o] or ids[o] for o in free) or set(free).intersection(ex_ords):
            raise SnapshotError("snapshot free row holds a tenant, an id or extras")
        t.schedules = _schedules(r, n, t, set(free))
    t.purge_at = purge_at
    if flags & FLAG_DELIVERY:
        t.deliv = _decode_deliv(bytes(r.block("delivery records")), n, states)
        if not t.deliv or any(states[o] == FREE for o in t.deliv):
            raise SnapshotError("snapshot delivery block is empty or names a free row")
    if flags & FLAG_GRAPH:
        t.graph = _graph.decode(bytes(r.block("graph")), n, states)
    if flags & FLAG_RECUR:
        t.recur = _decode_recur(r, t, states)
    if flags & FLAG_OCC:
        t.occ, t.esc = _occ.decode(bytes(r.block("schedule deliveries")), n, states, t.schedules)
        if set(t.occ).intersection(t.deliv) or set(t.esc).intersection(t.deliv):
            raise SnapshotError("snapshot gives a schedule both a delivery record and a schedule delivery")
    missing = states.count(TimerState.DELIVERING) - sum(states[o] == TimerState.DELIVERING for o in t.deliv)
    if missing:
        raise SnapshotError(f"snapshot has {missing} delivering timers without a delivery record")
    if r.pos != len(body):
        raise SnapshotError(f"snapshot has {len(body) - r.pos} unexpected trailing bytes")

    extra: list[ExtraField] = [None] * n
    if n_pairs == 0 and names.count("") == n_extra and actions.count(b"") == n_extra \
            and keys.count(None) == n_extra and b"" not in payloads:
        # Payloads alone (the usual extras): the column holds the payload bytes
        # themselves (table.make_extra), without a Python step per field.
        if n_extra == n:         # increasing ordinals within the table: all of them
            extra = payloads
        else:
            for o, payload in zip(ex_ords, payloads):
                extra[o] = payload
        ex_ords = ()
    p = 0
    for j, o in enumerate(ex_ords):
        c = label_counts[j]
        labels = tuple(zip(lkeys[p:p + c], lvals[p:p + c]))
        p += c
        key = keys[j]
        if key is not None and key == ids[o]:    # canonical form, however the snapshot was written
            t.flags[o] |= FLAG_KEY_IS_ID
            key = None
        elif key is not None and t.flags[o] & FLAG_KEY_IS_ID:
            raise SnapshotError(f"snapshot gives timer {o} an idempotency key besides its id")
        if not (names[j] or payloads[j] or labels or actions[j] or keys[j]):
            raise SnapshotError(f"snapshot lists timer {o} as having extras but all are empty")
        extra[o] = make_extra(names[j], payloads[j], labels, actions[j], key)
    t.extra = extra
    try:
        t.rebuild_indexes()
    except ValueError as e:
        raise SnapshotError(f"snapshot is inconsistent: {e}") from None
    return t, seq, last_tick, version == 1 or bool(flags & FLAG_RETENTION_V1)
