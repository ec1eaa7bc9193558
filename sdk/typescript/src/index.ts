/**
 * @minoots/client: the MINOOTS timer service from Node.js, over gRPC (@grpc/grpc-js), with the
 * semantics of the Python SDK (`minoots.Client`):
 *
 * - a seed list of any members' gRPC addresses; `Cluster.Status` names every member and the
 *   leader, and calls go to the leader when it is known (a follower would forward writes anyway);
 * - retries on UNAVAILABLE and attempt deadlines, with full-jitter backoff, within a total
 *   deadline, so a leader failover is not seen by the caller;
 * - retry-safe creates: a spec without an id gets one here (uuid4 hex) and uses it as its
 *   idempotency key, so a retried create returns the original timer (`created: false`);
 *   cancel and ack read the timer back after an ambiguous failure; `extend` (not idempotent) is
 *   retried only when the request provably never reached Raft;
 * - typed errors (`NotFound`, `FailedPrecondition`, ...; `code` is the gRPC status name);
 * - `watch()`: an async iterator of events that resumes from its cursor on another member when
 *   its node fails, every sequence exactly once.
 *
 * Types of the wire messages are generated from proto/minoots/v1 at build time
 * (`proto-loader-gen-types`), and the same .proto files are loaded at run time.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { randomUUID } from "crypto";
import * as fs from "fs";
import * as path from "path";

import type { ProtoGrpcType as ClusterProto } from "./generated/cluster";
import type { ProtoGrpcType as TimersProto } from "./generated/timers";
import type { ClusterClient } from "./generated/minoots/v1/Cluster";
import type { CreateTimerResponse__Output } from "./generated/minoots/v1/CreateTimerResponse";
import type { Event__Output } from "./generated/minoots/v1/Event";
import type { EventBatch__Output } from "./generated/minoots/v1/EventBatch";
import type { StatusResponse__Output } from "./generated/minoots/v1/StatusResponse";
import type { Timer__Output } from "./generated/minoots/v1/Timer";
import type { TimersClient } from "./generated/minoots/v1/Timers";
import type { TimerSpec } from "./generated/minoots/v1/TimerSpec";
import type { Timestamp__Output } from "./generated/google/protobuf/Timestamp";

// ---------------------------------------------------------------- values

export type TimerState = "SCHEDULED" | "ARMED" | "FIRED" | "SETTLED" | "CANCELLED" | "DEAD_LETTERED" | "UNSPECIFIED";
export type EventKind = "CREATED" | "ARMED" | "FIRED" | "SETTLED" | "RESCHEDULED" | "CANCELLED" | "UNSPECIFIED";

export interface Timer {
  id: string;
  tenant: string;
  name: string;
  fireAt: Date;
  state: TimerState;
  revision: number;
  payload: Buffer;
  labels: Record<string, string>;
  idempotencyKey: string | null;
  ackRequired: boolean;
  createdAt: Date | null;
  armedAt: Date | null;
  firedAt: Date | null;
  settledAt: Date | null;
  attempts: number;
  /** The sequence of the current fire's FIRED event (what `ack` needs); null before the first fire. */
  fireId: number | null;
  /** Set on `create` results: false when an idempotency key matched an existing timer. */
  created?: boolean;
}

export interface Event {
  sequence: number;
  kind: EventKind;
  tenant: string;
  timerId: string;
  at: Date;
  revision: number;
  state: TimerState;
  fireAt: Date;
  fireId: number | null;
}

export interface CreateOptions {
  /** Seconds from now (decimals allowed), or give `fireAt`. */
  delay?: number;
  fireAt?: Date;
  id?: string;
  tenant?: string;
  name?: string;
  payload?: Buffer | string;
  labels?: Record<string, string>;
  idempotencyKey?: string;
  ackRequired?: boolean;
  timeout?: number;
}

export interface ClientOptions {
  /** Total deadline of one call in seconds, retries included (default 30). */
  timeout?: number;
  /** Deadline of one attempt in seconds (default 5). */
  attemptTimeout?: number;
  /** The API token; default $MINOOTS_TOKEN, the file $MINOOTS_TOKEN_FILE, else ./minoots-data/admin.token. */
  token?: string;
  /** The tenant calls name when they do not name one. */
  tenant?: string;
  /** TLS: true (system roots) or PEM root certificates. Default: plaintext. */
  tls?: boolean | Buffer;
}

