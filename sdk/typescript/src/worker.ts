/** A small worker loop over a pull queue, as the Python SDK's `run_worker`: lease, handle, ack (or nack when the handler throws). */
import type { Client } from "./client";
import { MinootsError } from "./errors";
import type { Lease, Timer } from "./types";

export interface WorkerOptions {
  tenant?: string;
  /** Lease visibility (default 30 s): must outlast `handle`, or another worker gets the timer. */
  visibilityMs?: number;
  /** Long poll of each lease call (default 10 s, at most 20 s). */
  waitMs?: number;
  maxTimers?: number;
  /** Stops the loop (checked between lease calls). */
  signal?: AbortSignal;
  /** Told about acks and nacks the cluster refused (a lease that expired meanwhile). */
  onRefused?: (timer: Timer, what: "ack" | "nack", err: MinootsError) => void;
}

/**
 * Lease timers of `queue` and call `handle(timer)` for each: resolves -> ack (settled), throws
 * -> nack (retried per the timer's policy, dead-lettered after its last attempt). Runs until
 * `signal` aborts; resolves to how many it acked. At least once: make handlers idempotent
 * (e.g. on `timer.fireId`).
 */
export async function runWorker(client: Client, queue: string, handle: (timer: Timer) => unknown | Promise<unknown>,
                                opts: WorkerOptions = {}): Promise<number> {
  let acked = 0;
  while (!opts.signal?.aborted) {
    const leases = await client.leaseTimers(queue, {
      tenant: opts.tenant, maxTimers: opts.maxTimers ?? 1, visibilityMs: opts.visibilityMs ?? 30_000,
      waitMs: opts.waitMs ?? 10_000,
    });
    for (const lease of leases) acked += await one(client, lease, handle, opts);
  }
  return acked;
}

async function one(client: Client, lease: Lease, handle: (timer: Timer) => unknown, opts: WorkerOptions): Promise<number> {
  try {
    await handle(lease.timer);
  } catch {
    try {
      await client.nackLease(lease);
    } catch (err) {
      if (!(err instanceof MinootsError)) throw err;
      opts.onRefused?.(lease.timer, "nack", err);      // the lease expired meanwhile: redelivered anyway
    }
    return 0;
  }
  try {
    await client.ackLease(lease);
  } catch (err) {
    if (!(err instanceof MinootsError)) throw err;
    opts.onRefused?.(lease.timer, "ack", err);
    return 0;
  }
  return 1;
}
