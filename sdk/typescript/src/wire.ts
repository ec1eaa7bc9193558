/**
 * Wire conversion: minoots.v1 messages (as @grpc/proto-loader decodes them: uint64 as
 * decimal strings, enums as names, bytes as Buffers) <-> the SDK's values (./types), and
 * the requests built from a call's arguments. Pure functions, no I/O.
 */
import { randomUUID } from "node:crypto";
import { InvalidArgument, MinootsError } from "./errors";
import type { Timestamp__Output } from "./gen/google/protobuf/Timestamp";
import type { Timer__Output } from "./gen/minoots/v1/Timer";
import type { Event__Output } from "./gen/minoots/v1/Event";
import type { TimerSpec as TimerSpecPb } from "./gen/minoots/v1/TimerSpec";
import type { StatusResponse__Output } from "./gen/minoots/v1/StatusResponse";
import type { Subscription__Output } from "./gen/minoots/v1/Subscription";
import type { ListTimersRequest } from "./gen/minoots/v1/ListTimersRequest";
import type { WatchEventsRequest } from "./gen/minoots/v1/WatchEventsRequest";
import {
  EVENT_KINDS, EVENT_KIND_NUMBERS, TIMER_STATES,
  type ClusterStatus, type Event, type EventKind, type SubscriptionInfo, type Timer, type TimerSpec,
  type TimerState,
} from "./types";

/** A generated timer id: uuid4 hex, like the Python SDK's. */
export function newTimerId(): string {
  return randomUUID().replace(/-/g, "");
}

/** A uint64 from the wire (decimal string) as a number; throws past 2^53. */
export function u64(value: string | number | undefined | null): number {
  const n = Number(value ?? 0);
  if (!Number.isSafeInteger(n)) throw new MinootsError(`the server sent ${value}, beyond 2^53`, "DATA_LOSS");
  return n;
}

export function msToTimestamp(ms: number): { seconds: string; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds: String(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

export function timestampToMs(ts: Timestamp__Output): number {
  return Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000);
}

function toDate(ts: Timestamp__Output | null | undefined): Date | null {
  return ts ? new Date(timestampToMs(ts)) : null;
}

/** A Date or ms since the epoch -> integer ms (rounded up, as the Python SDK rounds datetimes). */
export function timeToMs(value: Date | number, what = "fireAt"): number {
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== "number" || !Number.isFinite(ms)) {
    throw new InvalidArgument(`${what} must be a valid Date or ms since the epoch, got ${String(value)}`);
  }
  return Math.ceil(ms);
}

/** Milliseconds (may be negative) -> google.protobuf.Duration, rounded up to whole ms. */
export function msToDuration(ms: number, what = "delayMs"): { seconds: string; nanos: number } {
  if (typeof ms !== "number" || !Number.isFinite(ms)) throw new InvalidArgument(`${what} must be a finite number of ms`);
  const whole = Math.ceil(ms);
  if (Math.abs(whole) > Number.MAX_SAFE_INTEGER) throw new InvalidArgument(`${what} is out of range`);
  const seconds = Math.trunc(whole / 1000);
  return { seconds: String(seconds), nanos: (whole - seconds * 1000) * 1_000_000 };
}

function bytes(value: Uint8Array | string | undefined, what: string): Buffer {
  if (value === undefined || value === null) return Buffer.alloc(0);
  if (typeof value === "string") return Buffer.from(value, "utf8");
  if (value instanceof Uint8Array) return Buffer.from(value);
  throw new InvalidArgument(`${what} must be a Uint8Array or a string`);
}

function parseEnum<T extends string>(names: readonly T[], prefix: string, value: string, what: string): T {
  const upper = String(value).toUpperCase();
  const bare = upper.startsWith(prefix) ? upper.slice(prefix.length) : upper;
  if ((names as readonly string[]).includes(bare) && bare !== "UNSPECIFIED") return bare as T;
  throw new InvalidArgument(`unknown ${what} ${JSON.stringify(value)}: one of ${names.slice(1).join(", ")}`);
}