// ---------------------------------------------------------------- errors

export class MinootsError extends Error {
  code: string;
  /** Set on Unavailable when an attempt may have applied (see `extend`). */
  ambiguous = false;
  constructor(message: string, code = "UNKNOWN") {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}
export class InvalidArgument extends MinootsError {}
export class NotFound extends MinootsError {}
export class AlreadyExists extends MinootsError {}
export class FailedPrecondition extends MinootsError {}
export class PermissionDenied extends MinootsError {}
export class Unauthenticated extends MinootsError {}
export class ResourceExhausted extends MinootsError {}
export class Unavailable extends MinootsError {}
export class DeadlineExceeded extends MinootsError {}
export class OutOfRange extends MinootsError {}
export class DataLoss extends MinootsError {}

const ERRORS: Record<string, new (m: string, c: string) => MinootsError> = {
  INVALID_ARGUMENT: InvalidArgument, NOT_FOUND: NotFound, ALREADY_EXISTS: AlreadyExists,
  FAILED_PRECONDITION: FailedPrecondition, PERMISSION_DENIED: PermissionDenied, UNAUTHENTICATED: Unauthenticated,
  RESOURCE_EXHAUSTED: ResourceExhausted, UNAVAILABLE: Unavailable, DEADLINE_EXCEEDED: DeadlineExceeded,
  OUT_OF_RANGE: OutOfRange, DATA_LOSS: DataLoss,
};

function codeName(code: number): string {
  return (grpc.status as unknown as Record<number, string>)[code] ?? "UNKNOWN";
}

export function errorFromGrpc(err: grpc.ServiceError): MinootsError {
  const name = codeName(err.code);
  const Cls = ERRORS[name] ?? MinootsError;
  return new Cls(err.details || err.message || name, name);
}

// Messages proving that the request never reached Raft (as the Python SDK's policy.py).
const NOT_SENT = ["failed to connect", "connection refused", "no connection established", "missing_leader",
  "not_leader", "no leader", "no raft leader", "not the leader", "queue_full", "discarded"];

type Kind = "final" | "safe" | "ambiguous";

function classify(err: grpc.ServiceError): Kind {
  if (err.code === grpc.status.UNAVAILABLE) {
    const text = `${err.details} ${err.message}`.toLowerCase();
    return NOT_SENT.some((m) => text.includes(m)) ? "safe" : "ambiguous";
  }
  if (err.code === grpc.status.DEADLINE_EXCEEDED) return "ambiguous";
  return "final";
}

// ---------------------------------------------------------------- conversions

function tsToDate(ts: Timestamp__Output | null | undefined): Date | null {
  if (!ts) return null;
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

function dateToTs(d: Date) {
  const ms = d.getTime();
  return { seconds: String(Math.floor(ms / 1000)), nanos: (((ms % 1000) + 1000) % 1000) * 1e6 };
}

function strip<T extends string>(value: string, prefix: string): T {
  return (value.startsWith(prefix) ? value.slice(prefix.length) : value) as T;
}

function optNumber(v: string): number | null {
  const n = Number(v);
  return n ? n : null;
}

function toTimer(t: Timer__Output, created?: boolean): Timer {
  const out: Timer = {
    id: t.id, tenant: t.tenant, name: t.name, fireAt: tsToDate(t.fire_at) ?? new Date(0),
    state: strip<TimerState>(String(t.state), "TIMER_STATE_"), revision: Number(t.revision),
    payload: Buffer.from(t.payload ?? []), labels: { ...t.labels },
    idempotencyKey: t.idempotency_key || null, ackRequired: t.ack_required,
    createdAt: tsToDate(t.created_at), armedAt: tsToDate(t.armed_at), firedAt: tsToDate(t.fired_at),
    settledAt: tsToDate(t.settled_at), attempts: t.attempts, fireId: optNumber(t.fire_id),
  };
  if (created !== undefined) out.created = created;
  return out;
}

function toEvent(e: Event__Output): Event {
  return {
    sequence: Number(e.sequence), kind: strip<EventKind>(String(e.kind), "EVENT_KIND_"), tenant: e.tenant,
    timerId: e.timer_id, at: tsToDate(e.at) ?? new Date(0), revision: Number(e.revision),
    state: strip<TimerState>(String(e.state), "TIMER_STATE_"), fireAt: tsToDate(e.fire_at) ?? new Date(0),
    fireId: optNumber(e.fire_id),
  };
}

function durationOf(seconds: number, what: string) {
  if (!Number.isFinite(seconds)) throw new InvalidArgument(`${what} must be a finite number of seconds`, "INVALID_ARGUMENT");
  const ms = Math.round(seconds * 1000);
  const s = Math.trunc(ms / 1000);
  return { seconds: String(s), nanos: (ms - s * 1000) * 1e6 };
}

// ---------------------------------------------------------------- token and protos

export function resolveToken(token?: string): string | null {
  if (token !== undefined) return token || null;
  if (process.env.MINOOTS_TOKEN) return process.env.MINOOTS_TOKEN.trim();
  const file = process.env.MINOOTS_TOKEN_FILE
    || path.join(process.env.MINOOTS_DATA || "./minoots-data", "admin.token");
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    if (process.env.MINOOTS_TOKEN_FILE) throw new MinootsError(`cannot read the token file ${file}`, "UNAUTHENTICATED");
    return null;
  }
}

const LOADER: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
type Proto = TimersProto & ClusterProto;
let proto: Proto | null = null;

function protos(): Proto {
  if (proto === null) {
    const dir = path.join(__dirname, "..", "proto");
    const def = protoLoader.loadSync(["minoots/v1/timers.proto", "minoots/v1/cluster.proto"],
      { ...LOADER, includeDirs: [dir] });
    proto = grpc.loadPackageDefinition(def) as unknown as Proto;
  }
  return proto;
}

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2000,
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.max_receive_message_length": 64 << 20,
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- the client

export class Client {
  readonly timeout: number;
  readonly attemptTimeout: number;
  readonly tenant: string;
  private addresses: string[];
  private leader: string | null = null;
  private refreshedAt = 0;
  private readonly creds: grpc.ChannelCredentials;
  private readonly metadata: grpc.Metadata;
  private readonly timers = new Map<string, TimersClient>();
  private readonly clusters = new Map<string, ClusterClient>();
  private rotation = 0;

