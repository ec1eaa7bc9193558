"""Random command sequences against a tiny pure-Python reference model of the
lifecycle, firing order and retention (terminal timers purged after their tenant's
retention, explicit deletes, ordinal reuse), plus determinism: same commands, same bytes."""

import os
import subprocess
import sys
import textwrap

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minoots.kernel import (
    MAX_TIME,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    KernelError,
    NotFound,
    State,
    TimerSpec,
)
from minoots.kernel.retention import DEFAULT_RETENTION_MS, RetentionPolicy

T0 = 1_000_000

# ---- the reference model -------------------------------------------------------------


class Model:
    """Lifecycle semantics written the obvious way: dicts, sorting, no wheel."""

    def __init__(self, retention=None):
        self.timers = {}   # (tenant, id) -> dict
        self.keys = {}     # (tenant, idempotency key) -> (tenant, id)
        self.seq = 0
        self.last_tick = 0
        self.retention = retention or {}   # tenant -> ms; others: DEFAULT_RETENTION_MS
        self.free = []     # orders of purged timers, reused smallest first
        self.next_order = 0

    def _order(self):
        if self.free:
            self.free.sort()
            return self.free.pop(0)
        self.next_order += 1
        return self.next_order - 1

    def _ended(self, t, now):
        """t just became terminal: its purge deadline, or True to purge it at once."""
        r = self.retention.get(t["tenant"], DEFAULT_RETENTION_MS)
        if r == 0:
            return True
        t["purge_at"] = min(now + r, MAX_TIME)
        return False

    def _purge(self, out, t, now, kind="purged"):
        self.seq += 1
        t["rev"] += 1
        out.append((self.seq, kind, t["tenant"], t["id"], now, t["rev"], t["fire_at"], None))
        del self.timers[(t["tenant"], t["id"])]
        for k, v in list(self.keys.items()):
            if v == (t["tenant"], t["id"]):
                del self.keys[k]
        self.free.append(t["order"])

    def _event(self, out, kind, t, now):
        self.seq += 1
        t["rev"] += 1
        out.append((self.seq, kind, t["tenant"], t["id"], now, t["rev"], t["fire_at"],
                    t["fire_id"] if kind in ("fired", "settled") else None))

    def create(self, now, specs):
        if any(not 0 <= s.fire_at <= MAX_TIME for s in specs):
            raise InvalidArgument("specs", "fire_at")
        for s in specs:
            if not s.every_ms and (s.until is not None or s.max_count):
                raise InvalidArgument("specs", "until/max_count without every")
            if s.every_ms and ((s.until is not None and not s.fire_at <= s.until <= MAX_TIME) or s.ack_required):
                raise InvalidArgument("specs", "schedule")
        plan, seen_ids, seen_keys = [], {}, {}
        for s in specs:
            k = (s.tenant, s.idempotency_key)
            if s.idempotency_key is not None and k in self.keys:
                plan.append(("old", self.keys[k]))
                continue
            if s.idempotency_key is not None and k in seen_keys:
                plan.append(("old", seen_keys[k]))
                continue
            if (s.tenant, s.id) in self.timers:
                raise AlreadyExists(s.tenant, s.id)
            if (s.tenant, s.id) in seen_ids:
                raise InvalidArgument("specs", "dup")
            seen_ids[(s.tenant, s.id)] = True
            if s.idempotency_key is not None:
                seen_keys[k] = (s.tenant, s.id)
            plan.append(("new", s))
        out, items = [], []
        for how, x in plan:
            if how == "new":
                t = dict(tenant=x.tenant, id=x.id, fire_at=x.fire_at, ack=x.ack_required, state="ARMED",
                         order=self._order(), fire_id=None, attempts=0, rev=0, purge_at=None,
                         every=x.every_ms, until=x.until, max_count=x.max_count)
                self.timers[(x.tenant, x.id)] = t
                if x.idempotency_key is not None:
                    self.keys[(x.tenant, x.idempotency_key)] = (x.tenant, x.id)
                self._event(out, "created", t, now)
                self._event(out, "armed", t, now)
                items.append((x.tenant, x.id, True))
            else:
                items.append((x[0], x[1], False))
        # An id answered by an earlier spec of the batch is reported as not created.
        first = set()
        fixed = []
        for tenant, tid, created in items:
            fixed.append((tenant, tid, created and (tenant, tid) not in first))
            first.add((tenant, tid))
        return out, fixed

    def _get(self, tenant, tid):
        if (tenant, tid) not in self.timers:
            raise NotFound(tenant, tid)
        return self.timers[(tenant, tid)]

    def cancel(self, now, refs):
        picked = []
        for ref in refs:
            t = self._get(*ref)
            if t["state"] in ("SETTLED", "CANCELLED"):
                raise FailedPrecondition("terminal")
            if any(p is t for p in picked):
                raise InvalidArgument("refs", "dup")
            picked.append(t)
        out = []
        for t in picked:
            t["state"] = "CANCELLED"
            self._event(out, "cancelled", t, now)
        subjects = [(t["tenant"], t["id"]) for t in picked]
        for t in [t for t in picked if self._ended(t, now)]:
            self._purge(out, t, now)
        return out, subjects

    def delete(self, now, refs):
        picked = []
        for ref in refs:
            t = self._get(*ref)
            if t["state"] not in ("SETTLED", "CANCELLED"):
                raise FailedPrecondition("not terminal")
            if any(p is t for p in picked):
                raise InvalidArgument("refs", "dup")
            picked.append(t)
        out = []
        subjects = [(t["tenant"], t["id"]) for t in picked]
        for t in picked:
            self._purge(out, t, now, "deleted")
        return out, subjects

    def reschedule(self, now, tenant, tid, fire_at, extend_by):
        if fire_at is not None and not 0 <= fire_at <= MAX_TIME:
            raise InvalidArgument("fire_at", "range")
        t = self._get(tenant, tid)
        if t["state"] != "ARMED":
            raise FailedPrecondition("state")
        new = fire_at if fire_at is not None else t["fire_at"] + extend_by
        if not 0 <= new <= MAX_TIME:
            raise InvalidArgument("extend_by", "range")
        t["fire_at"] = new
        out = []
        self._event(out, "rescheduled", t, now)
        return out, (tenant, tid)

    def tick(self, now):
        now = max(now, self.last_tick)
        self.last_tick = now
        due = sorted((t for t in self.timers.values() if t["state"] == "ARMED" and t["fire_at"] <= now),
                     key=lambda t: (t["fire_at"], t["order"]))
        expired = sorted((t for t in self.timers.values() if t["purge_at"] is not None and t["purge_at"] <= now),
                         key=lambda t: (t["purge_at"], t["order"]))
        out = []
        at_once = []
        for t in due:
            t["state"] = "FIRED"
            t["attempts"] += 1
            t["fire_id"] = self.seq + 1
            self._event(out, "fired", t, now)
            if t["every"]:
                # the first occurrence on the grid after now, unless the schedule is over
                k = 1
                while t["fire_at"] + k * t["every"] <= now:
                    k += 1
                nxt = t["fire_at"] + k * t["every"]
                if not ((t["max_count"] and t["attempts"] >= t["max_count"]) or nxt > MAX_TIME
                        or (t["until"] is not None and nxt > t["until"])):
                    t["state"] = "ARMED"
                    t["fire_at"] = nxt
                    self._event(out, "armed", t, now)
                    continue
            if not t["ack"]:
                t["state"] = "SETTLED"
                self._event(out, "settled", t, now)
                if self._ended(t, now):
                    at_once.append(t)
        subjects = [(t["tenant"], t["id"]) for t in due]
        for t in expired + at_once:
            self._purge(out, t, now)
        return out, subjects

    def ack(self, now, tenant, tid, fire_id):
        t = self._get(tenant, tid)
        if t["state"] != "FIRED" or fire_id != t["fire_id"]:
            raise FailedPrecondition("ack")
        t["state"] = "SETTLED"
        out = []
        self._event(out, "settled", t, now)
        if self._ended(t, now):
            self._purge(out, t, now)
        return out, (tenant, tid)


