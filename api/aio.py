"""`AsyncClient`, the asyncio twin of `minoots.Client`, and its `AsyncWatch`.

They live in `minoots.api.client.aio` (next to the blocking client and the
policy both share); this module keeps the import path `minoots.api.aio`.
"""
from __future__ import annotations

from .client.aio import AsyncClient, AsyncWatch

__all__ = ["AsyncClient", "AsyncWatch"]
