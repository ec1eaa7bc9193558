"""`minoots mcp` (api/mcp_server.py) driven by the official MCP SDK's own client session over
stdio: the server is a real `python -m minoots mcp` process talking to a real 3-node cluster.
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
from contextlib import asynccontextmanager

import pytest

import minoots

from support import cluster_grpc


@asynccontextmanager
async def mcp_session(cluster, token: str):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "minoots", "mcp", "--node", ",".join(cluster_grpc(cluster))],
                                   env={"MINOOTS_TOKEN": token})
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


def ok(result) -> dict:
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


def failed(result) -> str:
    """The error text of a failed call, without the SDK's 'Error executing tool NAME: ' prefix."""
    assert result.is_error, result.structured_content
    text = result.content[0].text
    assert "Traceback" not in text and 'File "' not in text
    return re.sub(r"^Error executing tool \w+: ", "", text)


@pytest.mark.cluster
def test_tools_schedule_wait_ack_and_errors(real_cluster):
    token = real_cluster.admin_token()

    async def scenario():
        async with mcp_session(real_cluster, token) as s:
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == {"schedule_timer", "get_timer", "list_timers", "cancel_timer", "extend_timer",
                                  "ack_timer", "wait_for_timer", "list_dead_letters", "replay_dead_letters"}
            props = tools["schedule_timer"].input_schema["properties"]
            assert "seconds" in props["delay_seconds"]["description"]
            assert "RFC 3339" in props["fire_at"]["description"]
            assert "65536 bytes" in props["payload"]["description"]
            assert tools["wait_for_timer"].input_schema["properties"]["timeout_seconds"]["maximum"] == 3600

            # schedule -> wait (with progress) -> it fired, with its payload
            made = ok(await s.call_tool("schedule_timer", {"delay_seconds": 4, "payload": "hello agent",
                                                           "labels": {"mcp": "yes"}, "name": "m1"}))
            assert made["state"] == "armed" and made["payload"] == "hello agent" and made["created"] is True
            progress: list[tuple] = []

            async def on_progress(p, total, message):
                progress.append((p, total, message))

            waited = ok(await s.call_tool("wait_for_timer", {"id": made["id"], "timeout_seconds": 120},
                                          progress_callback=on_progress))
            assert waited["fired"] is True and waited["timed_out"] is False
            assert waited["timer"]["fired_at"] is not None and waited["timer"]["payload"] == "hello agent"
            assert progress and all(total == 120 for _, total, _ in progress)
            assert made["id"] in progress[0][2]
            assert [p for p, _, _ in progress] == sorted(p for p, _, _ in progress)

            got = ok(await s.call_tool("get_timer", {"id": made["id"]}))
            assert got["state"] == "settled" and got["name"] == "m1"
            listed = ok(await s.call_tool("list_timers", {"label_selector": "mcp=yes"}))
            assert [t["id"] for t in listed["timers"]] == [made["id"]] and listed["count"] == 1

            # the same id again: the first timer, not a second one
            again = ok(await s.call_tool("schedule_timer", {"delay_seconds": 4, "id": made["id"]}))
            assert again["created"] is False and again["id"] == made["id"]

            # a wait that times out
            far = ok(await s.call_tool("schedule_timer", {"fire_at": "2099-01-01T00:00:00Z"}))
            assert far["fire_at"].startswith("2099-01-01T00:00:00")
            waited = ok(await s.call_tool("wait_for_timer", {"id": far["id"], "timeout_seconds": 1.5}))
            assert waited["fired"] is False and waited["timed_out"] is True and waited["timer"]["state"] == "armed"

            # extend, cancel, cancel again
            moved = ok(await s.call_tool("extend_timer", {"id": far["id"], "by_seconds": 60}))
            assert moved["fire_at_unix_ms"] == far["fire_at_unix_ms"] + 60_000
            moved = ok(await s.call_tool("extend_timer", {"id": far["id"], "fire_at": "2098-01-01T00:00:00+01:00"}))
            assert moved["fire_at"].startswith("2097-12-31T23:00:00")
            assert ok(await s.call_tool("cancel_timer", {"id": far["id"]}))["state"] == "cancelled"
            text = failed(await s.call_tool("cancel_timer", {"id": far["id"]}))
            assert text.startswith("FAILED_PRECONDITION: ")

            # ack_required: fired until acknowledged
            acked = ok(await s.call_tool("schedule_timer", {"delay_seconds": 0.2, "ack_required": True}))
            fired = ok(await s.call_tool("wait_for_timer", {"id": acked["id"], "timeout_seconds": 60}))
            assert fired["fired"] is True and fired["timer"]["state"] == "fired"
            settled = ok(await s.call_tool("ack_timer", {"id": acked["id"], "fire_id": fired["timer"]["fire_id"]}))
            assert settled["state"] == "settled"

            # errors: the gRPC status and message, never a traceback
            assert failed(await s.call_tool("get_timer", {"id": "no-such-timer"})).startswith("NOT_FOUND: ")
            assert "exactly one of" in failed(await s.call_tool("schedule_timer", {}))
            assert "exactly one of" in failed(await s.call_tool(
                "schedule_timer", {"delay_seconds": 1, "fire_at": "2099-01-01T00:00:00Z"}))
            failed(await s.call_tool("schedule_timer", {"delay_seconds": -1}))        # schema: minimum 0
            failed(await s.call_tool("schedule_timer", {"fire_at": "2099-01-01T00:00:00"}))  # no zone
            assert failed(await s.call_tool("list_timers", {"states": ["nope"]})).startswith("INVALID_ARGUMENT")
            assert failed(await s.call_tool("schedule_timer", {"delay_seconds": 1, "labels": {"bad key": "v"}}
                                            )).startswith("INVALID_ARGUMENT: ")
            assert failed(await s.call_tool("ack_timer", {"id": acked["id"], "fire_id": 1})).startswith(
                "FAILED_PRECONDITION: ")

    run(scenario())