# ---- driving both --------------------------------------------------------------------

# Few ids and tenants so commands mostly hit existing timers; rare invalid values.
IDS = st.sampled_from(["a", "b", "c", "d"])
TENANTS = st.sampled_from(["default", "default", "t2"])
NOW = st.integers(T0, T0 + 300)
FIRE_AT = st.integers(0, 39).flatmap(
    lambda r: st.just(-1) if r == 0 else st.just(MAX_TIME) if r == 1 else st.integers(T0 - 50, T0 + 300)
)
KEYS = st.sampled_from([None, None, None, "k1", "k2", "a", "b"])   # "a", "b": a key equal to an id (the SDK sends key == id)

SPEC = st.builds(TimerSpec, id=IDS, fire_at=FIRE_AT, tenant=TENANTS, idempotency_key=KEYS, ack_required=st.booleans())
# Recurring specs (kernel/schedule.py): short intervals so that they recur within a program.
EVERY_SPEC = st.builds(TimerSpec, id=IDS, fire_at=FIRE_AT, tenant=TENANTS, idempotency_key=KEYS,
                       ack_required=st.sampled_from([False] * 9 + [True]),
                       every_ms=st.sampled_from([1000, 1000, 1500, 0]),
                       until=st.sampled_from([None, None, T0 + 1200, T0 + 3000, T0 - 100]),
                       max_count=st.sampled_from([0, 0, 1, 2, 3]))
