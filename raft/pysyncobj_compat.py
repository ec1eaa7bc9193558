"""Every touchpoint with PySyncObj, in one module: the seam to the pinned library.

MINOOTS uses PySyncObj 0.3.17 (pinned in pyproject.toml) for Raft. Everything the
project needs from it, including the private parts it must reach, goes through
this module, and tests/test_pysyncobj_canary.py checks each touchpoint against the
installed version, naming the one that moved when the library changes:

* construction: `SyncObj`, `replicated`, `SyncObjConf` (built by `build_conf`),
  the custom serializer states, `TCPNode`;
* the log: `attach_journal` makes `SyncObj` use a journal object (raft/journal.py);
* reading state: `is_leader`, `leader_address`, `raft_status` (the private
  `_isLeader()`/`_getLeader()` and the `getStatus()` key strings), role and fail names;
* the wire (security): what a peer sends is authenticated by the cluster secret
  (PySyncObj's `password`: Fernet, an HMAC checked before anything is decoded)
  and then decoded by `peer_loads`, a restricted unpickler that admits only the
  shapes PySyncObj exchanges; frames are capped before they are buffered (tight
  until the peer has identified itself as a member), decompression is bounded;
  the utility protocol and read-only connections are refused; terms and indexes
  from peers are range-checked;
* the transport: `RaftConformantTCPTransport` fixes PySyncObj's AppendEntries
  handling per Raft §5.3 (see the section below), and makes the leader count only
  replies of its current term (replies echo the term of the append they answer);
* elections: `StallGuardMixin` and `PreVoteMixin` (Raft thesis §9.6), so a node that
  was stalled or partitioned cannot depose a healthy leader (docs/raft-elections.md);
* the Raft round (issue 15, docs/bench/perfsingle.md): `GroupSyncMixin` (one journal sync
  per batch of work), `CommitNoticeMixin` (the commit index rides on the next
  AppendEntries), `BoundedApplyMixin`, and small frames sent as stored zlib (`encode_frame`).

The rest of the project never imports `pysyncobj`.
"""
from __future__ import annotations

import _codecs
import io
import logging
import pickle
import struct
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import pysyncobj.pickle as _ps_pickle
import pysyncobj.syncobj as _syncobj_module
import pysyncobj.tcp_server as _tcp_server
import pysyncobj.transport as _transport_module
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import Journal
from pysyncobj.monotonic import monotonic as _monotonic
from pysyncobj.node import Node as _Node, TCPNode
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

__all__ = [
    "PINNED_VERSION", "SyncObj", "SyncObjConf", "replicated", "FAIL_REASON", "SERIALIZER_STATE", "TCPNode",
    "Journal", "StallGuardMixin", "PreVoteMixin", "CommitNoticeMixin", "COMMIT_NOTICE_S", "encode_frame", "election_counters", "HandOverMixin", "GroupSyncMixin", "caught_up_followers", "follower_connected", "any_peer_connected", "LEADER", "ROLE_NAMES", "FAIL_NAMES", "build_conf", "attach_journal",
    "install_journal_hook", "ask_to_remove", "is_leader", "leader_connected", "leader_address", "RaftStatus", "raft_status", "peer_loads",
    "PeerFrameError", "FrameDecoder", "MAX_FRAME", "MAX_UNIDENTIFIED_FRAME", "MAX_UNIDENTIFIED_CONNECTIONS",
    "RaftConformantTCPTransport", "RaftConformantTransportMixin", "plan_append_entries",
]

log = logging.getLogger("minoots.raft")

PINNED_VERSION = "0.3.17"

# ---------------------------------------------------------------- names and state

LEADER = 2  # PySyncObj's _RAFT_STATE.LEADER
ROLE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
FAIL_NAMES = {
    v: k.lower() for k, v in vars(FAIL_REASON).items() if not k.startswith("_") and isinstance(v, int)
}


def is_leader(obj: SyncObj) -> bool:
    return obj._isLeader()


def leader_address(obj: SyncObj) -> Optional[str]:
    """The Raft address of the leader this node knows, or None."""
    leader = obj._getLeader()
    return leader.id if leader is not None else None


def leader_connected(obj: SyncObj) -> bool:
    """True when this node leads, or has a live connection to the leader it knows."""
    if obj._isLeader():
        return True
    leader = obj._getLeader()
    return leader is not None and obj.isNodeConnected(leader)


@dataclass(frozen=True)
class RaftStatus:
    """`SyncObj.getStatus()` with names that say what they are."""

    role: str
    is_leader: bool
    term: int
    commit_index: int
    applied_index: int
    log_len: int
    has_quorum: bool
    leader: Optional[str]                           # Raft address
    partners: dict = field(default_factory=dict)    # Raft address -> connected
    match_index: dict = field(default_factory=dict)  # Raft address -> match index (leader only)


def raft_status(obj: SyncObj) -> Optional[RaftStatus]:
    """A consistent status, or None when PySyncObj kept resizing its dicts under us."""
    raw = None
    for _ in range(3):
        try:
            raw = obj.getStatus()   # iterates dicts the tick thread may resize meanwhile
            break
        except RuntimeError:
            continue
    if raw is None:
        return None
    partners, match = {}, {}
    for key, value in raw.items():
        if key.startswith("partner_node_status_server_"):
            partners[key[len("partner_node_status_server_"):]] = value == 2   # CONNECTION_STATE.CONNECTED
        elif key.startswith("match_idx_server_"):
            match[key[len("match_idx_server_"):]] = value
    leader = raw.get("leader")
    return RaftStatus(
        role=ROLE_NAMES.get(raw["state"], "unknown"), is_leader=raw["state"] == LEADER,
        term=raw["raft_term"], commit_index=raw["commit_idx"], applied_index=raw["last_applied"],
        log_len=raw["log_len"], has_quorum=bool(raw["has_quorum"]),
        leader=leader.id if leader is not None else None, partners=partners, match_index=match)


# ---------------------------------------------------------------- configuration

# PySyncObj sends a single log entry of at least appendEntriesBatchSizeBytes in chunks, and
# its chunker is broken (it decides "finish" by the command's length, not the pickled
# entry's, which protocol 2 inflates by up to 2x for binary data): a big entry is sent with
# several "finish" chunks, every follower fails to unpickle it on every retry, and
# replication stops for good. The threshold sits above any command we build (the API
# bounds a create command well below this), so no entry is ever chunked.
MAX_UNCHUNKED_ENTRY = 64 << 20