  constructor(seeds: string[] | string, options: ClientOptions = {}) {
    const list = (Array.isArray(seeds) ? seeds : seeds.split(",")).map((s) => s.trim()).filter(Boolean);
    if (list.length === 0) throw new InvalidArgument("give at least one seed address HOST:PORT", "INVALID_ARGUMENT");
    this.addresses = [...new Set(list)];
    this.timeout = options.timeout ?? 30;
    this.attemptTimeout = options.attemptTimeout ?? 5;
    this.tenant = options.tenant ?? "";
    this.creds = options.tls === true ? grpc.credentials.createSsl()
      : options.tls ? grpc.credentials.createSsl(options.tls) : grpc.credentials.createInsecure();
    this.metadata = new grpc.Metadata();
    const token = resolveToken(options.token);
    if (token) this.metadata.set("authorization", `Bearer ${token}`);
  }

  private timersAt(addr: string): TimersClient {
    let c = this.timers.get(addr);
    if (!c) {
      c = new (protos().minoots.v1.Timers)(addr, this.creds, CHANNEL_OPTIONS);
      this.timers.set(addr, c);
    }
    return c;
  }

  private clusterAt(addr: string): ClusterClient {
    let c = this.clusters.get(addr);
    if (!c) {
      c = new (protos().minoots.v1.Cluster)(addr, this.creds, CHANNEL_OPTIONS);
      this.clusters.set(addr, c);
    }
    return c;
  }

