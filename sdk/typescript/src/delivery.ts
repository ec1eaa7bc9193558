/**
 * Wire conversion of the delivery calls (managed endpoints, dead letters, queues, bulk
 * operations; proto/minoots/v1/delivery.proto and timers.proto), as the Python SDK's
 * api/client/endpoints.py and wire.py: pure functions, no I/O.
 */
import { randomBytes } from "node:crypto";
import { InvalidArgument } from "./errors";
import type { Endpoint__Output } from "./gen/minoots/v1/Endpoint";
import type { Lease__Output } from "./gen/minoots/v1/Lease";
import type { BulkResponse__Output } from "./gen/minoots/v1/BulkResponse";
import type { DeadLettersResponse__Output } from "./gen/minoots/v1/DeadLettersResponse";
import type { DeliveryDefaults__Output } from "./gen/minoots/v1/DeliveryDefaults";
import type { QueueStats__Output } from "./gen/minoots/v1/QueueStats";
import type {
  BulkResult, DeadLetterResults, DeliveryDefaults, Endpoint, Lease, QueueStats,
} from "./types";
import {
  deliveryPolicyFromPb, labelSelector, msToDuration, msToTimestamp, timeToMs, timerFromPb, toDate, u64,
} from "./wire";

export const SECRET_PREFIX = "whsec_";

/** A fresh signing secret, drawn client-side so that a retried call sets the same one: whsec_ + base64 of 32 random bytes. */
export function newWebhookSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString("base64");
}

export function endpointFromPb(pb: Endpoint__Output): Endpoint {
  return {
    tenant: pb.tenant, id: pb.id, url: pb.url, headers: { ...pb.headers }, timeoutMs: pb.timeoutMs,
    createdAt: toDate(pb.createdAt), secretRotatedAt: toDate(pb.secretRotatedAt), secret: pb.secret || null,
  };
}

export function leaseFromPb(pb: Lease__Output): Lease {
  if (!pb.timer) throw new InvalidArgument("the server sent a lease without its timer");
  return { timer: timerFromPb(pb.timer), leaseId: pb.leaseId, attempt: pb.attempt, expiresAt: toDate(pb.expiresAt) };
}

export function bulkFromPb(pb: BulkResponse__Output): BulkResult[] {
  return pb.results.map((r) => ({ id: r.id, code: r.code, message: r.message, timer: r.timer ? timerFromPb(r.timer) : null }));
}

export function deadResultsFromPb(pb: DeadLettersResponse__Output): DeadLetterResults {
  const results = pb.results.map((r) => ({ id: r.id, ok: r.ok, error: r.error }));
  return { results, truncated: pb.truncated, ok: results.filter((r) => r.ok).map((r) => r.id) };
}

export function defaultsFromPb(pb: DeliveryDefaults__Output): DeliveryDefaults {
  const p = pb.policy ?? { maxAttempts: 0, backoffBase: null, backoffCap: null, attemptTimeout: null, ackDeadline: null };
  return { tenant: pb.tenant, builtIn: pb.builtIn, ...deliveryPolicyFromPb(p) };
}

export function queueStatsFromPb(q: QueueStats__Output): QueueStats {
  return { queue: q.queue, visible: u64(q.visible), leased: u64(q.leased), waiting: u64(q.waiting), dead: u64(q.dead) };
}

/** Timers named by `ids` or matched by a label `selector` (a mapping or "k=v,k2=v2"): exactly one. */
export interface Selection {
  ids?: string | string[];
  selector?: Record<string, string> | string;
}

/** CancelTimersRequest / RescheduleTimersRequest fields for a selection (Python's `bulk_request`). */
export function bulkRequest(sel: Selection, tenant: string): Record<string, unknown> {
  if ((sel.ids === undefined) === (sel.selector === undefined)) {
    throw new InvalidArgument("give ids or a selector (not both)");
  }
  if (sel.ids !== undefined) {
    return { tenant, ids: typeof sel.ids === "string" ? [sel.ids] : [...sel.ids], labelSelector: "", pageToken: "" };
  }
  return { tenant, ids: [], labelSelector: labelSelector(sel.selector), pageToken: "" };
}

/** The change of a bulk reschedule: exactly one of fireAt, delayMs and extendByMs. */
export function rescheduleChange(change: { fireAt?: Date | number; delayMs?: number; extendByMs?: number }):
    Record<string, unknown> {
  const given = [change.fireAt, change.delayMs, change.extendByMs].filter((v) => v !== undefined).length;
  if (given !== 1) throw new InvalidArgument("give exactly one of fireAt, delayMs and extendByMs");
  if (change.fireAt !== undefined) return { fireAt: msToTimestamp(timeToMs(change.fireAt)) };
  if (change.delayMs !== undefined) return { delay: msToDuration(change.delayMs, "delayMs") };
  return { extendBy: msToDuration(change.extendByMs as number, "extendByMs") };
}

/** Dead letters named by id or selected (queue / endpoint / labels / all). */
export interface DeadLetterSelection {
  ids?: string[];
  queue?: string;
  endpoint?: string;
  labels?: Record<string, string> | string;
  /** Every dead letter of the tenant (up to the per-call bound). */
  all?: boolean;
}

export function deadLettersRequest(sel: DeadLetterSelection, tenant: string): Record<string, unknown> {
  return {
    tenant, ids: [...(sel.ids ?? [])], queue: sel.queue ?? "", endpoint: sel.endpoint ?? "",
    labelSelector: labelSelector(sel.labels), all: Boolean(sel.all),
  };
}
