"""Managed webhook endpoints of each tenant, as replicated state.

An endpoint is a URL a tenant's timers are delivered to (`minoots timer create
--endpoint ID`), with optional extra headers, an attempt timeout and its own
`whsec_` signing secret. The API draws the id (`ep_` + 16 hex) and the secret (or
takes the operator's) and proposes them as data; replicas only store them.

The secret is shown once, in the answer of CreateEndpoint / RotateEndpointSecret:
`public()` (what list/get answer) never carries it. Rotation keeps the replaced
secret as `previous`; during webhook_secrets.ROTATION_GRACE_MS after the rotation the
leader signs with both (the leader judges the grace with its clock, as for tenant
secrets). Snapshots exported to operators leave secrets out unless asked
(`to_json(secrets=False)`): such an endpoint restores with secret None and cannot
sign until its secret is rotated.

Bounds: MAX_PER_TENANT endpoints per tenant, MAX_ENDPOINTS in all.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from minoots.kernel import FailedPrecondition, InvalidArgument, KernelError
from minoots.kernel.delivery import MAX_ATTEMPT_TIMEOUT_MS, Delivery, Webhook, check_delivery, check_endpoint_id
from minoots.kernel.validate import check_tenant

from .webhook_secrets import ROTATION_GRACE_MS, check_secret

__all__ = ["Endpoint", "EndpointTable", "EndpointNotFound", "TooManyEndpoints", "MAX_PER_TENANT", "MAX_ENDPOINTS"]

MAX_PER_TENANT = 100
MAX_ENDPOINTS = 100_000


class EndpointNotFound(KernelError):
    code = "NOT_FOUND"


class TooManyEndpoints(KernelError):
    code = "RESOURCE_EXHAUSTED"


class Endpoint(NamedTuple):
    tenant: str
    id: str
    url: str
    headers: tuple                  # ((name, value), ...) sorted by name
    timeout_ms: int                 # attempt timeout; 0: the timer's policy decides
    secret: Optional[str]           # None only in a snapshot exported without secrets
    created_at_ms: int
    previous: Optional[str] = None  # the secret before the last rotation
    rotated_at_ms: int = 0          # when the current secret was set (0: never rotated)

    def public(self) -> "Endpoint":
        """The endpoint without its secrets (what reads answer)."""
        return self._replace(secret=None, previous=None)


def _check_target(url, headers, timeout_ms) -> tuple[str, tuple, int]:
    """URL and headers by the webhook rules (kernel/delivery.py), timeout within 0..120 s."""
    d = check_delivery("endpoint", Delivery(Webhook(url, tuple(headers))))
    if type(timeout_ms) is not int or not 0 <= timeout_ms <= MAX_ATTEMPT_TIMEOUT_MS:
        raise InvalidArgument("endpoint.timeout_ms", f"must be within 0..{MAX_ATTEMPT_TIMEOUT_MS}")
    return d.webhook.url, d.webhook.headers, timeout_ms


class EndpointTable:
    """(tenant, id) -> Endpoint; changed only by applying commands."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Endpoint] = {}
        self._per_tenant: dict[str, int] = {}

    def create(self, tenant: str, eid: str, url: str, headers, timeout_ms: int, secret: Optional[str],
               created_at_ms: int, previous: Optional[str] = None, rotated_at_ms: int = 0,
               restoring: bool = False) -> Endpoint:
        tenant = check_tenant("tenant", tenant)
        eid = check_endpoint_id("id", eid)
        url, headers, timeout_ms = _check_target(url, headers, timeout_ms)
        if secret is not None or not restoring:
            secret = check_secret("secret", secret)
        if (tenant, eid) in self._by_key:
            raise FailedPrecondition(f"endpoint {eid!r} of tenant {tenant!r} exists already")
        if self._per_tenant.get(tenant, 0) >= MAX_PER_TENANT:
            raise TooManyEndpoints(f"tenant {tenant!r} has {MAX_PER_TENANT} endpoints, the most it may hold: "
                                     "remove one first")
        if len(self._by_key) >= MAX_ENDPOINTS:
            raise TooManyEndpoints(f"the cluster holds {MAX_ENDPOINTS} endpoints, the most it may hold")
        ep = Endpoint(tenant, eid, url, headers, timeout_ms, secret, int(created_at_ms), previous, int(rotated_at_ms))
        self._by_key[(tenant, eid)] = ep
        self._per_tenant[tenant] = self._per_tenant.get(tenant, 0) + 1
        return ep.public()

    def rotate(self, tenant: str, eid: str, secret: str, at_ms: int) -> Endpoint:
        ep = self.get(tenant, eid)
        secret = check_secret("secret", secret)
        previous = ep.secret if ep.secret != secret else ep.previous
        ep = ep._replace(secret=secret, previous=previous, rotated_at_ms=int(at_ms))
        self._by_key[(ep.tenant, ep.id)] = ep
        return ep.public()

    def delete(self, tenant: str, eid: str) -> Endpoint:
        ep = self.get(tenant, eid)
        del self._by_key[(ep.tenant, ep.id)]
        left = self._per_tenant[ep.tenant] - 1
        if left:
            self._per_tenant[ep.tenant] = left
        else:
            del self._per_tenant[ep.tenant]
        return ep.public()

    def get(self, tenant: str, eid: str) -> Endpoint:
        """The endpoint (with its secrets: for the leader's signing and this module only)."""
        ep = self._by_key.get((tenant, eid))
        if ep is None:
            raise EndpointNotFound(f"endpoint {eid!r} of tenant {tenant!r} does not exist")
        return ep

    def find(self, tenant: str, eid: str) -> Optional[Endpoint]:
        return self._by_key.get((tenant, eid))

    def list(self, tenant: str) -> list[Endpoint]:
        """The tenant's endpoints without secrets, by id."""
        return [ep.public() for (t, _), ep in sorted(self._by_key.items()) if t == tenant]

    def count(self, tenant: str) -> int:
        return self._per_tenant.get(tenant, 0)

    def signing(self, tenant: str, eid: str, now_ms: int) -> list[str]:
        """The secrets to sign with now: the current one, plus the previous one during the
        rotation grace (the leader passes its clock). [] for an unknown endpoint."""
        ep = self._by_key.get((tenant, eid))
        if ep is None or ep.secret is None:
            return []
        if ep.previous is not None and now_ms - ep.rotated_at_ms < ROTATION_GRACE_MS:
            return [ep.secret, ep.previous]
        return [ep.secret]

    def __len__(self) -> int:
        return len(self._by_key)

    def to_json(self, secrets: bool = True) -> list:
        return [[ep.tenant, ep.id, ep.url, [list(h) for h in ep.headers], ep.timeout_ms,
                 ep.secret if secrets else None, ep.created_at_ms, ep.previous if secrets else None,
                 ep.rotated_at_ms] for _, ep in sorted(self._by_key.items())]

    @classmethod
    def from_json(cls, rows) -> "EndpointTable":
        table = cls()
        for tenant, eid, url, headers, timeout_ms, secret, created, previous, rotated in rows or ():
            table.create(tenant, eid, url, [tuple(h) for h in headers], timeout_ms, secret, created, previous,
                         rotated, restoring=True)
        return table
