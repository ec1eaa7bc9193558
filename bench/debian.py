"""Peers for `minoots bench load` come from Debian packages: find them, or install them.

The harness runs what a user would pick instead of MINOOTS (etcd, Redis) from
the distribution's packages, so the comparison is with stock builds. A missing
binary is installed with apt-get when this process may do so (root, or
password-less sudo) and `install` is on; otherwise the peer is skipped with a
message that says how to install it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Callable, Optional

__all__ = ["find_or_install"]

INSTALL_TIMEOUT_S = 600


def _apt_prefix() -> Optional[list[str]]:
    """How to run apt-get here: as root, via `sudo -n`, or None (no apt-get or no right to)."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def find_or_install(exe: str, package: str, install: bool, say: Callable[[str], None]) -> tuple[Optional[str], str]:
    """(path of `exe`, "") or (None, why it is missing and how to get it)."""
    path = shutil.which(exe)
    if path:
        return path, ""
    hint = f"{exe} not found (apt-get install -y {package})"
    if not install:
        return None, hint
    prefix = _apt_prefix()
    if prefix is None:
        return None, f"{hint}; this process cannot run apt-get"
    say(f"{exe} not found: installing the Debian package {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = prefix + ["apt-get", "install", "-y", "-q", package]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:   # a fresh machine may have empty package lists
            subprocess.run(prefix + ["apt-get", "update", "-q"], env=env, capture_output=True,
                           timeout=INSTALL_TIMEOUT_S)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"{hint}; apt-get did not finish within {INSTALL_TIMEOUT_S} s"
    path = shutil.which(exe)
    if path is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"{hint}; apt-get failed: {tail[0]}"
    return path, ""