COMMAND = st.one_of(
    st.tuples(st.just("create"), NOW, st.lists(SPEC, max_size=4)),
    st.tuples(st.just("create"), NOW, st.lists(EVERY_SPEC, min_size=1, max_size=2)),
    st.tuples(st.just("cancel"), NOW, st.lists(st.tuples(TENANTS, IDS), max_size=3)),
    st.tuples(st.just("reschedule"), NOW, TENANTS, IDS,
              st.one_of(st.tuples(FIRE_AT, st.none()), st.tuples(st.none(), st.integers(-400, 400)))),
    st.tuples(st.just("tick"), st.integers(T0 - 20, T0 + 400)),
    st.tuples(st.just("tick"), st.integers(T0 + 400, T0 + 6000)),
    st.tuples(st.just("ack"), NOW, TENANTS, IDS, st.sampled_from(["current"] * 4 + [1, 7, 30])),
    st.tuples(st.just("delete"), NOW, st.lists(st.tuples(TENANTS, IDS), max_size=2)),
)
# Retention: the default everywhere (None), or small ones (0 = at once) for both tenants.
RETENTION = st.one_of(st.none(), st.fixed_dictionaries({"default": st.integers(0, 120), "t2": st.integers(0, 120)}))
SEED_SPEC = st.builds(TimerSpec, id=IDS, fire_at=st.integers(T0 - 50, T0 + 300), tenant=TENANTS,
                      idempotency_key=KEYS, ack_required=st.booleans())
# Start from a populated table so that most commands meet existing timers.
PROGRAM = st.tuples(
    st.tuples(st.just("create"), st.just(T0), st.lists(SEED_SPEC, min_size=1, max_size=8,
                                                      unique_by=lambda s: (s.tenant, s.id, s.idempotency_key))),
    st.lists(COMMAND, max_size=50),
).map(lambda p: [p[0]] + p[1])


def resolve_fire_id(model, cmd):
    if cmd[0] == "ack" and cmd[4] == "current":
        t = model.timers.get((cmd[2], cmd[3]))
        return cmd[:4] + ((t["fire_id"] if t and t["fire_id"] else 1),)
    return cmd


def run_kernel(s, cmd):
    """Apply to the kernel; return comparable (events, subjects) or the error type."""
    try:
        kind = cmd[0]
        if kind == "create":
            r = s.create(cmd[1], cmd[2])
            subjects = [(i.timer.tenant, i.timer.id, i.created) for i in r.items]
        elif kind == "cancel":
            r = s.cancel(cmd[1], cmd[2])
            subjects = [(t.tenant, t.id) for t in r.timers]
        elif kind == "reschedule":
            fa, ext = cmd[4]
            r = s.reschedule(cmd[1], cmd[2], cmd[3], fire_at=fa, extend_by=ext)
            subjects = (r.timer.tenant, r.timer.id)
        elif kind == "tick":
            r = s.tick(cmd[1])
            subjects = [(t.tenant, t.id) for t in r.fired]
        elif kind == "delete":
            r = s.delete(cmd[1], cmd[2])
            subjects = [(t.tenant, t.id) for t in r.timers]
        else:
            r = s.ack(cmd[1], cmd[2], cmd[3], cmd[4])
            subjects = (r.timer.tenant, r.timer.id)
    except KernelError as e:
        return type(e)
    events = [(e.seq, e.kind.name.lower(), e.tenant, e.timer_id, e.at_ms, e.revision, e.fire_at, e.fire_id)
              for e in r.events]
    return events, subjects


