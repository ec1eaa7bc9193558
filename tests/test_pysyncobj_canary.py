"""Canary: every touchpoint raft/pysyncobj_compat.py has with PySyncObj, checked against
the installed version. A failure names the touchpoint that moved: read that part of
the seam before upgrading the pin."""
from __future__ import annotations

import importlib.metadata
import inspect

import pysyncobj
import pysyncobj.encryptor
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.tcp_server
import pysyncobj.transport
import pysyncobj.utility
import pytest

from minoots.raft import pysyncobj_compat as compat
from minoots.raft.config import RaftTiming


def _src(obj) -> str:
    return inspect.getsource(obj)


def _conn_has_private_read_path():
    c = pysyncobj.tcp_connection.TcpConnection(poller=None)
    return all(hasattr(c, a) for a in ("_TcpConnection__readBuffer", "sendRandKey", "recvRandKey",
                                       "recvLastTimestamp", "encryptor")) and \
        all(hasattr(pysyncobj.tcp_connection.TcpConnection, m) for m in
            ("_TcpConnection__processRead", "_TcpConnection__processParseMessage", "disconnect"))


TOUCHPOINTS = {
    "pinned version": lambda: importlib.metadata.version("pysyncobj") == compat.PINNED_VERSION,
    "LEADER == _RAFT_STATE.LEADER": lambda: pysyncobj.syncobj._RAFT_STATE.LEADER == compat.LEADER,
    "role numbers": lambda: (pysyncobj.syncobj._RAFT_STATE.FOLLOWER, pysyncobj.syncobj._RAFT_STATE.CANDIDATE)
    == (0, 1),
    "private _isLeader/_getLeader/isNodeConnected": lambda: all(
        callable(getattr(pysyncobj.SyncObj, m, None)) for m in ("_isLeader", "_getLeader", "isNodeConnected")),
    "getStatus() key strings": lambda: all(k in _src(pysyncobj.SyncObj.getStatus) for k in (
        "'state'", "'raft_term'", "'commit_idx'", "'last_applied'", "'log_len'", "'has_quorum'", "'leader'",
        "partner_node_status_server_", "match_idx_server_")),
    "CONNECTION_STATE.CONNECTED == 2": lambda: pysyncobj.tcp_connection.CONNECTION_STATE.CONNECTED == 2,
    "SyncObjConf takes build_conf's options": lambda: compat.build_conf(
        RaftTiming(), bind="127.0.0.1:1", password=b"x" * 16, compaction_entries=100,
        compaction_seconds=1.0).bindAddress == "127.0.0.1:1",
    "module-global createJournal (journal hook)": lambda: callable(pysyncobj.syncobj.createJournal),
    "custom serializer conf fields": lambda: all(hasattr(pysyncobj.SyncObjConf(), f) for f in (
        "serializer", "deserializer", "serializeChecker", "fullDumpFile", "onStateChanged", "journalFile")),
    "SERIALIZER_STATE values": lambda: {"NOT_SERIALIZING", "SERIALIZING", "SUCCESS", "FAILED"}
    <= set(vars(compat.SERIALIZER_STATE)),
    "one replicated method numbered 0": lambda: "_methodToID" in _src(pysyncobj.SyncObj.__init__),
    "TcpConnection private read path": _conn_has_private_read_path,
    "TcpConnection is a module global of tcp_server and transport": lambda: all(
        hasattr(m, "TcpConnection") for m in (pysyncobj.tcp_server, pysyncobj.transport)),
    "frame = int32 length + [Fernet] zlib(pickle)": lambda: all(s in _src(pysyncobj.tcp_connection.TcpConnection.send)
                                                               for s in ("struct.pack('i'", "zlib.compress",
                                                                         "encrypt_at_time", "sendRandKey")),
    "send: frame = pickle.dumps, then __writeBuffer += and __trySendBuffer (BoundedTcpConnection.send)": lambda: all(
        s in _src(pysyncobj.tcp_connection.TcpConnection.send) for s in (
            "pickle.dumps(message)", "self.__writeBuffer += data", "self.__trySendBuffer()"))
    and hasattr(pysyncobj.tcp_connection.TcpConnection, "_TcpConnection__trySendBuffer"),
    "pysyncobj.pickle.loads decodes frames and commands": lambda: "pickle.loads(zlib.decompress(data))" in
    _src(pysyncobj.tcp_connection.TcpConnection) and "pickle.loads(command[1:])" in _src(pysyncobj.SyncObj),
    "transport incoming-connection hooks": lambda: all(callable(getattr(pysyncobj.transport.TCPTransport, m, None))
                                                      for m in ("_onNewIncomingConnection",
                                                                "_onIncomingMessageReceived")),
    "transport bookkeeping attributes": lambda: all(a in _src(pysyncobj.transport.TCPTransport.__init__) for a in (
        "self._unknownConnections", "self._nodeAddrToNode", "self._connections")),
    "utility protocol and readonly handshake": lambda: "'readonly'" in _src(
        pysyncobj.transport.TCPTransport._onIncomingMessageReceived) and "isinstance(message, list)" in _src(
        pysyncobj.transport.TCPTransport._onIncomingMessageReceived),
    "AppendEntries message fields (§5.3 fix)": lambda: all(k in _src(pysyncobj.SyncObj) for k in (
        "'prevLogIdx'", "'prevLogTerm'", "'entries'", "'commit_index'", "'transmission'", "'next_node_idx'",
        "'reset'", "'success'")),
    "transport callbacks the §5.3 fix wraps": lambda: all(callable(getattr(pysyncobj.transport.TCPTransport, m, None))
                                                         for m in ("setOnMessageReceivedCallback",
                                                                   "setOnNodeDisconnectedCallback", "send")),
    "encryptor: getEncryptor and Fernet timestamps": lambda: hasattr(
        pysyncobj.encryptor.getEncryptor(b"x" * 16), "extract_timestamp"),
    "election deadline checked at the start of _onTick (stall guard)": lambda: all(
        k in _src(pysyncobj.SyncObj._onTick) for k in ("self.__raftElectionDeadline < monotonicTime()",
                                                        "self.__generateRaftTimeout()"))
    and hasattr(pysyncobj.SyncObj, "_SyncObj__generateRaftTimeout")
    and callable(getattr(pysyncobj.SyncObj, "_onTick", None)),
    "hand-over: _checkCommandsToApply appends proposals, called from _onTick": lambda: "self.__raftLog.add("
    in _src(pysyncobj.SyncObj._checkCommandsToApply) and "self._checkCommandsToApply()" in _src(pysyncobj.SyncObj._onTick),
    "hand-over: transferLeadership needs matchIndex == last log index": lambda: all(
        k in _src(pysyncobj.SyncObj.transferLeadership) for k in (
            "self.__raftMatchIndex.get(node, 0) != self.__getCurrentLogIndex()", "'timeout_now'"))
    and hasattr(pysyncobj.SyncObj, "_SyncObj__getCurrentLogIndex"),
    "group sync: the commit index is computed only in _onTick": lambda: _src(pysyncobj.SyncObj).count(
        "self.__raftMatchIndex[node] >= commitIdx") == 1 and "self.__raftMatchIndex[node] >= commitIdx" in _src(
        pysyncobj.SyncObj._onTick),
    "group sync: the transport is self.__transport, replies go through its send": lambda: "self.__transport = "
    in _src(pysyncobj.SyncObj.__init__) and all(k in _src(pysyncobj.SyncObj._SyncObj__sendNextNodeIdx) for k in (
        "'type': 'next_node_idx'", "self.__transport.send(")),
    "pre-vote: the election check of _onTick and the state it reads": lambda: all(
        k in _src(pysyncobj.SyncObj._onTick) for k in (
            "if self.__raftState in (_RAFT_STATE.FOLLOWER, _RAFT_STATE.CANDIDATE) and self.__selfNode is not None",
            "self.__raftElectionDeadline < monotonicTime() and self.__connectedToAnyone()",
            "self.__setCurrentTerm(self.__raftCurrentTerm + 1"))
    and all(k in _src(pysyncobj.SyncObj.__init__) for k in (
        "self.__raftState = ", "self.__selfNode = ", "self.__transferInProgress = ", "self.__transport = "))
    and all(hasattr(pysyncobj.SyncObj, m) for m in (
        "_SyncObj__connectedToAnyone", "_SyncObj__getCurrentLogIndex", "_SyncObj__getCurrentLogTerm",
        "_SyncObj__generateRaftTimeout")),
    "pre-vote: TimeoutNow sets the deadline to 0 and marks the transfer": lambda: all(
        k in _src(pysyncobj.SyncObj._SyncObj__onMessageReceived) for k in (
            "self.__raftElectionDeadline = 0", "self.__transferInProgress = True")),
    "pre-vote: RequestVote's up-to-date rule (mirrored by the grant)": lambda: all(
        k in _src(pysyncobj.SyncObj._SyncObj__onMessageReceived) for k in (
            "if lastLogTerm < self.__getCurrentLogTerm():", "lastLogIdx < self.__getCurrentLogIndex()")),
    "pre-vote: an unknown message type falls through the handler (old peers ignore pre-votes)": lambda:
    _src(pysyncobj.SyncObj._SyncObj__onMessageReceived).count("raise ") == 1
    and "raise Exception('Wrong transmission type')" in _src(pysyncobj.SyncObj._SyncObj__onMessageReceived),
    "reply term: replies are sent only by the append_entries handler": lambda:
    _src(pysyncobj.SyncObj).count("self.__sendNextNodeIdx(")
    == _src(pysyncobj.SyncObj._SyncObj__onMessageReceived).count("self.__sendNextNodeIdx(") == 6,
    "reply term: the leader's next_node_idx handling reads no term": lambda: "message['term']" not in _src(
        pysyncobj.SyncObj._SyncObj__onMessageReceived).split("if message['type'] == 'next_node_idx':")[1],
    "transport: connected callback and the tick hook CAPS rides on": lambda: all(
        callable(getattr(pysyncobj.transport.TCPTransport, m, None)) for m in (
            "setOnNodeConnectedCallback", "_onTick")) and "self._syncObj.addOnTickCallback(self._onTick)" in _src(
        pysyncobj.transport.TCPTransport.__init__),
    "utility client with a password": lambda: "password" in inspect.signature(
        pysyncobj.utility.TcpUtility).parameters,
    "commit notice: apply asks for an AppendEntries, the heartbeat timer sends it": lambda: all(
        k in _src(pysyncobj.SyncObj._onTick) for k in (
            "needSendAppendEntries = self.__applyLogEntries()",
            "if monotonicTime() > self.__newAppendEntriesTime or needSendAppendEntries:"))
    and "self.__newAppendEntriesTime = monotonicTime() + self.__conf.appendEntriesPeriod" in _src(
        pysyncobj.SyncObj._SyncObj__sendAppendEntries)
    and "needSendAppendEntries = True" in _src(pysyncobj.SyncObj._SyncObj__applyLogEntries),
    "commit notice: a forwarded command is answered with its log_idx": lambda: all(
        k in _src(pysyncobj.SyncObj._checkCommandsToApply) for k in (
            "'type': 'apply_command_response'", "'log_idx': idx", "self.__transport.send(requestNode")),
    "stored frames: send's write buffer and flush": lambda: all(
        k in _src(pysyncobj.tcp_connection.TcpConnection.send) for k in (
            "self.__writeBuffer += data", "self.__trySendBuffer()")),
}


@pytest.mark.parametrize("touchpoint", sorted(TOUCHPOINTS))
def test_touchpoint(touchpoint):
    assert TOUCHPOINTS[touchpoint](), f"PySyncObj touchpoint changed: {touchpoint} (see raft/pysyncobj_compat.py)"


def test_the_rest_of_the_project_never_imports_pysyncobj():
    import pathlib
    import re

    root = pathlib.Path(compat.__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".venv/", "build/", "tests/")) or rel == "raft/pysyncobj_compat.py":
            continue
        if re.search(r"^\s*(from|import)\s+pysyncobj\b", path.read_text(), re.M):
            offenders.append(rel)
    assert offenders == []
