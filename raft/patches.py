"""Raft §5.3 fixes for PySyncObj 0.3.17's AppendEntries handling (follower and leader).

The bug (pysyncobj/syncobj.py:982-1006, inside ``SyncObj.__onMessageReceived``)::

    prevEntries = self.__getEntries(prevLogIdx)        # prev entry .. end of log
    ...                                                # prev term checked
    if len(prevEntries) > 1:                           # we hold anything after prev
        (roll back membership changes of all of them)
        if prevLogIdx + 1 <= self.__raftLastApplied:
            logger.critical('truncating already-applied log entries ...')
        self.__deleteEntriesFrom(prevLogIdx + 1)       # ... and delete them all
    for entry in newEntries:
        self.__raftLog.add(*entry)

A follower deletes *every* entry after ``prevLogIdx`` whenever it holds more, even
when they are identical to the incoming ones, and even for an empty heartbeat.
Raft (§5.3, Figure 2, AppendEntries rule 3-4) deletes only from the first entry
whose term conflicts and appends only entries not already present.

Why it fires on a plain burst: with ``appendEntriesUseBatch=False`` the leader sends
after every command and advances ``nextIndex`` optimistically (syncobj.py:1273), but
on each success reply it sets ``nextIndex`` back to the reply's value
(syncobj.py:1079-1082) while later batches are still in flight. Its next send
starts from that older index, the follower (which already has those entries, often
applied) truncates and re-appends them, and logs CRITICAL when they were applied.
Besides the noise, this is a safety hole: a committed entry deleted from a
follower that was part of its majority can be lost if the leader then fails, and
membership entries are rolled back and re-applied (connections dropped/re-added).

The fix rewrites the incoming message *before* PySyncObj sees it, so that the
unmodified handler does the right thing; no private attribute is touched. Given
prev entry matches and the follower holds entries after it:

* skip the leading new entries already present (same index and term): move
  ``prevLogIdx``/``prevLogTerm`` forward past them; the handler then truncates only
  from the first real conflict (and its CRITICAL line then means a real
  divergence), or simply appends if there is no conflict;
* if every new entry is already present, turn it into a heartbeat at our last
  entry (``prevLogIdx`` = our last index) so nothing is truncated. When our last
  entry's term is the leader's term, that entry came from this leader, and Log
  Matching makes our whole log equal to the leader's up to it, so acknowledging
  it is true. Otherwise (an older-term tail
  the leader did not send) the tail is kept, the commit index taken from this
  message is capped at the last entry the leader vouched for, and the success reply
  is capped to that index (Raft's ``matchIndex = prevLogIdx + len(entries)``).

Large single entries arrive in chunks (``transmission`` start/process/finish,
syncobj.py:965-980); they are reassembled here so the same rule applies.

Plug-in: the transport is a public constructor parameter, ``SyncObj(...,
transportClass=RaftConformantTCPTransport)``. The rewrite needs to read the log, so
the SyncObj must be given its journal object via ``minoots.raft.journal.attach_journal``
(any ``Journal``, e.g. ``LmdbJournal`` or ``MemoryJournal``).

Leader side (the cause of the resends). On a success reply that raises
``matchIndex`` the handler sets ``nextIndex`` to the reply's value
(syncobj.py:1079-1082), moving it back while later entries are still in flight. With
the follower fixed this only wastes bandwidth, unless the leader has compacted past
that index meanwhile: then it streams a whole snapshot to an up-to-date follower,
which discards its log, rolls its state back to the snapshot (``raftCommitIndex
exceeds journal end after loading dump``, syncobj.py:1499-1505) and never calls the
callbacks of commands it had forwarded and not yet applied. The transport records
the highest entry index it sent to each peer in the current term on the current
connection; after a success reply below it, it hands the handler a synthetic
``next_node_idx`` with ``reset=True, success=False`` (which only sets ``nextIndex``
and the response time, syncobj.py:1076-1083) to put ``nextIndex`` back past what
was sent. Tracking is dropped on a reset reply (the follower disagrees), on
disconnect (in-flight data lost), on snapshot or chunked sends, and per term.

Measured (3 in-process nodes, unbatched, 50k calls submitted at a follower; see
/work/notes/pysyncobj.md section 4): unpatched, all 17 runs logged 1-17 CRITICAL lines
and truncated 5.7k-28.6k entries; with the follower fix only, no truncation but up to
14 snapshot streams and, in 3 of 9 runs, 472-6893 callbacks never called; with both
fixes, 16 of 17 runs had none of these (the other one had elections mid-burst under
CPU contention, see the notes).
"""
from __future__ import annotations

