"""`minoots mcp`: a Model Context Protocol server (the official `mcp` SDK's MCPServer) whose
tools schedule, read, change and wait for timers through the Python SDK (`AsyncClient`):
the same seed list, leader discovery, retry-safe creates (client-side ids), typed errors
and token (`token=`, else $MINOOTS_TOKEN, $MINOOTS_TOKEN_FILE, ./minoots-data/admin.token)
as every other SDK user. The cluster's authorization applies to the token it holds.

Tools return the timer as JSON (times RFC 3339 UTC; payload as text when it is UTF-8, else
base64). A failure comes back as an MCP tool error (`isError`) whose text is the gRPC status
and the server's message, e.g. "NOT_FOUND: timer 'x' not found in tenant 'default'"; never
a traceback (anything unexpected is logged on stderr and reported by its type and text).
"""
import asyncio
import functools
import logging
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import AwareDatetime, Field

from minoots.kernel import MAX_ID_LEN, MAX_LABELS, MAX_PAYLOAD_BYTES
from minoots.kernel.delivery import MAX_URL_LEN
from .client.aio import AsyncClient
from .types import EventKind, MinootsError, Timer, TimerState

log = logging.getLogger("minoots.api.mcp")

__all__ = ["build_server", "MAX_WAIT_S", "PROGRESS_EVERY_S"]

MAX_WAIT_S = 3600.0          # the longest wait_for_timer may block
PROGRESS_EVERY_S = 1.0       # progress notifications (and a re-read of the timer) while waiting
MAX_DELAY_S = 10 * 365 * 86400.0
MAX_LIST = 1000

INSTRUCTIONS = (
    "MINOOTS is a durable, replicated timer service. schedule_timer makes a timer that fires at a "
    "deadline (a delay in seconds, or an RFC 3339 time), once or recurring (every_seconds, or cron with "
    "time_zone), optionally after other timers (after/on) and delivered to a webhook URL or a managed "
    "endpoint; wait_for_timer blocks until it fired (or a timeout passed) and reports progress meanwhile; "
    "a timer made with ack_required stays 'fired' until ack_timer is called with its fire_id. Deliveries "
    "that ran out of attempts are listed by list_dead_letters and sent again by replay_dead_letters. "
    "Timers survive the loss of a server."
)

TimerId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN,
                               description=f"The timer's id (1..{MAX_ID_LEN} characters of A-Za-z0-9._:~-).")]
Tenant = Annotated[Optional[str], Field(
    max_length=64,
    description="The tenant; default: the token's only tenant, else 'default'.")]


class ToolFailed(Exception):
    pass


