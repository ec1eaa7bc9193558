"""Standard Webhooks signatures (https://www.standardwebhooks.com): sign and verify.

MINOOTS signs every webhook with the tenant's `whsec_...` secret: headers
`webhook-id` (stable for one fire across retries and failovers: the receiver's
idempotency key), `webhook-timestamp` (Unix seconds of the attempt) and
`webhook-signature`, `v1,<base64 HMAC-SHA256 over "id.timestamp.body">`. Receivers
call `verify_webhook(secret, headers, body)`; it needs only the standard library.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Mapping, Optional

__all__ = ["sign", "verify_webhook", "new_webhook_secret", "WebhookVerificationError", "TOLERANCE_S", "SECRET_PREFIX"]

SECRET_PREFIX = "whsec_"
TOLERANCE_S = 5 * 60      # the spec's default: refuse timestamps further off than this (replays)


class WebhookVerificationError(Exception):
    """The request is not a valid signed webhook for this secret."""


def _key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        secret = secret[len(SECRET_PREFIX):]
    try:
        return base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not whsec_ + base64") from None


def new_webhook_secret() -> str:
    """A fresh secret: whsec_ + base64 of 32 random bytes."""
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: "v1," + base64 HMAC-SHA256(id.timestamp.body)."""
    mac = hmac.new(_key(secret), f"{msg_id}.{int(timestamp)}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = TOLERANCE_S,
                   now: Optional[float] = None) -> str:
    """Check a received webhook; returns its webhook-id, raises WebhookVerificationError.

    `headers` may use any case (a dict, aiohttp/requests headers). Any one of the
    space-separated `v1,` signatures matching is enough (both are sent while a
    secret is being rotated)."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        stamp = int(ts)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance_s} s away from now")
    if isinstance(body, str):
        body = body.encode()
    expected = sign(secret, msg_id, stamp, bytes(body)).split(",", 1)[1]
    for candidate in sigs.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return msg_id
    raise WebhookVerificationError("no matching signature")
