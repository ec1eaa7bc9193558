"""Timer graphs: dependencies between timers and escalation ladders, as replicated data.

Dependencies. A timer created with `after` (1..MAX_PARENTS ids of timers of its own
tenant, existing or earlier/later in the same create batch) waits in SCHEDULED (not
in the wheel, revision 1, only a `created` event) until its parents meet its
condition (a recurring child's schedule starts then: see _recurring_start):

    fired          the parent fired (its first fire after the child was created, or
                   an earlier one: a parent that fired already counts at its fired_at)
    settled        the parent settled          (fails: cancelled or dead-lettered)
    dead_lettered  the parent was dead-lettered (fails: settled or cancelled)
    cancelled      the parent was cancelled    (fails: settled or dead-lettered)

(`fired` fails only when the parent is cancelled before it ever fired.) With mode
`all` every parent must meet it, with `any` one. The condition time of a parent is
the committed time of the command (or tick) in which it met the condition; the
child then arms (an `armed` event) at max(its own fire_at, condition time + delay),
where the condition time is the latest one counted (mode all) or the first (any).
A child created without a deadline has fire_at 0, so only the condition counts.

A parent that can no longer meet the condition (e.g. condition settled, parent
cancelled) is handled by the child's `on_parent_cancel` policy:
    cancel   mode all: the child is cancelled at once (and its own children in turn);
             mode any: the parent stops counting; the child is cancelled once no
             parent is left that could still meet it.
    release  the failure counts as meeting the condition at that command's time.
A create whose child would be cancelled at once (a parent already failed) is refused
(FailedPrecondition), so nothing is created. Cycles can only arise inside one batch
(existing timers never depend on new ones) and are refused (InvalidArgument), like
missing parents (NotFound) -- a parent of another tenant is missing by construction.

Retention: a parent meets or fails every condition when it reaches a terminal state,
and its waiting children are resolved in that same command, before any purge. So a
purged timer never has a waiting child; a purged parent stays listed in its
children's `after` (by id), and a purged child leaves its parents' `children`.

Escalation ladders. A timer with ack_required may carry up to MAX_STEPS steps
(after_ms, action): when it fires, step 1 is a wheel deadline at fired_at +
after_ms[0] (key ordinal | ESCALATE); when that deadline comes with no ack, the tick
emits an `escalated` event (state FIRED, fire_at = the step's deadline, fire_id =
the fire it escalates, step = the step's number from 1, action = the step's action bytes) and puts the next step in the wheel. An ack (or cancel)
takes the pending step out of the wheel: the ladder stops. GetTimer shows the steps,
their actions and how many have fired. A consumer of the `escalated` events acts on the
step's action; a timer with a delivery also gets each step delivered (kernel/occurrences.py).

Determinism: every collection consulted for a decision is either sorted (children
lists are kept in ordinal order) or walked in command order; nothing reads a clock.
"""
from __future__ import annotations

import base64
import json
from collections import deque
from typing import Any, NamedTuple, Optional

from ._wheel import MAX_TIME
from .errors import FailedPrecondition, InvalidArgument, NotFound, SnapshotError
from .timer import Event, EventKind, TimerState
from .validate import MAX_ACTION_BYTES, check_bytes, check_id

__all__ = ["GraphSpec", "Dep", "Ladder", "Graph", "ESCALATE", "MAX_PARENTS", "MAX_STEPS", "MAX_CHILDREN",
           "CONDITIONS", "MODES", "POLICIES", "check_graph", "plan", "attach", "on_ended", "after_fires",
           "view_fields", "encode", "decode"]

MAX_PARENTS = 16
MAX_STEPS = 8
MAX_CHILDREN = 10_000            # dependents of one parent (what one parent's end may resolve)
#: Wheel key bit of an escalation step deadline (ordinal | ESCALATE); below table.PURGE (1 << 63).
ESCALATE = 1 << 62
NO_TIME = -1

