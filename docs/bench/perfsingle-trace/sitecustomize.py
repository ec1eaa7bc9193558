"""Round tracer for docs/bench/perfsingle.md (issue 15): NOT part of MINOOTS.

Loaded by node processes only when this directory is on PYTHONPATH and $PS_TRACE_DIR is
set (see drive.py). It wraps a few functions of the node once `minoots.api.service` is
imported and records (CLOCK_MONOTONIC ns, stage, log index, extra) in memory, written to
$PS_TRACE_DIR/trace-<pid>.tsv once a second. CLOCK_MONOTONIC is one clock for every
process on the machine, so stages of the leader and the followers line up.
"""
import importlib.abc
import os
import sys
import threading
import time

OUT = os.environ.get("PS_TRACE_DIR")
if OUT and "node" in sys.argv and "run" in sys.argv:
    _rec = []
    _ns = time.monotonic_ns

    def rec(label, key=None, extra=None):
        _rec.append((_ns(), label, key, extra))

    def _dump():
        with open(os.path.join(OUT, f"trace-{os.getpid()}.tsv"), "a") as f:
            while _rec:
                t, label, k, e = _rec.pop(0)
                f.write(f"{t}\t{label}\t{k}\t{e}\n")

    def _flusher():
        while True:
            time.sleep(1.0)
            _dump()

    threading.Thread(target=_flusher, daemon=True).start()

    def _patch():
        from minoots.api import batcher as b, bridge as br
        from minoots.raft import journal as j, machine as mm, pysyncobj_compat as c

        J = j.LmdbJournal
        _add, _sa = J.add, J.sync_appends

        def add(self, command, idx, term):
            rec("j.add", idx)
            return _add(self, command, idx, term)

        def sync_appends(self):
            n = len(self._pending)
            t0 = _ns()
            r = _sa(self)
            if n:
                rec("j.sync", self._last[1], (_ns() - t0, n))
            return r
        J.add, J.sync_appends = add, sync_appends

        T = c.RaftConformantTransportMixin
        _send, _rel, _onmsg = T.send, T.release_held_replies, T._rc_on_message

        def send(self, node, m):
            if isinstance(m, dict):
                if m.get("type") == "append_entries":
                    rec("send.ae" if m.get("entries") else "send.hb",
                        m["entries"][-1][1] if m.get("entries") else m.get("commit_index"), node.id)
            return _send(self, node, m)

        def release(self):
            if self._rc_held:
                rec("release", max(m.get("next_node_idx", 0) for _, m in self._rc_held))
            return _rel(self)

        def onmsg(self, callback, node, m):
            if isinstance(m, dict):
                if m.get("type") == "append_entries":
                    rec("recv.ae" if m.get("entries") else "recv.hb",
                        m["entries"][-1][1] if m.get("entries") else m.get("commit_index"))
                elif m.get("type") == "next_node_idx":
                    rec("recv.reply", m.get("next_node_idx"))
            return _onmsg(self, callback, node, m)
        T.send, T.release_held_replies, T._rc_on_message = send, release, onmsg

        TC = c.TcpConnection
        _tsb = TC._TcpConnection__trySendBuffer

        def trysend(self):
            t0 = _ns()
            r = _tsb(self)
            rec("trysend", None, _ns() - t0)
            return r
        TC._TcpConnection__trySendBuffer = trysend

        S = c.SyncObj
        _apply = S._SyncObj__applyLogEntries

        def apply(self):
            ci, la = self._SyncObj__raftCommitIndex, self._SyncObj__raftLastApplied
            if ci > la:
                rec("apply.start", ci, la)
            r = _apply(self)
            if ci > la:
                rec("apply.end", self._SyncObj__raftLastApplied)
            return r
        S._SyncObj__applyLogEntries = apply

        B = b.CreateBatcher
        _fl, _cr, _ld = B._flush, B.create, B._landed

        def flush(self):
            rec("b.flush", len(self._queue))
            return _fl(self)

        async def create(self, specs):
            t0 = _ns()
            r = await _cr(self, specs)
            rec("b.create.done", None, _ns() - t0)
            return r

        def landed(self, gen, batch, fut, sent):
            rec("b.landed", len(batch))
            return _ld(self, gen, batch, fut, sent)
        B._flush, B.create, B._landed = flush, create, landed

        M = mm.TimerMachine
        _mp = M.propose

        def propose(self, command, callback):
            def cb(res, err):
                rec("cb", self._SyncObj__raftLastApplied + 1)
                return callback(res, err)
            rec("m.propose")
            return _mp(self, command, cb)
        M.propose = propose

        _settle = br._settle

        def settle(fut, result, err):
            rec("settle")
            return _settle(fut, result, err)
        br._settle = settle

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "minoots.api.service":
                return None
            sys.meta_path.remove(self)
            from importlib.util import find_spec
            spec = find_spec(name)
            exec_module = spec.loader.exec_module

            def patched(module):
                exec_module(module)
                _patch()
            spec.loader.exec_module = patched
            return spec

    sys.meta_path.insert(0, _Finder())