def run_model(m, cmd):
    try:
        kind = cmd[0]
        if kind == "create":
            return m.create(cmd[1], cmd[2])
        if kind == "cancel":
            return m.cancel(cmd[1], cmd[2])
        if kind == "reschedule":
            return m.reschedule(cmd[1], cmd[2], cmd[3], *cmd[4])
        if kind == "tick":
            return m.tick(cmd[1])
        if kind == "delete":
            return m.delete(cmd[1], cmd[2])
        return m.ack(cmd[1], cmd[2], cmd[3], cmd[4])
    except KernelError as e:
        return type(e)


def assert_same(s, m):
    assert len(s) == len(m.timers)
    assert s.seq == m.seq and s.last_tick == m.last_tick
    for (tenant, tid), t in m.timers.items():
        k = s.get(tenant, tid)
        assert (k.state.name, k.fire_at, k.fire_id, k.attempts, k.revision) == (
            t["state"], t["fire_at"], t["fire_id"], t["attempts"], t["rev"])
    deadlines = [t["fire_at"] for t in m.timers.values() if t["state"] == "ARMED"]
    deadlines += [t["purge_at"] for t in m.timers.values() if t["purge_at"] is not None]
    assert s.next_deadline() == (min(deadlines) if deadlines else None)


def _pair(retention):
    s = State()
    if retention is not None:
        s.retention = RetentionPolicy(retention)
    return s, Model(retention)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROGRAM, RETENTION)
def test_kernel_matches_reference_model(program, retention):
    """Also: no purged timer is ever returned (len and get agree with the model, which
    drops a timer only when its retention ends) and no live timer is ever purged."""
    s, m = _pair(retention)
    for cmd in program:
        cmd = resolve_fire_id(m, cmd)
        before = s.to_bytes()
        got = run_kernel(s, cmd)
        want = run_model(m, cmd)
        assert got == want, cmd
        if isinstance(got, type):
            assert s.to_bytes() == before  # a rejected command changes nothing
        assert_same(s, m)
    s.check_invariants()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROGRAM, st.integers(0, 40), RETENTION)
def test_same_commands_same_bytes_and_restore_midway(program, cut, retention):
    a, m = _pair(retention)
    b, _ = _pair(retention)
    restored = None
    for i, cmd in enumerate(program):
        cmd = resolve_fire_id(m, cmd)
        run_model(m, cmd)
        ra = run_kernel(a, cmd)
        rb = run_kernel(b, cmd)
        assert ra == rb
        if restored is not None:
            assert run_kernel(restored, cmd) == ra
        assert a.to_bytes() == b.to_bytes()
        if i == cut:
            restored = State.from_bytes(a.to_bytes())
            restored.retention = a.retention
    if restored is not None:
        assert restored.to_bytes() == a.to_bytes()
        restored.check_invariants()


def test_snapshot_bytes_do_not_depend_on_hash_seed():
    """Dict/set order differs between hash seeds; the snapshot must not."""
    script = textwrap.dedent(
        """
        import hashlib
        from minoots.kernel import State, TimerSpec
        s = State()
        for b in range(5):
            specs = [TimerSpec(f"id{b}-{i}", 1000 + (i * 37) % 500, tenant=f"ten{(i * 7) % 5}",
                               labels={f"k{j}": str(i) for j in range(i % 4)},
                               idempotency_key=f"key{i % 40}" if i % 3 == 0 else None,
                               ack_required=i % 2 == 0) for i in range(60)]
            s.create(100 * b, specs)
            s.tick(900 + 50 * b)
        s.create(2000, [TimerSpec(f"late{i}", 5000 + i, tenant=f"ten{i % 3}") for i in range(30)])
        s.cancel(2001, [(f"ten{i % 3}", f"late{i}") for i in range(0, 30, 2)])
        s.tick(5010)
        print(hashlib.sha256(s.to_bytes()).hexdigest())
        """
    )
    digests = set()
    for seed in ("1", "2", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
