/**
 * @minoots/client: the TypeScript SDK of MINOOTS.
 *
 *     import { Client } from "@minoots/client";
 *     const client = new Client(["127.0.0.1:7201"]);      // any member; it finds the leader
 *     const t = await client.createTimer({ delayMs: 90_000, labels: { team: "infra" } });
 *     for await (const ev of client.watch(1)) console.log(ev.sequence, ev.kind, ev.timerId);
 */
export { Client, type ClientOptions, type CallOptions } from "./client";
export { Watch, WatchCursor, type WatchOptions } from "./watch";
export { Subscriber, type SubscribeOptions } from "./subscriber";
export { Router, seesLeader, resolveToken, DEFAULT_TIMEOUT_MS, DEFAULT_ATTEMPT_TIMEOUT_MS } from "./policy";
export {
  MinootsError, InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, OutOfRange, Unavailable,
  DeadlineExceeded, Unauthenticated, PermissionDenied, ResourceExhausted, classify, errorFromStatus,
} from "./errors";
export type { ListOptions } from "./wire";
export { newWebhookSecret, type Selection, type DeadLetterSelection } from "./delivery";
export { runWorker, type WorkerOptions } from "./worker";
export {
  verifyWebhook, parseWebhook, signWebhook, WebhookVerificationError, TOLERANCE_S, type WebhookEnvelope,
} from "./webhooks";
export {
  TIMER_STATES, EVENT_KINDS, EVENT_KIND_NUMBERS,
  type TimerState, type EventKind, type TimerSpec, type Timer, type Event, type Member, type ClusterStatus,
  type SubscriptionInfo, CATCH_UP_POLICIES, OVERLAP_POLICIES, type CatchUp, type Overlap, type EscalationStep,
  type DeliveryAttempt, type DeliveryPolicy, type Lease, type BulkResult, type Endpoint, type DeliveryDefaults,
  type DeadLetterResult, type DeadLetterResults, type QueueStats,
} from "./types";
