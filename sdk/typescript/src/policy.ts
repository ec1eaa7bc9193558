/**
 * Call policy shared by every call (no I/O but the token file): defaults, which member a
 * call goes to (`Router`), the backoff, the API token. The same decisions as the Python
 * SDK's api/client/policy.py.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { InvalidArgument, MinootsError, DeadlineExceeded, Unavailable, errorFromStatus, isServiceError } from "./errors";
import type { ClusterStatus } from "./types";

export const DEFAULT_TIMEOUT_MS = 30_000;         // total deadline of one call, retries included
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 5_000;  // deadline of one attempt
export const DEFAULT_BACKOFF_BASE_MS = 50;
export const DEFAULT_BACKOFF_MAX_MS = 1_000;
export const DEFAULT_REFRESH_INTERVAL_MS = 30_000;
export const DISCOVERY_ATTEMPT_TIMEOUT_MS = 1_000;
export const DEFAULT_STALL_TIMEOUT_MS = 1_000;    // a watch idle this long gets a liveness check
export const INCOMPLETE_REFRESH_INTERVAL_MS = 1_000;

export const CHANNEL_OPTIONS = {
  // Reconnect to a restarted node quickly (the default backoff grows to 120 s).
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.min_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2000,
  // Bounded like everything that crosses a boundary: a node sends at most 64 MiB in one message.
  "grpc.max_receive_message_length": 64 << 20,
  "grpc.max_send_message_length": 16 << 20,
};

/** Exponential backoff with full jitter (AWS architecture blog, 2015), in ms. */
export function backoff(n: number, baseMs: number, capMs: number): number {
  return Math.random() * Math.min(capMs, baseMs * 2 ** Math.min(n, 30));
}

/** The error a retried call throws when its deadline has passed, from its last failure. */
export function giveUp(last: unknown, what: string, timeoutMs: number, tried: number): MinootsError {
  const secs = (timeoutMs / 1000).toFixed(1);
  if (last === undefined) return new DeadlineExceeded(`${what}: deadline of ${secs}s passed before any attempt`);
  if (isServiceError(last) || last instanceof MinootsError) {
    const err = errorFromStatus(last);
    const msg = `${what} failed after ${tried} attempt(s) within ${secs}s; last error: ${err.code}: ${err.message}`;
    return err instanceof DeadlineExceeded ? new DeadlineExceeded(msg) : new Unavailable(msg);
  }
  return new Unavailable(`${what} failed after ${tried} attempt(s) within ${secs}s: ${String(last)}`);
}

export const TOKEN_ENV = "MINOOTS_TOKEN";
export const TOKEN_FILE_ENV = "MINOOTS_TOKEN_FILE";

/**
 * The API token a client sends: `token`, else $MINOOTS_TOKEN, else the file named by
 * $MINOOTS_TOKEN_FILE, else the admin token `minoots up` wrote (($MINOOTS_DATA or
 * ./minoots-data)/admin.token), else none (calls then fail with Unauthenticated).
 * An empty `token` sends none.
 */
export function resolveToken(token: string | undefined): string | undefined {
  if (token !== undefined) return token || undefined;
  const env = process.env[TOKEN_ENV];
  if (env) return env.trim();
  const named = process.env[TOKEN_FILE_ENV];
  const file = named || path.join(process.env.MINOOTS_DATA || "minoots-data", "admin.token");
  try {
    return fs.readFileSync(file, "utf8").slice(0, 1024).trim() || undefined;
  } catch {
    if (named) throw new MinootsError(`cannot read the token file ${file} ($${TOKEN_FILE_ENV})`, "UNAUTHENTICATED");
    return undefined;
  }
}

/** Which member to try next: the leader when known, else the members in rotation. */
export class Router {
  addresses: string[];
  leader: string | null = null;
  discoveredAt: number | null = null;   // performance.now() of the last Status answer
  incomplete = true;                    // the last answer lacked a leader or an address
  private next = 0;

  constructor(seeds: string[] | string) {
    const list = (typeof seeds === "string" ? seeds.split(",") : seeds).map((s) => s.trim()).filter(Boolean);
    if (list.length === 0) throw new InvalidArgument("give at least one node address HOST:PORT");
    this.addresses = [...new Set(list)];
  }

  /** The leader unless avoided, else the next address in rotation not avoided (all avoided: the next one). */
  pick(avoid: Iterable<string> = []): string {
    const skip = new Set(avoid);
    if (this.leader !== null && !skip.has(this.leader)) return this.leader;
    const n = this.addresses.length;
    for (let i = 0; i < n; i++) {
      const addr = this.addresses[this.next++ % n];
      if (!skip.has(addr)) return addr;
    }
    return this.addresses[this.next++ % n];
  }

  /** Every address once, leader first, then from the rotation cursor. */
  rotation(): string[] {
    const n = this.addresses.length;
    const order = Array.from({ length: n }, (_, i) => this.addresses[(this.next + i) % n]);
    if (this.leader !== null && order.includes(this.leader)) {
      order.splice(order.indexOf(this.leader), 1);
      order.unshift(this.leader);
    }
    return order;
  }

  /** Whom to ask for Cluster.Status: `rotation()` with `avoid` (a member that just failed) last. */
  discoveryOrder(avoid?: string): string[] {
    const order = this.rotation();
    if (avoid !== undefined && order.includes(avoid) && order.length > 1) {
      order.splice(order.indexOf(avoid), 1);
      order.push(avoid);
    }
    return order;
  }

  failed(addr: string): void {
    if (this.leader === addr) this.leader = null;
    this.discoveredAt = null;   // ask again before the next attempt
    if (this.addresses[this.next % this.addresses.length] === addr) this.next++;
  }

  learn(status: ClusterStatus): void {
    for (const m of status.members) {
      if (m.grpcAddress && !this.addresses.includes(m.grpcAddress)) this.addresses.push(m.grpcAddress);
    }
    this.leader = status.leaderGrpcAddress;
    if (this.leader && !this.addresses.includes(this.leader)) this.addresses.push(this.leader);
    this.discoveredAt = performance.now();
    // Members announce their gRPC address through Raft after they start: until every member's
    // is known (and a leader), look again soon.
    this.incomplete = this.leader === null || status.members.some((m) => !m.grpcAddress);
  }

  stale(intervalMs: number): boolean {
    if (this.discoveredAt === null) return true;
    const age = performance.now() - this.discoveredAt;
    return age > (this.incomplete ? Math.min(intervalMs, INCOMPLETE_REFRESH_INTERVAL_MS) : intervalMs);
  }
}

/** The answering node leads with a majority connected, or is connected to the leader it names. */
export function seesLeader(st: ClusterStatus): boolean {
  if (!st.leader) return false;
  if (st.leader === st.node) {
    return 2 * st.members.filter((m) => m.connected || m.id === st.node).length > st.members.length;
  }
  return st.members.some((m) => m.id === st.leader && m.connected);
}
