"""Event retention and WatchEvents: every committed event, on every node, in LMDB.

Writing. `EventLog.attach(machine)` (a Node machine hook, so it runs before the
tick thread starts) registers two listeners that run in PySyncObj's tick thread:

* the event listener, called right after the kernel applied a command (still
  under the machine lock), writes the command's events in one LMDB transaction
  (key: seq as big-endian u64; value: a compact packed event), then publishes
  `visible` = the last seq written, then wakes the loop's watchers. Because it
  runs under the machine lock, "the kernel's seq is s" implies "events <= s are
  in LMDB" for events emitted by this process.
* the snapshot listener, called after a snapshot replaced the kernel (at
  start-up, or streamed from the leader to a follower that fell behind the
  compacted log), learns the kernel's seq Y at that point.

Re-emission after a restart: PySyncObj loads the last snapshot (seq Y) and
re-applies the log after it, so events Y+1.. come again with the same seq. A
re-emitted event is compared with the stored one: equal is a no-op (the common
case); different means this node's history was rewound (disaster-recovery
restore of an older snapshot) and everything from that seq on is replaced.
Events above Y are not served until re-emitted (`visible` restarts at Y).

Gaps: a snapshot carries state, not events. When a snapshot at seq Y is
installed on a node whose events end below Y, the events in between never
existed here: this node's history restarts at Y+1 (`floor` = Y+1, older events
are dropped). A watcher on this node asking for anything older gets
OUT_OF_RANGE at subscription, or DATA_LOSS if its stream was live across the
install; other nodes (which applied those entries) still have them, and the
SDK can resume there with its cursor.

Retention is by disk budget and age, oldest first:

* `budget` (bytes, `--events-budget`, default 4 GiB) is the hard bound: the pages the
  events occupy in LMDB (branch + leaf + overflow pages x page size, read from the
  write transaction's own stat, O(1)) never exceed it by more than one write. When a
  write would go over it, the oldest events go: the number to keep is budget / (the
  store's current bytes per event). An event packs into 35 bytes + tenant + id; with
  the 8-byte key, LMDB's 8-byte node header and 2-byte slot, and 4 KiB pages filled by
  appends, it is 94 bytes on disk for a uuid4-hex id in tenant "default" (measured:
  400k events in 9133 pages). Rated load, 1M timers x 8 events (created, armed, fired,
  settled and up to four reschedules) = 8M events = 0.75 GB: the 4 GiB default holds
  5.7 times that (about 45M such events).
* `min_age_ms` (`--events-min-age`, default 24 h) is what retention promises when the
  budget allows: nothing is ever trimmed for age below it. It never overrides the
  budget; when the budget forces trimming of events younger than min-age, the node
  logs a warning (rate-limited) and counts them (`trimmed_young`): raise the budget.
* `max_age_ms` (`--events-max-age`, off by default): events older than it are trimmed
  even under the budget (must be at least min-age where the CLI checks it).
* `keep` (`--events-keep`, off by default): an optional extra bound on the count.

Durable subscriptions (raft/subscriptions.py) hold retention back: count and age
never trim at or above the lowest subscription cursor (`pin`, replicated, so the same
on every node). Only the budget may; when it trims past the pin, `on_overrun` tells the
API (api/subscriptions.py), whose leader proposes that the subscriptions it passed lost
those events, with their exact count.

`floor` moves first (events below it are no longer served), the keys are deleted in
bounded chunks in the same write transactions, so trimming never stalls the apply
thread for long (a larger backlog, say after lowering the budget, is deleted over the
next writes). An idle node trims on its next write. `floor` is persisted.

Saying so before trimming under pressure: every WatchEvents stream registers its
cursor here (`_Watch`). While the budget is what trims (`budget_full`: the events occupy
more than 95 % of it, so every write trims the oldest), a watcher whose
cursor is within 10 % of the retained range above the floor is "near trim": the writer
logs a warning per such watcher (at most every WARN_EVERY_S), `near_trim()` counts them
for the metric `minoots_watchers_near_trim` and the `lagging` flag of Cluster.Status.
A watcher that the floor overtakes still gets OUT_OF_RANGE, as before.

Storage: a separate LMDB environment in `<data-dir>/events`, opened without
fsync on commit and synced once a second (`flush`). Not the node's own
environment: that one fsyncs every commit (Raft needs it; events do not, they are
re-derived from the log after a crash), and an event backlog must never fill the
map the Raft log lives in. A SIGKILL loses nothing (commits are in the page
cache); an OS crash can lose up to the last second of events, and if a snapshot
compacted their log entries in that second they are gone on this node (the
next event then opens a gap: floor moves past it, as above).

Reading (the loop thread): a watcher keeps its own cursor and reads batches
straight from LMDB up to `visible`, then waits for a wake-up. No per-subscriber
queue exists, so a slow subscriber costs nothing but its cursor: it never
blocks the kernel or other subscribers, it just reads from LMDB later (and gets
OUT_OF_RANGE if retention overtakes it). Replay and live are the same code path:
there is no switch-over, hence no gap and no duplicate.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Callable, Optional

import lmdb

from minoots.raft.clock import now_ms
from minoots.v1 import timers_pb2 as pb

log = logging.getLogger("minoots.api.events")

__all__ = ["EventLog", "EventsUnavailable", "EventsLost", "watch", "watch_batches"]

_KEY = struct.Struct(">Q")
# kind u8, state u8, revision u64, at_ms i64, fire_at i64, fire_id u64, len(tenant) u8; then tenant, id (UTF-8)
_VAL = struct.Struct(">BBQqqQB")
_FLOOR = b"floor"
EVENTS_DIR = "events"
EVENT_BYTES = 94              # measured bytes per stored event (uuid4-hex id, tenant "default"); see above
EVENTS_BUDGET = 4 << 30       # --events-budget: disk the events may use; 1M timers x 8 events = 0.75 GB fits 5.7x
EVENTS_MIN_AGE_MS = 24 * 3600 * 1000   # --events-min-age: kept when the budget allows
EVENTS_KEEP = None            # --events-keep: an optional extra bound on the count (off by default)
MIN_BUDGET = 32 << 10         # the smallest budget accepted (a few pages)
FULL = 0.95                   # the budget counts as full (trimming) above this fraction of it
NEAR_TRIM = 0.10              # a watcher within this fraction of the retained range above the floor is near trim
WARN_EVERY_S = 30.0           # a near-trim warning per watcher (and the short-retention warning) at most this often


def events_map_size(budget: int) -> int:
    """The LMDB map the events need for `budget`: the budget, half again for LMDB's free
    list and the deletion backlog, and 64 MiB (address space; the file grows as used)."""
    return budget + budget // 2 + (64 << 20)


EVENTS_MAP_SIZE = events_map_size(EVENTS_BUDGET)   # the default budget's map (6.06 GiB)
TRIM_CHUNK = 2048          # keys deleted per write transaction at most (plus twice the batch written)
READ_BATCH = 512           # events read per LMDB read transaction by a watcher
PROGRESS_EVERY_S = 1.0     # a filtered stream reports how far it got at least this often while all is filtered out


#: Stored-event format 2 (escalated events with a step): the kind byte has this bit set, and
#: after the header come u16 len(id), tenant, id, u16 step, the step's action bytes. Format 1
#: (every other event, and every event stored before it existed) is read as before.
_DETAIL = 0x80
_DETAIL_HEAD = struct.Struct(">H")


def pack_event(e) -> bytes:
    tenant = e.tenant.encode()
    step = getattr(e, "step", 0)
    if not step:
        return _VAL.pack(e.kind, e.state, e.revision, e.at_ms, e.fire_at, e.fire_id or 0, len(tenant)) \
            + tenant + e.timer_id.encode()
    tid = e.timer_id.encode()
    return (_VAL.pack(e.kind | _DETAIL, e.state, e.revision, e.at_ms, e.fire_at, e.fire_id or 0, len(tenant))
            + _DETAIL_HEAD.pack(len(tid)) + tenant + tid + _DETAIL_HEAD.pack(step) + bytes(e.action))


def unpack_event(seq: int, raw) -> tuple:
    """(seq, kind, tenant, timer_id, at_ms, revision, state, fire_at, fire_id, step, action)."""
    kind, state, revision, at_ms, fire_at, fire_id, tlen = _VAL.unpack_from(raw)
    o = _VAL.size
    if not kind & _DETAIL:
        tenant = bytes(raw[o:o + tlen]).decode()
        timer_id = bytes(raw[o + tlen:]).decode()
        return seq, kind, tenant, timer_id, at_ms, revision, state, fire_at, fire_id, 0, b""
    (ilen,) = _DETAIL_HEAD.unpack_from(raw, o)
    o += _DETAIL_HEAD.size
    tenant = bytes(raw[o:o + tlen]).decode()
    timer_id = bytes(raw[o + tlen:o + tlen + ilen]).decode()
    o += tlen + ilen
    (step,) = _DETAIL_HEAD.unpack_from(raw, o)
    return (seq, kind & ~_DETAIL, tenant, timer_id, at_ms, revision, state, fire_at, fire_id, step,
            bytes(raw[o + _DETAIL_HEAD.size:]))


class EventsUnavailable(Exception):
    """The cursor is below what this node retains (retention, or a snapshot install)."""

    def __init__(self, cursor: int, floor: int, skipped_to: int) -> None:
        self.cursor, self.floor, self.skipped_to = cursor, floor, skipped_to
        super().__init__(
            f"event sequence {cursor} is no longer available on this node: its event history starts at "
            f"{floor} (older events were trimmed by retention, or skipped when this node installed a "
            "snapshot, which carries state but not events); resume from a later sequence, or on "
            "another node that still has it")


class EventsLost(Exception):
    """A live stream's next events were skipped by a snapshot install on this node."""

    def __init__(self, cursor: int, floor: int) -> None:
        self.cursor, self.floor = cursor, floor
        super().__init__(
            f"events {cursor}..{floor - 1} are missing on this node: it installed a snapshot from the "
            "leader (snapshots carry state, not events); resume from this cursor on another node")


