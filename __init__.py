"""MINOOTS: a durable, Raft-replicated timer kernel.

The repository root is this package; its top-level folders are the subpackages
(`minoots.kernel`, and later `minoots.raft`, `minoots.api`, ...).
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("minoots")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