CONDITIONS = {"fired": 1, "settled": 2, "dead_lettered": 3, "cancelled": 4}
MODES = {"all": 0, "any": 1}
POLICIES = {"cancel": 0, "release": 1}
_COND_NAME = {v: k for k, v in CONDITIONS.items()}
_MODE_NAME = {v: k for k, v in MODES.items()}
_POLICY_NAME = {v: k for k, v in POLICIES.items()}
_FIRED, _SETTLED_C, _DEAD_C, _CANCELLED_C = 1, 2, 3, 4
_ALL, _ANY = 0, 1
_RELEASE = POLICIES["release"]

#: Outcome of a dependency, for GetTimer.
WAITING, MET, RELEASED, CANCELLED = 0, 1, 2, 3
OUTCOMES = {WAITING: "waiting", MET: "met", RELEASED: "released", CANCELLED: "cancelled"}

_S_SCHEDULED = int(TimerState.SCHEDULED)
_S_ARMED = int(TimerState.ARMED)
_S_FIRED = int(TimerState.FIRED)
_S_SETTLED = int(TimerState.SETTLED)
_S_CANCELLED = int(TimerState.CANCELLED)
_S_DEAD = int(TimerState.DEAD_LETTERED)
_TERMINAL = frozenset((_S_SETTLED, _S_CANCELLED, _S_DEAD))
_MEETS = {_SETTLED_C: _S_SETTLED, _DEAD_C: _S_DEAD, _CANCELLED_C: _S_CANCELLED}


class GraphSpec(NamedTuple):
    """What a client asks for (TimerSpec.graph): dependencies and/or an escalation ladder."""

    after: tuple = ()               # parent ids, in the child's tenant
    on: str = "settled"             # fired | settled | dead_lettered | cancelled
    mode: str = "all"               # all | any
    delay_ms: int = 0               # after the condition time
    on_parent_cancel: str = "cancel"   # cancel | release
    escalate: tuple = ()            # ((after_ms, action bytes), ...), strictly increasing after_ms


class Dep(NamedTuple):
    """A child's dependency as the kernel keeps it."""

    parents: tuple          # parent ids as given
    pords: tuple            # their ordinals (-1 once the parent was purged)
    on: int
    mode: int
    delay_ms: int
    policy: int
    waiting: tuple          # ordinals of parents still awaited, sorted; () once resolved
    met_at: int             # the condition time counted so far (NO_TIME: none)
    outcome: int            # WAITING, MET, RELEASED or CANCELLED


class Ladder(NamedTuple):
    """An escalation ladder: steps ((after_ms, action), ...), steps fired, the fire it counts from."""

    steps: tuple
    done: int
    base: int               # fired_at of the fire it escalates (NO_TIME before the fire)


class Graph:
    """The graph state of one table: deps by child ordinal, children by parent ordinal
    (derived, sorted), ladders by ordinal. `events` and `busy` are scratch of the command
    being applied (never in snapshots)."""

    __slots__ = ("deps", "kids", "ladders", "events", "busy")

    def __init__(self) -> None:
        self.deps: dict[int, Dep] = {}
        self.kids: dict[int, list[int]] = {}
        self.ladders: dict[int, Ladder] = {}
        self.events: list[Event] = []
        self.busy = False

    def __bool__(self) -> bool:
        return bool(self.deps or self.ladders)

    def copy(self) -> "Graph":
        g = Graph()
        g.deps = dict(self.deps)
        g.kids = {p: list(c) for p, c in self.kids.items()}
        g.ladders = dict(self.ladders)
        return g

    def forget(self, o: int) -> None:
        """Timer o leaves the table (purged or deleted)."""
        dep = self.deps.pop(o, None)
        if dep is not None:
            for p in dep.pords:
                kids = self.kids.get(p)
                if kids is not None and o in kids:
                    kids.remove(o)
                    if not kids:
                        del self.kids[p]
        kids = self.kids.pop(o, None)
        if kids:
            for c in kids:
                d = self.deps[c]
                self.deps[c] = d._replace(pords=tuple(-1 if p == o else p for p in d.pords))
        self.ladders.pop(o, None)

    def add_kid(self, p: int, c: int) -> None:
        kids = self.kids.get(p)
        if kids is None:
            self.kids[p] = [c]
        elif c not in kids:
            kids.append(c)
            kids.sort()

    def pending_steps(self, state_col) -> list[tuple[int, int]]:
        """(ordinal, deadline) of every ladder step waiting in the wheel, by ordinal."""
        out = []
        for o in sorted(self.ladders):
            lad = self.ladders[o]
            if state_col[o] == _S_FIRED and lad.base != NO_TIME and lad.done < len(lad.steps):
                out.append((o, step_at(lad)))
        return out