class _Watch:
    """One open WatchEvents stream's position (updated by its loop, read by the writer)."""

    __slots__ = ("id", "cursor", "tenant", "last_warn")

    def __init__(self, wid: int, cursor: int, tenant: Optional[str]) -> None:
        self.id, self.cursor, self.tenant, self.last_warn = wid, cursor, tenant, float("-inf")


class EventLog:
    """A node's retained events. Writers: the tick thread only. Readers: any thread."""

    def __init__(self, path: str | os.PathLike, *, budget: int = EVENTS_BUDGET,
                 min_age_ms: int = EVENTS_MIN_AGE_MS, keep: Optional[int] = EVENTS_KEEP,
                 max_age_ms: Optional[int] = None, map_size: Optional[int] = None,
                 clock: Callable[[], int] | None = None) -> None:
        if keep is not None and keep < 1:
            raise ValueError("events keep must be at least 1 (or None: no count bound)")
        if budget < MIN_BUDGET:
            raise ValueError(f"events budget must be at least {MIN_BUDGET} bytes, got {budget}")
        if min_age_ms < 0:
            raise ValueError("events min-age must not be negative")
        if map_size is None:
            map_size = events_map_size(budget)
        elif map_size < budget + (1 << 20):
            raise ValueError(f"the events map ({map_size} bytes) cannot hold the events budget ({budget} bytes); "
                             f"use at least {events_map_size(budget)}")
        self.keep = keep
        self.budget = budget
        self.min_age_ms = min_age_ms
        self.max_age_ms = max_age_ms
        self._clock = clock or now_ms
        self.budget_full = False      # the events fill more than FULL of the budget: writes trim the oldest
        self.budget_trimmed = 0       # events trimmed because of the budget (since start)
        self.trimmed_young = 0        # of those, events younger than min-age (retention fell short of it)
        self.near_trim_warnings = 0   # near-trim warnings logged (one per watcher per WARN_EVERY_S at most)
        self._short_warned = float("-inf")
        self._watches: dict[int, _Watch] = {}
        self._watch_ids = itertools.count(1)
        self._watch_lock = threading.Lock()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=2, subdir=True, sync=False,
                              metasync=False, readahead=False)
        self._db = self._env.open_db(b"events")
        self._meta = self._env.open_db(b"meta")
        with self._env.begin() as txn:
            raw = txn.get(_FLOOR, db=self._meta)
            cur = txn.cursor(db=self._db)
            first = _KEY.unpack(cur.key())[0] if cur.first() else None
            last = _KEY.unpack(cur.key())[0] if cur.last() else 0
        floor = _KEY.unpack(raw)[0] if raw is not None else 1
        self.floor = max(floor, first or 1) if first is not None else max(floor, last + 1)
        self._stored_last = last      # highest key written (may not be valid until re-emitted)
        self.visible = 0              # every seq in [floor, visible] is stored and valid
        self.skipped_to = 0           # highest seq skipped by a snapshot install in this process
        self.on_new: Callable[[], None] = lambda: None
        # Durable subscriptions (raft/subscriptions.py): `_pin` gives the lowest cursor of them
        # all (None: none), which count and age retention never pass; when the budget does,
        # `on_overrun(new_floor)` is called after the write (in the tick thread: it must only
        # hand the news to another thread).
        self._pin: Callable[[], Optional[int]] = lambda: None
        self.on_overrun: Callable[[int], None] = lambda floor: None
        self._overrun_at = 0
        self.pinned = 0               # events kept only because a subscription holds them (last write)
        self.write_errors = 0
        self.watchers = 0             # WatchEvents streams open (metrics)
        self.watchers_dropped = 0     # streams ended mid-way: retention or a snapshot install overtook them
        self._closed = False
        self._flush_lock = threading.Lock()

    # ---- writing (tick thread) ---------------------------------------------------

    def attach(self, machine) -> None:
        """Node machine hook: listen before the tick thread starts."""
        machine.event_listeners.append(self._on_events)
        machine.snapshot_listeners.append(self._on_snapshot)
        self._pin = machine.subscription_pin

    # Both listeners run inside PySyncObj's apply path (the first under the machine lock):
    # nothing may escape them, or the machine would report the command as failed although
    # the kernel applied it (or a snapshot load would break).

    def _on_events(self, events) -> None:
        if self._closed or not events:
            return
        try:
            self._write(events)
        except Exception as exc:   # the events are lost on this node: say so, open a gap
            self.write_errors += 1
            log.error("event write failed; this node's event history restarts after the gap",
                      extra={"first": events[0].seq, "last": events[-1].seq, "error": repr(exc)})
            self._skip_to(events[-1].seq)
        self._wake()

    def _on_snapshot(self, seq: int) -> None:
        if self._closed:
            return
        try:
            if seq > self._stored_last:
                # Events (stored_last, seq] never reached this node: its history restarts at seq + 1.
                log.warning("snapshot installed past this node's events; event history restarts",
                            extra={"stored_last": self._stored_last, "snapshot_seq": seq})
                self._skip_to(seq)
            if seq < self.visible:
                log.warning("snapshot older than the events already served",
                            extra={"visible": self.visible, "snapshot_seq": seq})
            self.visible = seq
        except Exception:
            log.exception("event store: snapshot bookkeeping failed")
        self._wake()

    def _wake(self) -> None:
        try:
            self.on_new()
        except Exception:
            log.exception("event store: waking watchers failed")

    def _skip_to(self, seq: int) -> None:
        try:
            with self._env.begin(write=True) as txn:
                txn.put(_FLOOR, _KEY.pack(seq + 1), db=self._meta)
        except Exception as exc:
            log.error("cannot persist the event floor", extra={"error": repr(exc)})
        self.skipped_to = max(self.skipped_to, seq)
        self.floor = max(self.floor, seq + 1)
        self._stored_last = max(self._stored_last, seq)
        self.visible = max(self.visible, seq)

    def _write(self, events) -> None:
        self._overrun_at = 0
        first = events[0].seq
        last = events[-1].seq
        floor = self.floor
        if last < floor:                      # re-emitted, already trimmed: nothing to keep
            self.visible = max(self.visible, last)
            return
        if first < floor:
            events = events[floor - first:]
            first = floor
        items = [(_KEY.pack(e.seq), pack_event(e)) for e in events]
        with self._env.begin(write=True) as txn:
            db = self._db
            stored_last = self._stored_last
            i = 0
            if first <= stored_last:
                # Re-emitted after a restart: identical unless this node's history was rewound.
                cur = txn.cursor(db=db)
                while i < len(items) and first + i <= stored_last:
                    key, val = items[i]
                    if txn.get(key, db=db) != val:
                        log.warning("re-emitted event differs from the stored one; replacing the rest",
                                    extra={"seq": first + i})
                        if cur.set_range(key):
                            while cur.delete():
                                pass
                        stored_last = first + i - 1
                        break
                    i += 1
            elif first > stored_last + 1 and stored_last >= floor:
                log.warning("event gap; event history restarts", extra={"stored_last": stored_last,
                                                                        "next": first})
                self.skipped_to = max(self.skipped_to, first - 1)
                floor = first
            if i < len(items):
                txn.cursor(db=db).putmulti(items[i:], append=True)
            new_floor = self._retention_floor(txn, floor, last, len(items))
            if new_floor != self.floor:
                txn.put(_FLOOR, _KEY.pack(new_floor), db=self._meta)
            self._delete_below(txn, new_floor, TRIM_CHUNK + 2 * len(items))
        self.floor = new_floor
        self._stored_last = max(stored_last, last)
        self.visible = last
        if self.budget_full:
            self._warn_near_trim()
        if self._overrun_at:
            at, self._overrun_at = self._overrun_at, 0
            try:
                self.on_overrun(at)
            except Exception:
                log.exception("event store: reporting a subscription overrun failed")

    def _retention_floor(self, txn, floor: int, last: int, written: int) -> int:
        soft = floor
        if self.keep is not None:
            soft = max(soft, last - self.keep + 1)
        if self.max_age_ms is not None:
            cutoff = self._clock() - self.max_age_ms
            budget = TRIM_CHUNK + 2 * written
            cur = txn.cursor(db=self._db)
            if cur.set_range(_KEY.pack(soft)):
                for key, val in cur:
                    seq = _KEY.unpack(key)[0]
                    if seq > last or budget <= 0 or _VAL.unpack_from(val)[3] >= cutoff:
                        break
                    soft = seq + 1
                    budget -= 1
        pin = self._pin()
        if pin is not None and soft > pin:
            # A durable subscription has not committed these: count and age do not trim them.
            self.pinned = soft - max(floor, pin)
            soft = max(floor, pin)
        else:
            self.pinned = 0
        hard = self._budget_floor(txn, soft, last)
        if pin is not None and hard > pin:
            self._overrun_at = hard
        return max(soft, hard)

    def _budget_floor(self, txn, floor: int, last: int) -> int:
        """The floor the disk budget requires: keep budget / (bytes per event) newest events."""
        st = txn.stat(self._db)
        entries = st["entries"]
        used = (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]
        # Full: within FULL of the budget, so the next writes trim (after a trim, LMDB's page
        # merges leave it a little under: the flag must not flap with them).
        self.budget_full = used > self.budget * FULL
        if not entries or used <= self.budget:
            return floor
        allowed = max(1, int(self.budget * entries / used))   # events the budget holds at this density
        target = last - allowed + 1
        if target <= floor:
            # Over the budget only by keys already below the floor, deleted over the next writes.
            return floor
        self.budget_trimmed += target - floor
        raw = txn.get(_KEY.pack(target - 1), db=self._db)   # the newest event this trims
        if raw is not None and _VAL.unpack_from(raw)[3] >= self._clock() - self.min_age_ms:
            self.trimmed_young += target - floor
            t = time.monotonic()
            if t - self._short_warned >= WARN_EVERY_S:
                self._short_warned = t
                log.warning("the events budget trims events younger than --events-min-age: retention here is "
                            "shorter than promised; raise --events-budget",
                            extra={"budget": self.budget, "floor": target, "newest": last,
                                   "min_age_s": self.min_age_ms / 1000})
        return target

    def _warn_near_trim(self) -> None:
        t = time.monotonic()
        for w in self.near_trim():
            if t - w.last_warn >= WARN_EVERY_S:
                w.last_warn = t
                self.near_trim_warnings += 1
                log.warning("a watcher is close to being trimmed: the events budget is full and its cursor is "
                            "within 10% of the oldest retained event; it gets OUT_OF_RANGE once retention "
                            "passes it",
                            extra={"watcher": w.id, "cursor": w.cursor, "floor": self.floor,
                                   "newest": self.visible, "tenant": w.tenant})

    # ---- watchers (registered by the loop thread, read by the writer and scrapes) ----

    def register_watch(self, cursor: int, tenant: Optional[str] = None) -> _Watch:
        w = _Watch(next(self._watch_ids), cursor, tenant)
        with self._watch_lock:
            self._watches[w.id] = w
        return w

    def unregister_watch(self, w: _Watch) -> None:
        with self._watch_lock:
            self._watches.pop(w.id, None)

    def near_trim(self) -> list:
        """Watchers whose cursor is within NEAR_TRIM of the retained range above the floor,
        while the budget is what trims (empty otherwise)."""
        if not self.budget_full:
            return []
        floor, newest = self.floor, self.visible
        margin = max(1, int((newest - floor + 1) * NEAR_TRIM))
        with self._watch_lock:
            watches = list(self._watches.values())
        return [w for w in watches if w.cursor <= newest and w.cursor - floor < margin]

    @property
    def lagging(self) -> bool:
        """At least one watcher on this node is near trim (Cluster.Status `lagging`)."""
        return bool(self.near_trim())

    def _delete_below(self, txn, floor: int, budget: int) -> None:
        cur = txn.cursor(db=self._db)
        if not cur.first():
            return
        limit = _KEY.pack(floor)
        while budget > 0 and cur.key() < limit:
            if not cur.delete():
                break
            budget -= 1

    # ---- reading (any thread) ----------------------------------------------------

    def read(self, cursor: int, limit: int = READ_BATCH) -> list[tuple]:
        """Events cursor.. (at most `limit`, at most up to `visible`) as unpacked tuples.
        Raises EventsUnavailable when `cursor` is below what this node retains."""
        if cursor < self.floor:
            raise EventsUnavailable(cursor, self.floor, self.skipped_to)
        end = min(self.visible, cursor + limit - 1)
        if end < cursor:
            return []
        out = []
        expect = cursor
        with self._env.begin(db=self._db) as txn:
            cur = txn.cursor()
            if cur.set_key(_KEY.pack(cursor)):
                for key, val in cur:
                    seq = _KEY.unpack(key)[0]
                    if seq != expect or seq > end:
                        break
                    out.append(unpack_event(seq, val))
                    expect += 1
        if expect <= end:
            # A key we should have is gone: trimmed (or skipped) under us.
            if expect < self.floor:
                raise EventsUnavailable(expect, self.floor, self.skipped_to)
            raise EventsLost(expect, expect + 1)   # cannot happen unless the store is damaged
        return out

    def stats(self) -> dict:
        with self._env.begin(db=self._db) as txn:
            n = txn.stat(self._db)["entries"]
        return {"floor": self.floor, "visible": self.visible, "stored": n, "skipped_to": self.skipped_to,
                "write_errors": self.write_errors, "bytes": self.used_bytes(), "budget": self.budget,
                "budget_full": self.budget_full, "budget_trimmed": self.budget_trimmed,
                "trimmed_young": self.trimmed_young}

    def used_bytes(self) -> int:
        """Disk the retained events occupy (their LMDB pages; what the budget bounds)."""
        with self._env.begin() as txn:
            st = txn.stat(self._db)
        return (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]

    # ---- lifecycle -----------------------------------------------------------------

    def flush(self) -> None:
        """fsync what was written so far (called about once a second)."""
        with self._flush_lock:
            if not self._closed:
                self._env.sync(True)

    def close(self) -> None:
        with self._flush_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._env.sync(True)
            finally:
                self._env.close()