from typing import Optional

import pysyncobj.pickle as ps_pickle
from pysyncobj.journal import Journal
from pysyncobj.transport import TCPTransport

__all__ = ["RaftConformantTCPTransport", "RaftConformantTransportMixin", "plan_append_entries"]


def plan_append_entries(journal, current_term: int, message: dict) -> tuple[dict, Optional[int]]:
    """Rewrite a follower-bound ``append_entries`` message per Raft §5.3.

    Returns ``(message, reply_cap)``: the message to hand to PySyncObj (the same
    object when no rewrite is needed) and, when not None, the maximum
    ``next_node_idx`` the follower may acknowledge for it.
    """
    if (
        message.get("type") != "append_entries"
        or "prevLogIdx" not in message
        or message.get("transmission") is not None
        or message["term"] < current_term  # the handler ignores it
        or len(journal) == 0
    ):
        return message, None
    first = journal[0][1]
    last_entry = journal[-1]
    last = last_entry[1]
    prev = message["prevLogIdx"]
    if prev is None or prev < first or prev >= last:
        return message, None  # reject / reset paths, or a plain append: handler is right
    if journal[prev - first][2] != message["prevLogTerm"]:
        return message, None  # prev term mismatch: handler rejects
    entries = message.get("entries") or []
    matched = 0
    for entry in entries:
        idx = entry[1]
        if idx > last or journal[idx - first][2] != entry[2]:
            break
        matched += 1
    if matched < len(entries):
        if matched == 0:
            return message, None  # conflict right after prev: handler truncates correctly
        return dict(
            message,
            prevLogIdx=prev + matched,
            prevLogTerm=entries[matched - 1][2],
            entries=list(entries[matched:]),
        ), None
    # Every new entry (possibly none: a heartbeat) is already here.
    last_new = prev + len(entries)
    rewritten = dict(message, prevLogIdx=last, prevLogTerm=last_entry[2], entries=[])
    if last_new == last or last_entry[2] == message["term"]:
        return rewritten, None
    rewritten["commit_index"] = min(message["commit_index"], last_new)
    return rewritten, last_new + 1


