"""The real HTTP receiver the webhook cluster tests deliver to: an aiohttp app on 127.0.0.1
(an ephemeral port) in a thread of its own, recording every request it gets.

Imported by test modules as `webhook_receiver` (tests/ is on sys.path, like support.py).
Routes (POST, any path under them; <key> is the test's own name for a flow):
  /ok/...                -> 200
  /flaky/<n>/<key>       -> 500 for the first n requests of a webhook-id, then 200
  /fail-first/<key>      -> 503 for every request of the first webhook-id seen under <key>,
                            200 for the others
  /switch/<key>          -> 503 until `healthy` holds <key>, then 200
  /hold/<key>            -> waits until `release(key)`, then 200
  /hang/...              -> never answers within a test (a dead endpoint that accepts connections)
  anything else          -> 404
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from aiohttp import web

ALLOW = ("--webhook-allow-hosts", "127.0.0.1")   # node flag: let nodes call this receiver


@dataclass
class Hit:
    path: str
    headers: dict
    body: bytes
    peer: tuple = ()


@dataclass
class Receiver:
    hits: list = field(default_factory=list)
    healthy: set = field(default_factory=set)
    port: int = 0

    def start(self) -> "Receiver":
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._first: dict = {}
        self._released: dict = {}
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)

        async def main():
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self.loop.run_until_complete(main())

    def _gate(self, key: str) -> asyncio.Event:
        return self._released.setdefault(key, asyncio.Event())

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        hit = Hit(request.path, dict(request.headers), body, request.transport.get_extra_info("peername"))
        self.hits.append(hit)
        webhook_id = hit.headers.get("webhook-id")
        parts = request.path.strip("/").split("/")
        route, key = parts[0], (parts[-1] if len(parts) > 1 else "")
        if route == "ok":
            return web.Response(text="thanks")
        if route == "flaky":
            seen = sum(1 for h in self.hits if h.headers.get("webhook-id") == webhook_id)
            return web.Response(status=500, text="not yet") if seen <= int(parts[1]) else web.Response(text="ok")
        if route == "fail-first":
            first = self._first.setdefault(key, webhook_id)
            return web.Response(status=503, text="down") if webhook_id == first else web.Response(text="ok")
        if route == "switch":
            return web.Response(text="ok") if key in self.healthy else web.Response(status=503, text="down")
        if route == "hold":
            await self._gate(key).wait()
            return web.Response(text="late")
        if route == "hang":
            await self._stop.wait()
            return web.Response(text="never")
        return web.Response(status=404)

    def release(self, key: str) -> None:
        """Let every held request under /hold/<key> (now and later) answer 200."""
        self.loop.call_soon_threadsafe(lambda: self._gate(key).set())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def of(self, prefix: str) -> list[Hit]:
        return [h for h in list(self.hits) if h.path.startswith(prefix)]

    def stop(self) -> None:
        def release_all():
            for gate in self._released.values():
                gate.set()
            self._stop.set()

        self.loop.call_soon_threadsafe(release_all)
        self.thread.join(10)
