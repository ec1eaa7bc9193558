"""A webhook receiver for the drills and the bench: aiohttp on 127.0.0.1 in a thread of its own.

Records every request as a Hit (receipt time in ms, headers, body) and answers with
`answer(hit) -> status` (default 200). Stopped by `stop()`; it owns no process.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["Hit", "WebhookReceiver"]


@dataclass
class Hit:
    at_ms: int
    path: str
    headers: dict
    body: bytes
    status: int = 200


class WebhookReceiver:
    def __init__(self, answer: Optional[Callable[[Hit], int]] = None) -> None:
        self.answer = answer or (lambda hit: 200)
        self.hits: list[Hit] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> "WebhookReceiver":
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="webhook-receiver")
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self._stopping = asyncio.Event()

        async def handle(request):
            hit = Hit(time.time_ns() // 1_000_000, request.path, dict(request.headers), await request.read())
            hit.status = self.answer(hit)
            self.hits.append(hit)
            return web.Response(status=hit.status)

        async def main():
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            await self._stopping.wait()
            await runner.cleanup()

        self.loop.run_until_complete(main())

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopping.set)
            self.thread.join(10)
