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
import type { Duration__Output } from "./gen/google/protobuf/Duration";
import type { DeliveryAttempt__Output } from "./gen/minoots/v1/DeliveryAttempt";
import type { DeliveryPolicy__Output } from "./gen/minoots/v1/DeliveryPolicy";
import {
  CATCH_UP_POLICIES, EVENT_KINDS, EVENT_KIND_NUMBERS, OVERLAP_POLICIES, TIMER_STATES,
  type ClusterStatus, type DeliveryAttempt, type DeliveryPolicy, type Event, type EventKind, type SubscriptionInfo,
  type Timer, type TimerSpec, type TimerState,
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

export function toDate(ts: Timestamp__Output | null | undefined): Date | null {
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

export function bytes(value: Uint8Array | string | undefined, what: string): Buffer {
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

/** google.protobuf.Duration -> ms (null when unset). */
export function durationToMs(d: Duration__Output | null | undefined): number | null {
  return d ? Number(d.seconds) * 1000 + Math.trunc(d.nanos / 1_000_000) : null;
}

function strings(value: Record<string, string> | undefined, what: string): Record<string, string> {
  const m = value ?? {};
  if (typeof m !== "object" || Array.isArray(m) || Object.values(m).some((v) => typeof v !== "string")) {
    throw new InvalidArgument(`${what} must map strings to strings`);
  }
  return { ...m };
}

/** A policy's lower-case name (the SDK's: "buffer_one") as its wire name ("OVERLAP_POLICY_BUFFER_ONE"). */
function policyToPb(what: string, names: readonly string[], prefix: string, value: string): string {
  const key = typeof value === "string" ? value.trim().toLowerCase().replace(/-/g, "_") : "";
  if (!names.includes(key)) throw new InvalidArgument(`${what} must be one of ${names.join(", ")}, got ${JSON.stringify(value)}`);
  return prefix + key.toUpperCase();
}

function policyFromPb(names: readonly string[], prefix: string, value: string | number): string {
  if (typeof value === "number") return value > 0 && value <= names.length ? names[value - 1] : "";
  const key = String(value).replace(prefix, "").toLowerCase();
  return names.includes(key) ? key : "";
}

/** The delivery half of a spec (Python SDK's `_delivery_to_pb`): one of webhook, endpoint, queue, and its policy. */
function deliveryToPb(spec: TimerSpec, pb: TimerSpecPb): void {
  const policy = [spec.maxAttempts, spec.backoffBaseMs, spec.backoffCapMs, spec.attemptTimeoutMs];
  const given = [spec.webhook, spec.queue, spec.endpoint].filter((x) => x !== undefined && x !== null).length;
  if (given > 1) throw new InvalidArgument("give one of a webhook, an endpoint and a queue");
  if (spec.endpoint !== undefined && spec.endpoint !== null) {
    if (spec.webhookHeaders && Object.keys(spec.webhookHeaders).length) {
      throw new InvalidArgument("webhookHeaders need a webhook (an endpoint has its own headers)");
    }
    if (typeof spec.endpoint !== "string") throw new InvalidArgument("endpoint must be an endpoint id string");
    pb.endpoint = { id: spec.endpoint };
  } else if (spec.queue !== undefined && spec.queue !== null) {
    if (spec.webhookHeaders && Object.keys(spec.webhookHeaders).length) {
      throw new InvalidArgument("webhookHeaders need a webhook");
    }
    if (typeof spec.queue !== "string") throw new InvalidArgument("queue must be a queue name string");
    pb.queue = { queue: spec.queue };
  } else if (spec.webhook === undefined || spec.webhook === null) {
    if ((spec.webhookHeaders && Object.keys(spec.webhookHeaders).length) || policy.some((v) => v !== undefined)) {
      throw new InvalidArgument("webhookHeaders, maxAttempts, backoff*Ms and attemptTimeoutMs need a webhook, "
        + "an endpoint or a queue");
    }
    return;
  } else {
    if (typeof spec.webhook !== "string") throw new InvalidArgument("webhook must be a URL string");
    pb.webhook = { url: spec.webhook, headers: strings(spec.webhookHeaders, "webhookHeaders") };
  }
  if (policy.some((v) => v !== undefined)) {
    const p: NonNullable<TimerSpecPb["deliveryPolicy"]> = {};
    if (spec.maxAttempts !== undefined) {
      if (!Number.isSafeInteger(spec.maxAttempts) || spec.maxAttempts < 1 || spec.maxAttempts > 2 ** 32 - 1) {
        throw new InvalidArgument(`maxAttempts must be a positive integer, got ${spec.maxAttempts}`);
      }
      p.maxAttempts = spec.maxAttempts;
    }
    if (spec.backoffBaseMs !== undefined) p.backoffBase = msToDuration(spec.backoffBaseMs, "backoffBaseMs");
    if (spec.backoffCapMs !== undefined) p.backoffCap = msToDuration(spec.backoffCapMs, "backoffCapMs");
    if (spec.attemptTimeoutMs !== undefined) p.attemptTimeout = msToDuration(spec.attemptTimeoutMs, "attemptTimeoutMs");
    pb.deliveryPolicy = p;
  }
}

/** Dependencies and the escalation ladder (Python SDK's `_graph_to_pb`). */
function graphToPb(spec: TimerSpec, after: string[], pb: TimerSpecPb): void {
  if (!after.length && (spec.on || spec.mode || spec.onParentCancel)) {
    throw new InvalidArgument("on, mode and onParentCancel need `after` (the parent timers)");
  }
  if (after.some((a) => typeof a !== "string")) throw new InvalidArgument("after must be timer ids (strings)");
  pb.after = after;
  pb.on = spec.on ?? "";
  pb.mode = spec.mode ?? "";
  pb.onParentCancel = spec.onParentCancel ?? "";
  if (spec.escalate !== undefined && !Array.isArray(spec.escalate)) {
    throw new InvalidArgument("escalate must be an array of { afterMs, action } steps");
  }
  pb.escalate = (spec.escalate ?? []).map((step, k) => {
    if (typeof step !== "object" || step === null) {
      throw new InvalidArgument(`escalate[${k}] must be an { afterMs, action } step`);
    }
    return { after: msToDuration(step.afterMs, `escalate[${k}].afterMs`), action: bytes(step.action, `escalate[${k}].action`) };
  });
}

/** Recurrence: every / cron + time zone / until / maxCount / catch-up / overlap / flex. */
function recurrenceToPb(spec: TimerSpec, pb: TimerSpecPb): void {
  if (spec.everyMs !== undefined && spec.everyMs !== null) pb.every = msToDuration(spec.everyMs, "everyMs");
  if (spec.until !== undefined && spec.until !== null) pb.until = msToTimestamp(timeToMs(spec.until, "until"));
  if (spec.maxCount) {
    if (!Number.isSafeInteger(spec.maxCount) || spec.maxCount < 0 || spec.maxCount > 2 ** 32 - 1) {
      throw new InvalidArgument(`maxCount must be an integer >= 0, got ${spec.maxCount}`);
    }
    pb.maxCount = spec.maxCount;
  }
  if (spec.cron) pb.cron = String(spec.cron);
  if (spec.timeZone) pb.timeZone = String(spec.timeZone);
  if (spec.catchUp) pb.catchUp = policyToPb("catchUp", CATCH_UP_POLICIES, "CATCH_UP_POLICY_", spec.catchUp) as TimerSpecPb["catchUp"];
  if (spec.overlap) pb.overlap = policyToPb("overlap", OVERLAP_POLICIES, "OVERLAP_POLICY_", spec.overlap) as TimerSpecPb["overlap"];
  if (spec.flexMs !== undefined && spec.flexMs !== null) pb.flex = msToDuration(spec.flexMs, "flexMs");
}

/** A spec as sent: the id and idempotency key filled in unless `generateIds` is false. */
export function specToPb(spec: TimerSpec, defaultTenant: string, generateIds = true): TimerSpecPb {
  const after = typeof spec.after === "string" ? [spec.after] : [...(spec.after ?? [])];
  if (!after.length && (spec.fireAt === undefined) === (spec.delayMs === undefined)) {
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
  else if (!after.length) pb.delay = msToDuration(spec.delayMs as number);
  // With parents, delayMs is the delay after their condition is met.
  if (after.length && spec.delayMs !== undefined) pb.afterDelay = msToDuration(spec.delayMs);
  graphToPb(spec, after, pb);
  deliveryToPb(spec, pb);
  recurrenceToPb(spec, pb);
  return pb;
}

function attemptFromPb(a: DeliveryAttempt__Output): DeliveryAttempt {
  return {
    attempt: a.attempt, fireId: u64(a.fireId), at: toDate(a.at), statusCode: a.statusCode, latencyMs: a.latencyMs,
    errorClass: a.errorClass, responseBody: a.responseBody, nextAttemptAt: toDate(a.nextAttemptAt),
  };
}

export function deliveryPolicyFromPb(p: DeliveryPolicy__Output): DeliveryPolicy {
  return {
    maxAttempts: p.maxAttempts, backoffBaseMs: durationToMs(p.backoffBase) ?? 0,
    backoffCapMs: durationToMs(p.backoffCap) ?? 0, attemptTimeoutMs: durationToMs(p.attemptTimeout) ?? 0,
    ackDeadlineMs: durationToMs(p.ackDeadline) ?? 0,
  };
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
    webhook: pb.webhook ? pb.webhook.url : null,
    webhookHeaders: pb.webhook ? { ...pb.webhook.headers } : {},
    queue: pb.queue ? pb.queue.queue : null,
    endpoint: pb.endpointId || null,
    maxAttempts: pb.deliveryPolicy ? pb.deliveryPolicy.maxAttempts : 0,
    deliveryPolicy: pb.deliveryPolicy ? deliveryPolicyFromPb(pb.deliveryPolicy) : null,
    deliveryAttempts: (pb.deliveryAttempts ?? []).map(attemptFromPb),
    nextAttemptAt: toDate(pb.nextAttemptAt),
    everyMs: durationToMs(pb.every),
    cron: pb.cron ?? "",
    timeZone: pb.timeZone ?? "",
    until: toDate(pb.until),
    maxCount: pb.maxCount ?? 0,
    paused: Boolean(pb.paused),
    catchUp: policyFromPb(CATCH_UP_POLICIES, "CATCH_UP_POLICY_", pb.catchUp ?? 0),
    overlap: policyFromPb(OVERLAP_POLICIES, "OVERLAP_POLICY_", pb.overlap ?? 0),
    triggered: pb.triggered ?? 0,
    skipped: u64(pb.skippedOccurrences),
    flexMs: durationToMs(pb.flex),
    pendingFireIds: (pb.pendingFireIds ?? []).map((f) => u64(f)),
    buffered: Boolean(pb.buffered),
    after: [...(pb.after ?? [])],
    on: pb.on ?? "",
    mode: pb.mode ?? "",
    afterDelayMs: durationToMs(pb.afterDelay),
    onParentCancel: pb.onParentCancel ?? "",
    waitingOn: [...(pb.waitingOn ?? [])],
    dependency: pb.dependency ?? "",
    children: [...(pb.children ?? [])],
    escalate: (pb.escalate ?? []).map((st) => ({ afterMs: durationToMs(st.after) ?? 0, action: st.action })),
    escalated: pb.escalated ?? 0,
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
    escalationStep: pb.escalationStep ?? 0,
    action: Buffer.from(pb.action ?? Buffer.alloc(0)),
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