def _errors(fn):
    """Raise the SDK's typed errors as MCP tool errors: 'CODE: message'."""
    @functools.wraps(fn)
    async def wrapped(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except MinootsError as exc:
            raise ToolError(f"{exc.code}: {exc.message or exc.code}") from None
        except ToolFailed as exc:
            raise ToolError(str(exc)) from None
    return wrapped


def _timer(t: Timer) -> dict[str, Any]:
    d = t.to_dict()
    d["fire_at_unix_ms"] = t.fire_at_ms
    return d


def _fired(t: Timer) -> bool:
    return t.fired_at is not None or t.state in (TimerState.FIRED, TimerState.SETTLED, TimerState.DEAD_LETTERED)


def build_server(client: AsyncClient, *, name: str = "minoots"):
    """The MCPServer with the timer tools, over `client` (closed by the caller)."""
    server = MCPServer(name, instructions=INSTRUCTIONS)

    @server.tool()
    @_errors
    async def schedule_timer(
        delay_seconds: Annotated[Optional[float], Field(
            ge=0, le=MAX_DELAY_S,
            description="Fire this many seconds from now (decimals allowed, millisecond precision). "
                        "Give exactly one of delay_seconds and fire_at.")] = None,
        fire_at: Annotated[Optional[AwareDatetime], Field(
            description="Fire at this RFC 3339 time with a zone, e.g. 2026-12-01T10:00:00Z.")] = None,
        payload: Annotated[str, Field(
            max_length=MAX_PAYLOAD_BYTES,
            description=f"Text carried by the timer, returned when it fires (at most {MAX_PAYLOAD_BYTES} "
                        "bytes of UTF-8).")] = "",
        labels: Annotated[Optional[dict[str, str]], Field(
            max_length=MAX_LABELS,
            description=f"Up to {MAX_LABELS} labels (key: [prefix/]name of A-Za-z0-9._-, value up to 256 "
                        "characters), for list_timers' label_selector.")] = None,
        name: Annotated[str, Field(max_length=256, description="A human-readable name.")] = "",
        id: Annotated[Optional[str], Field(
            max_length=MAX_ID_LEN,
            description="A timer id of your choosing; default: a new unique id. Scheduling the same id "
                        "twice returns the first timer (created=false) instead of a second one.")] = None,
        ack_required: Annotated[bool, Field(
            description="Stay 'fired' until ack_timer is called, instead of settling at once.")] = False,
        webhook: Annotated[Optional[str], Field(
            max_length=MAX_URL_LEN,
            description="When it fires, POST a signed JSON envelope (Standard Webhooks, signed with the "
                        "tenant's webhook secret) to this http(s) URL, retrying until a 2xx or the attempts "
                        "run out (then the timer is dead_lettered). At most one of webhook and endpoint.")] = None,
        endpoint: Annotated[Optional[str], Field(
            max_length=64,
            description="Or POST it to this managed endpoint id (ep_..., its own URL, headers and secret).")] = None,
        max_attempts: Annotated[Optional[int], Field(
            ge=1, le=50, description="Delivery attempts of a webhook or endpoint timer (default: the tenant's, "
                                     "else 5).")] = None,
        every_seconds: Annotated[Optional[float], Field(
            ge=1, le=MAX_DELAY_S,
            description="Recur: fire at the deadline, then every this many seconds (at least 1).")] = None,
        cron: Annotated[str, Field(
            max_length=128,
            description="Or recur at the times of this cron expression (5 fields, or 6 with seconds last), "
                        "the first at or after the deadline (delay_seconds 0: from now). Needs time_zone.")] = "",
        time_zone: Annotated[str, Field(
            max_length=64, description="The IANA time zone of cron, e.g. Europe/Paris or UTC.")] = "",
        until: Annotated[Optional[AwareDatetime], Field(
            description="A recurring timer's last occurrence is the last due at or before this RFC 3339 "
                        "time.")] = None,
        max_count: Annotated[int, Field(
            ge=0, le=2**32 - 1, description="Or: a recurring timer ends after this many occurrences.")] = 0,
        after: Annotated[Optional[list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]]], Field(
            max_length=16,
            description="Dependencies: ids of 1..16 timers of the same tenant. The timer waits until they "
                        "meet `on`; then it fires delay_seconds later (the deadline is optional then).")] = None,
        on: Annotated[str, Field(
            pattern="^(|fired|settled|dead_lettered|cancelled)$",
            description="With after: the parents' condition, fired, settled (default), dead_lettered or "
                        "cancelled.")] = "",
        mode: Annotated[str, Field(
            pattern="^(|all|any)$", description="With after: all parents (default) or any one.")] = "",
        tenant: Tenant = None,
    ) -> dict[str, Any]:
        """Schedule a timer: it fires after delay_seconds, or at fire_at; optionally it recurs
        (every_seconds, or cron with time_zone), waits for other timers (after/on), and is
        delivered to a webhook URL or a managed endpoint. Returns the timer (id, state, fire_at,
        ...); `created` is false when this id already existed."""
        if not after and (delay_seconds is None) == (fire_at is None):
            raise ToolFailed("INVALID_ARGUMENT: give exactly one of delay_seconds and fire_at")
        if after is not None and not after:
            raise ToolFailed("INVALID_ARGUMENT: after needs at least one timer id")
        data = payload.encode()
        if len(data) > MAX_PAYLOAD_BYTES:
            raise ToolFailed(f"INVALID_ARGUMENT: payload is {len(data)} bytes of UTF-8, at most {MAX_PAYLOAD_BYTES}")
        t = await client.create(fire_at.astimezone(timezone.utc) if fire_at is not None else None,
                                delay=delay_seconds, id=id, tenant=tenant, name=name, payload=data,
                                labels=labels or {}, ack_required=ack_required, webhook=webhook or None,
                                endpoint=endpoint or None, max_attempts=max_attempts, every=every_seconds,
                                cron=cron, tz=time_zone,
                                until=until.astimezone(timezone.utc) if until is not None else None,
                                max_count=max_count, after=after or None, on=on, mode=mode)
        return _timer(t)

    @server.tool()
    @_errors
    async def get_timer(id: TimerId, tenant: Tenant = None) -> dict[str, Any]:
        """Read one timer: its state (scheduled, armed, fired, settled, cancelled, dead_lettered),
        deadline, fire_id (needed by ack_timer) and payload."""
        return _timer(await client.get(id, tenant=tenant))

    @server.tool()
    @_errors
    async def list_timers(
        states: Annotated[Optional[list[str]], Field(
            max_length=6,
            description="Only timers in these states: scheduled, armed, fired, settled, cancelled, "
                        "dead_lettered. Default: all.")] = None,
        label_selector: Annotated[str, Field(
            max_length=4096, description="'k=v,k2=v2': only timers with all these labels.")] = "",
        limit: Annotated[int, Field(ge=1, le=MAX_LIST, description=f"At most this many (1..{MAX_LIST}).")] = 100,
        tenant: Tenant = None,
    ) -> dict[str, Any]:
        """List timers (at most `limit`), filtered by state and labels."""
        try:
            wanted = [TimerState[s.strip().upper()] for s in states or ()]
        except KeyError as exc:
            raise ToolFailed(f"INVALID_ARGUMENT: unknown state {exc.args[0]!r}; use scheduled, armed, fired, "
                             "settled, cancelled or dead_lettered") from None
        found = [_timer(t) async for t in client.list(tenant=tenant, states=wanted or None,
                                                       labels=label_selector or None, limit=limit)]
        return {"timers": found, "count": len(found)}

    @server.tool()
    @_errors
    async def cancel_timer(id: TimerId, tenant: Tenant = None) -> dict[str, Any]:
        """Cancel a timer that has not fired yet. FAILED_PRECONDITION once it fired or settled."""
        return _timer(await client.cancel(id, tenant=tenant))

    @server.tool()
    @_errors
    async def extend_timer(
        id: TimerId,
        by_seconds: Annotated[Optional[float], Field(
            ge=-MAX_DELAY_S, le=MAX_DELAY_S,
            description="Move the deadline by this many seconds (negative: earlier). Not idempotent: "
                        "on an ambiguous failure read the timer before retrying.")] = None,
        fire_at: Annotated[Optional[AwareDatetime], Field(
            description="Or: the new absolute deadline, RFC 3339 with a zone (safe to retry).")]
        = None,
        tenant: Tenant = None,
    ) -> dict[str, Any]:
        """Move a timer's deadline (by_seconds relative to the current one, or to fire_at).
        Give exactly one of them. Works while the timer is scheduled or armed."""
        if (by_seconds is None) == (fire_at is None):
            raise ToolFailed("INVALID_ARGUMENT: give exactly one of by_seconds and fire_at")
        if fire_at is not None:
            return _timer(await client.reschedule(id, fire_at.astimezone(timezone.utc), tenant=tenant))
        return _timer(await client.extend(id, by_seconds, tenant=tenant))

    @server.tool()
    @_errors
    async def ack_timer(
        id: TimerId,
        fire_id: Annotated[int, Field(ge=1, description="The fire_id of the fire being acknowledged "
                                                        "(get_timer or wait_for_timer shows it).")],
        tenant: Tenant = None,
    ) -> dict[str, Any]:
        """Acknowledge a fired timer made with ack_required: it becomes settled."""
        return _timer(await client.ack(id, fire_id, tenant=tenant))

    @server.tool()
    @_errors
    async def list_dead_letters(
        endpoint: Annotated[str, Field(max_length=64, description="Only timers of this endpoint id.")] = "",
        queue: Annotated[str, Field(max_length=128, description="Only timers of this pull queue.")] = "",
        label_selector: Annotated[str, Field(
            max_length=4096, description="'k=v,k2=v2': only timers with all these labels.")] = "",
        limit: Annotated[int, Field(ge=1, le=MAX_LIST, description=f"At most this many (1..{MAX_LIST}).")] = 100,
        tenant: Tenant = None,
    ) -> dict[str, Any]:
        """List dead-lettered timers: webhook/endpoint/queue timers whose delivery attempts ran out
        (each with its delivery_attempts). `truncated` is true when more matched than `limit`."""
        timers, truncated = await client.dead_letters(queue=queue or None, endpoint=endpoint or None,
                                                      labels=label_selector or None, limit=limit, tenant=tenant)
        return {"timers": [_timer(t) for t in timers], "count": len(timers), "truncated": truncated}

    @server.tool()
    @_errors
    async def replay_dead_letters(
        ids: Annotated[Optional[list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]]], Field(
            max_length=MAX_LIST, description="The dead-lettered timers to deliver again, by id.")] = None,
        endpoint: Annotated[str, Field(max_length=64, description="Or: those of this endpoint id.")] = "",
        queue: Annotated[str, Field(max_length=128, description="Or: those of this pull queue.")] = "",
        label_selector: Annotated[str, Field(
            max_length=4096, description="Or: those with all these labels ('k=v,k2=v2').")] = "",
        all: Annotated[bool, Field(description="Or: every dead letter of the tenant (up to 1000 a call).")] = False,
        tenant: Tenant = None,
    ) -> dict[str, Any]:
        """Deliver dead-lettered timers again with a fresh attempt budget (their history is kept,
        the same webhook-id is sent). Name them by ids, or select them; a result per timer."""
        if not (ids or endpoint or queue or label_selector or all):
            raise ToolFailed("INVALID_ARGUMENT: give ids, or a selection (endpoint, queue, label_selector or all)")
        r = await client.replay_dead_letters(ids or (), queue=queue or None, endpoint=endpoint or None,
                                             labels=label_selector or None, all=all, tenant=tenant)
        return {"results": [{"id": i, "ok": ok, "error": err} for i, ok, err in r.results],
                "replayed": r.ok, "truncated": r.truncated}

    @server.tool()
    @_errors
    async def wait_for_timer(
        id: TimerId,
        ctx: Context,
        timeout_seconds: Annotated[float, Field(
            ge=0, le=MAX_WAIT_S,
            description=f"Give up after this many seconds (at most {MAX_WAIT_S:g}); the result then has "
                        "fired=false.")] = 60.0,
        tenant: Tenant = None,
    ) -> dict[str, Any]:
        """Wait until the timer fires (or is cancelled), or timeout_seconds pass. Sends a progress
        notification about every second. Returns {fired, timed_out, timer}."""
        return await _wait(client, ctx, id, tenant, timeout_seconds)

    return server


