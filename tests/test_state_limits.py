"""The kernel's limits and its durable encoding constants, pinned by value.

Most tests read a limit through its constant (`MAX_PARENTS + 1` parents are refused), so
they keep passing when the constant itself changes; mutation testing showed it (a
`MAX_PARENTS = 17` mutant survived every test). But these numbers are a contract: the
limits are what clients are told (README, proto comments, SDK docs) and what every
replica must agree on, and the flags and versions are written into snapshots that later
builds must still read. Changing one must be a deliberate act: this table, the docs and
(for the encoding) a new snapshot version together.
"""
from __future__ import annotations

import pytest

from minoots.kernel import bulk, delivery, graph, occurrences, recurrence, retention, schedule, snapshot, table, validate

HOUR_MS = 3600 * 1000

LIMITS = [
    (bulk, "MAX_BULK", 1000),
    (delivery, "MAX_URL_LEN", 2048),
    (delivery, "MAX_HEADERS", 16),
    (delivery, "MAX_HEADER_BYTES", 4096),
    (delivery, "MAX_ATTEMPTS", 50),
    (delivery, "MAX_BODY_EXCERPT", 1024),
    (delivery, "MAX_ATTEMPT_LOG", 64),
    (delivery, "MAX_ERROR_LEN", 64),
    (delivery, "MAX_BACKOFF_MS", 24 * HOUR_MS),
    (delivery, "MAX_ATTEMPT_TIMEOUT_MS", 120_000),
    (delivery, "MAX_QUEUE_LEN", 128),
    (delivery, "MAX_LEASE_BATCH", 100),
    (delivery, "MIN_VISIBILITY_MS", 1000),
    (delivery, "MAX_VISIBILITY_MS", 12 * HOUR_MS),
    (delivery, "MAX_ENDPOINT_ID_LEN", 64),
    (graph, "MAX_PARENTS", 16),
    (graph, "MAX_STEPS", 8),
    (graph, "MAX_CHILDREN", 10_000),
    (occurrences, "MAX_IN_DELIVERY", 100),
    (recurrence, "MAX_CATCH_UP", 100),
    (recurrence, "MAX_SCAN", 1000),
    (recurrence, "MAX_PREVIEW", 100),
    (recurrence, "MAX_PENDING", 100),
    (recurrence, "MAX_FLEX_MS", 24 * HOUR_MS),
    (recurrence, "MAX_SEED", (1 << 63) - 1),
    (retention, "DEFAULT_RETENTION_MS", 24 * HOUR_MS),
    (retention, "MAX_RETENTION_MS", 10 * 366 * 24 * HOUR_MS),
    (schedule, "MIN_EVERY_MS", 1000),
    (schedule, "MAX_OCCURRENCES", (1 << 32) - 1),
    (schedule, "MAX_CRON_LEN", 128),
    (schedule, "MAX_TZ_LEN", 64),
    (validate, "MAX_ID_LEN", 128),
    (validate, "MAX_OCCURRENCE_ID_LEN", 148),
    (validate, "MAX_TENANT_LEN", 64),
    (validate, "MAX_NAME_LEN", 256),
    (validate, "MAX_PAYLOAD_BYTES", 65536),
    (validate, "MAX_ACTION_BYTES", 65536),
    (validate, "MAX_LABELS", 64),
    (validate, "MAX_LABEL_KEY_LEN", 63),
    (validate, "MAX_LABEL_PREFIX_LEN", 253),
    (validate, "MAX_LABEL_VALUE_LEN", 256),
    (validate, "MAX_IDEMPOTENCY_KEY_LEN", 128),
    (validate, "MAX_BATCH", 10_000),
]

# Written into snapshots (header versions and flags, the table's per-timer flags and
# states) or into the wheel's key space (purge and escalation entries beside timers).
ENCODING = [
    (snapshot, "VERSION", 1),
    (snapshot, "VERSION_2", 2),
    (snapshot, "VERSION_RETENTION", 2),
    (snapshot, "VERSION_DELIVERY", 2),
    (snapshot, "FLAG_RETENTION_V1", 1),
    (snapshot, "FLAG_DELIVERY", 2),
    (snapshot, "FLAG_RECUR", 4),
    (snapshot, "FLAG_GRAPH", 8),
    (snapshot, "FLAG_OCC", 16),
    (table, "NO_FIRE", 0),
    (table, "FLAG_ACK_REQUIRED", 1),
    (table, "FLAG_KEY_IS_ID", 2),
    (table, "FREE", 0),
    (table, "PURGE", 1 << 63),
    (graph, "ESCALATE", 1 << 62),
]


