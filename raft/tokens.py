"""API tokens as replicated state: who may call, in which role, for which tenants.

A token is `mnt_<id>_<secret>`; the cluster keeps only its id and the SHA-256 of
the whole token (a token is 256 random bits, so a plain hash is enough), so a
snapshot or a log never holds a usable credential. Records are created and
revoked by replicated commands (raft/commands.py), checked at apply time the
same way on every replica; which RPC a role may call is the API's business
(api/auth.py). Expiry is data here and is compared with a clock by the API.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from minoots.kernel import InvalidArgument, KernelError
from minoots.kernel.validate import MAX_TENANT_LEN

__all__ = ["ROLES", "TENANT_ROLES", "TokenRecord", "TokenTable", "new_token", "token_id_of", "token_hash",
           "subject_binding",
           "MAX_TOKENS", "MAX_TOKEN_TENANTS", "TokenNotFound", "TokenExists", "check_record"]

ROLES = ("admin", "operator", "writer", "reader", "worker")
TENANT_ROLES = ("writer", "reader", "worker")        # these are bound to named tenants; the others see all
MAX_TOKENS = 10_000
MAX_TOKEN_TENANTS = 64
MAX_NAME_LEN = 128
_ID = re.compile(r"^[0-9a-f]{16}$")
_TOKEN = re.compile(r"^mnt_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")


class TokenNotFound(KernelError):
    code = "NOT_FOUND"


class TokenExists(KernelError):
    code = "ALREADY_EXISTS"


def new_token() -> tuple[str, str]:
    """A fresh (token id, token); the token is shown once and never stored."""
    tid = secrets.token_hex(8)
    return tid, f"mnt_{tid}_{secrets.token_urlsafe(32)}"


def subject_binding(subject: str) -> tuple[str, str]:
    """(record id, hash) of the record that binds a client certificate's subject (mutual
    TLS) to a role and tenants: the same table, keyed by the subject instead of a secret."""
    digest = token_hash("x509:" + subject)
    return digest[:16], digest


def token_id_of(token: str) -> str | None:
    m = _TOKEN.match(token)
    return m.group(1) if m else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    id: str
    sha256: str                 # hex of SHA-256(token)
    name: str
    role: str
    tenants: tuple              # sorted; empty for admin and operator
    created_at_ms: int
    expires_at_ms: int = 0      # 0: never

    def to_json(self) -> dict:
        return {"id": self.id, "sha256": self.sha256, "name": self.name, "role": self.role,
                "tenants": list(self.tenants), "created_at_ms": self.created_at_ms,
                "expires_at_ms": self.expires_at_ms}

    @classmethod
    def from_json(cls, obj: dict) -> "TokenRecord":
        return cls(obj["id"], obj["sha256"], obj["name"], obj["role"], tuple(obj["tenants"]),
                   int(obj["created_at_ms"]), int(obj["expires_at_ms"]))


def check_record(r: TokenRecord) -> TokenRecord:
    """Refuse a malformed record (InvalidArgument), the same way on every replica."""
    if not isinstance(r.id, str) or not _ID.match(r.id):
        raise InvalidArgument("token.id", "16 lowercase hex digits")
    if not isinstance(r.sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", r.sha256):
        raise InvalidArgument("token.sha256", "64 lowercase hex digits")
    if not isinstance(r.name, str) or not 0 < len(r.name) <= MAX_NAME_LEN or not r.name.isprintable():
        raise InvalidArgument("token.name", f"1..{MAX_NAME_LEN} printable characters")
    if r.role not in ROLES:
        raise InvalidArgument("token.role", f"one of {', '.join(ROLES)}")
    tenants = r.tenants
    if not isinstance(tenants, tuple) or len(tenants) > MAX_TOKEN_TENANTS or any(
            not isinstance(t, str) or not 0 < len(t) <= MAX_TENANT_LEN or not t.isprintable() for t in tenants):
        raise InvalidArgument("token.tenants", f"at most {MAX_TOKEN_TENANTS} tenant names")
    if r.role in TENANT_ROLES and not tenants:
        raise InvalidArgument("token.tenants", f"a {r.role} token needs at least one tenant")
    if r.role not in TENANT_ROLES and tenants:
        raise InvalidArgument("token.tenants", f"a {r.role} token sees every tenant; name none")
    if tenants != tuple(sorted(set(tenants))):
        raise InvalidArgument("token.tenants", "sorted and without repeats")
    for field in ("created_at_ms", "expires_at_ms"):
        v = getattr(r, field)
        if type(v) is not int or v < 0:
            raise InvalidArgument(f"token.{field}", "a non-negative integer")
    return r


class TokenTable:
    """Token id -> record; mutated only by applying commands (deterministic, no clock)."""

    def __init__(self) -> None:
        self._by_id: dict[str, TokenRecord] = {}

    def put(self, r: TokenRecord) -> TokenRecord:
        check_record(r)
        if r.id in self._by_id:
            raise TokenExists(f"token {r.id} exists already")
        if len(self._by_id) >= MAX_TOKENS:
            raise InvalidArgument("token", f"at most {MAX_TOKENS} tokens; revoke unused ones")
        self._by_id[r.id] = r
        return r

    def revoke(self, token_id: str) -> TokenRecord:
        r = self._by_id.pop(token_id, None)
        if r is None:
            raise TokenNotFound(f"no token with id {token_id!r}")
        return r

    def get(self, token_id: str) -> TokenRecord | None:
        return self._by_id.get(token_id)

    def all(self) -> list[TokenRecord]:
        return sorted(self._by_id.values(), key=lambda r: r.id)

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.all()]

    @classmethod
    def from_json(cls, items) -> "TokenTable":
        t = cls()
        for obj in items or ():
            t.put(TokenRecord.from_json(obj))
        return t