def build_conf(timing, *, bind: str, password: Optional[bytes], compaction_entries: int,
               compaction_seconds: float) -> SyncObjConf:
    """The one SyncObjConf MINOOTS runs with (send at once, no fork, dynamic membership);
    `timing` is a raft.config.RaftTiming."""
    return SyncObjConf(
        appendEntriesUseBatch=False,      # batching costs ~100 ms per commit; we batch in the API
        appendEntriesBatchSizeBytes=MAX_UNCHUNKED_ENTRY,
        raftMinTimeout=timing.raft_min_timeout,
        raftMaxTimeout=timing.raft_max_timeout,
        appendEntriesPeriod=timing.append_entries_period,
        connectionTimeout=timing.connection_timeout,
        connectionRetryTime=timing.connection_retry_time,
        leaderFallbackTimeout=timing.leader_fallback_timeout,
        dynamicMembershipChange=True,
        logCompactionMinEntries=compaction_entries,
        logCompactionMinTime=compaction_seconds,
        useFork=False,                    # LMDB environments must not cross a fork
        bindAddress=bind,                 # never PySyncObj's default of every interface
        password=password,
    )


# ---------------------------------------------------------------- elections after a stall

class StallGuardMixin:
    """A node that was stalled does not depose a healthy leader when it resumes.

    PySyncObj checks the election deadline at the start of each tick, before it reads
    the heartbeats waiting in its sockets. A node whose tick thread stopped for longer
    than the election timeout (SIGSTOP, a long snapshot load or catch-up apply, a busy
    machine) therefore starts an election the moment it resumes, with a higher term that
    deposes the leader it simply had not heard. Raft's PreVote (thesis §9.6) avoids that
    by asking first; this is the local half of it: after a gap between two ticks longer
    than the minimum election timeout, the node's election deadline starts afresh, so it
    campaigns only if the leader stays silent for a whole timeout after it resumed. A
    node that was not stalled is unaffected; if the leader did die meanwhile, the stalled
    node joins the election one timeout later than the others."""

    _sg_last_tick = None
    _sg_deferred_at = float("-inf")

    def _onTick(self, timeToWait=0.0):
        now = _monotonic()
        last, self._sg_last_tick = self._sg_last_tick, now
        # Once per stall: on a machine so slow that every tick is late, deferring each time
        # would keep this node from ever campaigning, even when the leader is gone.
        if last is not None and now - last > self.conf.raftMinTimeout \
                and now - self._sg_deferred_at > 2 * self.conf.raftMaxTimeout:
            self._sg_deferred_at = now
            fresh = now + self._SyncObj__generateRaftTimeout()
            if self._SyncObj__raftElectionDeadline < fresh:
                self._SyncObj__raftElectionDeadline = fresh
            log.warning("tick thread was stalled; election deadline restarted",
                        extra={"stalled_s": round(now - last, 3)})
        super()._onTick(timeToWait)


# ---------------------------------------------------------------- PreVote

PRE_VOTE = "pre_vote"
PRE_VOTE_RESPONSE = "pre_vote_response"
CAPS = "minoots_caps"          # sent once per connection: "I answer pre-votes and stamp my replies"


_PRE_VOTE_FIELDS = ("term", "round", "last_log_index", "last_log_term")   # a malformed request is ignored


class PreVoteMixin:
    """Raft's PreVote (thesis §9.6): no election unless a majority agrees the leader is gone.

    When its election deadline passes, a node first asks every peer for a pre-vote for
    term+1 without changing its own term. A peer grants it only if it has not heard from
    a leader within the minimum election timeout, is not the leader itself, and the
    asker's log is at least as up to date as its own (the RequestVote rule). Only with a
    majority of grants does the node let PySyncObj campaign; otherwise it asks again after
    another election timeout. So a follower that was stalled or partitioned, and comes
    back while the leader is healthy, is refused and never raises the term that would
    depose it. A leadership transfer (TimeoutNow, HandOverMixin) campaigns at once.

    Rolling upgrade: new nodes announce themselves (CAPS) first thing on every
    connection. A peer that has sent something else on its connection but no CAPS, and
    has not answered by the end of a round, is an older version that ignores pre-votes:
    it counts as a grant then (it would campaign on its own anyway), so a mixed cluster
    still elects a leader, an election timeout or two later at worst. A peer that sent nothing
    (a link that went dark: a partition) never counts.
    PreVote protects fully once every member runs it. The check-quorum half is
    PySyncObj's own: a leader that has not heard from a majority for
    leaderFallbackTimeout steps down."""

    _pv_round = 0
    _pv_asked = None       # (round, term asked for) of the round in progress
    _pv_grants = frozenset()
    _pv_answered = frozenset()
    _pv_go = None          # the term a majority granted: campaign for it at the next tick
    pre_vote_rounds = 0
    pre_votes_refused = 0  # pre-votes this node refused (it had a live leader, or a newer log)

    def _onTick(self, timeToWait=0.0):
        self._pv_before_election_check()
        super()._onTick(timeToWait)

    def _pv_transport(self):
        return self._SyncObj__transport

    def _pv_before_election_check(self) -> None:
        # PySyncObj campaigns in this tick iff the deadline passed and it is connected to
        # anyone (SyncObj._onTick); unless we let it, push the deadline on.
        if self._SyncObj__raftState == LEADER or self._SyncObj__selfNode is None:
            return
        now = _monotonic()
        deadline = self._SyncObj__raftElectionDeadline
        if deadline >= now or not self._SyncObj__connectedToAnyone():
            return
        go, self._pv_go = self._pv_go, None
        if self._SyncObj__transferInProgress or not self.otherNodes:
            return                                  # TimeoutNow, or nobody to ask
        if go is not None and deadline == 0 and go == self.raftCurrentTerm + 1:
            return                                  # a majority granted this election
        if self._pv_asked is not None and self._pv_round_won(presume_old=True):
            self._pv_asked = None
            return
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._pv_round += 1
        self.pre_vote_rounds += 1
        term = self.raftCurrentTerm + 1
        self._pv_asked = (self._pv_round, term)
        self._pv_grants, self._pv_answered = set(), set()
        message = {"type": PRE_VOTE, "term": term, "round": self._pv_round,
                   "last_log_index": self._SyncObj__getCurrentLogIndex(),
                   "last_log_term": self._SyncObj__getCurrentLogTerm()}
        transport = self._pv_transport()
        for node in self.otherNodes:
            transport.send(node, message)

    def _pv_round_won(self, presume_old: bool = False) -> bool:
        votes = 1 + len(self._pv_grants)
        if presume_old:
            transport = self._pv_transport()
            votes += sum(1 for n in self.otherNodes if n not in self._pv_answered
                         and transport.presumed_old(n, 2 * self.conf.raftMaxTimeout)
                         and self.isNodeConnected(n))
        return votes > (len(self.otherNodes) + 1) / 2

    def _pv_on_message(self, node, message) -> None:
        """A pre-vote request or answer from `node` (the transport routes them here)."""
        kind = message.get("type")
        if kind == PRE_VOTE and all(type(message.get(k)) is int for k in _PRE_VOTE_FIELDS):
            granted, retry_in = self._pv_grant(message)
            answer = {"type": PRE_VOTE_RESPONSE, "term": message["term"], "round": message["round"],
                      "granted": granted}
            if not granted:
                self.pre_votes_refused += 1
                if retry_in is not None:
                    answer["retry_in"] = retry_in
            self._pv_transport().send(node, answer)
        elif kind == PRE_VOTE_RESPONSE and self._pv_asked == (message.get("round"), message.get("term")):
            self._pv_answered.add(node)
            if message.get("granted") is True:
                self._pv_grants.add(node)
            if self._pv_round_won():
                self._pv_asked = None
                self._pv_go = message["term"]
                self._SyncObj__raftElectionDeadline = 0     # campaign at the next tick
                return
            retry_in = message.get("retry_in")
            if type(retry_in) is float and 0.0 <= retry_in <= self.conf.raftMinTimeout:
                # Refused only because it heard the leader lately: ask again the moment that
                # expires, not a whole election timeout later (the failover time). A
                # heartbeat meanwhile resets the deadline as usual.
                at = _monotonic() + retry_in
                if at < self._SyncObj__raftElectionDeadline:
                    self._SyncObj__raftElectionDeadline = at

    def _pv_grant(self, message) -> tuple[bool, Optional[float]]:
        """(granted, when a refusal for a recent leader contact would turn into a grant)."""
        if self._SyncObj__raftState == LEADER or message["term"] <= self.raftCurrentTerm:
            return False, None
        mine = (self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex())
        if (message["last_log_term"], message["last_log_index"]) < mine:
            return False, None
        quiet = _monotonic() - self._pv_transport().leader_heard_at
        if quiet < self.conf.raftMinTimeout:
            return False, float(self.conf.raftMinTimeout - quiet)
        return True, None


