"""Argument checks shared by the kernel's commands.

Each check takes the field's name (as the caller should see it, e.g.
`specs[3].fire_at`) and the raw value, and returns the normalised value (an
exact `int`/`str`/`bytes`, never a subclass whose methods could differ between
nodes) or raises InvalidArgument naming the field and the rule it broke.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from typing import Any, Optional

from ._wheel import MAX_TIME
from .errors import InvalidArgument

__all__ = [
    "MAX_TIME",
    "MAX_ID_LEN",
    "MAX_TENANT_LEN",
    "MAX_NAME_LEN",
    "MAX_PAYLOAD_BYTES",
    "MAX_ACTION_BYTES",
    "MAX_LABELS",
    "MAX_LABEL_KEY_LEN",
    "MAX_LABEL_PREFIX_LEN",
    "MAX_LABEL_VALUE_LEN",
    "MAX_IDEMPOTENCY_KEY_LEN",
    "MAX_BATCH",
    "plain_spec",
    "check_time",
    "check_delta",
    "check_seq",
    "check_id",
    "check_new_id",
    "is_occurrence_id",
    "MAX_OCCURRENCE_ID_LEN",
    "check_tenant",
    "check_name",
    "check_bytes",
    "check_labels",
    "check_idempotency_key",
    "check_bool",
    "check_batch",
]

MAX_ID_LEN = 128
MAX_TENANT_LEN = 64
MAX_NAME_LEN = 256
MAX_PAYLOAD_BYTES = 65536
MAX_ACTION_BYTES = 65536
MAX_LABELS = 64
MAX_LABEL_KEY_LEN = 63          # the part after an optional "prefix/"
MAX_LABEL_PREFIX_LEN = 253      # a DNS subdomain, as in Kubernetes label keys
MAX_LABEL_VALUE_LEN = 256
MAX_IDEMPOTENCY_KEY_LEN = 128
MAX_BATCH = 10_000

_ID_CHARS = "A-Za-z0-9._:~-"
_ID_RE = re.compile(f"[{_ID_CHARS}]{{1,{MAX_ID_LEN}}}")
#: An occurrence timer's id (kernel/occurrences.py): "<schedule id>@<fire id>". Named by
#: lookups (get, cancel, delivery outcomes); never accepted by a create.
_OCC_RE = re.compile(f"[{_ID_CHARS}]{{1,{MAX_ID_LEN}}}@[1-9][0-9]{{0,18}}")
MAX_OCCURRENCE_ID_LEN = MAX_ID_LEN + 20
_TENANT_RE = re.compile(f"[{_ID_CHARS}]{{1,{MAX_TENANT_LEN}}}")
_LABEL_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_LABEL_PREFIX_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")

ID_RULE = f"must be 1..{MAX_ID_LEN} characters of [{_ID_CHARS}]"
TENANT_RULE = f"must be 1..{MAX_TENANT_LEN} characters of [{_ID_CHARS}]"


def _type_name(v: Any) -> str:
    return type(v).__name__


def _int(field: str, v: Any) -> int:
    # bool is an int subclass but never a meaningful time; floats (and NaN) are
    # rejected rather than truncated so two nodes cannot round differently.
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidArgument(field, f"must be an int, not {_type_name(v)}")
    return operator.index(v)  # exact int even for int subclasses


def check_time(field: str, v: Any) -> int:
    """A time in ms since the epoch: int, 0 <= t <= MAX_TIME."""
    t = _int(field, v)
    if t < 0 or t > MAX_TIME:
        raise InvalidArgument(field, f"must be within 0..{MAX_TIME} ms, got {t}")
    return t


def check_delta(field: str, v: Any) -> int:
    """A signed ms offset: int, |d| <= MAX_TIME (the target is checked separately)."""
    d = _int(field, v)
    if d < -MAX_TIME or d > MAX_TIME:
        raise InvalidArgument(field, f"must be within -{MAX_TIME}..{MAX_TIME} ms, got {d}")
    return d


def check_seq(field: str, v: Any) -> int:
    """An event sequence number (fire ids are seqs): int >= 1."""
    s = _int(field, v)
    if s < 1 or s > 2**63 - 1:
        raise InvalidArgument(field, f"must be a positive 64-bit int, got {s}")
    return s


def _str(field: str, v: Any) -> str:
    if not isinstance(v, str):
        raise InvalidArgument(field, f"must be a str, not {_type_name(v)}")
    return str.__str__(v)  # exact str even for str subclasses


def _utf8(field: str, s: str) -> None:
    # Snapshots store strings as UTF-8; a lone surrogate would fail only then.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(field, "must be valid Unicode (no lone surrogates)") from None


def check_id(field: str, v: Any) -> str:
    """A timer id: 1..128 characters of [A-Za-z0-9._:~-], or an occurrence timer's
    "<id>@<fire id>" (kernel/occurrences.py)."""
    s = _str(field, v)
    if _ID_RE.fullmatch(s) is None and _OCC_RE.fullmatch(s) is None:
        raise InvalidArgument(field, ID_RULE)
    return s


def is_occurrence_id(s: str) -> bool:
    """Whether `s` is an occurrence timer's id, "<id>@<fire id>"."""
    return _OCC_RE.fullmatch(s) is not None


def check_new_id(field: str, v: Any) -> str:
    """The id of a timer being created: 1..128 characters of [A-Za-z0-9._:~-] ('@' is
    left to occurrence timers, so their ids never collide with a user's)."""
    s = _str(field, v)
    if _ID_RE.fullmatch(s) is None:
        raise InvalidArgument(field, ID_RULE)
    return s