async def _wait(client: AsyncClient, ctx, id: str, tenant: Optional[str], timeout_s: float) -> dict[str, Any]:
    start = time.monotonic()
    deadline = start + timeout_s
    t = await client.get(id, tenant=tenant)

    def result(t: Timer, timed_out: bool) -> dict[str, Any]:
        return {"fired": _fired(t), "timed_out": timed_out, "waited_seconds": round(time.monotonic() - start, 3),
                "timer": _timer(t)}

    if _fired(t) or t.state == TimerState.CANCELLED:
        return result(t, False)
    # The watch wakes the wait at once when the timer's fate is decided; the re-read every
    # PROGRESS_EVERY_S is the safety net (and what the progress message reports).
    watch = client.watch(0, tenant=t.tenant, kinds=[EventKind.FIRED, EventKind.CANCELLED, EventKind.SETTLED])

    async def decided() -> None:
        async for ev in watch:
            if ev.timer_id == id:
                return

    waiter = asyncio.ensure_future(decided())
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return result(await client.get(id, tenant=t.tenant), True)
            await asyncio.wait((waiter,), timeout=min(PROGRESS_EVERY_S, remaining))
            if waiter.done() and waiter.exception() is not None:
                log.info("wait_for_timer: watch failed, polling", extra={"error": repr(waiter.exception())})
                waiter = asyncio.ensure_future(asyncio.sleep(MAX_WAIT_S))
            t = await client.get(id, tenant=t.tenant)
            if _fired(t) or t.state == TimerState.CANCELLED:
                return result(t, False)
            elapsed = time.monotonic() - start
            left = (t.fire_at - datetime.now(timezone.utc)).total_seconds()
            await ctx.report_progress(round(elapsed, 3), timeout_s,
                                      f"timer {id} is {t.state.name.lower()}, due in {max(0.0, left):.1f} s")
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        await watch.aclose()


def serve(seeds, *, tls=False, http: Optional[str] = None, token: Optional[str] = None) -> None:
    """Run the MCP server on stdio (or streamable HTTP at `http` HOST:PORT) until its input ends."""
    import anyio

    async def main() -> None:
        client = AsyncClient(seeds, tls=tls, token=token)
        try:
            server = build_server(client)
            if http:
                from minoots.raft.net import split_address

                host, port = split_address(http)
                await server.run_streamable_http_async(host=host, port=port)
            else:
                await server.run_stdio_async()
        finally:
            await client.close()

    anyio.run(main)
