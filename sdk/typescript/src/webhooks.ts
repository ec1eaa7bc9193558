/**
 * Standard Webhooks (https://www.standardwebhooks.com) verification for receivers, as the
 * Python SDK's `verify_webhook` (api/client/webhooks.py): MINOOTS signs every webhook with
 * the tenant's (or the managed endpoint's) `whsec_` secret; headers `webhook-id` (stable for
 * one fire across retries: the receiver's idempotency key), `webhook-timestamp` (Unix seconds)
 * and `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { SECRET_PREFIX } from "./delivery";

/** The spec's default: timestamps further than this from now are refused (replays). */
export const TOLERANCE_S = 5 * 60;

/** The request is not a valid signed webhook for this secret. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

type HeaderBag = { get(name: string): string | null } | Record<string, string | string[] | undefined>;

function header(headers: HeaderBag, name: string): string {
  if (typeof (headers as { get?: unknown }).get === "function") {
    return (headers as { get(name: string): string | null }).get(name) ?? "";
  }
  for (const [k, v] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v.join(" ") : (v ?? "");
  }
  return "";
}

/** The `webhook-signature` value for a message: "v1," + base64 HMAC-SHA256(key, "id.timestamp.body"). */
export function signWebhook(secret: string, msgId: string, timestamp: number, body: Uint8Array | string): string {
  const raw = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  const key = Buffer.from(raw, "base64");
  if (key.length === 0 || key.toString("base64").replace(/=+$/, "") !== raw.replace(/=+$/, "")) {
    throw new WebhookVerificationError("the secret is not whsec_ + base64");
  }
  const mac = createHmac("sha256", key).update(`${msgId}.${Math.trunc(timestamp)}.`).update(body).digest("base64");
  return `v1,${mac}`;
}

/**
 * Check a received webhook (headers in any case: node:http's, or a fetch `Headers`; the raw
 * body); returns its webhook-id, throws WebhookVerificationError. Any one of the `v1,`
 * signatures matching is enough (both are sent while a secret is being rotated).
 */
export function verifyWebhook(secret: string, headers: HeaderBag, body: Uint8Array | string,
                              opts: { toleranceS?: number; nowMs?: number } = {}): string {
  const msgId = header(headers, "webhook-id");
  const ts = header(headers, "webhook-timestamp");
  const sigs = header(headers, "webhook-signature");
  if (!msgId || !ts || !sigs) {
    throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header");
  }
  if (!/^-?\d+$/.test(ts)) throw new WebhookVerificationError("webhook-timestamp is not an integer");
  const stamp = Number(ts);
  const tolerance = opts.toleranceS ?? TOLERANCE_S;
  if (Math.abs((opts.nowMs ?? Date.now()) / 1000 - stamp) > tolerance) {
    throw new WebhookVerificationError(`webhook-timestamp is more than ${tolerance} s away from now`);
  }
  const expected = Buffer.from(signWebhook(secret, msgId, stamp, body).slice(3));
  for (const candidate of sigs.split(" ")) {
    const [version, value] = [candidate.slice(0, candidate.indexOf(",")), candidate.slice(candidate.indexOf(",") + 1)];
    const got = Buffer.from(value);
    if (version === "v1" && got.length === expected.length && timingSafeEqual(got, expected)) return msgId;
  }
  throw new WebhookVerificationError("no matching signature");
}

/** The JSON body of a MINOOTS webhook (docs/webhooks.md, schema `minoots.webhook.v1`). */
export interface WebhookEnvelope {
  type: "timer.fired" | "timer.escalated";
  /** RFC 3339 time of the fire. */
  timestamp: string;
  data: {
    schema: "minoots.webhook.v1";
    tenant: string;
    timer_id: string;
    name: string;
    fire_id: number;
    /** 1 for the first attempt; the webhook-id stays the same across attempts. */
    attempt: number;
    scheduled_at: string;
    fired_at: string;
    labels: Record<string, string>;
    payload_base64: string;
    /** Only on an occurrence `<id>@<fire id>` of a recurring timer: that timer's id. */
    recurring_timer_id?: string;
    /** Only on `timer.escalated`: the ladder's timer, the step (from 1) and its action. */
    escalated_timer_id?: string;
    escalation_step?: number;
    action_base64?: string;
  };
}

/**
 * `verifyWebhook`, then the body as a typed envelope (never parsed before the signature
 * holds). Throws WebhookVerificationError for a bad signature and for a signed body that is
 * not a `minoots.webhook.v1` envelope.
 */
export function parseWebhook(secret: string, headers: HeaderBag, body: Uint8Array | string,
                             opts: { toleranceS?: number; nowMs?: number } = {}): { id: string; envelope: WebhookEnvelope } {
  const id = verifyWebhook(secret, headers, body, opts);
  let envelope: WebhookEnvelope;
  try {
    envelope = JSON.parse(typeof body === "string" ? body : Buffer.from(body).toString("utf8"));
  } catch {
    throw new WebhookVerificationError("the body is not JSON");
  }
  if (typeof envelope !== "object" || envelope === null || typeof envelope.data !== "object" ||
      envelope.data === null || envelope.data.schema !== "minoots.webhook.v1") {
    throw new WebhookVerificationError("the body is not a minoots.webhook.v1 envelope");
  }
  return { id, envelope };
}
