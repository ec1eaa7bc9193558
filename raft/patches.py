"""Raft §5.3 fix for PySyncObj 0.3.17's follower AppendEntries handler.

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
  entry's term is the leader's term, Log Matching guarantees our whole log is a
  prefix of the leader's, so acknowledging it is true. Otherwise (an older-term tail
  the leader did not send) the tail is kept, the commit index taken from this
  message is capped at the last entry the leader vouched for, and the success reply
  is capped to that index (Raft's ``matchIndex = prevLogIdx + len(entries)``).

Large single entries arrive in chunks (``transmission`` start/process/finish,
syncobj.py:965-980); they are reassembled here so the same rule applies.

Plug-in: the transport is a public constructor parameter, ``SyncObj(...,
transportClass=RaftConformantTCPTransport)``. The rewrite needs to read the log, so
the SyncObj must be given its journal object via ``minoots.raft.journal.attach_journal``
(any ``Journal``, e.g. ``LmdbJournal`` or ``MemoryJournal``).

Not changed: the leader-side nextIndex regression described above (it only causes
redundant resends once followers are idempotent; see /work/notes/pysyncobj.md).
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
        super().__init__(syncObj, selfNode, otherNodes)

    def setOnMessageReceivedCallback(self, callback):
        if callback is None:
            super().setOnMessageReceivedCallback(None)
            return

        def on_message(node, message, _callback=callback):
            self._rc_on_message(_callback, node, message)

        super().setOnMessageReceivedCallback(on_message)

    def _rc_on_message(self, callback, node, message):
        if not (isinstance(message, dict) and message.get("type") == "append_entries"):
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
        return super().send(node, message)


class RaftConformantTCPTransport(RaftConformantTransportMixin, TCPTransport):
    """``TCPTransport`` with the Raft §5.3 AppendEntries fix; pass as ``transportClass``."""