@pytest.mark.parametrize("module, name, value", LIMITS, ids=[n for _, n, _ in LIMITS])
def test_each_limit_is_the_documented_one(module, name, value):
    assert getattr(module, name) == value


@pytest.mark.parametrize("module, name, value", ENCODING, ids=[n for _, n, _ in ENCODING])
def test_each_encoding_constant_is_the_one_snapshots_were_written_with(module, name, value):
    assert getattr(module, name) == value


def test_the_pins_cover_every_public_integer_constant_of_these_modules():
    """A new limit or flag joins the table (or this test says which one is missing)."""
    pinned = {(m.__name__, n) for m, n, _ in LIMITS + ENCODING}
    found = {(m.__name__, n) for m in (bulk, delivery, graph, occurrences, recurrence, retention, schedule, snapshot,
                                       table, validate)
             for n, v in vars(m).items()
             if n.isupper() and not n.startswith("_") and type(v) is int
             and (n.startswith(("MAX_", "MIN_", "DEFAULT_", "FLAG_", "VERSION")) or n in ("NO_FIRE", "FREE", "PURGE",
                                                                                        "ESCALATE"))
             and _defined_here(m, n)}
    assert found - pinned == set()


def _defined_here(module, name: str) -> bool:
    """True when `name` is assigned in the module's own source (not imported into it)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def test_the_codes_written_into_the_graph_and_recurrence_blocks():
    """Dependency conditions, modes, policies and outcomes (the graph block) and the
    catch-up and overlap policies (the recurrence block) are stored as these numbers
    (a `CANCELLED = 4` outcome mutant survived: no golden snapshot holds a cancelled
    dependency)."""
    from minoots.kernel import graph, recurrence

    assert graph.CONDITIONS == {"fired": 1, "settled": 2, "dead_lettered": 3, "cancelled": 4}
    assert graph.MODES == {"all": 0, "any": 1}
    assert graph.POLICIES == {"cancel": 0, "release": 1}
    assert (graph.WAITING, graph.MET, graph.RELEASED, graph.CANCELLED) == (0, 1, 2, 3)
    assert graph.OUTCOMES == {0: "waiting", 1: "met", 2: "released", 3: "cancelled"}
    assert recurrence.CATCH_UP == {"once": 0, "all": 1, "skip": 2}
    assert (recurrence.ONCE, recurrence.ALL, recurrence.SKIP) == (0, 1, 2)
    assert recurrence.OVERLAP == {"skip": 0, "buffer_one": 1, "allow_all": 2}
    assert (recurrence.SKIP_OVERLAP, recurrence.BUFFER_ONE, recurrence.ALLOW_ALL) == (0, 1, 2)


def test_timer_states_and_event_kinds_keep_their_numbers():
    """Persisted in snapshots (states) and in the event log format (kinds)."""
    from minoots.kernel import EventKind, TimerState

    assert {s.name: int(s) for s in TimerState} == {
        "SCHEDULED": 1, "ARMED": 2, "FIRED": 3, "SETTLED": 4, "CANCELLED": 5, "DEAD_LETTERED": 6, "DELIVERING": 7}
    assert {k.name: int(k) for k in EventKind} == {
        "CREATED": 1, "ARMED": 2, "FIRED": 3, "SETTLED": 4, "RESCHEDULED": 5, "CANCELLED": 6, "DELIVERY_DUE": 7,
        "DELIVERY_ATTEMPTED": 8, "DEAD_LETTERED": 9, "REDRIVEN": 10, "LEASED": 11, "LEASE_EXTENDED": 12,
        "PAUSED": 18, "RESUMED": 19, "PURGED": 20, "DELETED": 21, "ESCALATED": 40}