class RaftConformantTransportMixin:
    """Transport mixin applying ``plan_append_entries`` to incoming messages."""

    def __init__(self, syncObj, selfNode, otherNodes):
        journal = syncObj.conf.journalFile
        if not isinstance(journal, Journal):
            raise ValueError(
                "RaftConformant transports need the SyncObj's journal object: "
                "build the conf with minoots.raft.journal.attach_journal(conf, journal)"
            )
        self._rc_syncobj = syncObj
        self._rc_journal = journal
        self._rc_reply_cap = None  # (node, max next_node_idx) while a capped message is handled
        self._rc_chunks = None  # reassembly buffer for chunked entries (one, like SyncObj's)
        self._rc_sent = {}  # leader: node -> (term, highest entry index sent on this connection)
        super().__init__(syncObj, selfNode, otherNodes)

    def setOnNodeDisconnectedCallback(self, callback):
        def on_disconnected(node, _callback=callback):
            self._rc_sent.pop(node, None)  # whatever was in flight is lost
            if _callback is not None:
                _callback(node)

        super().setOnNodeDisconnectedCallback(on_disconnected if callback is not None else None)

    def setOnMessageReceivedCallback(self, callback):
        if callback is None:
            super().setOnMessageReceivedCallback(None)
            return

        def on_message(node, message, _callback=callback):
            self._rc_on_message(_callback, node, message)

        super().setOnMessageReceivedCallback(on_message)

    def _rc_on_message(self, callback, node, message):
        if not isinstance(message, dict):
            callback(node, message)
            return
        if message.get("type") == "next_node_idx":
            self._rc_on_next_node_idx(callback, node, message)
            return
        if message.get("type") != "append_entries":
            callback(node, message)
            return
        transmission = message.get("transmission")
        if transmission is not None:
            # Mirror SyncObj's reassembly (syncobj.py:965-980); pass start/process on.
            if transmission == "start":
                self._rc_chunks = message["data"]
            elif transmission == "process" and self._rc_chunks is not None:
                self._rc_chunks += message["data"]
            elif transmission == "finish" and self._rc_chunks is not None:
                data, self._rc_chunks = self._rc_chunks + message["data"], None
                message = {k: v for k, v in message.items() if k not in ("transmission", "data")}
                message["entries"] = [ps_pickle.loads(data)]
            if message.get("transmission") is not None:
                callback(node, message)
                return
        message, cap = plan_append_entries(self._rc_journal, self._rc_syncobj.raftCurrentTerm, message)
        if cap is None:
            callback(node, message)
            return
        self._rc_reply_cap = (node, cap)
        try:
            callback(node, message)
        finally:
            self._rc_reply_cap = None

    def send(self, node, message):
        cap = self._rc_reply_cap
        if (
            cap is not None
            and isinstance(message, dict)
            and message.get("type") == "next_node_idx"
            and message.get("success")
            and node == cap[0]
            and message["next_node_idx"] > cap[1]
        ):
            message = dict(message, next_node_idx=cap[1])
        if isinstance(message, dict) and message.get("type") == "append_entries":
            self._rc_track_sent(node, message)
        return super().send(node, message)

    # Leader side: keep nextIndex from moving back on stale success replies.

    def _rc_track_sent(self, node, message):
        entries = message.get("entries")
        if not entries or "transmission" in message or not self._rc_syncobj._isLeader():
            if "serialized" in message or "transmission" in message:
                self._rc_sent.pop(node, None)  # snapshot / chunked entry: stop tracking
            return
        term, last = message["term"], entries[-1][1]
        sent = self._rc_sent.get(node)
        if sent is None or sent[0] != term or last > sent[1]:
            self._rc_sent[node] = (term, last)

    def _rc_on_next_node_idx(self, callback, node, message):
        sent = self._rc_sent.get(node)
        if message.get("reset"):
            self._rc_sent.pop(node, None)  # the follower disagrees: let SyncObj back off
        callback(node, message)
        # SyncObj (syncobj.py:1079-1082) sets nextIndex to the reply's value on every
        # success that raises matchIndex, even while later entries are in flight; the
        # next send then repeats them (and, if the leader compacted meanwhile, sends a
        # whole snapshot to an up-to-date follower). Put nextIndex back past what was
        # already sent, via the handler's own reset path (reset=True, success=False
        # only sets nextIndex and the response time).
        if (
            sent is not None
            and message.get("success")
            and not message.get("reset")
            and message["next_node_idx"] <= sent[1]
            and self._rc_syncobj._isLeader()
            and self._rc_syncobj.raftCurrentTerm == sent[0]
        ):
            callback(node, {"type": "next_node_idx", "next_node_idx": sent[1] + 1,
                            "reset": True, "success": False})


class RaftConformantTCPTransport(RaftConformantTransportMixin, TCPTransport):
    """``TCPTransport`` with the Raft §5.3 AppendEntries fix; pass as ``transportClass``."""