def election_counters(obj: SyncObj) -> dict:
    """This node's PreVote and reply-term counters (0 where a part is not installed)."""
    transport = getattr(obj, "_SyncObj__transport", None)
    return {"pre_vote_rounds": getattr(obj, "pre_vote_rounds", 0),
            "pre_votes_refused": getattr(obj, "pre_votes_refused", 0),
            "stale_replies_dropped": getattr(transport, "stale_replies_dropped", 0)}


# ---------------------------------------------------------------- leadership hand-over

class HandOverMixin:
    """A leader that is about to stop can hand leadership over without a gap.

    PySyncObj's `transferLeadership` (Raft's TimeoutNow) sends only to a follower whose
    matchIndex equals the leader's last log index. Under load the leader appends a new
    entry every few milliseconds, so that rarely holds at the moment it is checked. While
    `hold_proposals` is on and this node leads, the tick thread leaves new proposals in
    PySyncObj's queue instead of appending them (etcd stops proposals during a transfer
    the same way): the log stops growing, a follower is caught up one round trip later.
    Once another node leads, the tick thread processes the queue as any follower does
    (its own proposals are forwarded to the new leader, forwarded ones answered
    NOT_LEADER so their sender retries), so nothing is dropped silently."""

    _ho_hold = 0                # holders: a transfer and a stop's hand-over may overlap
    _ho_lock = threading.Lock()

    def hold_proposals(self, hold: bool) -> None:
        with self._ho_lock:
            self._ho_hold = max(0, self._ho_hold + (1 if hold else -1))

    def _checkCommandsToApply(self):
        if self._ho_hold and self._isLeader():
            return
        super()._checkCommandsToApply()


def any_peer_connected(obj: SyncObj) -> bool:
    """True when this node has a live connection to at least one other member."""
    return any(obj.isNodeConnected(n) for n in obj.otherNodes)


def follower_connected(obj: SyncObj, address: str) -> bool:
    """True when the member at Raft `address` is connected to this node."""
    return any(n.id == address and obj.isNodeConnected(n) for n in obj.otherNodes)


def caught_up_followers(obj: SyncObj) -> list:
    """Raft addresses of the connected followers holding the leader's whole log (sorted);
    [] when this node does not lead. Call it in the tick thread (reads PySyncObj's state)."""
    if not obj._isLeader():
        return []
    last = obj._SyncObj__getCurrentLogIndex()
    match = obj._SyncObj__raftMatchIndex
    return sorted(n.id for n in obj.otherNodes if obj.isNodeConnected(n) and match.get(n, 0) == last)


# ---------------------------------------------------------------- fewer, overlapped syncs

class GroupSyncMixin:
    """One journal sync per batch of work, and the leader's sync alongside its followers'.

    PySyncObj writes each log entry before it sends it, and a durable LMDB commit is two
    flushes (~3 ms here, far more on a busy disk): a leader synced before sending, each
    follower synced again before replying, so a Raft round cost two syncs in a row plus
    one per extra entry in a message. With the journal's deferred appends
    (raft/journal.py), entries are written and synced in one transaction at these points:

    * a follower's AppendEntries replies are held by the transport until the end of the
      poll that produced them; the sync comes first, then all the replies, so nothing is
      acknowledged before it is durable, and a poll that read several messages syncs once;
    * the leader syncs right after `_checkCommandsToApply` sent the new entries, so its
      sync runs while the followers' do (Raft thesis §10.2.1);
    * every tick starts with a sync, before the leader counts its own log towards a
      commit index. If that sync fails, the tick is aborted: nothing commits on an
      entry this node has not made durable.

    One exception, harmless: a single-member cluster that elects itself inside a tick
    commits its own no-op entry in that same tick, before the sync (a no-op carries no
    client data; every command still syncs before it can commit)."""

    _gs_journal = None

    def __init__(self, selfNode, otherNodes, conf=None, *args, **kwargs):
        super().__init__(selfNode, otherNodes, conf, *args, **kwargs)
        # The tick thread runs already: until both are on, appends are written at once and
        # replies sent at once, which is safe. Replies are held first, then appends deferred.
        journal = getattr(conf, "journalFile", None)
        transport = self._SyncObj__transport
        if callable(getattr(journal, "sync_appends", None)) and hasattr(transport, "hold_replies"):
            transport.hold_replies()
            self._gs_journal = journal
            journal.defer_appends(True)

    def _gs_sync(self) -> None:
        if self._gs_journal is None:
            return
        self._gs_journal.sync_appends()
        self._SyncObj__transport.release_held_replies()

    def _onTick(self, timeToWait=0.0):
        self._gs_sync()
        super()._onTick(timeToWait)

    def _checkCommandsToApply(self):
        try:
            super()._checkCommandsToApply()
        finally:
            self._gs_sync()