def step_at(lad: Ladder) -> int:
    return min(lad.base + lad.steps[lad.done][0], MAX_TIME)


# ---- checking a create ----------------------------------------------------------------


def _int(field: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidArgument(field, f"must be an integer in {lo}..{hi}")
    return int(v)


def check_graph(p: str, g: Any, ack: bool, recurring: bool) -> Optional[GraphSpec]:
    """The spec's graph, checked and normalised (None when it asks for nothing)."""
    if g is None:
        return None
    if not isinstance(g, GraphSpec):
        raise InvalidArgument(f"{p}.graph", f"must be a GraphSpec, not {type(g).__name__}")
    after = g.after
    if not isinstance(after, (tuple, list)):
        raise InvalidArgument(f"{p}.after", "must be a list of timer ids")
    if len(after) > MAX_PARENTS:
        raise InvalidArgument(f"{p}.after", f"at most {MAX_PARENTS} parents, got {len(after)}")
    ids = tuple(check_id(f"{p}.after[{k}]", a) for k, a in enumerate(after))
    if len(set(ids)) != len(ids):
        raise InvalidArgument(f"{p}.after", "names a parent twice")
    if g.on not in CONDITIONS:
        raise InvalidArgument(f"{p}.on", f"must be one of {', '.join(CONDITIONS)}, got {g.on!r}")
    if g.mode not in MODES:
        raise InvalidArgument(f"{p}.mode", f"must be all or any, got {g.mode!r}")
    if g.on_parent_cancel not in POLICIES:
        raise InvalidArgument(f"{p}.on_parent_cancel", f"must be cancel or release, got {g.on_parent_cancel!r}")
    delay = _int(f"{p}.delay_ms", g.delay_ms, 0, MAX_TIME)
    steps = g.escalate
    if not isinstance(steps, (tuple, list)) or len(steps) > MAX_STEPS:
        raise InvalidArgument(f"{p}.escalate", f"must be a list of at most {MAX_STEPS} (after_ms, action) steps")
    out = []
    last = 0
    for k, step in enumerate(steps):
        if not isinstance(step, (tuple, list)) or len(step) != 2:
            raise InvalidArgument(f"{p}.escalate[{k}]", "must be an (after_ms, action) pair")
        at = _int(f"{p}.escalate[{k}].after_ms", step[0], 1, MAX_TIME)
        if at <= last:
            raise InvalidArgument(f"{p}.escalate[{k}].after_ms", "steps must come strictly later one after another")
        last = at
        action = step[1].encode() if isinstance(step[1], str) else step[1]
        out.append((at, check_bytes(f"{p}.escalate[{k}].action", action, MAX_ACTION_BYTES)))
    if out and not ack:
        raise InvalidArgument(f"{p}.escalate", "an escalation ladder needs ack_required (an ack stops it)")
    if out and recurring:
        raise InvalidArgument(f"{p}.escalate", "a recurring timer cannot have an escalation ladder: a ladder "
                                               "escalates one unacknowledged fire, and a recurring timer may have "
                                               "up to 100 awaiting acks at once (not supported)")
    if not ids and not out:
        if delay or g.mode != "all" or g.on != "settled" or g.on_parent_cancel != "cancel":
            raise InvalidArgument(f"{p}.after", "on, mode, delay and on_parent_cancel need at least one parent")
        return None
    return GraphSpec(ids, g.on, g.mode, delay, g.on_parent_cancel, tuple(out))


class Plan(NamedTuple):
    graphs: dict            # j (index into new) -> GraphSpec
    refs: dict              # j -> tuple of ("old", ordinal) | ("new", j2) per parent
    waiting: frozenset      # j of the new timers that start SCHEDULED (they have parents)


def plan(table, specs: list, new: list, new_at: list) -> Optional[Plan]:
    """Check the graphs of the batch's new timers against the table and each other;
    raise before anything changes. `new` are normalised specs (tenant, id, ...),
    `new_at[j]` the spec index of new[j]."""
    graphs: dict[int, GraphSpec] = {}
    for j, i in enumerate(new_at):
        s = specs[i]
        g = check_graph(f"specs[{i}]", s.graph, bool(s.ack_required), bool(s.every_ms or s.cron))
        if g is not None:
            graphs[j] = g
    if not graphs:
        return None
    by_id = {(n[0], n[1]): j for j, n in enumerate(new)}
    refs: dict[int, tuple] = {}
    state, fired_at = table.state, table.fired_at
    adds: dict[int, int] = {}
    for j in sorted(graphs):
        g = graphs[j]
        tenant = new[j][0]
        i = new_at[j]
        out = []
        failed = 0
        for k, pid in enumerate(g.after):
            o = table.lookup(tenant, pid)
            if o is not None:
                out.append(("old", o))
                adds[o] = adds.get(o, 0) + 1
                if _can_fail(state[o], fired_at[o] != NO_TIME, CONDITIONS[g.on]) is False:
                    failed += 1
                    if g.on_parent_cancel == "cancel" and g.mode == "all":
                        raise FailedPrecondition(
                            f"specs[{i}].after[{k}]: parent {pid!r} in tenant {tenant!r} is "
                            f"{TimerState(state[o]).name} and can no longer meet the condition {g.on!r}; "
                            "with on_parent_cancel=cancel the timer would be cancelled at once")
                continue
            j2 = by_id.get((tenant, pid))
            if j2 is None:
                raise NotFound(tenant, pid)
            out.append(("new", j2))
        if g.after and failed == len(g.after) and g.on_parent_cancel == "cancel":
            raise FailedPrecondition(
                f"specs[{i}].after: no parent can still meet the condition {g.on!r}; "
                "with on_parent_cancel=cancel the timer would be cancelled at once")
        refs[j] = tuple(out)
    for o, n in adds.items():
        if len(table.graph.kids.get(o, ())) + n > MAX_CHILDREN:
            raise FailedPrecondition(f"timer {table.ids[o]!r} would have more than {MAX_CHILDREN} dependents")
    _check_acyclic(refs, new, new_at)
    return Plan(graphs, refs, frozenset(j for j, g in graphs.items() if g.after))


def touched(pl: Plan) -> list[int]:
    """The new timers (indexes into `new`) whose view the graph changes: those with a graph
    and their parents in the same batch."""
    out = set(pl.graphs)
    for refs in pl.refs.values():
        out.update(r for how, r in refs if how == "new")
    return sorted(out)


def _can_fail(st: int, has_fired: bool, on: int) -> Optional[bool]:
    """For a parent in state st: True if it meets condition `on` already, False if it can
    no longer meet it, None while it may still do either."""
    if on == _FIRED:
        if has_fired:
            return True
        return False if st in _TERMINAL else None
    if st in _TERMINAL:
        return st == _MEETS[on]
    return None


def _check_acyclic(refs: dict, new: list, new_at: list) -> None:
    """Kahn's algorithm over the batch-internal edges; a leftover node is on a cycle."""
    indeg = {j: 0 for j in refs}
    out: dict[int, list[int]] = {}
    for j in sorted(refs):
        for how, r in refs[j]:
            if how == "new":
                if r == j:
                    raise InvalidArgument(f"specs[{new_at[j]}].after", f"timer {new[j][1]!r} depends on itself")
                indeg[j] += 1
                out.setdefault(r, []).append(j)
    ready = deque(sorted(j for j, d in indeg.items() if d == 0))
    ready.extend(sorted(j for j in out if j not in indeg))
    seen = set()
    while ready:
        j = ready.popleft()
        if j in seen:
            continue
        seen.add(j)
        for c in out.get(j, ()):
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    left = sorted(j for j, d in indeg.items() if d > 0)
    if left:
        ids = ", ".join(repr(new[j][1]) for j in left)
        raise InvalidArgument(f"specs[{new_at[left[0]]}].after", f"the batch's dependencies form a cycle through {ids}")


# ---- applying ------------------------------------------------------------------------


def attach(st, pl: Plan, ords: list, now: int) -> None:
    """Record the new timers' graphs (after their rows are written), then resolve every
    dependency on a parent that already met or failed the condition."""
    g = st._table.graph
    t = st._table
    resolve: list[tuple[int, int, bool, int]] = []
    for j in sorted(pl.graphs):
        spec = pl.graphs[j]
        c = ords[j]
        if spec.escalate:
            g.ladders[c] = Ladder(spec.escalate, 0, NO_TIME)
        if not spec.after:
            continue
        pords = tuple(r if how == "old" else ords[r] for how, r in pl.refs[j])
        on = CONDITIONS[spec.on]
        g.deps[c] = Dep(spec.after, pords, on, MODES[spec.mode], spec.delay_ms, POLICIES[spec.on_parent_cancel],
                        tuple(sorted(set(pords))), NO_TIME, WAITING)
        for (how, _), p in zip(pl.refs[j], pords):
            g.add_kid(p, c)
            if how == "old":
                ok = _can_fail(t.state[p], t.fired_at[p] != NO_TIME, on)
                if ok is not None:
                    at = (t.fired_at[p] if on == _FIRED else t.settled_at[p]) if ok else now
                    resolve.append((c, p, ok, at))
    if resolve:     # parents that met it already count from the earliest (mode any arms on the first)
        _purge_at_once(st, _run(st, sorted(resolve, key=lambda r: r[3]), now), now)


def on_ended(st, ords, now: int) -> list[int]:
    """Timers `ords` just reached a terminal state at `now` (State._schedule_purges):
    stop their ladders, settle what their children waited for. Returns the ordinals of
    cascaded cancels whose retention is 0 (to purge with the command's own)."""
    g = st._table.graph
    if g.busy:
        return []
    t = st._table
    resolve = []
    for o in ords:
        _end_one(st, g, t, o, now, resolve)
    return _run(st, resolve, now) if resolve else []


def _end_one(st, g: Graph, t, o: int, now: int, resolve: list) -> None:
    lad = g.ladders.get(o)
    if lad is not None and lad.base != NO_TIME and lad.done < len(lad.steps):
        st._wheel.cancel(o | ESCALATE)
    dep = g.deps.get(o)
    if dep is not None and dep.waiting:          # a waiting child ended (cancelled): stop waiting
        g.deps[o] = dep._replace(waiting=(), outcome=CANCELLED)
    kids = g.kids.get(o)
    if kids:
        s = t.state[o]
        fired = t.fired_at[o] != NO_TIME
        for c in kids:
            d = g.deps[c]
            if o in d.waiting:
                ok = _can_fail(s, fired, d.on)
                at = (t.fired_at[o] if d.on == _FIRED else now) if ok else now
                resolve.append((c, o, bool(ok), at))


def _run(st, resolve: list, now: int) -> list[int]:
    """Apply parent outcomes (child, parent, met, time) in order; cascaded cancels add
    their own children's outcomes to the end of the queue."""
    g = st._table.graph
    t = st._table
    q = deque(resolve)
    at_once: list[int] = []
    g.busy = True
    try:
        while q:
            c, p, met, at = q.popleft()
            d = g.deps.get(c)
            if d is None or p not in d.waiting:
                continue
            waiting = tuple(x for x in d.waiting if x != p)
            if met or d.policy == _RELEASE:
                met_at = max(d.met_at, at)
                if d.mode == _ANY or not waiting:
                    g.deps[c] = d._replace(waiting=(), met_at=met_at, outcome=MET if met else RELEASED)
                    ended = _arm(st, t, c, met_at + d.delay_ms, now)
                    if ended is not None:   # a recurring child with no occurrence left: cancelled
                        at_once += ended
                        before = []
                        _end_one(st, g, t, c, now, before)
                        q.extend(before)
                else:
                    g.deps[c] = d._replace(waiting=waiting, met_at=met_at)
            elif d.mode == _ALL or not waiting:
                g.deps[c] = d._replace(waiting=(), outcome=CANCELLED)
                at_once += _cancel(st, t, c, now)
                before = []
                _end_one(st, g, t, c, now, before)
                q.extend(before)
            else:
                g.deps[c] = d._replace(waiting=waiting)
    finally:
        g.busy = False
    return at_once


def _arm(st, t, c: int, at: int, now: int) -> Optional[list[int]]:
    """Arm child c, whose condition (+ delay) was met at `at`. None, except when c is
    recurring and its schedule has no occurrence left: c is cancelled instead, and the
    ordinals to purge at once (retention 0) are returned; the caller (`_run`, which
    holds the graph busy) resolves c's own children, as for any cascaded cancel."""
    if t.state[c] != _S_SCHEDULED:
        return None
    fire_at = max(t.fire_at[c], min(at, MAX_TIME))
    if t.schedules and c in t.schedules:        # a recurring child: its schedule starts now
        fire_at = _recurring_start(t, c, min(at, MAX_TIME))
        if fire_at is None:
            return _cancel(st, t, c, now)
    t.fire_at[c] = fire_at
    t.state[c] = _S_ARMED
    t.armed_at[c] = now
    rev = t.revision[c] + 1
    t.revision[c] = rev
    st._counts[_S_SCHEDULED] -= 1
    st._counts[_S_ARMED] += 1
    st._wheel.insert(c, fire_at)
    st._seq += 1
    t.graph.events.append(Event(st._seq, EventKind.ARMED, t.tenant_names[t.tenant[c]], t.ids[c], now, rev,
                                TimerState.ARMED, fire_at))
    return None


def _recurring_start(t, c: int, at: int) -> Optional[int]:
    """The first occurrence of recurring child c whose condition (+ delay) was met at `at`:
    its schedule starts at max(its own start, at) (`every`: that time; cron: its first time
    at or after it; a window: flexed). None when the schedule has none left (past `until`):
    `_arm` cancels the child then (a `cancelled` event)."""
    from .recurrence import flexed, pending
    from .schedule import NO_UNTIL, first_occurrence
    sched = t.schedules[c]
    start = max(pending(t.recur.get(c), t.fire_at[c]), at)
    try:
        first = first_occurrence("", sched, start)
    except InvalidArgument:
        first = None
    if first is None or (sched.until != NO_UNTIL and first > sched.until):
        return None
    rc = t.recur.get(c)
    if rc is not None and rc.flex_ms:
        rc = t.recur[c] = rc._replace(nominal=first)
        return flexed(rc, first)
    return first


def _cancel(st, t, c: int, now: int) -> list[int]:
    if t.state[c] != _S_SCHEDULED:
        return []
    from .quota import payload_len
    t.state[c] = _S_CANCELLED
    t.settled_at[c] = now
    rev = t.revision[c] + 1
    t.revision[c] = rev
    st._counts[_S_SCHEDULED] -= 1
    st._counts[_S_CANCELLED] += 1
    ti = t.tenant[c]
    st._live[ti] -= 1
    st._held[ti] -= payload_len(t.extra[c])
    st._seq += 1
    t.graph.events.append(Event(st._seq, EventKind.CANCELLED, t.tenant_names[ti], t.ids[c], now, rev,
                                TimerState.CANCELLED, t.fire_at[c]))
    return st._schedule_purges((c,), now)


def after_fires(st, fired: list, escalations: list, now: int) -> None:
    """Tick: timers `fired` fired at `now` (children waiting on `fired` meet it; a ladder
    starts on an ack-required fire); escalation steps `escalations` came due."""
    t = st._table
    g = t.graph
    resolve = []
    for o in fired:
        lad = g.ladders.get(o)
        if lad is not None and t.state[o] == _S_FIRED and lad.steps:
            lad = g.ladders[o] = Ladder(lad.steps, 0, now)
            st._wheel.insert(o | ESCALATE, step_at(lad))
        kids = g.kids.get(o)
        if kids:
            for c in kids:
                d = g.deps[c]
                if d.on == _FIRED and o in d.waiting:
                    resolve.append((c, o, True, now))
    for o in escalations:
        lad = g.ladders.get(o)
        if lad is None or t.state[o] != _S_FIRED or lad.done >= len(lad.steps):
            continue
        at = step_at(lad)
        lad = g.ladders[o] = lad._replace(done=lad.done + 1)
        rev = t.revision[o] + 1
        t.revision[o] = rev
        st._seq += 1
        action = lad.steps[lad.done - 1][1]
        g.events.append(Event(st._seq, EventKind.ESCALATED, t.tenant_names[t.tenant[o]], t.ids[o], now, rev,
                              TimerState.FIRED, at, t.fire_id[o], lad.done, action))
        if t.esc and o in t.esc:        # the ladder delivers: an escalation timer per step
            from .occurrences import escalate
            g.events.append(escalate(st, o, lad.done, action, at, now))
        if lad.done < len(lad.steps):
            st._wheel.insert(o | ESCALATE, step_at(lad))
    if resolve:
        _purge_at_once(st, _run(st, resolve, now), now)


def _purge_at_once(st, at_once: list[int], now: int) -> None:
    """Cascaded cancels in retention-0 tenants leave at once, after every child they
    had was resolved (`_run` returns them rather than purging mid-cascade)."""
    if at_once:
        st._table.graph.events.extend(st._purge(at_once, now, EventKind.PURGED))


def drain(table) -> list:
    """The events the graph emitted during this command (and forget them)."""
    ev = table.graph.events
    if not ev:
        return ev
    table.graph.events = []
    return ev


# ---- reading ---------------------------------------------------------------------------


def view_fields(table, o: int) -> Optional[dict]:
    """The graph fields of o's Timer view (None: it has none)."""
    g = table.graph
    fields = {}
    dep = g.deps.get(o)
    if dep is not None:
        fields.update(after=dep.parents, on=_COND_NAME[dep.on], mode=_MODE_NAME[dep.mode], delay_ms=dep.delay_ms,
                      on_parent_cancel=_POLICY_NAME[dep.policy],
                      waiting_on=tuple(table.ids[p] for p in dep.waiting), dependency=OUTCOMES[dep.outcome])
    kids = g.kids.get(o)
    if kids:
        fields["children"] = tuple(table.ids[c] for c in kids)
    lad = g.ladders.get(o)
    if lad is not None:
        fields.update(escalate=lad.steps, escalated=lad.done)
    return fields or None


def check(table, need) -> None:
    """State.check_invariants' part for graphs (O(graph))."""
    g = table.graph
    state = table.state
    kids: dict[int, list[int]] = {}
    for c in sorted(g.deps):
        d = g.deps[c]
        need(state[c] != 0, f"dependency of free row {c}")
        paused = c in table.recur and table.recur[c].paused
        need(bool(d.waiting) == (state[c] == _S_SCHEDULED and not paused),
             f"timer {c} waits iff it is scheduled (and not paused)")
        need((d.outcome == WAITING) == bool(d.waiting), f"outcome of timer {c}")
        for p in d.waiting:
            need(p in d.pords and state[p] not in _TERMINAL and state[p] != 0,
                 f"timer {c} waits only on live parents (a terminal parent resolves its children first)")
        for p in d.pords:
            if p >= 0:
                need(state[p] != 0, f"parent {p} of {c} is held")
                kids.setdefault(p, []).append(c)
    need(kids == g.kids, "children lists are exactly the inverse of the dependencies, sorted")
    for o, lad in g.ladders.items():
        need(state[o] != 0 and 0 <= lad.done <= len(lad.steps), f"ladder of timer {o}")


# ---- snapshots -------------------------------------------------------------------------


def encode(g: Graph) -> bytes:
    """Canonical JSON of the deps and ladders, in ordinal order (children are derived)."""
    deps = [[o, list(d.parents), list(d.pords), d.on, d.mode, d.delay_ms, d.policy, list(d.waiting), d.met_at,
             d.outcome] for o, d in sorted(g.deps.items())]
    lads = [[o, [[a, base64.b64encode(b).decode("ascii")] for a, b in lad.steps], lad.done, lad.base]
            for o, lad in sorted(g.ladders.items())]
    return json.dumps([deps, lads], separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode(blob: bytes, n: int, states: bytes) -> Graph:
    g = Graph()
    try:
        deps, lads = json.loads(blob)
        for o, parents, pords, on, mode, delay, policy, waiting, met_at, outcome in deps:
            if type(o) is not int or not 0 <= o < n or o in g.deps or states[o] == 0:
                raise SnapshotError(f"snapshot dependency names timer {o!r} wrongly")
            if (len(parents) != len(pords) or not 1 <= len(parents) <= MAX_PARENTS or on not in _COND_NAME
                    or mode not in _MODE_NAME or policy not in _POLICY_NAME or outcome not in OUTCOMES
                    or any(type(p) is not int or not -1 <= p < n for p in pords)
                    or any(p >= 0 and states[p] == 0 for p in pords)
                    or any(p not in pords or p < 0 or states[p] in _TERMINAL for p in waiting)
                    or (waiting and states[o] != _S_SCHEDULED) or (outcome == WAITING) != bool(waiting)):
                raise SnapshotError(f"snapshot dependency of timer {o} is inconsistent")
            g.deps[o] = Dep(tuple(parents), tuple(pords), on, mode, delay, policy, tuple(waiting), met_at, outcome)
            for p in pords:
                if p >= 0:
                    g.add_kid(p, o)
        for o, steps, done, base in lads:
            if type(o) is not int or not 0 <= o < n or o in g.ladders or states[o] == 0:
                raise SnapshotError(f"snapshot escalation ladder names timer {o!r} wrongly")
            st = tuple((a, base64.b64decode(b, validate=True)) for a, b in steps)
            if not 1 <= len(st) <= MAX_STEPS or not 0 <= done <= len(st) or not (base == NO_TIME or
                                                                                 0 <= base <= MAX_TIME):
                raise SnapshotError(f"snapshot escalation ladder of timer {o} is inconsistent")
            g.ladders[o] = Ladder(st, done, base)
    except SnapshotError:
        raise
    except (ValueError, TypeError, IndexError) as e:
        raise SnapshotError(f"snapshot graph block is malformed: {e}") from None
    if not g:
        raise SnapshotError("snapshot graph block is empty")
    return g
