/**
 * `Subscriber`: iterating over a durable subscription (`Client.subscribe`), the TypeScript
 * twin of the Python SDK's api/client/subscriptions.py. It reads with
 * Timers.WatchEventBatches from the subscription's committed cursor with its filters (a
 * `Watch`: any member, across failovers) and commits the cursor: every `commitEvery`
 * events, every `commitIntervalMs` (what the loop has finished: an event counts as
 * processed once the next one is asked for), and everything handed out on `commit()` and
 * `close()`. At-least-once: after a crash the consumer sees again at most the events since
 * its last commit. A filtered subscription also commits the progress the server reports
 * through filtered-out stretches, so an idle filter does not hold retention back.
 *
 * When the events from the cursor are gone (the events budget overran it), `onLoss:
 * "resync"` marks the loss on the cluster (SkipLostEvents), lists the timers that fired
 * since the last fire it saw into `resynced`, and goes on live; the default "raise" throws
 * OutOfRange.
 */
import { FailedPrecondition, InvalidArgument, MinootsError, OutOfRange } from "./errors";
import type { Client } from "./client";
import type { Event, SubscriptionInfo, Timer } from "./types";
import type { Watch } from "./watch";

export interface SubscribeOptions {
  /** Commit after this many finished events (default 1000). */
  commitEvery?: number;
  /** And at this interval (default 1000 ms). */
  commitIntervalMs?: number;
  /** "raise" (OutOfRange, default) or "resync" when the events from the cursor are gone. */
  onLoss?: "raise" | "resync";
  reconnectTimeoutMs?: number;
  stallTimeoutMs?: number | null;
}

export class Subscriber implements AsyncIterableIterator<Event> {
  readonly name: string;
  readonly tenant: string;
  info: SubscriptionInfo;
  /** The cursor the cluster holds (as far as this subscriber knows). */
  committed: number;
  /** Events this subscriber could not see (marked on the cluster). */
  lost = 0;
  /** Timers that fired while events were lost (onLoss "resync"). */
  readonly resynced: Timer[] = [];
  lastFiredAtMs: number | null = null;
  /** Automatic commits that failed (no leader during a failover, say); the next one commits more. */
  commitErrors = 0;
  lastCommitError: MinootsError | null = null;

  private readonly commitEvery: number;
  private readonly onLoss: "raise" | "resync";
  private watchIt: Watch;
  private yielded: number | null = null;   // sequence of the last event handed out
  private done: number;                    // every event below this one is finished
  private waiting = false;                 // the loop is inside next() (holds no event)
  private closed = false;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly client: Client, info: SubscriptionInfo, tenant: string,
              private readonly opts: SubscribeOptions) {
    this.commitEvery = opts.commitEvery ?? 1000;
    const interval = opts.commitIntervalMs ?? 1000;
    this.onLoss = opts.onLoss ?? "raise";
    if (this.onLoss !== "raise" && this.onLoss !== "resync") {
      throw new InvalidArgument(`onLoss must be "raise" or "resync", got ${String(this.onLoss)}`);
    }
    if (!(this.commitEvery >= 1) || !(interval > 0)) {
      throw new InvalidArgument("commitEvery must be >= 1 and commitIntervalMs > 0");
    }
    this.name = info.name;
    this.tenant = tenant;
    this.info = info;
    this.committed = info.cursor;
    this.done = info.cursor;
    this.watchIt = this.openWatch(info.cursor);
    this.timer = setInterval(() => { void this.tryCommit(); }, interval);
    this.timer.unref();
  }

  /** The underlying watch (its `node`, `reconnects`). */
  get watch(): Watch {
    return this.watchIt;
  }

  private openWatch(cursor: number): Watch {
    const info = this.info;
    return this.client.watch(cursor, {
      tenant: info.allTenants ? "" : info.tenant,
      kinds: info.kinds.length ? info.kinds : undefined,
      reconnectTimeoutMs: this.opts.reconnectTimeoutMs,
      stallTimeoutMs: this.opts.stallTimeoutMs,
    });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Event> {
    return this;
  }

  async next(): Promise<IteratorResult<Event, undefined>> {
    if (this.closed) return { done: true, value: undefined };
    if (this.yielded !== null) this.done = Math.max(this.done, this.yielded + 1);   // the loop is back
    this.waiting = true;
    try {
      if (this.done - this.committed >= this.commitEvery) await this.tryCommit();
      for (;;) {
        let r: IteratorResult<Event, undefined>;
        try {
          r = await this.watchIt.next();
        } catch (err) {
          if (!(err instanceof OutOfRange) || this.onLoss !== "resync" || this.closed) throw err;
          await this.resync();
          continue;
        }
        if (r.done) return r;
        this.yielded = r.value.sequence;
        if (r.value.kind === "FIRED") this.lastFiredAtMs = r.value.at.getTime();
        return r;
      }
    } finally {
      this.waiting = false;
    }
  }

  async return(): Promise<IteratorResult<Event, undefined>> {
    await this.close();
    return { done: true, value: undefined };
  }

  /** The cursor this subscriber may commit (see the module doc). */
  processed(): number {
    let done = Math.max(this.committed, this.done);
    if (this.waiting) done = Math.max(done, this.watchIt.cursor.next);
    return done;
  }

  /** Commit every event handed out so far (call it once the current one is handled). Returns the committed cursor. */
  async commit(): Promise<number> {
    if (this.yielded !== null) this.done = Math.max(this.done, this.yielded + 1);
    return this.commitProcessed();
  }

  private async commitProcessed(): Promise<number> {
    const cursor = this.processed();
    if (cursor > this.committed) {
      const info = await this.client.commitSubscription(this.name, cursor, { tenant: this.tenant });
      this.committed = Math.max(this.committed, info.cursor);
    }
    return this.committed;
  }

  /** An automatic commit: one that fails must not stop the stream (counted in `commitErrors`). */
  private async tryCommit(): Promise<void> {
    try {
      await this.commitProcessed();
    } catch (err) {
      this.commitErrors++;
      this.lastCommitError = err instanceof MinootsError ? err : new MinootsError(String(err));
    }
  }

  /** The events from our cursor are gone everywhere we can reach: mark the loss, list what fired, go on live. */
  private async resync(): Promise<void> {
    this.watchIt.close();
    const before = Math.max(this.processed(), this.watchIt.cursor.next);
    let info: SubscriptionInfo;
    try {
      info = await this.client.skipLostEvents(this.name, { tenant: this.tenant });
    } catch (err) {
      if (!(err instanceof FailedPrecondition)) throw err;
      // The cluster moved the cursor already (the leader marked the overrun): go on from there.
      info = await this.client.getSubscription(this.name, { tenant: this.tenant });
    }
    this.lost += Math.max(0, info.cursor - before);
    this.committed = Math.max(this.committed, info.cursor);
    this.info = info;
    const since = this.lastFiredAtMs ?? (info.createdAt ? info.createdAt.getTime() : 0);
    for await (const t of this.client.listTimers({ tenant: info.allTenants ? "" : info.tenant, firedAtFrom: since })) {
      this.resynced.push(t);
    }
    this.done = Math.max(this.done, info.cursor);
    this.watchIt = this.openWatch(info.cursor);
  }

  /** Stop; commits everything handed out. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    try {
      await this.commit();
    } finally {
      this.watchIt.close();
    }
  }
}
