"""The columns of a CreatePlainTimers group (raft/commands.py, record 48): one tenant, then
ids, deadlines, flags and payloads, each as one wire field.

A plain timer has only those fields (no name, labels, action, schedule, policy,
webhook or graph; an idempotency key only when it equals the id, as the SDK sends).
On the wire a group is ``[tenant, [id, ...], fire_at, flags, [payload, ...]]`` with
`fire_at` the deadlines as little-endian int64s and `flags` one byte per timer
(kernel.table FLAG_ACK_REQUIRED | FLAG_KEY_IS_ID): a follower decodes a 1,000-timer
group into two lists and two buffers, with no TimerSpec, tuple or int per timer,
and hands them to the kernel as they are (kernel/plain.py).
"""
from __future__ import annotations

import sys
from array import array
from operator import attrgetter

from minoots.kernel import TimerSpec
from minoots.kernel.plain import plain_specs
from minoots.kernel.table import FLAG_ACK_REQUIRED, FLAG_KEY_IS_ID

__all__ = ["PlainGroup", "pack_groups", "pack_group"]

_BIG = sys.byteorder == "big"
_ID, _TENANT, _FIRE_AT = attrgetter("id"), attrgetter("tenant"), attrgetter("fire_at")
_PAYLOAD, _KEY, _ACK = attrgetter("payload"), attrgetter("idempotency_key"), attrgetter("ack_required")
# Every other TimerSpec field, and its default: a spec with all of them at their
# defaults is plain.
_REST = attrgetter("name", "labels", "action", "every_ms", "until", "max_count", "cron", "tz", "delivery", "graph",
                   "catch_up", "overlap", "flex_ms", "flex_seed")
_DEFAULTS = ("", None, b"", 0, None, 0, "", "", None, None, "", "", 0, 0)


def _i64_le(a: array) -> bytes:
    if _BIG:
        a = array("q", a)
        a.byteswap()
    return a.tobytes()


class PlainGroup:
    """One group of plain timers as columns: `ids` and `payloads` lists, `fire_at` an
    array('q'), `flags` bytes. len() is its number of timers."""

    __slots__ = ("tenant", "ids", "fire_at", "flags", "payloads")

    def __init__(self, tenant: str, ids: list, fire_at: array, flags: bytes, payloads: list) -> None:
        self.tenant, self.ids, self.fire_at, self.flags, self.payloads = tenant, ids, fire_at, flags, payloads

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        """The group's TimerSpecs, as a general record's group iterates (built on demand)."""
        return iter(self.specs())

    def __eq__(self, other) -> bool:
        if not isinstance(other, PlainGroup):
            return NotImplemented
        return (self.tenant == other.tenant and self.ids == other.ids and self.fire_at == other.fire_at
                and self.flags == other.flags and self.payloads == other.payloads)

    def __repr__(self) -> str:
        return f"PlainGroup(tenant={self.tenant!r}, timers={len(self.ids)})"

    def specs(self) -> list[TimerSpec]:
        """The TimerSpecs this group stands for."""
        return plain_specs(self.tenant, self.ids, self.fire_at, self.flags, self.payloads)

    def fields(self) -> list:
        return [self.tenant, self.ids, _i64_le(self.fire_at), self.flags, self.payloads]

    @classmethod
    def from_fields(cls, g) -> "PlainGroup":
        """From the decoded wire array; ValueError if its shape is wrong (the kernel checks
        the values themselves, as for any create)."""
        if type(g) is not tuple or len(g) != 5:
            raise ValueError("a plain group must be an array of 5 fields")
        tenant, ids, fire_at, flags, payloads = g
        if type(ids) is not tuple or type(payloads) is not tuple or type(fire_at) is not bytes \
                or type(flags) is not bytes:
            raise ValueError("a plain group's ids and payloads must be arrays, its deadlines and flags binary")
        n = len(ids)
        if len(payloads) != n or len(flags) != n or len(fire_at) != 8 * n:
            raise ValueError(f"a plain group's columns differ in length ({n} ids, {len(fire_at)} deadline bytes, "
                             f"{len(flags)} flags, {len(payloads)} payloads)")
        a = array("q")
        a.frombytes(fire_at)
        if _BIG:
            a.byteswap()
        return cls(tenant, list(ids), a, flags, list(payloads))


def pack_group(g) -> PlainGroup | None:
    """The group as columns, or None when a spec is not plain (or the types are not
    exactly str / int / bytes / bool: the general record carries those, and the kernel
    names the bad field)."""
    n = len(g)
    if not n or set(map(type, g)) != {TimerSpec}:
        return None
    if not all(map(_DEFAULTS.__eq__, map(_REST, g))):
        return None
    tenants = set(map(_TENANT, g))
    if len(tenants) != 1:
        return None
    tenant = tenants.pop()
    ids = list(map(_ID, g))
    fas = list(map(_FIRE_AT, g))
    payloads = list(map(_PAYLOAD, g))
    acks = list(map(_ACK, g))
    if type(tenant) is not str or set(map(type, ids)) != {str} or set(map(type, fas)) != {int} \
            or set(map(type, payloads)) != {bytes} or set(map(type, acks)) != {bool}:
        return None
    try:
        fire_at = array("q", fas)
    except OverflowError:
        return None
    keys = list(map(_KEY, g))
    if keys == ids:
        key_flags = None if set(map(type, keys)) != {str} else FLAG_KEY_IS_ID
    elif keys.count(None) == n:
        key_flags = 0
    else:
        key_flags = None
    if key_flags is None:
        return None
    if True in acks:
        flags = bytes(key_flags | (FLAG_ACK_REQUIRED if a else 0) for a in acks)
    else:
        flags = bytes((key_flags,)) * n
    return PlainGroup(tenant, ids, fire_at, flags, payloads)


def pack_groups(groups) -> tuple | None:
    """Every group packed, or None when any is not plain."""
    out = []
    for g in groups:
        p = pack_group(g)
        if p is None:
            return None
        out.append(p)
    return tuple(out) if out else None
