/**
 * `Watch`: the self-resuming event iterator (`Client.watch`), the TypeScript twin of the
 * Python SDK's Watch/WatchPolicy (api/client/watch.py):
 *
 * - exactly once: `WatchCursor` drops an event already yielded and, on an unfiltered
 *   watch, throws DATA_LOSS if a sequence is ever skipped; a filtered stream's progress
 *   batches (EventBatch.through) move the cursor past filtered-out stretches.
 * - failures: after a broken stream the watch reopens on another member from its cursor
 *   after a jittered backoff; the clock for `reconnectTimeoutMs` starts at the first
 *   failure and restarts whenever an event arrives or a stream stayed open 2 s. A member
 *   answering OUT_OF_RANGE / DATA_LOSS is skipped for this cursor; only when every known
 *   member said so is the error thrown (OutOfRange). Other final statuses are thrown typed.
 * - liveness: a node cut off from the majority keeps the stream open but sends nothing.
 *   A stream idle for `stallTimeoutMs` gets a check (Cluster.Status of its node): when the
 *   node sees no reachable leader, does not answer, or has not applied the commit index
 *   the leader had one check earlier, and another member sees a leader, the stream is left
 *   for that member, from the cursor, exactly as after a disconnect.
 */
import * as grpc from "@grpc/grpc-js";
import { setTimeout as sleep } from "node:timers/promises";
import { MinootsError, OutOfRange, errorFromStatus, isServiceError } from "./errors";
import { DISCOVERY_ATTEMPT_TIMEOUT_MS, backoff, giveUp, seesLeader } from "./policy";
import { eventFromPb, u64 } from "./wire";
import type { Client } from "./client";
import type { ClusterStatus, Event } from "./types";
import type { Event__Output } from "./gen/minoots/v1/Event";
import type { EventBatch__Output } from "./gen/minoots/v1/EventBatch";
import type { WatchEventsRequest } from "./gen/minoots/v1/WatchEventsRequest";

export interface WatchOptions {
  /** Throw Unavailable when no member could be reached this long (default: the client's timeoutMs). */
  reconnectTimeoutMs?: number;
  /** Liveness check of a stream idle this long (default 1 s); null or 0: never. */
  stallTimeoutMs?: number | null;
}

const S = grpc.status;
/** Stream failures after which a watch reconnects (OUT_OF_RANGE and DATA_LOSS are handled apart). */
export const WATCH_RETRY_CODES: ReadonlySet<number> = new Set([
  S.UNAVAILABLE, S.DEADLINE_EXCEEDED, S.UNKNOWN, S.INTERNAL, S.CANCELLED, S.ABORTED, S.RESOURCE_EXHAUSTED,
]);
/** "This node does not have your events": another member may. */
export const WATCH_LACKING_CODES: ReadonlySet<number> = new Set([S.OUT_OF_RANGE, S.DATA_LOSS]);
/** A stream open this long counts as a successful connection (restarts the reconnect clock). */
export const WATCH_HEALTHY_AFTER_MS = 2_000;

/** Exactly-once bookkeeping of a watch (no I/O). */
export class WatchCursor {
  /** The sequence to ask for on reconnect. */
  next: number;
  /** Last sequence yielded. */
  last: number | null = null;
  readonly filtered: boolean;

  constructor(readonly request: WatchEventsRequest) {
    this.next = Number(request.fromSequence ?? 0);
    this.filtered = Boolean(request.tenant) || (request.kinds ?? []).length > 0;
  }

  resumeRequest(): WatchEventsRequest {
    return { ...this.request, fromSequence: String(this.next) };
  }

  /** A filtered stream examined every event up to `through`: resume after it. */
  examined(through: number): void {
    if (this.filtered && through >= this.next) this.next = through + 1;
  }