def check_tenant(field: str, v: Any) -> str:
    """A tenant name: 1..64 characters of [A-Za-z0-9._:~-]."""
    s = _str(field, v)
    if _TENANT_RE.fullmatch(s) is None:
        raise InvalidArgument(field, TENANT_RULE)
    return s


def check_name(field: str, v: Any) -> str:
    """A free-text display name, at most 256 characters."""
    s = _str(field, v)
    if len(s) > MAX_NAME_LEN:
        raise InvalidArgument(field, f"must be at most {MAX_NAME_LEN} characters, got {len(s)}")
    _utf8(field, s)
    return s


def check_bytes(field: str, v: Any, limit: int) -> bytes:
    """Opaque bytes (bytes, bytearray or memoryview), at most `limit` bytes."""
    if isinstance(v, memoryview):
        n = v.nbytes
    elif isinstance(v, (bytes, bytearray)):
        n = len(v)
    else:
        raise InvalidArgument(field, f"must be bytes, not {_type_name(v)}")
    if n > limit:
        raise InvalidArgument(field, f"must be at most {limit} bytes, got {n}")
    if n == 0:
        return b""
    return v if type(v) is bytes else bytes(v)


def _label_key(field: str, k: Any) -> str:
    if not isinstance(k, str):
        raise InvalidArgument(field, f"keys must be str, not {_type_name(k)}")
    k = str.__str__(k)
    prefix, slash, name = k.rpartition("/")
    if len(name) > MAX_LABEL_KEY_LEN or _LABEL_NAME_RE.fullmatch(name) is None:
        raise InvalidArgument(
            f"{field}[{k!r}]",
            f"key name must be 1..{MAX_LABEL_KEY_LEN} characters of [A-Za-z0-9._-], "
            "starting and ending alphanumeric, after an optional DNS-subdomain prefix and '/'",
        )
    if slash and (len(prefix) > MAX_LABEL_PREFIX_LEN or _LABEL_PREFIX_RE.fullmatch(prefix) is None):
        raise InvalidArgument(
            f"{field}[{k!r}]",
            f"key prefix must be a lowercase DNS subdomain of at most {MAX_LABEL_PREFIX_LEN} characters",
        )
    return k


def check_labels(field: str, v: Any) -> tuple[tuple[str, str], ...]:
    """Labels: a str->str mapping of at most 64 entries, returned as pairs sorted
    by key so that storage and snapshots never depend on the caller's dict order."""
    if v is None:
        return ()
    if not isinstance(v, Mapping):
        raise InvalidArgument(field, f"must be a mapping of str to str, not {_type_name(v)}")
    if len(v) > MAX_LABELS:
        raise InvalidArgument(field, f"must have at most {MAX_LABELS} entries, got {len(v)}")
    pairs = []
    for k, val in v.items():
        key = _label_key(field, k)
        if not isinstance(val, str):
            raise InvalidArgument(f"{field}[{key!r}]", f"value must be a str, not {_type_name(val)}")
        val = str.__str__(val)
        if len(val) > MAX_LABEL_VALUE_LEN:
            raise InvalidArgument(
                f"{field}[{key!r}]", f"value must be at most {MAX_LABEL_VALUE_LEN} characters, got {len(val)}"
            )
        _utf8(f"{field}[{key!r}]", val)
        pairs.append((key, val))
    pairs.sort()
    for a, b in zip(pairs, pairs[1:]):
        if a[0] == b[0]:  # only a mapping with a misbehaving __eq__/items can do this
            raise InvalidArgument(field, f"duplicate key {a[0]!r}")
    return tuple(pairs)


def check_idempotency_key(field: str, v: Any) -> Optional[str]:
    """None, or 1..128 characters of valid Unicode."""
    if v is None:
        return None
    s = _str(field, v)
    if not 1 <= len(s) <= MAX_IDEMPOTENCY_KEY_LEN:
        raise InvalidArgument(field, f"must be None or 1..{MAX_IDEMPOTENCY_KEY_LEN} characters, got {len(s)}")
    _utf8(field, s)
    return s


def check_bool(field: str, v: Any) -> bool:
    """Exactly True or False (no truthy ints or strings)."""
    if v is not True and v is not False:
        raise InvalidArgument(field, f"must be a bool, not {_type_name(v)}")
    return v


def plain_spec(tenant: Any, timer_id: Any, fire_at: Any, name: Any, payload: Any, labels: Any,
               action: Any, key: Any, ack_required: Any) -> bool:
    """True when a spec's fields are the common case and already valid: exact
    types, ASCII text, no labels. Then the per-field checks above would pass and
    return their inputs unchanged, so a caller may skip them (it is ~5x cheaper).
    False says nothing: run the checks, which name the bad field."""
    return (type(tenant) is str and type(timer_id) is str and type(fire_at) is int
            and 0 <= fire_at <= MAX_TIME
            and type(name) is str and len(name) <= MAX_NAME_LEN and name.isascii()
            and type(payload) is bytes and len(payload) <= MAX_PAYLOAD_BYTES
            and (labels is None or (type(labels) is dict and not labels))
            and type(action) is bytes and len(action) <= MAX_ACTION_BYTES
            and (key is None or (type(key) is str and 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LEN
                                 and key.isascii()))
            and (ack_required is True or ack_required is False)
            and _ID_RE.fullmatch(timer_id) is not None and _TENANT_RE.fullmatch(tenant) is not None)


def check_batch(field: str, v: Any) -> list:
    """A list or tuple of 0..10,000 items (generators would be consumed on the
    first attempt and look empty on a retry, so they are refused)."""
    if not isinstance(v, (list, tuple)):
        raise InvalidArgument(field, f"must be a list or tuple, not {_type_name(v)}")
    if len(v) > MAX_BATCH:
        raise InvalidArgument(field, f"must hold at most {MAX_BATCH} items, got {len(v)}")
    return list(v)