/** "fired", "FIRED" or "EVENT_KIND_FIRED" -> the wire name "EVENT_KIND_FIRED". */
export function eventKindToPb(kind: EventKind | string): string {
  return "EVENT_KIND_" + parseEnum(EVENT_KINDS, "EVENT_KIND_", kind, "event kind");
}

export function timerStateToPb(state: TimerState | string): string {
  return "TIMER_STATE_" + parseEnum(TIMER_STATES, "TIMER_STATE_", state, "timer state");
}

function enumFromPb<T extends string>(names: readonly T[], prefix: string, value: string | number,
                                      numbers?: Readonly<Record<number, T>>): T {
  const bare = typeof value === "number" ? (numbers ? numbers[value] : names[value]) : String(value).replace(prefix, "");
  // A newer server's value: UNSPECIFIED rather than fail.
  return (names as readonly string[]).includes(bare as string) ? (bare as T) : names[0];
}

/** A spec as sent: the id and idempotency key filled in unless `generateIds` is false. */
export function specToPb(spec: TimerSpec, defaultTenant: string, generateIds = true): TimerSpecPb {
  if ((spec.fireAt === undefined) === (spec.delayMs === undefined)) {
    throw new InvalidArgument("give exactly one of fireAt and delayMs");
  }
  const id = spec.id || (generateIds ? newTimerId() : "");
  const labels = spec.labels ?? {};
  if (typeof labels !== "object" || Object.values(labels).some((v) => typeof v !== "string")) {
    throw new InvalidArgument("labels must map strings to strings");
  }
  const pb: TimerSpecPb = {
    id,
    tenant: spec.tenant ?? defaultTenant,
    name: spec.name ?? "",
    payload: bytes(spec.payload, "payload"),
    labels: { ...labels },
    action: bytes(spec.action, "action"),
    idempotencyKey: spec.idempotencyKey || id,
    ackRequired: Boolean(spec.ackRequired),
  };
  if (spec.fireAt !== undefined) pb.fireAt = msToTimestamp(timeToMs(spec.fireAt));
  else pb.delay = msToDuration(spec.delayMs as number);
  return pb;
}

export function timerFromPb(pb: Timer__Output, created?: boolean): Timer {
  const t: Timer = {
    id: pb.id,
    tenant: pb.tenant,
    name: pb.name,
    fireAt: toDate(pb.fireAt) ?? new Date(0),
    payload: pb.payload,
    labels: { ...pb.labels },
    action: pb.action,
    idempotencyKey: pb.idempotencyKey || null,
    ackRequired: pb.ackRequired,
    state: enumFromPb(TIMER_STATES, "TIMER_STATE_", pb.state),
    revision: u64(pb.revision),
    createdAt: toDate(pb.createdAt),
    armedAt: toDate(pb.armedAt),
    firedAt: toDate(pb.firedAt),
    settledAt: toDate(pb.settledAt),
    attempts: pb.attempts,
    fireId: u64(pb.fireId) || null,
  };
  if (created !== undefined) t.created = created;
  return t;
}

export function eventFromPb(pb: Event__Output): Event {
  return {
    sequence: u64(pb.sequence),
    kind: enumFromPb(EVENT_KINDS, "EVENT_KIND_", pb.kind, EVENT_KIND_NUMBERS),
    tenant: pb.tenant,
    timerId: pb.timerId,
    at: toDate(pb.at) ?? new Date(0),
    revision: u64(pb.revision),
    state: enumFromPb(TIMER_STATES, "TIMER_STATE_", pb.state),
    fireAt: toDate(pb.fireAt) ?? new Date(0),
    fireId: u64(pb.fireId) || null,
  };
}

