"""Real PySyncObj nodes on an in-process bus, for deterministic Raft scenarios.

SyncObjs with the RaftConformant transport over a bus that delivers their messages when
the test says so: a cut link drops them (like the chaos proxy's black hole: the nodes
still think they are connected), a held link keeps them queued, in order, until
released. Ticks are driven by hand and election deadlines forced, so a run is the same
every time: no sleeps, no timing. Used by tests/test_prevote.py and
tests/test_raft_reply_term.py.
"""
from __future__ import annotations

from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.journal import MemoryJournal
from pysyncobj.transport import Transport

from minoots.raft.pysyncobj_compat import PreVoteMixin, RaftConformantTransportMixin, attach_journal, raft_status

ADDRS = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
ADDRS5 = ADDRS + ["127.0.0.1:4", "127.0.0.1:5"]
FAR = 1e12     # an election deadline that never passes by itself


class Bus:
    def __init__(self):
        self.queue = []                # (src addr, dst addr, message, connection generation)
        self.generation = {}           # frozenset({a, b}) -> connection number (a reconnect loses the queue)
        self.cut = set()               # frozenset({a, b}) of black-holed links
        self.held = set()              # (src, dst): messages wait, in order, until released
        self.transports = {}           # addr -> transport
        self.log = []                  # every message delivered: (src, dst, type)

    def reconnect(self, a, b) -> None:
        """The a-b connection drops (what was on it is lost) and a new one comes up."""
        link = frozenset((a, b))
        self.generation[link] = self.generation.get(link, 0) + 1
        for x, y in ((a, b), (b, a)):
            t = self.transports[x]
            t._onNodeDisconnected(t.node_by_addr[y])
        for x, y in ((a, b), (b, a)):
            t = self.transports[x]
            t._onNodeConnected(t.node_by_addr[y])

    def deliver(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            if all((src, dst) in self.held for src, dst, _, _ in self.queue):
                return
            batch, self.queue, kept = self.queue, [], []
            for item in batch:
                src, dst, message, gen = item
                link = frozenset((src, dst))
                if link in self.cut or dst not in self.transports or gen != self.generation.get(link, 0):
                    continue
                if (src, dst) in self.held:
                    kept.append(item)
                    continue
                t = self.transports[dst]
                self.log.append((src, dst, message.get("type") if isinstance(message, dict) else None))
                t._onMessageReceived(t.node_by_addr[src], message)
            self.queue = kept + self.queue
        raise AssertionError("the bus did not go quiet")


class BusTransport(Transport):
    bus: Bus = None

    def __init__(self, syncObj, selfNode, otherNodes):
        super().__init__(syncObj, selfNode, otherNodes)
        self.addr = selfNode.address
        self.node_by_addr = {n.address: n for n in otherNodes}
        self.bus.transports[self.addr] = self
        syncObj.addOnTickCallback(self._onTick)

    def _onTick(self):
        pass

    def connect_all(self):
        for node in self.node_by_addr.values():
            self._onNodeConnected(node)

    def send(self, node, message):
        self.bus.queue.append((self.addr, node.address, message,
                               self.bus.generation.get(frozenset((self.addr, node.address)), 0)))
        return True


class NewTransport(RaftConformantTransportMixin, BusTransport):
    def _rc_disconnect(self, node):          # the TCP connection's disconnect(): a new connection
        self.bus.reconnect(self.addr, node.address)


class NewNode(PreVoteMixin, SyncObj):
    pass


class OldNode(SyncObj):
    """A member running a version without PreVote (its transport: the §5.3 fix only)."""


class OldTransport(RaftConformantTransportMixin, BusTransport):
    def _rc_on_message(self, callback, node, message):
        callback(node, message)            # pre-votes and CAPS reach PySyncObj, which ignores them

    def _onTick(self):
        self._rc_caps_due.clear()          # never announces itself


def make(bus, addr, addrs, node_class=NewNode, transport_class=NewTransport):
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=False, raftMinTimeout=100.0, raftMaxTimeout=101.0,
                       appendEntriesPeriod=0.01, leaderFallbackTimeout=1000.0, connectionTimeout=1000.0,
                       dynamicMembershipChange=False)
    attach_journal(conf, MemoryJournal())
    transport_class.bus = bus
    return node_class(addr, [a for a in addrs if a != addr], conf, transportClass=transport_class)


class Cluster:
    def __init__(self, kinds=("new", "new", "new"), classes=None):
        """kinds: "new" or "old" per member (3 or 5); classes: kind -> (SyncObj class, transport class)."""
        self.bus = Bus()
        self.nodes = {}
        self.dead = set()
        self.addrs = ADDRS5[:len(kinds)]
        classes = {"new": (NewNode, NewTransport), "old": (OldNode, OldTransport), **(classes or {})}
        for addr, kind in zip(self.addrs, kinds):
            self.nodes[addr] = make(self.bus, addr, self.addrs, *classes[kind])
        for obj in self.nodes.values():
            obj._SyncObj__raftElectionDeadline = FAR
        for t in self.bus.transports.values():
            t.connect_all()
        self.tick()

    def tick(self, times: int = 3) -> None:
        for _ in range(times):
            for addr, obj in self.nodes.items():
                if addr not in self.dead:
                    obj.doTick(0.0)
                self.bus.deliver()

    def expire(self, addr) -> None:
        """addr's election deadline passes (the leader was silent for a whole timeout)."""
        self.nodes[addr]._SyncObj__raftElectionDeadline = 0.0

    def forget_leader(self, *addrs) -> None:
        """The minimum election timeout passed since addrs last heard a leader."""
        for a in addrs:
            self.bus.transports[a].leader_heard_at = float("-inf")

    def status(self, addr):
        return raft_status(self.nodes[addr])

    def leaders(self):
        return [a for a in self.addrs if a not in self.dead and self.status(a).is_leader]

    def terms(self):
        return {a: self.status(a).term for a in self.addrs}

    def isolate(self, addr):
        self.bus.cut |= {frozenset((addr, o)) for o in self.addrs if o != addr}

    def log(self, addr):
        """addr's log as [(index, term)]."""
        j = self.nodes[addr]._SyncObj__raftLog
        return [(e[1], e[2]) for e in j[:]]

    def heal(self):
        self.bus.cut.clear()

    def kill(self, addr):
        """addr stops: its links drop (on both sides) and nothing reaches it."""
        self.isolate(addr)
        self.dead.add(addr)
        for other, t in self.bus.transports.items():
            if other == addr:
                continue
            t._onNodeDisconnected(t.node_by_addr[addr])

    def elect(self, addr):
        self.forget_leader(*self.addrs)
        self.expire(addr)
        self.tick(4)
        for obj in self.nodes.values():
            obj._SyncObj__raftElectionDeadline = FAR
        assert self.leaders() == [addr]

    def destroy(self):
        for obj in self.nodes.values():
            obj.destroy()


