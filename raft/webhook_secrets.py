"""Each tenant's webhook signing secret as replicated state (Standard Webhooks `whsec_...`).

The leader signs every webhook of a tenant with its secret; receivers verify with the
same secret. A secret is set by applying PutWebhookSecret (the API generates one, or
takes the operator's) and is shown to the client once, in that call's answer: no read
RPC returns it. It does travel in Raft entries and snapshots, which only members and
the node's own user can read (see DESIGN.md, trust boundaries).

Rotation: setting a new secret keeps the one it replaces as `previous`; for
ROTATION_GRACE_MS after the change the leader signs with both (Standard Webhooks sends
several `v1,` signatures), so receivers can switch secrets without dropping a webhook.
Whether the grace is over is the leader's judgement (it has the clock), never a replica's.
"""
from __future__ import annotations

import base64
import binascii
import secrets
from typing import Optional

from minoots.kernel import InvalidArgument
from minoots.kernel.validate import check_tenant

__all__ = ["WebhookSecrets", "check_secret", "new_secret", "secret_key", "MAX_SECRETS", "PREFIX"]

PREFIX = "whsec_"
MAX_SECRETS = 100_000               # bounded state, like tokens and quotas
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
ROTATION_GRACE_MS = 24 * 3600 * 1000


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret."""
    return base64.b64decode(secret[len(PREFIX):], validate=True)


def new_secret() -> str:
    """A fresh secret: whsec_ + base64 of 32 random bytes (drawn by the node taking the call)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def check_secret(field: str, secret) -> str:
    """A `whsec_` + base64 secret of 24..64 key bytes, or InvalidArgument."""
    if not isinstance(secret, str) or not secret.startswith(PREFIX):
        raise InvalidArgument(field, f"must start with {PREFIX!r} followed by base64")
    try:
        key = secret_key(secret)
    except (binascii.Error, ValueError):
        raise InvalidArgument(field, f"must be {PREFIX!r} followed by valid base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise InvalidArgument(field, f"must hold {MIN_KEY_BYTES}..{MAX_KEY_BYTES} key bytes, got {len(key)}")
    return str.__str__(secret)


class WebhookSecrets:
    """tenant -> (secret, created_at_ms, previous secret or None); changed only by applying commands."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, tuple[str, int, Optional[str]]] = {}

    def put(self, tenant: str, secret: str, created_at_ms: int, previous: Optional[str] = None,
            restoring: bool = False) -> str:
        tenant = check_tenant("tenant", tenant)
        secret = check_secret("secret", secret)
        old = self._by_tenant.get(tenant)
        if old is None and len(self._by_tenant) >= MAX_SECRETS:
            raise InvalidArgument("tenant", f"at most {MAX_SECRETS} tenants may hold webhook secrets")
        if not restoring:
            previous = old[0] if old is not None and old[0] != secret else None
        self._by_tenant[tenant] = (secret, int(created_at_ms), previous)
        return tenant

    def get(self, tenant: str) -> Optional[str]:
        entry = self._by_tenant.get(tenant)
        return entry[0] if entry else None

    def signing(self, tenant: str, now_ms: int) -> list[str]:
        """The secrets to sign with now: the current one, plus the previous one during the
        rotation grace (the leader passes its clock)."""
        entry = self._by_tenant.get(tenant)
        if entry is None:
            return []
        secret, at, previous = entry
        if previous is not None and now_ms - at < ROTATION_GRACE_MS:
            return [secret, previous]
        return [secret]

    def __len__(self) -> int:
        return len(self._by_tenant)

    def to_json(self) -> list:
        return [[t, s, at, prev] for t, (s, at, prev) in sorted(self._by_tenant.items())]

    @classmethod
    def from_json(cls, rows) -> "WebhookSecrets":
        table = cls()
        for tenant, secret, at, previous in rows or ():
            table.put(tenant, secret, at, previous, restoring=True)
        return table