export function statusFromPb(pb: StatusResponse__Output): ClusterStatus {
  const timers: Record<string, number> = {};
  for (const [k, v] of Object.entries(pb.timers)) timers[k] = u64(v);
  return {
    node: pb.node,
    cluster: pb.cluster,
    leader: pb.leader || null,
    leaderGrpcAddress: pb.leaderGrpcAddress || null,
    term: u64(pb.term),
    commitIndex: u64(pb.commitIndex),
    appliedIndex: u64(pb.appliedIndex),
    members: pb.members.map((m) => ({
      id: m.id, raftAddress: m.raftAddress, grpcAddress: m.grpcAddress, role: m.role, connected: m.connected,
    })),
    timers,
    role: pb.role,
    hasQuorum: pb.hasQuorum,
  };
}

export function subscriptionFromPb(pb: Subscription__Output): SubscriptionInfo {
  return {
    tenant: pb.tenant,
    name: pb.name,
    allTenants: pb.allTenants,
    kinds: pb.kinds.map((k) => enumFromPb(EVENT_KINDS, "EVENT_KIND_", k, EVENT_KIND_NUMBERS)),
    cursor: u64(pb.cursor),
    createdAt: toDate(pb.createdAt),
    overrun: pb.overrun,
    lost: u64(pb.lost),
    commits: u64(pb.commits),
    nodeEventFloor: u64(pb.nodeEventFloor),
    nodeEventHead: u64(pb.nodeEventHead),
  };
}

export interface ListOptions {
  tenant?: string;
  /** Any of these states; every state when absent. */
  states?: Array<TimerState | string>;
  /** All must match: a mapping, or a selector "k=v,k2=v2". */
  labels?: Record<string, string> | string;
  /** Inclusive. */
  fireAtFrom?: Date | number;
  /** Exclusive. */
  fireAtTo?: Date | number;
  /** Only timers whose latest fire is in this range (inclusive, exclusive). */
  firedAtFrom?: Date | number;
  firedAtTo?: Date | number;
  /** Timers per page (server default 100, at most 1000). */
  pageSize?: number;
  /** Stop after this many timers. */
  limit?: number;
}

export function labelSelector(labels: Record<string, string> | string | undefined): string {
  if (labels === undefined) return "";
  if (typeof labels === "string") return labels;
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",");
}

export function listRequest(opts: ListOptions, tenant: string): ListTimersRequest {
  const limit = opts.limit;
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
    throw new InvalidArgument(`limit must be an integer >= 0, got ${limit}`);
  }
  let pageSize = opts.pageSize ?? 0;
  if (limit) pageSize = pageSize ? Math.min(pageSize, limit) : Math.min(limit, 1000);
  const req: ListTimersRequest = {
    tenant,
    states: (opts.states ?? []).map(timerStateToPb) as ListTimersRequest["states"],
    labelSelector: labelSelector(opts.labels),
    pageSize,
    pageToken: "",
  };
  if (opts.fireAtFrom !== undefined) req.fireAtFrom = msToTimestamp(timeToMs(opts.fireAtFrom, "fireAtFrom"));
  if (opts.fireAtTo !== undefined) req.fireAtTo = msToTimestamp(timeToMs(opts.fireAtTo, "fireAtTo"));
  if (opts.firedAtFrom !== undefined) req.firedAtFrom = msToTimestamp(timeToMs(opts.firedAtFrom, "firedAtFrom"));
  if (opts.firedAtTo !== undefined) req.firedAtTo = msToTimestamp(timeToMs(opts.firedAtTo, "firedAtTo"));
  return req;
}

export function watchRequest(fromSequence: number, tenant: string, kinds: Array<EventKind | string> | undefined):
    WatchEventsRequest {
  if (!Number.isSafeInteger(fromSequence) || fromSequence < 0) {
    throw new InvalidArgument(`fromSequence must be an integer >= 0, got ${fromSequence}`);
  }
  return {
    fromSequence: String(fromSequence),
    tenant,
    kinds: (kinds ?? []).map(eventKindToPb) as WatchEventsRequest["kinds"],
  };
}