# ---------------------------------------------------------------- commit notices ride on appends (issue 15)

COMMIT_NOTICE_S = 0.005   # longest a follower waits to learn a commit when no append goes out meanwhile


class CommitNoticeMixin:
    """The leader tells its followers about a new commit index with the next AppendEntries,
    instead of with an extra empty one right after every apply.

    With `appendEntriesUseBatch=False` PySyncObj sends an empty AppendEntries to every
    follower after each apply, only to carry the new commit index; under load the next
    entry follows a few milliseconds later and carries it anyway. Each of those messages
    costs both sides a pickle, a compression, a Fernet seal or check and a reply, and costs
    the leader's tick thread a GIL hand-back per socket write: per committed entry, as much
    as the entry's own AppendEntries. Here the notice is due COMMIT_NOTICE_S after the apply
    (PySyncObj's own heartbeat timer, brought forward; the tick's poll wakes for it), and any
    AppendEntries sent before then carries the commit index and pushes the timer back.

    Only followers' apply is delayed (by at most COMMIT_NOTICE_S, when no other entry is
    proposed meanwhile); the commit itself, and what a client sent to the leader sees, are
    not. A follower that forwarded a command waits for its own apply before it answers, so
    when a committed entry was forwarded by a follower, the notice goes out at once."""

    _cn_forwarded = None      # log indexes of entries followers forwarded and still wait for

    def cn_note_forwarded(self, log_idx: int) -> None:
        """The leader appended an entry a follower forwarded (called by the transport)."""
        if self._cn_forwarded is None:
            self._cn_forwarded = deque()
        self._cn_forwarded.append(log_idx)

    def _SyncObj__applyLogEntries(self):
        need = super()._SyncObj__applyLogEntries()
        if self._SyncObj__raftState != LEADER:
            self._cn_forwarded = None
            return need
        return need and commit_notice_now(self, _monotonic())

    def _onTick(self, timeToWait=0.0):
        if self._SyncObj__raftState == LEADER:
            # Wake for the notice. One already due goes out in this tick, before the poll.
            left = self._SyncObj__newAppendEntriesTime - _monotonic()
            if 0.0 < left < timeToWait:
                timeToWait = left
        super()._onTick(timeToWait)


def commit_notice_now(obj, now: float) -> bool:
    """After an apply on the leader: True when the commit must be announced at once (a
    follower waits for a forwarded entry now committed); otherwise bring PySyncObj's
    heartbeat timer forward to now + COMMIT_NOTICE_S and return False."""
    applied = obj._SyncObj__raftLastApplied
    waiting = obj._cn_forwarded
    if waiting and waiting[0] <= applied:
        while waiting and waiting[0] <= applied:
            waiting.popleft()
        return True
    due = now + COMMIT_NOTICE_S
    if obj._SyncObj__newAppendEntriesTime > due:
        obj._SyncObj__newAppendEntriesTime = due
    return False


# ---------------------------------------------------------------- bounded apply (issue 15)

APPLY_SLICE = 4           # entries applied between two checks of the time budget (one create entry: ~20 ms)
APPLY_BUDGET_S = 0.02     # the longest one tick spends applying before it reads its sockets again


class BoundedApplyMixin:
    """A node with a backlog (a restart replaying its log, a follower catching up) applies
    it in slices of at most ~APPLY_BUDGET_S per tick, and reads its sockets between them.

    PySyncObj applies every committed entry in one go (`__applyLogEntries`): a node tens of
    thousands of entries behind went silent for seconds (no heartbeat answered, none read),
    long enough to look dead to the leader or to start an election itself. Here the apply
    step works through the backlog APPLY_SLICE entries at a time (the entries PySyncObj's
    loop fetches are capped, for the duration of each call; the commit index other threads
    read is never touched) until the budget is spent; while a backlog remains, the tick does
    not sleep in its poll. Entries are applied in the same order, each exactly once, with
    the same callbacks: only the pacing changes."""

    _ba_cap = None

    def _SyncObj__getEntries(self, fromIDx, count=None, maxSizeBytes=None):
        cap = self._ba_cap
        if cap is not None and count is not None and count > cap:
            count = cap
        return super()._SyncObj__getEntries(fromIDx, count, maxSizeBytes)

    def _SyncObj__applyLogEntries(self):
        if self.apply_backlog() <= APPLY_SLICE:
            return super()._SyncObj__applyLogEntries()
        deadline = _monotonic() + APPLY_BUDGET_S
        need = False
        while self.apply_backlog() > 0:
            last = self._SyncObj__raftLastApplied
            self._ba_cap = APPLY_SLICE
            try:
                need = super()._SyncObj__applyLogEntries() or need
            finally:
                self._ba_cap = None
            if self._SyncObj__raftLastApplied == last or _monotonic() >= deadline:
                break        # no progress (PySyncObj logged why), or the budget is spent
        return need

    def apply_backlog(self) -> int:
        """Committed entries not applied yet."""
        return max(0, self._SyncObj__raftCommitIndex - self._SyncObj__raftLastApplied)

    def _onTick(self, timeToWait=0.0):
        super()._onTick(0.0 if self.apply_backlog() > APPLY_SLICE else timeToWait)


# ---------------------------------------------------------------- the journal hook

def install_journal_hook() -> None:
    """Let ``SyncObjConf(journalFile=<Journal instance>)`` pass a journal object.

    ``SyncObj.__init__`` calls the module global ``createJournal`` and offers no
    parameter for a journal object. This replaces that global, once, with a wrapper
    that returns a ``Journal`` instance unchanged and hands anything else (None, a
    file name) to the original, so other SyncObjs in the process behave as before.
    """
    current = _syncobj_module.createJournal
    if getattr(current, "_minoots_journal_hook", False):
        return

    def createJournal(journalFile=None):
        if isinstance(journalFile, Journal):
            return journalFile
        return current(journalFile)

    createJournal._minoots_journal_hook = True
    createJournal.__wrapped__ = current
    _syncobj_module.createJournal = createJournal


