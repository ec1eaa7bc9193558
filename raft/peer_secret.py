"""Secret files: the cluster secret every member must hold to speak on a Raft port, and
the bootstrap admin token.

PySyncObj authenticates (and encrypts) every peer frame with it before a byte is
decoded (raft/pysyncobj_compat.py). It is a file of random text, mode 0600, the
same on every member: `minoots up` writes one for its cluster, and a node started
with `--init` and no peers writes one into its own data dir.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

SECRET_FILE = "cluster.secret"
ADMIN_TOKEN_FILE = "admin.token"
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 4096


class SecretError(Exception):
    """The cluster secret file is missing, unreadable, too short or readable by others."""


def generate(path: Path, value: bytes | None = None) -> bytes:
    """Write a new secret (or `value`) to `path` (0600, never over an existing file); returns it."""
    value = value if value is not None else secrets.token_hex(32).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretError(f"{path} exists already; refusing to overwrite a secret") from None
    with os.fdopen(fd, "wb") as f:
        f.write(value + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return value


def load(path: Path) -> bytes:
    """Read a secret file; refuses one that others can read or that is too short to be a secret."""
    path = Path(path)
    try:
        st = path.stat()
        raw = path.read_bytes()[:MAX_SECRET_BYTES + 1]
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"secret file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                          f"chmod 600 {path}")
    value = raw.strip()
    if len(value) < MIN_SECRET_BYTES or len(value) > MAX_SECRET_BYTES:
        raise SecretError(f"secret file {path} must hold {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes "
                          f"(it holds {len(value)})")
    return value