  private unary<Res>(fn: (cb: grpc.requestCallback<Res>) => unknown): Promise<Res> {
    return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res as Res))));
  }

  /** Learn the members and the leader from any node that answers. */
  private async refresh(avoid: string | null, deadline: number): Promise<StatusResponse__Output | null> {
    const order = this.addresses.filter((a) => a !== avoid).concat(avoid ? [avoid] : []);
    for (const addr of order) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      try {
        const st = await this.unary<StatusResponse__Output>((cb) => this.clusterAt(addr).Status({}, this.metadata,
          { deadline: Date.now() + Math.min(1000, remaining) }, cb));
        const members = st.members.map((m) => m.grpc_address).filter(Boolean);
        if (members.length) this.addresses = [...new Set([...members, ...this.addresses])];
        this.leader = st.leader_grpc_address || null;
        this.refreshedAt = Date.now();
        return st;
      } catch {
        continue;
      }
    }
    return null;
  }

  private pick(avoid: string | null): string {
    if (this.leader && this.leader !== avoid) return this.leader;
    const choices = this.addresses.filter((a) => a !== avoid);
    const list = choices.length ? choices : this.addresses;
    return list[this.rotation++ % list.length];
  }

  private async call<T>(what: string, fn: (addr: string, deadline: number) => Promise<T>,
    opts: { safeOnly?: boolean; timeout?: number } = {}): Promise<{ value: T; ambiguous: boolean }> {
    const total = (opts.timeout ?? this.timeout) * 1000;
    const deadline = Date.now() + total;
    let ambiguous = false;
    let last: grpc.ServiceError | null = null;
    let failedAt: string | null = null;
    for (let n = 0; ; n++) {
      if (Date.now() - this.refreshedAt > 30_000 || failedAt !== null) {
        await this.refresh(failedAt, Math.min(deadline, Date.now() + 1000));
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      const addr = this.pick(failedAt);
      try {
        return { value: await fn(addr, Date.now() + Math.min(this.attemptTimeout * 1000, remaining)), ambiguous };
      } catch (e) {
        const err = e as grpc.ServiceError;
        if (typeof err.code !== "number") throw e;
        const kind = classify(err);
        if (kind === "final") {
          const typed = errorFromGrpc(err);
          (typed as MinootsError & { afterAmbiguous?: boolean }).afterAmbiguous = ambiguous;
          throw typed;
        }
        if (kind === "ambiguous") {
          if (opts.safeOnly) {
            const u = new Unavailable(`${what}: ${err.details || err.message}; the outcome is unknown: read the `
              + "timer before retrying", "UNAVAILABLE");
            u.ambiguous = true;
            throw u;
          }
          ambiguous = true;
        }
        last = err;
        failedAt = addr;
        this.leader = null;
      }
      const left = deadline - Date.now();
      if (left <= 0) break;
      await sleep(Math.min(left, Math.random() * Math.min(1000, 50 * 2 ** n)));
    }
    const u = new Unavailable(`${what} did not succeed within ${total / 1000} s`
      + (last ? `: ${codeName(last.code)}: ${last.details}` : ""), "UNAVAILABLE");
    u.ambiguous = ambiguous;
    throw u;
  }

  private opts(deadline: number): grpc.CallOptions {
    return { deadline };
  }

  private tenantOf(tenant?: string): string {
    return tenant ?? this.tenant;
  }

  // ---- timers ------------------------------------------------------------------------

  /** Create a timer; retry-safe (an id and an idempotency key are filled in when absent). */
  async create(options: CreateOptions): Promise<Timer> {
    if ((options.delay === undefined) === (options.fireAt === undefined)) {
      throw new InvalidArgument("give exactly one of delay (seconds) and fireAt (a Date)", "INVALID_ARGUMENT");
    }
    const id = options.id ?? randomUUID().replace(/-/g, "");
    const spec: TimerSpec = {
      id, tenant: this.tenantOf(options.tenant), name: options.name ?? "",
      payload: typeof options.payload === "string" ? Buffer.from(options.payload) : options.payload ?? Buffer.alloc(0),
      labels: options.labels ?? {}, idempotency_key: options.idempotencyKey ?? id,
      ack_required: options.ackRequired ?? false,
    };
    if (options.delay !== undefined) spec.delay = durationOf(options.delay, "delay");
    else spec.fire_at = dateToTs(options.fireAt as Date);
    const { value } = await this.call("create", (addr, d) => this.unary<CreateTimerResponse__Output>(
      (cb) => this.timersAt(addr).CreateTimer({ timer: spec }, this.metadata, this.opts(d), cb)),
    { timeout: options.timeout });
    return toTimer(value.timer as Timer__Output, value.created);
  }

  async get(id: string, options: { tenant?: string; timeout?: number } = {}): Promise<Timer> {
    const req = { id, tenant: this.tenantOf(options.tenant) };
    const { value } = await this.call("get", (addr, d) => this.unary<Timer__Output>(
      (cb) => this.timersAt(addr).GetTimer(req, this.metadata, this.opts(d), cb)), { timeout: options.timeout });
    return toTimer(value);
  }

  /** Every matching timer, page by page. `states`: e.g. ["ARMED", "FIRED"]; `labels`: all must match. */
  async *list(options: { tenant?: string; states?: TimerState[]; labels?: Record<string, string>;
    pageSize?: number; limit?: number } = {}): AsyncGenerator<Timer> {
    let token = "";
    let n = 0;
    const selector = Object.entries(options.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(",");
    do {
      const req = {
        tenant: this.tenantOf(options.tenant), states: (options.states ?? []).map((s) => `TIMER_STATE_${s}`),
        label_selector: selector, page_size: options.pageSize ?? 100, page_token: token,
      };
      const { value } = await this.call("list", (addr, d) => this.unary<{ timers: Timer__Output[]; next_page_token: string }>(
        (cb) => this.timersAt(addr).ListTimers(req as never, this.metadata, this.opts(d), cb)));
      for (const t of value.timers) {
        if (options.limit !== undefined && n >= options.limit) return;
        n++;
        yield toTimer(t);
      }
      token = value.next_page_token;
    } while (token);
  }

  private async settle(what: string, method: "CancelTimer" | "AckTimer" | "RescheduleTimer", req: object,
    id: string, tenant: string, reached: (t: Timer) => boolean, timeout?: number): Promise<Timer> {
    try {
      const { value } = await this.call(what, (addr, d) => this.unary<Timer__Output>(
        (cb) => (this.timersAt(addr)[method] as Function).call(this.timersAt(addr), req, this.metadata,
          this.opts(d), cb)), { timeout });
      return toTimer(value);
    } catch (e) {
      // An earlier attempt may have applied: then the timer is already where we wanted it.
      if (e instanceof FailedPrecondition && (e as { afterAmbiguous?: boolean }).afterAmbiguous) {
        const t = await this.get(id, { tenant });
        if (reached(t)) return t;
      }
      throw e;
    }
  }

  async cancel(id: string, options: { tenant?: string; timeout?: number } = {}): Promise<Timer> {
    const tenant = this.tenantOf(options.tenant);
    return this.settle("cancel", "CancelTimer", { id, tenant }, id, tenant, (t) => t.state === "CANCELLED",
      options.timeout);
  }

  async ack(id: string, fireId: number, options: { tenant?: string; timeout?: number } = {}): Promise<Timer> {
    const tenant = this.tenantOf(options.tenant);
    return this.settle("ack", "AckTimer", { id, tenant, fire_id: String(fireId) }, id, tenant,
      (t) => t.state === "SETTLED" && t.fireId === fireId, options.timeout);
  }

  /** Move the deadline to `fireAt` (safe to retry). */
  async reschedule(id: string, fireAt: Date, options: { tenant?: string; timeout?: number } = {}): Promise<Timer> {
    const tenant = this.tenantOf(options.tenant);
    return this.settle("reschedule", "RescheduleTimer", { id, tenant, fire_at: dateToTs(fireAt) }, id, tenant,
      (t) => t.fireAt.getTime() === fireAt.getTime(), options.timeout);
  }

  /** Move the deadline by `seconds`. Not idempotent: after an ambiguous failure it throws
   * Unavailable with `ambiguous: true` (read the timer, or use `reschedule`). */
  async extend(id: string, seconds: number, options: { tenant?: string; timeout?: number } = {}): Promise<Timer> {
    const req = { id, tenant: this.tenantOf(options.tenant), extend_by: durationOf(seconds, "by") };
    const { value } = await this.call("extend", (addr, d) => this.unary<Timer__Output>(
      (cb) => this.timersAt(addr).RescheduleTimer(req, this.metadata, this.opts(d), cb)),
    { safeOnly: true, timeout: options.timeout });
    return toTimer(value);
  }

  async status(options: { timeout?: number } = {}): Promise<StatusResponse__Output> {
    const { value } = await this.call("status", (addr, d) => this.unary<StatusResponse__Output>(
      (cb) => this.clusterAt(addr).Status({}, this.metadata, this.opts(d), cb)), { timeout: options.timeout });
    return value;
  }

  /**
   * Events from `fromSequence` (0: from now on), in order, each once. When its node fails the
   * watch reconnects to another member from its cursor (within `reconnectTimeout` seconds);
   * a node that lacks the cursor (OUT_OF_RANGE, DATA_LOSS) is skipped for another member.
   * Stop it with `break` in a for-await loop, or `return()`.
   */
  async *watch(options: { fromSequence?: number; tenant?: string; kinds?: EventKind[];
    reconnectTimeout?: number } = {}): AsyncGenerator<Event> {
    let cursor = options.fromSequence ?? 0;
    const tenant = options.tenant ?? this.tenant;
    const kinds = (options.kinds ?? []).map((k) => `EVENT_KIND_${k}`);
    const reconnectMs = (options.reconnectTimeout ?? this.timeout) * 1000;
    let failingSince: number | null = null;
    let failedAt: string | null = null;
    const lacking = new Set<string>();
    for (let n = 0; ; n++) {
      if (failedAt !== null || Date.now() - this.refreshedAt > 30_000) {
        await this.refresh(failedAt, Date.now() + 1000);
      }
      const candidates = this.addresses.filter((a) => !lacking.has(a));
      if (candidates.length === 0) {
        throw new OutOfRange(`no member still has event ${cursor}`, "OUT_OF_RANGE");
      }
      const addr: string = this.leader && !lacking.has(this.leader) && this.leader !== failedAt ? this.leader
        : candidates[(this.rotation++) % candidates.length];
      const stream = this.timersAt(addr).WatchEventBatches(
        { from_sequence: String(cursor), tenant, kinds } as never, this.metadata);
      try {
        for await (const batch of stream as AsyncIterable<EventBatch__Output>) {
          failingSince = null;
          n = 0;
          lacking.clear();
          for (const raw of batch.events) {
            const ev = toEvent(raw);
            if (cursor !== 0 && ev.sequence < cursor) continue;      // never twice
            cursor = ev.sequence + 1;
            yield ev;
          }
          // A filtered stream reports how far it examined: a reconnect need not rescan that.
          const through = Number(batch.through ?? 0);
          if (through >= cursor) cursor = through + 1;
        }
      } catch (e) {
        const err = e as grpc.ServiceError;
        if (typeof err.code !== "number") throw e;
        if (err.code === grpc.status.OUT_OF_RANGE || err.code === grpc.status.DATA_LOSS) {
          lacking.add(addr);
        } else if (err.code !== grpc.status.UNAVAILABLE && err.code !== grpc.status.DEADLINE_EXCEEDED
          && err.code !== grpc.status.INTERNAL && err.code !== grpc.status.UNKNOWN) {
          throw errorFromGrpc(err);
        }
      } finally {
        stream.cancel();
      }
      failedAt = addr;
      this.leader = null;
      failingSince ??= Date.now();
      if (Date.now() - failingSince > reconnectMs) {
        throw new Unavailable(`watch: no member served event ${cursor} within ${reconnectMs / 1000} s`, "UNAVAILABLE");
      }
      await sleep(Math.random() * Math.min(1000, 50 * 2 ** n));
    }
  }

  close(): void {
    for (const c of this.timers.values()) c.close();
    for (const c of this.clusters.values()) c.close();
    this.timers.clear();
    this.clusters.clear();
  }
}

export default Client;