def attach_journal(conf, journal: Journal):
    """Make ``SyncObj(..., conf)`` use ``journal``; returns ``conf``.

    Pass a fresh journal (and conf) per SyncObj: SyncObj owns the journal from then
    on and closes it in ``destroy()``.
    """
    if not isinstance(journal, Journal):
        raise TypeError(f"journal must be a pysyncobj Journal, got {type(journal).__name__}")
    install_journal_hook()
    conf.journalFile = journal
    return conf


# ---------------------------------------------------------------- the peer wire

# A frame's length prefix is read before anything else. Until a connection has
# identified itself as a member (after the secret handshake), a frame is small;
# after that it carries at most one AppendEntries batch (MAX_UNCHUNKED_ENTRY of
# entries, inflated by pickle protocol 2's latin-1 bytes) or a snapshot chunk.
MAX_UNIDENTIFIED_FRAME = 64 << 10
MAX_FRAME = 2 * MAX_UNCHUNKED_ENTRY + (1 << 20)
MAX_DECOMPRESSED = MAX_FRAME
MAX_UNIDENTIFIED_DECOMPRESSED = 1 << 20
MAX_UNIDENTIFIED_CONNECTIONS = 32
# Raft terms and log indexes from peers: far above anything real (a term a second for
# 100k years is 2**42), far below what breaks arithmetic or pins a node for good.
MAX_TERM_OR_INDEX = 1 << 48


class PeerFrameError(Exception):
    """A peer frame is too large, a decompression bomb, or not a shape PySyncObj sends."""


def _latin1(text, encoding):
    # Pickle protocol 2 writes bytes as _codecs.encode(str, "latin1"); nothing else is allowed.
    if encoding != "latin1" or type(text) is not str:
        raise pickle.UnpicklingError("only latin-1 bytes are allowed in peer frames")
    return _codecs.encode(text, "latin1")


def _empty_bytes(*args):
    # ... and an empty bytes object as bytes(); bytes(n) would allocate n bytes.
    if args:
        raise pickle.UnpicklingError("bytes(...) with arguments is not allowed in peer frames")
    return b""


def _small_set(items=()):
    return set(items)


_PEER_GLOBALS = {
    ("_codecs", "encode"): _latin1,
    ("pysyncobj.node", "TCPNode"): TCPNode,      # membership commands carry the node
    ("pysyncobj.node", "Node"): _Node,
}
for _module in ("builtins", "__builtin__"):      # protocol 2 names builtins the Python 2 way
    _PEER_GLOBALS[(_module, "bytes")] = _empty_bytes
    _PEER_GLOBALS[(_module, "set")] = _small_set
    _PEER_GLOBALS[(_module, "frozenset")] = frozenset


class _PeerUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _PEER_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a peer message") from None


def peer_loads(data) -> object:
    """Decode a pickled PySyncObj message or log command: plain data and the classes above only."""
    return _PeerUnpickler(io.BytesIO(data if isinstance(data, bytes) else bytes(data))).load()


def _bounded_decompress(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, limit)
    if d.unconsumed_tail or not d.eof:
        raise PeerFrameError(f"a peer frame decompresses to more than {limit} bytes (or is truncated)")
    return out


_FRAME_LEN = struct.Struct("i")

#: zlib level of the frames this node sends (PySyncObj's own send uses 3: ~0.75 ms per
#: 1,000-timer create entry and follower, against ~0.5 ms at level 1 for nearly the same
#: size). A frame whose middle does not shrink (random payloads) is stored, level 0. Any
#: zlib reader decodes every level, so peers of any build read these frames.
PEER_ZLIB_LEVEL = 1
_SAMPLE = 4096


def compress_frame(raw: bytes) -> bytes:
    """A peer frame's zlib body: level PEER_ZLIB_LEVEL, or stored when a sample of it is
    incompressible (frames above 8 KiB only; small frames are cheap either way)."""
    if len(raw) > 2 * _SAMPLE:
        mid = len(raw) // 2
        if len(zlib.compress(raw[mid:mid + _SAMPLE], 1)) > _SAMPLE * 9 // 10:
            return zlib.compress(raw, 0)
    return zlib.compress(raw, PEER_ZLIB_LEVEL)


# Frames up to this size go out as a stored (uncompressed) zlib stream. PySyncObj compresses
# every frame at level 3, and zlib's set-up alone (~30 us, more on a busy machine) costs more
# than a Raft message's pickle: a reply, a heartbeat, a small append are a few hundred bytes.
# A stored stream with a 512-byte window is still zlib: any peer decodes it unchanged.
STORED_FRAME_MAX = 64 << 10


def encode_frame(payload: bytes) -> bytes:
    """The zlib stream this node puts in a frame: stored when small, else `compress_frame`
    (level PEER_ZLIB_LEVEL, or stored when incompressible)."""
    if len(payload) <= STORED_FRAME_MAX:
        c = zlib.compressobj(0, zlib.DEFLATED, 9, 1)
        return c.compress(payload) + c.flush()
    return compress_frame(payload)


class BoundedTcpConnection(TcpConnection):
    """PySyncObj's connection with its read path bounded: the length prefix is checked
    before a byte of the frame is buffered, the buffer is a bytearray (no quadratic
    copies), decompression is capped and decoding is `peer_loads`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Connections we open go to a member's address; accepted ones must first name one.
        self.identified = kwargs.get("socket") is None

    def _limit(self) -> int:
        return MAX_FRAME if self.identified else MAX_UNIDENTIFIED_FRAME

    def send(self, message):
        """PySyncObj's send (int32 length + [Fernet] zlib(pickle)), small frames stored (`encode_frame`)."""
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = encode_frame(_ps_pickle.dumps(message))
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, int(_monotonic()))
        self._TcpConnection__writeBuffer += _FRAME_LEN.pack(len(data)) + data
        self._TcpConnection__trySendBuffer()

    def _TcpConnection__processRead(self):
        buf = self._TcpConnection__readBuffer
        if not isinstance(buf, bytearray):
            buf = self._TcpConnection__readBuffer = bytearray(buf)
        if len(buf) >= 4:
            (n,) = _FRAME_LEN.unpack_from(buf)
            if n < 0 or n > self._limit():
                self._refuse(f"frame of {n} bytes announced")
                return False
            if len(buf) >= 4 + n:
                return False   # a whole frame is waiting: parse before reading more
        if not super()._TcpConnection__processRead():
            return False
        buf = self._TcpConnection__readBuffer
        if len(buf) >= 4:
            (n,) = _FRAME_LEN.unpack_from(buf)
            if n < 0 or n > self._limit():
                self._refuse(f"frame of {n} bytes announced")
                return False
        return True

    def _TcpConnection__processParseMessage(self):
        buf = self._TcpConnection__readBuffer
        if len(buf) < 4:
            return None
        (n,) = _FRAME_LEN.unpack_from(buf)
        if n < 0 or n > self._limit():
            self._refuse(f"frame of {n} bytes announced")
            return None
        if len(buf) - 4 < n:
            return None
        data = bytes(memoryview(buf)[4:4 + n])
        try:
            if self.encryptor:
                stamp = self.encryptor.extract_timestamp(data)   # verifies the HMAC first
                if stamp < self.recvLastTimestamp:
                    raise PeerFrameError("replayed frame")
                self.recvLastTimestamp = stamp
                data = self.encryptor.decrypt(data)
            message = peer_loads(_bounded_decompress(
                data, MAX_DECOMPRESSED if self.identified else MAX_UNIDENTIFIED_DECOMPRESSED))
            if self.recvRandKey:
                rand_key, message = message
                if rand_key != self.recvRandKey:
                    raise PeerFrameError("frame from another connection")
        except Exception as exc:
            self._refuse(f"undecodable frame ({type(exc).__name__})")
            return None
        del buf[:4 + n]
        return message

    def _refuse(self, why: str) -> None:
        log.warning("peer connection refused", extra={"reason": why, "identified": self.identified})
        self._TcpConnection__readBuffer = bytearray()
        self.disconnect()


