"""`minoots mcp`'s delivery and schedule tools (api/mcp_server.py) through the MCP SDK's own
client session over stdio, against a real 3-node cluster that may call 127.0.0.1 and a real
HTTP receiver there: schedule_timer with a webhook URL, a managed endpoint, every/cron with a
time zone and after/on/delay; list_dead_letters and replay_dead_letters, with the token's
roles and tenants applied as for every other tool."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import minoots
from minoots.api.client.webhooks import verify_webhook

from support import cluster_grpc, start_cluster, wait_for
from test_mcp import failed, mcp_session, ok, run

pytestmark = pytest.mark.cluster

TENANT = "mcp-hooks"


class _Receiver(ThreadingHTTPServer):
    """Webhook receiver on 127.0.0.1: /fail answers 500 while `failing`, everything else 200."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failing = True
        self.got: list[tuple[str, dict, bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def for_timer(self, timer_id: str) -> list[tuple[str, dict, bytes]]:
        with self.lock:
            return [g for g in self.got if json.loads(g[2])["data"]["timer_id"] == timer_id]


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.got.append((self.path, dict(self.headers), body))
        self.send_response(500 if self.path == "/fail" and self.server.failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def hook_cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("mcp-hooks"), node_args=("--webhook-allow-hosts", "127.0.0.1"))
    yield c
    c.stop()


@pytest.fixture
def receiver():
    r = _Receiver()
    t = threading.Thread(target=r.serve_forever, name="mcp-receiver", daemon=True)
    t.start()
    yield r
    r.shutdown()
    r.server_close()


def test_schedule_webhook_endpoint_recurring_dependent_and_dead_letters(hook_cluster, receiver):
    token = hook_cluster.admin_token()
    with minoots.Client(cluster_grpc(hook_cluster), timeout=60) as c:
        secret = c.rotate_webhook_secret(tenant=TENANT)
        ep = c.create_endpoint(receiver.url + "/ep", tenant=TENANT)

    async def scenario():
        async with mcp_session(hook_cluster, token) as s:
            props = {t.name: t for t in (await s.list_tools()).tools}["schedule_timer"].input_schema["properties"]
            assert {"webhook", "endpoint", "every_seconds", "cron", "time_zone", "after", "on"} <= set(props)

            # a webhook timer: POSTed to the receiver, signed with the tenant's secret
            hook = ok(await s.call_tool("schedule_timer", {"delay_seconds": 0.1, "webhook": receiver.url + "/hook",
                                                           "payload": "ping", "tenant": TENANT}))
            assert hook["webhook"] == receiver.url + "/hook"
            wait_for(lambda: receiver.for_timer(hook["id"]), "the webhook to arrive")
            path, headers, body = receiver.for_timer(hook["id"])[0]
            assert path == "/hook" and verify_webhook(secret, headers, body)
            assert json.loads(body)["data"]["payload_base64"] == "cGluZw=="

            # a managed endpoint's timer, signed with the endpoint's secret
            via = ok(await s.call_tool("schedule_timer", {"delay_seconds": 0.1, "endpoint": ep.id, "tenant": TENANT}))
            assert via["endpoint"] == ep.id
            wait_for(lambda: receiver.for_timer(via["id"]), "the endpoint's webhook to arrive")
            path, headers, body = receiver.for_timer(via["id"])[0]
            assert path == "/ep" and verify_webhook(ep.secret, headers, body)

            # recurring: every and cron with a time zone
            every = ok(await s.call_tool("schedule_timer", {"delay_seconds": 3600, "every_seconds": 60,
                                                            "max_count": 3, "until": "2099-01-01T01:00:00+01:00",
                                                            "tenant": TENANT}))
            assert every["every_ms"] == 60_000 and every["max_count"] == 3
            assert every["until"].startswith("2099-01-01T00:00:00")
            cron = ok(await s.call_tool("schedule_timer", {"delay_seconds": 0, "cron": "30 9 * * *",
                                                           "time_zone": "Europe/Paris", "tenant": TENANT}))
            assert cron["cron"] == "30 9 * * *" and cron["tz"] == "Europe/Paris" and cron["state"] == "armed"
            text = failed(await s.call_tool("schedule_timer", {"delay_seconds": 0, "cron": "nope",
                                                               "time_zone": "UTC", "tenant": TENANT}))
            assert text.startswith("INVALID_ARGUMENT: ")

            # a dependent: waits for its parent's cancellation, then fires delay_seconds later
            parent = ok(await s.call_tool("schedule_timer", {"delay_seconds": 3600, "tenant": TENANT}))
            child = ok(await s.call_tool("schedule_timer", {"after": [parent["id"]], "on": "cancelled",
                                                            "delay_seconds": 0.1, "tenant": TENANT}))
            assert child["state"] == "scheduled" and child["waiting_on"] == [parent["id"]]
            assert child["after_delay_ms"] == 100
            ok(await s.call_tool("cancel_timer", {"id": parent["id"], "tenant": TENANT}))
            done = ok(await s.call_tool("wait_for_timer", {"id": child["id"], "timeout_seconds": 60,
                                                           "tenant": TENANT}))
            assert done["fired"] is True and done["timer"]["dependency"] == "met"
            assert failed(await s.call_tool("schedule_timer", {"after": ["no-such-parent"], "tenant": TENANT}
                                            )).startswith("NOT_FOUND: ")
            assert "exactly one of" in failed(await s.call_tool("schedule_timer", {"tenant": TENANT}))

            # dead letters: a webhook that answers 500 with one attempt; listed, then replayed
            dead = ok(await s.call_tool("schedule_timer", {"delay_seconds": 0.1, "webhook": receiver.url + "/fail",
                                                           "max_attempts": 1, "labels": {"dl": "yes"},
                                                           "tenant": TENANT}))

            async def listed():
                return ok(await s.call_tool("list_dead_letters", {"label_selector": "dl=yes", "tenant": TENANT}))
            for _ in range(600):
                found = await listed()
                if found["count"]:
                    break
                await __import__("asyncio").sleep(0.05)
            assert [t["id"] for t in found["timers"]] == [dead["id"]] and found["truncated"] is False
            assert found["timers"][0]["state"] == "dead_lettered"
            assert found["timers"][0]["delivery_attempts"][-1]["status_code"] == 500
            assert "give ids" in failed(await s.call_tool("replay_dead_letters", {"tenant": TENANT}))
            receiver.failing = False
            replayed = ok(await s.call_tool("replay_dead_letters", {"ids": [dead["id"], hook["id"]],
                                                                    "tenant": TENANT}))
            assert replayed["replayed"] == [dead["id"]]
            assert [r["ok"] for r in replayed["results"] if r["id"] == hook["id"]] == [False]
            settled = ok(await s.call_tool("wait_for_timer", {"id": dead["id"], "timeout_seconds": 60,
                                                              "tenant": TENANT}))
            assert settled["fired"] is True
            wait_for(lambda: len(receiver.for_timer(dead["id"])) >= 2, "the replayed delivery")
            assert (await listed())["count"] == 0

    run(scenario())


def test_dead_letter_tools_follow_the_token(hook_cluster):
    with minoots.Client(cluster_grpc(hook_cluster), timeout=60) as c:
        reader, _ = c.create_token("mcp-dl-reader", "reader", ["mcp-dl"])

    async def scenario():
        async with mcp_session(hook_cluster, reader) as s:
            assert ok(await s.call_tool("list_dead_letters", {}))["count"] == 0
            text = failed(await s.call_tool("list_dead_letters", {"tenant": TENANT}))
            assert text.startswith("PERMISSION_DENIED: ")
            text = failed(await s.call_tool("replay_dead_letters", {"all": True}))
            assert text.startswith("PERMISSION_DENIED: ")
            text = failed(await s.call_tool("schedule_timer", {"delay_seconds": 5, "webhook": "http://127.0.0.1:9/x"}))
            assert text.startswith("PERMISSION_DENIED: ")

    run(scenario())