@pytest.mark.cluster
def test_token_rules_apply(real_cluster):
    with minoots.Client(cluster_grpc(real_cluster), timeout=60) as c:
        reader, _ = c.create_token("mcp-reader", "reader", ["mcp-t"])

    async def scenario():
        async with mcp_session(real_cluster, "mnt_bogus_token") as s:
            text = failed(await s.call_tool("get_timer", {"id": "x"}))
            assert text.startswith("UNAUTHENTICATED: ")
        async with mcp_session(real_cluster, reader) as s:
            text = failed(await s.call_tool("schedule_timer", {"delay_seconds": 5}))
            assert text.startswith("PERMISSION_DENIED: ")
            text = failed(await s.call_tool("get_timer", {"id": "x", "tenant": "other"}))
            assert text.startswith("PERMISSION_DENIED: ") and "tenant" in text
            assert ok(await s.call_tool("list_timers", {}))["count"] == 0

    run(scenario())


@pytest.mark.cluster
def test_streamable_http_transport(real_cluster, tmp_path):
    import os
    import subprocess

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    from support import free_addresses, wait_for

    address = free_addresses(1)[0]
    log = open(tmp_path / "mcp.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "minoots", "mcp", "--http", address,
                             "--node", ",".join(cluster_grpc(real_cluster))],
                            env={**os.environ, "MINOOTS_TOKEN": real_cluster.admin_token()},
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        def listening():
            import socket
            host, port = address.rsplit(":", 1)
            with socket.socket() as s:
                return s.connect_ex((host, int(port))) == 0
        wait_for(listening, "the MCP HTTP server to listen")

        async def scenario():
            async with streamable_http_client(f"http://{address}/mcp") as (read, write):
                async with ClientSession(read, write) as s:
                    await s.initialize()
                    made = ok(await s.call_tool("schedule_timer", {"delay_seconds": 0.5, "name": "over-http"}))
                    waited = ok(await s.call_tool("wait_for_timer", {"id": made["id"], "timeout_seconds": 60}))
                    assert waited["fired"] is True and waited["timer"]["name"] == "over-http"
                    assert failed(await s.call_tool("get_timer", {"id": "nope"})).startswith("NOT_FOUND: ")

        run(scenario())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