class FrameDecoder:
    """Decodes the frames PySyncObj writes on a link, as a peer holding `password` would.

    For tools on the wire (the chaos drills' partition proxy), which must learn who
    opened a connection: with a secret that is the second frame the opener sends."""

    def __init__(self, password: Optional[bytes]) -> None:
        from pysyncobj.encryptor import getEncryptor

        self._encryptor = getEncryptor(password) if password else None

    def decode(self, payload: bytes) -> object:
        """One frame's payload (the bytes after its length prefix); raises on a bad frame."""
        if self._encryptor is not None:
            payload = self._encryptor.decrypt(payload)
        return peer_loads(_bounded_decompress(payload, MAX_UNIDENTIFIED_DECOMPRESSED))

    @staticmethod
    def claimed_address(message) -> Optional[str]:
        """The member address an opening connection names (plain, or after the key exchange)."""
        if isinstance(message, tuple) and len(message) == 2:
            message = message[1]
        return message if isinstance(message, str) else None


_install_lock = threading.Lock()


def install_peer_wire() -> None:
    """Make every PySyncObj connection and log decode go through the bounded, restricted path."""
    with _install_lock:
        _tcp_server.TcpConnection = BoundedTcpConnection
        _transport_module.TcpConnection = BoundedTcpConnection
        _ps_pickle.loads = peer_loads   # also decodes committed commands at apply time


def _in_range(value) -> bool:
    return type(value) is int and 0 <= value <= MAX_TERM_OR_INDEX


def _sane_message(message) -> bool:
    """Range checks on what a member sends: terms and indexes are small non-negative ints."""
    if not isinstance(message, dict):
        return False
    for key in ("term", "commit_index", "prevLogIdx", "prevLogTerm", "next_node_idx",
                "last_log_index", "last_log_term"):
        if key in message and message[key] is not None and not _in_range(message[key]):
            return False
    entries = message.get("entries")
    if entries is not None:
        if not isinstance(entries, (list, tuple)):
            return False
        for e in entries:
            if not (isinstance(e, (list, tuple)) and len(e) == 3 and isinstance(e[0], bytes)
                    and _in_range(e[1]) and _in_range(e[2])):
                return False
    return True


# ---------------------------------------------------------------- the transport: Raft §5.3
# The bug inside ``SyncObj.__onMessageReceived``)::
#
#     prevEntries = self.__getEntries(prevLogIdx)        # prev entry .. end of log
#     ...                                                # prev term checked
#     if len(prevEntries) > 1:                           # we hold anything after prev
#         (roll back membership changes of all of them)
#         if prevLogIdx + 1 <= self.__raftLastApplied:
#             logger.critical('truncating already-applied log entries ...')
#         self.__deleteEntriesFrom(prevLogIdx + 1)       # ... and delete them all
#     for entry in newEntries:
#         self.__raftLog.add(*entry)
#
# A follower deletes *every* entry after ``prevLogIdx`` whenever it holds more, even
# when they are identical to the incoming ones, and even for an empty heartbeat.
# Raft (§5.3, Figure 2, AppendEntries rule 3-4) deletes only from the first entry
# whose term conflicts and appends only entries not already present.
#
# Why it fires on a plain burst: with ``appendEntriesUseBatch=False`` the leader sends
# after every command and advances ``nextIndex`` optimistically, but
# on each success reply it sets ``nextIndex`` back to the reply's value while later batches are still in flight. Its next send
# starts from that older index, the follower (which already has those entries, often
# applied) truncates and re-appends them, and logs CRITICAL when they were applied.
# Besides the noise, this is a safety hole: a committed entry deleted from a
# follower that was part of its majority can be lost if the leader then fails, and
# membership entries are rolled back and re-applied (connections dropped/re-added).
#
# The fix rewrites the incoming message *before* PySyncObj sees it, so that the
# unmodified handler does the right thing; no private attribute is touched. Given
# prev entry matches and the follower holds entries after it:
#
# * skip the leading new entries already present (same index and term): move
#   ``prevLogIdx``/``prevLogTerm`` forward past them; the handler then truncates only
#   from the first real conflict (and its CRITICAL line then means a real
#   divergence), or simply appends if there is no conflict;
# * if every new entry is already present, turn it into a heartbeat at our last
#   entry (``prevLogIdx`` = our last index) so nothing is truncated. When our last
#   entry's term is the leader's term, that entry came from this leader, and Log
#   Matching makes our whole log equal to the leader's up to it, so acknowledging
#   it is true. Otherwise (an older-term tail
#   the leader did not send) the tail is kept, the commit index taken from this
#   message is capped at the last entry the leader vouched for, and the success reply
#   is capped to that index (Raft's ``matchIndex = prevLogIdx + len(entries)``).
#
# Large single entries arrive in chunks (``transmission`` start/process/finish,
# ); they are reassembled here so the same rule applies.
#
# Plug-in: the transport is a public constructor parameter, ``SyncObj(...,
# transportClass=RaftConformantTCPTransport)``. The rewrite needs to read the log, so
# the SyncObj must be given its journal object via ``minoots.raft.journal.attach_journal``
# (any ``Journal``, e.g. ``LmdbJournal`` or ``MemoryJournal``).
#
# Leader side (the cause of the resends). On a success reply that raises
# ``matchIndex`` the handler sets ``nextIndex`` to the reply's value, moving it back while later entries are still in flight. With
# the follower fixed this only wastes bandwidth, unless the leader has compacted past
# that index meanwhile: then it streams a whole snapshot to an up-to-date follower,
# which discards its log, rolls its state back to the snapshot (``raftCommitIndex
# exceeds journal end after loading dump``, ) and never calls the
# callbacks of commands it had forwarded and not yet applied. The transport records
# the highest entry index it sent to each peer in the current term on the current
# connection; after a success reply below it, it hands the handler a synthetic
# ``next_node_idx`` with ``reset=True, success=False`` (which only sets ``nextIndex``
# and the response time, ) to put ``nextIndex`` back past what
# was sent. Tracking is dropped on a reset reply (the follower disagrees), on
# disconnect (in-flight data lost), on snapshot or chunked sends, and per term.


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