  /** The Event to yield, or null for a duplicate; throws on a gap in an unfiltered stream. */
  accept(pb: Event__Output): Event | null {
    const seq = u64(pb.sequence);
    if (this.last !== null && seq <= this.last) return null;
    if (this.next && seq < this.next) return null;
    if (!this.filtered && this.last !== null && seq !== this.last + 1) {
      throw new MinootsError(`event stream skipped from sequence ${this.last} to ${seq}`, "DATA_LOSS");
    }
    if (!this.filtered && this.last === null && this.next && seq !== this.next) {
      throw new MinootsError(`asked for events from sequence ${this.next}, got ${seq} first`, "DATA_LOSS");
    }
    this.last = seq;
    this.next = seq + 1;
    return eventFromPb(pb);
  }
}

/** The messages of one server stream, read one at a time (with backpressure). */
export class StreamReader<T> {
  private queue: T[] = [];
  private error: unknown = null;
  private ended = false;
  private wake: (() => void) | null = null;

  constructor(readonly call: grpc.ClientReadableStream<T>) {
    call.on("data", (m: T) => {
      this.queue.push(m);
      if (this.queue.length >= 64) call.pause();
      this.notify();
    });
    call.on("error", (e: unknown) => {
      this.error = e;
      this.notify();
    });
    call.on("status", () => {
      this.ended = true;
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    if (w) w();
  }

  /** The next message; null when the stream ended cleanly; throws the stream's error. */
  async next(): Promise<T | null> {
    for (;;) {
      if (this.queue.length) {
        const m = this.queue.shift() as T;
        if (this.queue.length < 16 && this.call.isPaused()) this.call.resume();
        return m;
      }
      if (this.error !== null) throw this.error;
      if (this.ended) return null;
      await new Promise<void>((resolve) => { this.wake = resolve; });
    }
  }
}

export class Watch implements AsyncIterableIterator<Event> {
  readonly cursor: WatchCursor;
  /** Address currently (or last) streaming from. */
  node: string | null = null;
  /** Times the stream was reopened after a failure. */
  reconnects = 0;
  /** Times a stalled node (idle stream, node isolated or behind) was left. */
  stallSwitches = 0;
  lastStall: string | null = null;

  private readonly reconnectTimeoutMs: number;
  private readonly stallTimeoutMs: number | null;
  private reader: StreamReader<Event__Output | EventBatch__Output> | null = null;
  private batched = false;
  private reopen: string | null = null;
  private pending: Event__Output[] = [];
  private through = 0;
  private closed = false;
  private openedAt = 0;
  private downSince: number | null = null;
  private failures = 0;
  private lastError: unknown = undefined;
  private readonly lacking = new Map<string, grpc.ServiceError>();
  private refreshedForLacking = false;
  private readonly unbatched = new Set<string>();
  private activeAt = 0;
  private checkedAt = 0;
  private lagMark: number | null = null;
  private monitor: NodeJS.Timeout | null = null;
  private checking = false;

  constructor(private readonly client: Client, request: WatchEventsRequest,
              opts: { reconnectTimeoutMs: number; stallTimeoutMs: number | null }) {
    this.cursor = new WatchCursor(request);
    this.reconnectTimeoutMs = opts.reconnectTimeoutMs;
    this.stallTimeoutMs = opts.stallTimeoutMs ? opts.stallTimeoutMs : null;
    client.openWatches.add(this);
  }

  /** Sequence of the last event yielded (null before the first). */
  get lastSequence(): number | null {
    return this.cursor.last;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Event> {
    return this;
  }

  async next(): Promise<IteratorResult<Event, undefined>> {
    for (;;) {
      if (this.closed) return { done: true, value: undefined };
      const pb = this.pending.shift();
      if (pb !== undefined) {
        const ev = this.received(pb);
        if (ev !== null) return { done: false, value: ev };
        continue;
      }
      this.cursor.examined(this.through);
      if (this.reader === null) {
        await this.open();
        continue;
      }
      const reader = this.reader;
      let msg: Event__Output | EventBatch__Output | null;
      try {
        msg = await reader.next();
      } catch (err) {
        if (this.closed) return { done: true, value: undefined };
        this.dropCall();
        const again = this.streamFailed(err);
        if (again !== null) this.reopen = again;
        continue;
      }
      if (this.reader !== reader) continue;   // left for another member meanwhile
      if (msg === null) {
        // The server ended an endless stream (shutting down): resume elsewhere.
        this.dropCall();
        this.failed(null);
        continue;
      }
      if (this.batched) {
        const batch = msg as EventBatch__Output;
        this.pending = [...batch.events];
        this.through = u64(batch.through);
      } else {
        this.pending = [msg as Event__Output];
      }
    }
  }

  async return(): Promise<IteratorResult<Event, undefined>> {
    this.close();
    return { done: true, value: undefined };
  }

  /** Stop the stream; the iterator then ends. */
  close(): void {
    this.closed = true;
    this.client.openWatches.delete(this);
    if (this.monitor !== null) clearInterval(this.monitor);
    this.monitor = null;
    this.dropCall();
  }

  // ---- opening and failing

  private async open(): Promise<void> {
    let addr = this.reopen;
    this.reopen = null;
    if (addr === null) {
      const pause = this.delay();
      if (pause > 0) await sleep(pause);
      if (this.closed) return;
      const c = this.client;
      if (c.router.stale(c.refreshIntervalMs)) {
        await c.refresh(performance.now() + DISCOVERY_ATTEMPT_TIMEOUT_MS, this.node ?? undefined);
      }
      addr = this.choose();
    }
    if (this.closed) return;
    const stubs = this.client.stubsFor(addr);
    this.batched = !this.unbatched.has(addr);
    const req = this.cursor.resumeRequest();
    const call = this.batched ? stubs.timers.WatchEventBatches(req, this.client.metadata())
      : stubs.timers.WatchEvents(req, this.client.metadata());
    this.reader = new StreamReader<Event__Output | EventBatch__Output>(
      call as grpc.ClientReadableStream<Event__Output | EventBatch__Output>);
    this.node = addr;
    this.openedAt = this.activeAt = performance.now();
    this.lagMark = null;
    if (this.monitor === null && this.stallTimeoutMs !== null) {
      this.monitor = setInterval(() => void this.maybeCheck(), Math.max(50, Math.min(250, this.stallTimeoutMs / 2)));
      this.monitor.unref();
    }
  }

  private dropCall(): void {
    const reader = this.reader;
    this.reader = null;
    if (reader !== null) reader.call.cancel();
  }

  private received(pb: Event__Output): Event | null {
    this.activeAt = performance.now();
    this.downSince = null;
    this.failures = 0;
    this.lacking.clear();
    this.refreshedForLacking = false;
    return this.cursor.accept(pb);
  }

  /** Milliseconds to wait before the next open; throws once reconnectTimeoutMs has passed. */
  private delay(): number {
    if (this.downSince === null) return 0;
    const elapsed = performance.now() - this.downSince;
    if (elapsed > this.reconnectTimeoutMs) {
      if (this.lacking.size) throw this.lackingError();
      throw giveUp(this.lastError, "watch", this.reconnectTimeoutMs, this.failures);
    }
    if (isServiceError(this.lastError) && WATCH_LACKING_CODES.has(this.lastError.code)) return 0;
    return Math.min(this.reconnectTimeoutMs - elapsed,
      backoff(this.failures - 1, this.client.backoffBaseMs, this.client.backoffMaxMs));
  }

  private choose(): string {
    const avoid = new Set(this.lacking.keys());
    if (this.downSince !== null && this.node !== null) avoid.add(this.node);
    return this.client.router.pick(avoid);
  }

  /** An older server refuses WatchEventBatches (UNIMPLEMENTED): reopen there at once, per event. */
  private streamFailed(err: unknown): string | null {
    if (this.batched && isServiceError(err) && err.code === S.UNIMPLEMENTED && this.node !== null) {
      this.unbatched.add(this.node);
      return this.node;
    }
    this.failed(err);
    return null;
  }

  /** The stream ended (err null: cleanly) or failed; throws when the failure is final. */
  private failed(err: unknown): void {
    const code = isServiceError(err) ? err.code : err === null ? null : S.UNKNOWN;
    if (code !== null && WATCH_LACKING_CODES.has(code)) {
      if (this.node !== null) this.lacking.set(this.node, err as grpc.ServiceError);
      const router = this.client.router;
      if (router.addresses.every((a) => this.lacking.has(a))) {
        if (router.incomplete && !this.refreshedForLacking) {
          // Every member *known* lacks the cursor, but the membership answer was incomplete:
          // ask the cluster once more before giving up.
          this.refreshedForLacking = true;
          router.discoveredAt = null;
        } else {
          throw this.lackingError();
        }
      }
    } else if (code !== null && !WATCH_RETRY_CODES.has(code)) {
      throw errorFromStatus(err);
    } else if (this.node !== null) {
      this.client.router.failed(this.node);
    }
    const now = performance.now();
    if (this.downSince === null || now - this.openedAt > WATCH_HEALTHY_AFTER_MS) {
      this.downSince = now;
      this.failures = 0;
    }
    this.failures++;
    this.lastError = err ?? this.lastError;
    this.reconnects++;
  }

  private lackingError(): MinootsError {
    const errs = [...this.lacking.entries()].map(([a, e]) => [a, errorFromStatus(e)] as const);
    const detail = errs.map(([a, e]) => `${a}: ${e.message}`).join("; ");
    if (errs.some(([, e]) => e instanceof OutOfRange)) {
      return new OutOfRange(`no reachable member retains events from sequence ${this.cursor.next} (${detail})`);
    }
    return new MinootsError(`no reachable member can stream from sequence ${this.cursor.next} (${detail})`, "DATA_LOSS");
  }

  // ---- liveness of an idle stream

  private async status(addr: string | null, timeoutMs: number): Promise<ClusterStatus | null> {
    if (!addr) return null;
    try {
      return await this.client.statusOf(addr, timeoutMs);
    } catch {
      return null;
    }
  }

  private async maybeCheck(): Promise<void> {
    if (this.checking || this.closed || this.reader === null || this.stallTimeoutMs === null) return;
    const due = Math.max(this.activeAt, this.checkedAt) + this.stallTimeoutMs;
    if (performance.now() < due) return;
    this.checking = true;
    try {
      await this.check();
    } catch {
      // a failed check must never break the watch
    } finally {
      this.checkedAt = performance.now();
      this.checking = false;
    }
  }

  private async check(): Promise<void> {
    const reader = this.reader;
    const addr = this.node;
    if (reader === null || addr === null) return;
    const t = Math.min(DISCOVERY_ATTEMPT_TIMEOUT_MS, Math.max(200, this.stallTimeoutMs ?? 0));
    const own = await this.status(addr, t);
    let reason: string | null = null;
    if (own === null) reason = "did not answer Cluster.Status";
    else if (!seesLeader(own)) reason = "sees no reachable Raft leader";
    else if (this.lagMark !== null && own.appliedIndex < this.lagMark) {
      reason = `applied index ${own.appliedIndex} is still behind the commit index ${this.lagMark} the leader had one check earlier`;
    }
    if (reason === null && own !== null) {
      const leader = own.leader === own.node ? own : await this.status(own.leaderGrpcAddress, t);
      if (leader !== null && seesLeader(leader)) this.lagMark = Math.max(this.lagMark ?? 0, leader.commitIndex);
      return;
    }
    for (const other of this.client.router.rotation()) {
      if (other === addr) continue;
      if (this.closed || this.reader !== reader) return;
      const ref = await this.status(other, t);
      if (ref !== null && seesLeader(ref)) {
        this.client.router.learn(ref);
        if (this.reader !== reader || this.closed) return;
        this.stallSwitches++;
        this.lastStall = `${addr}: ${reason}`;
        reader.call.cancel();   // the iterator sees CANCELLED and resumes elsewhere from the cursor
        return;
      }
    }
  }
}
