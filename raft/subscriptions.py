"""Durable event subscriptions as replicated state: named cursors that hold back retention.

A plain WatchEvents stream keeps its position in the client; if the client is
away longer than the event retention, its events are gone (OUT_OF_RANGE). A
durable subscription keeps its position here, in the replicated state, in the
spirit of Kafka consumer groups and NATS JetStream durable consumers with
interest retention:

* `cursor` is the next event sequence the subscriber has not committed (it has
  processed everything below it). Commits only move it forward.
* Every node's event store (api/events.py) keeps every event at or above the
  lowest cursor of all subscriptions (`pin`): age and count
  retention never trim past it. Only the hard disk budget may; when it does,
  the leader proposes `MarkSubscriptionOverrun` and the subscription records
  how many events it lost (`lost`, `overrun`), never silently, and goes on from
  the oldest event kept (it still holds retention back from there).

Subscriptions belong to a tenant (and see only its events) unless created with
`all_tenants` by a principal that sees every tenant (the API checks that).
Everything here changes only by applying commands, deterministically; the
creation time and the starting sequence come from the command.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

from minoots.kernel import InvalidArgument, KernelError
from minoots.kernel.validate import check_tenant

__all__ = ["Subscription", "SubscriptionTable", "SubscriptionNotFound", "SubscriptionExists", "TooManySubscriptions", "MAX_SUBSCRIPTIONS",
           "MAX_KINDS", "check_subscription_name", "check_kinds"]

MAX_SUBSCRIPTIONS = 10_000          # bounded state, like tokens and quotas
MAX_KINDS = 32
NAME_RULE = "must be 1..128 characters of [A-Za-z0-9._:~-]"
_NAME = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")


class SubscriptionNotFound(KernelError):
    code = "NOT_FOUND"


class SubscriptionExists(KernelError):
    code = "ALREADY_EXISTS"


class TooManySubscriptions(KernelError):
    code = "RESOURCE_EXHAUSTED"


def check_subscription_name(field: str, name) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidArgument(field, NAME_RULE)
    return name


def check_kinds(field: str, kinds) -> tuple:
    """Event kinds as a sorted tuple of distinct ints 1..255 (empty: every kind)."""
    if not isinstance(kinds, (tuple, list)) or len(kinds) > MAX_KINDS:
        raise InvalidArgument(field, f"must be a list of at most {MAX_KINDS} event kinds")
    for k in kinds:
        if type(k) is not int or not 1 <= k <= 255:
            raise InvalidArgument(field, f"an event kind must be an int 1..255, got {k!r}")
    return tuple(sorted(set(kinds)))


def _check_seq(field: str, v) -> int:
    if type(v) is not int or not 1 <= v <= 2**63 - 1:
        raise InvalidArgument(field, f"must be an event sequence >= 1, got {v!r}")
    return v


@dataclass(frozen=True)
class Subscription:
    tenant: str
    name: str
    all_tenants: bool       # sees every tenant's events (created by an all-tenant principal)
    kinds: tuple            # event kinds it receives (empty: all)
    cursor: int             # next sequence not committed (everything below is processed)
    created_at_ms: int
    overrun: bool = False   # the hard disk budget trimmed events it had not committed
    lost: int = 0           # how many events it lost that way (in total)
    commits: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.tenant, self.name

    def to_json(self) -> dict:
        return {"tenant": self.tenant, "name": self.name, "all_tenants": self.all_tenants,
                "kinds": list(self.kinds), "cursor": self.cursor, "created_at_ms": self.created_at_ms,
                "overrun": self.overrun, "lost": self.lost, "commits": self.commits}

    @classmethod
    def from_json(cls, obj: dict) -> "Subscription":
        return cls(obj["tenant"], obj["name"], bool(obj["all_tenants"]), tuple(obj["kinds"]), int(obj["cursor"]),
                   int(obj["created_at_ms"]), bool(obj.get("overrun", False)), int(obj.get("lost", 0)),
                   int(obj.get("commits", 0)))


class SubscriptionTable:
    """(tenant, name) -> Subscription. `pin` is kept current on every change (O(n) per
    change, n <= MAX_SUBSCRIPTIONS), because the event writer reads it on every write."""

    def __init__(self) -> None:
        self._subs: dict[tuple[str, str], Subscription] = {}
        self.pin: Optional[int] = None      # lowest cursor of all subscriptions (None: none)

    def __len__(self) -> int:
        return len(self._subs)

    def get(self, tenant: str, name: str) -> Subscription:
        sub = self._subs.get((tenant, name))
        if sub is None:
            raise SubscriptionNotFound(f"no subscription {name!r} in tenant {tenant!r}")
        return sub

    def list(self, tenant: Optional[str] = None) -> list[Subscription]:
        return [s for k, s in sorted(self._subs.items()) if tenant is None or k[0] == tenant]

    def create(self, now_ms: int, tenant: str, name: str, all_tenants: bool, kinds, start: int,
               head: int) -> Subscription:
        """A new subscription starting at event `start` (at most `head` + 1, the next event)."""
        check_tenant("tenant", tenant)
        check_subscription_name("name", name)
        kinds = check_kinds("kinds", kinds)
        _check_seq("start", start)
        if start > head + 1:
            raise InvalidArgument("from_sequence", f"is past the newest event ({head}); at most {head + 1}")
        if (tenant, name) in self._subs:
            raise SubscriptionExists(f"subscription {name!r} already exists in tenant {tenant!r}")
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise TooManySubscriptions(f"the cluster holds {MAX_SUBSCRIPTIONS} subscriptions, the most it keeps")
        sub = Subscription(tenant, name, bool(all_tenants), kinds, start, now_ms)
        self._subs[sub.key] = sub
        self._repin()
        return sub

    def commit(self, tenant: str, name: str, cursor: int, head: int) -> Subscription:
        """Move the cursor forward to `cursor` (a smaller one changes nothing)."""
        _check_seq("cursor", cursor)
        if cursor > head + 1:
            raise InvalidArgument("cursor", f"is past the newest event ({head}); at most {head + 1}")
        sub = self.get(tenant, name)
        if cursor <= sub.cursor:
            return sub
        sub = replace(sub, cursor=cursor, commits=sub.commits + 1)
        self._subs[sub.key] = sub
        self._repin()
        return sub

    def mark_overrun(self, tenant: str, name: str, expected: int, resume: int) -> Subscription:
        """Events expected..resume-1 are gone where the subscription reads: count them as lost
        and move its cursor to `resume`. Only if the cursor is still `expected` (a commit
        that landed meanwhile wins; the proposer looks again)."""
        _check_seq("expected", expected)
        _check_seq("resume", resume)
        sub = self.get(tenant, name)
        if sub.cursor != expected or resume <= expected:
            return sub
        sub = replace(sub, cursor=resume, overrun=True, lost=sub.lost + (resume - expected))
        self._subs[sub.key] = sub
        self._repin()
        return sub

    def delete(self, tenant: str, name: str) -> Subscription:
        sub = self.get(tenant, name)
        del self._subs[sub.key]
        self._repin()
        return sub

    def _repin(self) -> None:
        self.pin = min((s.cursor for s in self._subs.values()), default=None)

    def to_json(self) -> list:
        return [s.to_json() for s in self.list()]

    @classmethod
    def from_json(cls, rows) -> "SubscriptionTable":
        t = cls()
        for row in rows or ():
            sub = Subscription.from_json(row)
            t._subs[sub.key] = sub
        t._repin()
        return t