def _may_cut_back(journal, current_term: int, message: dict) -> bool:
    """Would PySyncObj's handler delete entries of this node's log for (planned) `message`?
    It does when the previous entry matches and we hold entries after it; a snapshot
    replaces the whole log. Conservative: true also where it turns out to delete nothing."""
    if message.get("term", -1) < current_term:
        return False
    if "serialized" in message:
        return True
    prev = message.get("prevLogIdx")
    if prev is None or message.get("transmission") is not None or len(journal) == 0:
        return False
    first, last = journal[0][1], journal[-1][1]
    return first <= prev < last and journal[prev - first][2] == message.get("prevLogTerm")


class RaftConformantTransportMixin:
    """Transport mixin applying ``plan_append_entries`` to incoming messages."""

    def __init__(self, syncObj, selfNode, otherNodes):
        journal = syncObj.conf.journalFile
        if not isinstance(journal, Journal):
            raise ValueError(
                "RaftConformant transports need the SyncObj's journal object: "
                "build the conf with attach_journal(conf, journal)"
            )
        self._rc_syncobj = syncObj
        self._rc_journal = journal
        self._rc_reply_cap = None  # (node, max next_node_idx) while a capped message is handled
        self._rc_chunks = None  # reassembly buffer for chunked entries (one, like SyncObj's)
        self._rc_sent = {}  # leader: node -> (term, highest entry index sent on this connection)
        self._rc_held = None  # AppendEntries replies held until the journal synced (GroupSyncMixin)
        self._rc_answering = None  # (node, term) while an append_entries is handled: its replies echo the term
        self._rc_log_epoch = 0  # bumped whenever this node's own log may have been cut back
        self._rc_link_epoch = {}  # node -> _rc_log_epoch when its current connection came up
        self.stale_replies_dropped = 0  # replies of an older term (or not provably current) not counted
        self.leader_heard_at = float("-inf")  # monotonic time of the last append from a current leader
        self.prevote_peers = set()  # peers that said (CAPS) or showed they answer pre-votes, this connection
        self._rc_caps_due = set()  # peers connected since the last tick: CAPS goes out then
        self._rc_heard = {}  # peer -> monotonic time of its last message on the current connection
        super().__init__(syncObj, selfNode, otherNodes)

    def setOnNodeDisconnectedCallback(self, callback):
        def on_disconnected(node, _callback=callback):
            self._rc_sent.pop(node, None)  # whatever was in flight is lost
            self._rc_link_epoch.pop(node, None)
            self.prevote_peers.discard(node)
            self._rc_caps_due.discard(node)
            self._rc_heard.pop(node, None)
            if _callback is not None:
                _callback(node)

        super().setOnNodeDisconnectedCallback(on_disconnected if callback is not None else None)

    def setOnNodeConnectedCallback(self, callback):
        def on_connected(node, _callback=callback):
            self._rc_link_epoch[node] = self._rc_log_epoch
            self._rc_caps_due.add(node)   # the connection may not take a message yet (still connecting)
            if _callback is not None:
                _callback(node)

        super().setOnNodeConnectedCallback(on_connected if callback is not None else None)

    def _onTick(self):
        super()._onTick()
        for node in list(self._rc_caps_due):
            self._rc_send_caps(node)

    def _rc_send_caps(self, node) -> None:
        # Not sent while the connection is still being set up: due again at the next tick.
        if super().send(node, {"type": CAPS, "prevote": 1}):
            self._rc_caps_due.discard(node)

    def presumed_old(self, node, within: float) -> bool:
        """A peer that spoke on its current connection in the last `within` seconds but
        never said it answers pre-votes."""
        heard = self._rc_heard.get(node)
        return heard is not None and _monotonic() - heard <= within and node not in self.prevote_peers

    def setOnMessageReceivedCallback(self, callback):
        if callback is None:
            super().setOnMessageReceivedCallback(None)
            return

        def on_message(node, message, _callback=callback):
            self._rc_on_message(_callback, node, message)

        super().setOnMessageReceivedCallback(on_message)

    def _rc_on_message(self, callback, node, message):
        self._rc_heard[node] = _monotonic()
        if not isinstance(message, dict):
            callback(node, message)
            return
        if not _sane_message(message):
            log.warning("peer message out of range dropped", extra={"peer": getattr(node, "id", None),
                                                                   "type": str(message.get("type"))[:32]})
            return
        if message.get("type") == "next_node_idx":
            self._rc_on_next_node_idx(callback, node, message)
            return
        kind = message.get("type")
        if kind in (PRE_VOTE, PRE_VOTE_RESPONSE, CAPS):
            self.prevote_peers.add(node)
            handler = getattr(self._rc_syncobj, "_pv_on_message", None)
            if handler is not None and kind != CAPS:
                handler(node, message)
            return
        if kind != "append_entries":
            callback(node, message)
            return
        if message["term"] >= self._rc_syncobj.raftCurrentTerm:
            self.leader_heard_at = _monotonic()
        transmission = message.get("transmission")
        if transmission is not None:
            # Mirror SyncObj's reassembly; pass start/process on.
            if transmission == "start":
                self._rc_chunks = message["data"]
            elif transmission == "process" and self._rc_chunks is not None:
                self._rc_chunks += message["data"]
            elif transmission == "finish" and self._rc_chunks is not None:
                data, self._rc_chunks = self._rc_chunks + message["data"], None
                message = {k: v for k, v in message.items() if k not in ("transmission", "data")}
                message["entries"] = [peer_loads(data)]
            if message.get("transmission") is not None:
                self._rc_answer(callback, node, message)
                return
        term = self._rc_syncobj.raftCurrentTerm
        message, cap = plan_append_entries(self._rc_journal, term, message)
        if _may_cut_back(self._rc_journal, term, message):
            self._rc_log_epoch += 1
        self._rc_reply_cap = (node, cap) if cap is not None else None
        try:
            self._rc_answer(callback, node, message)
        finally:
            self._rc_reply_cap = None

    def _rc_answer(self, callback, node, message):
        """Hand an append_entries to PySyncObj; the replies it sends to `node` meanwhile echo its term."""
        self._rc_answering = (node, message["term"])
        try:
            callback(node, message)
        finally:
            self._rc_answering = None

    def send(self, node, message):
        if node in self._rc_caps_due:
            self._rc_send_caps(node)      # CAPS is the first thing a peer reads from us on a connection
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
        answering = self._rc_answering
        if (
            answering is not None
            and node == answering[0]
            and isinstance(message, dict)
            and message.get("type") == "next_node_idx"
        ):
            message = dict(message, term=answering[1])   # which term's append this answers
        if isinstance(message, dict) and message.get("type") == "append_entries":
            self._rc_track_sent(node, message)
        elif isinstance(message, dict) and message.get("type") == "apply_command_response" \
                and type(message.get("log_idx")) is int:
            note = getattr(self._rc_syncobj, "cn_note_forwarded", None)
            if note is not None:
                note(message["log_idx"])   # CommitNoticeMixin: announce its commit at once
        if self._rc_held is not None and isinstance(message, dict) and message.get("type") == "next_node_idx":
            self._rc_held.append((node, message))   # sent by release_held_replies, after the sync
            return True
        return super().send(node, message)

    def hold_replies(self) -> None:
        """From now on, AppendEntries replies wait for `release_held_replies` (GroupSyncMixin)."""
        if self._rc_held is None:
            self._rc_held = []

    def release_held_replies(self) -> None:
        """Send the held AppendEntries replies; call only once the journal synced what they acknowledge."""
        if not self._rc_held:
            return
        held, self._rc_held = self._rc_held, []
        for node, message in held:
            if node in self._rc_caps_due:
                self._rc_send_caps(node)
            super().send(node, message)

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

    def _rc_reply_is_current(self, node, message) -> bool:
        """May PySyncObj count this reply? Raft's leader counts only replies of its current term.

        A reply stamped with the term of the append it answers is current iff that is
        our term. An unstamped one comes from a peer without this fix (a rolling
        upgrade): PySyncObj itself uses it only while leading, and only a success can
        raise matchIndex. It is surely current when this node's log was never cut back
        since the connection it arrived on came up: a reply of an older term then
        vouches only for entries below this term's first one, which never count
        towards this term's commits. Otherwise it is dropped and the connection reset,
        so that every later unstamped reply is provably of this term."""
        obj = self._rc_syncobj
        term = message.get("term")
        if term is not None:
            return term == obj.raftCurrentTerm
        if not message.get("success") or not obj._isLeader():
            return True
        if self._rc_link_epoch.get(node) == self._rc_log_epoch:
            return True
        log.info("unstamped reply after this node's log was cut back: resetting the link",
                 extra={"peer": getattr(node, "id", None)})
        self._rc_disconnect(node)
        return False

    def _rc_disconnect(self, node) -> None:
        conn = getattr(self, "_connections", {}).get(node)
        if conn is not None:
            conn.disconnect()

    def _rc_on_next_node_idx(self, callback, node, message):
        if not self._rc_reply_is_current(node, message):
            self.stale_replies_dropped += 1
            return
        sent = self._rc_sent.get(node)
        if message.get("reset"):
            self._rc_sent.pop(node, None)  # the follower disagrees: let SyncObj back off
        callback(node, message)
        # SyncObj sets nextIndex to the reply's value on every
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