def start_cursor(events: EventLog, from_sequence: int) -> int:
    """Where a watch from `from_sequence` starts (0 = after the last visible event);
    EventsUnavailable (OUT_OF_RANGE) when this node no longer retains it."""
    if from_sequence == 0:
        return events.visible + 1
    if from_sequence < events.floor:
        raise EventsUnavailable(from_sequence, events.floor, events.skipped_to)
    return from_sequence


class Batch(list):
    """A run of pb.Events (after filtering), and the last sequence examined for it (`through`):
    empty, it only says how far a filtered stream got."""

    through = 0


async def watch(events: EventLog, bridge, from_sequence: int, tenant: Optional[str],
                kinds: frozenset) -> AsyncIterator[pb.Event]:
    """The WatchEvents stream: replay from `from_sequence` (0 = from now on), then live,
    one code path, every sequence once and in order (filters only hide events)."""
    async for batch in watch_batches(events, bridge, from_sequence, tenant, kinds):
        for ev in batch:
            yield ev


async def watch_batches(events: EventLog, bridge, from_sequence: int, tenant: Optional[str],
                        kinds: frozenset) -> AsyncIterator[list]:
    """`watch` in runs: each item is a `Batch` of consecutive pb.Events (after filtering),
    everything one LMDB read (at most READ_BATCH events) found; an empty one (at most every
    PROGRESS_EVERY_S while a filter hides everything) only reports progress. One gRPC
    message per run instead of one per event: the per-message cost of gRPC Python
    (~50 us of CPU on the server, more on the client) is what bounds a watcher in a
    burst, not LMDB. Nothing waits to fill a run: a run is what is readable now."""
    from .convert import event_fields_to_pb

    cursor = start_cursor(events, from_sequence)
    events.watchers += 1
    w = events.register_watch(cursor, tenant)
    sent_at = time.monotonic()
    reported = cursor - 1         # the last sequence a yielded batch reported as examined
    try:
        while True:
            try:
                batch = events.read(cursor, READ_BATCH)
            except EventsUnavailable as exc:
                events.watchers_dropped += 1
                if exc.cursor <= events.skipped_to:
                    raise EventsLost(exc.cursor, events.floor) from None
                raise
            except EventsLost:
                events.watchers_dropped += 1
                raise
            if not batch:
                if reported < cursor - 1 and time.monotonic() - sent_at >= PROGRESS_EVERY_S:
                    out = Batch()      # idle after a filtered-out stretch: say how far it got
                    out.through = reported = cursor - 1
                    sent_at = time.monotonic()
                    yield out
                await bridge.wait_events(1.0)
                continue
            cursor = batch[-1][0] + 1
            w.cursor = cursor
            out = Batch(event_fields_to_pb(*ev) for ev in batch
                        if (tenant is None or ev[2] == tenant) and (not kinds or ev[1] in kinds))
            out.through = cursor - 1
            now = time.monotonic()
            if out or now - sent_at >= PROGRESS_EVERY_S:
                sent_at = now
                reported = cursor - 1
                yield out
            else:
                await asyncio.sleep(0)    # a long filtered-out stretch must not hog the loop
    finally:
        events.unregister_watch(w)
        events.watchers -= 1