def ask_to_remove(leader: str, address: str, password: Optional[bytes], timeout: float = 10.0) -> str:
    """Ask the leader at `leader` to remove member `address` over PySyncObj's utility
    protocol (needs the cluster secret); returns its answer, "SUCCESS ..." when done."""
    from pysyncobj.utility import TcpUtility, UtilityException

    try:
        return str(TcpUtility(password=password, timeout=timeout).executeCommand(leader, ["remove", address]))
    except UtilityException as exc:
        return f"no answer ({exc})"


class PeerGuardMixin:
    """Who may talk on the Raft port: members only.

    With a cluster secret, PySyncObj's first exchange on a connection is a random key
    sent under the secret; the bounded connection above has already refused anything
    not authenticated by then. After it the peer must name a member's address:
    PySyncObj's utility protocol (add/remove/transfer from any socket) and read-only
    connections (which make the leader stream its log) are refused outright, and
    connections that have not identified themselves are capped in number."""

    def __init__(self, syncObj, selfNode, otherNodes):
        install_peer_wire()
        super().__init__(syncObj, selfNode, otherNodes)

    def _onNewIncomingConnection(self, conn):
        if len(self._unknownConnections) >= MAX_UNIDENTIFIED_CONNECTIONS:
            log.warning("peer connection refused", extra={"reason": "too many unidentified connections"})
            conn.disconnect()
            return
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn, message):
        if self._syncObj.encryptor and not conn.sendRandKey:
            if not isinstance(message, bytes) or len(message) != 32:
                return self._refuse_incoming(conn, "bad handshake")
            return super()._onIncomingMessageReceived(conn, message)   # the secret handshake
        if isinstance(message, list):
            # Only a holder of the cluster secret may use the utility protocol, and only
            # for `remove` (how a leader that stepped down has itself removed).
            if self._syncObj.encryptor and len(message) == 2 and message[0] == "remove" \
                    and isinstance(message[1], str) and message[1] in self._nodeAddrToNode:
                return super()._onIncomingMessageReceived(conn, message)
            return self._refuse_incoming(conn, "utility protocol is disabled")
        if not isinstance(message, str) or message not in self._nodeAddrToNode:
            return self._refuse_incoming(conn, "not a member address")
        conn.identified = True
        # PySyncObj replaces the member's connection without closing the old one, which
        # then lingers half-used; close it, so a stale or impostor link heals by reconnecting.
        old = self._connections.get(self._nodeAddrToNode[message])
        super()._onIncomingMessageReceived(conn, message)
        if old is not None and old is not conn:
            old.disconnect()

    def _refuse_incoming(self, conn, why: str) -> None:
        log.warning("peer connection refused", extra={"reason": why})
        self._unknownConnections.discard(conn)
        conn.disconnect()


class RaftConformantTCPTransport(PeerGuardMixin, RaftConformantTransportMixin, TCPTransport):
    """``TCPTransport`` with the peer guard and the Raft §5.3 AppendEntries fix; pass as ``transportClass``."""
