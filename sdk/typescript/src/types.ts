/** The SDK's values: what the client methods take and return (the wire messages are in ./gen). */

export const TIMER_STATES = ["UNSPECIFIED", "SCHEDULED", "ARMED", "FIRED", "SETTLED", "CANCELLED", "DEAD_LETTERED",
  "DELIVERING"] as const;
/** Lifecycle: SCHEDULED -> ARMED -> FIRED -> SETTLED; side exits CANCELLED, DEAD_LETTERED. */
export type TimerState = (typeof TIMER_STATES)[number];

export const EVENT_KINDS = ["UNSPECIFIED", "CREATED", "ARMED", "FIRED", "SETTLED", "RESCHEDULED", "CANCELLED",
  "DELIVERY_DUE", "DELIVERY_ATTEMPTED", "DEAD_LETTERED", "REDRIVEN", "LEASED", "LEASE_EXTENDED", "PAUSED", "RESUMED",
  "PURGED", "DELETED", "ESCALATED"] as const;
export type EventKind = (typeof EVENT_KINDS)[number];
/** Wire numbers of the event kinds (not contiguous: 18, 19 recurrence, 20+ retention, 40+ timer graphs). */
export const EVENT_KIND_NUMBERS: Readonly<Record<number, EventKind>> = Object.freeze({
  0: "UNSPECIFIED", 1: "CREATED", 2: "ARMED", 3: "FIRED", 4: "SETTLED", 5: "RESCHEDULED", 6: "CANCELLED",
  7: "DELIVERY_DUE", 8: "DELIVERY_ATTEMPTED", 9: "DEAD_LETTERED", 10: "REDRIVEN", 11: "LEASED", 12: "LEASE_EXTENDED",
  18: "PAUSED", 19: "RESUMED", 20: "PURGED", 21: "DELETED", 40: "ESCALATED",
});

/** What `createTimer` takes. Give exactly one of `fireAt` and `delayMs` (with `after`, either or neither). */
export interface TimerSpec {
  /** Client-chosen id; the SDK generates one (uuid4 hex) when absent, so a retry is safe. */
  id?: string;
  /** The tenant; the client's default tenant (else the server's "default") when absent. */
  tenant?: string;
  name?: string;
  /** Absolute deadline: a Date or milliseconds since the epoch. */
  fireAt?: Date | number;
  /** Deadline relative to when the server accepts the request, in milliseconds. */
  delayMs?: number;
  /** At most 64 KiB; a string is sent as UTF-8. */
  payload?: Uint8Array | string;
  labels?: Record<string, string>;
  /** Opaque action spec. */
  action?: Uint8Array | string;
  /** A retried create with the same key returns the original timer (`created: false`). */
  idempotencyKey?: string;
  /** FIRED waits for `ackTimer` instead of settling at once. */
  ackRequired?: boolean;

  // ---- delivery: at most one of webhook, endpoint and queue ----
  /** POST a signed JSON envelope (Standard Webhooks) to this http(s) URL when it fires; the
   * tenant needs a signing secret first (`rotateWebhookSecret`). */
  webhook?: string;
  /** Extra request headers of the webhook (not webhook-*, content-type, host). */
  webhookHeaders?: Record<string, string>;
  /** Or POST to this managed endpoint (`addEndpoint`'s id), signed with the endpoint's secret. */
  endpoint?: string;
  /** Or wait on this pull queue of the tenant for a worker (`leaseTimers`). */
  queue?: string;
  /** Delivery policy (webhook, endpoint or queue only); absent: the tenant's delivery defaults. */
  maxAttempts?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  attemptTimeoutMs?: number;

  // ---- recurrence: everyMs, or cron with timeZone ----
  /** Fire at the deadline, then every `everyMs` (at least 1 s) after it, each occurrence a fire of its own. */
  everyMs?: number;
  /** Or the times of this cron expression (5 fields, or 6 with seconds last), the first at or after the deadline. */
  cron?: string;
  /** The IANA time zone of `cron` (required with it). */
  timeZone?: string;
  /** The last occurrence is the last due at or before this time (inclusive). */
  until?: Date | number;
  /** Or after this many occurrences. */
  maxCount?: number;
  /** Occurrences missed during an outage: "once" (default), "all" or "skip". */
  catchUp?: CatchUp | string;
  /** With ackRequired, an occurrence due while an earlier fire awaits its ack: "skip" (default),
   * "buffer_one" or "allow_all". */
  overlap?: Overlap | string;
  /** Each occurrence fires within [occurrence, occurrence + flexMs] (at most 24 h). */
  flexMs?: number;

  // ---- dependencies and escalation ----
  /** Parent timer ids (1..16, same tenant): the timer stays SCHEDULED until they meet `on`.
   * The deadline is optional then, and `delayMs` is the delay after the condition is met. */
  after?: string | string[];
  /** "fired", "settled" (default), "dead_lettered" or "cancelled". */
  on?: string;
  /** "all" (default) or "any". */
  mode?: string;
  /** A parent that can no longer meet the condition: "cancel" (default) or "release". */
  onParentCancel?: string;
  /** ackRequired only, at most 8 steps: an ESCALATED event `afterMs` after a fire without an ack. */
  escalate?: EscalationStep[];
}

export const CATCH_UP_POLICIES = ["once", "all", "skip"] as const;
export type CatchUp = (typeof CATCH_UP_POLICIES)[number];
export const OVERLAP_POLICIES = ["skip", "buffer_one", "allow_all"] as const;
export type Overlap = (typeof OVERLAP_POLICIES)[number];

export interface EscalationStep {
  /** From the fire; strictly increasing along the ladder. */
  afterMs: number;
  /** Opaque (event-only), at most 4 KiB; a string is sent as UTF-8. */
  action?: Uint8Array | string;
}

/** One delivery attempt's outcome (a replicated fact). */
export interface DeliveryAttempt {
  attempt: number;
  fireId: number;
  at: Date | null;
  /** 0 when there was no HTTP response. */
  statusCode: number;
  latencyMs: number;
  /** Empty on success: http_status, timeout, connect, refused_address, ... */
  errorClass: string;
  /** The first 1 KiB. */
  responseBody: Buffer;
  nextAttemptAt: Date | null;
}

/** A timer's delivery policy as the server stored it (0: the default). */
export interface DeliveryPolicy {
  maxAttempts: number;
  backoffBaseMs: number;
  backoffCapMs: number;
  attemptTimeoutMs: number;
  ackDeadlineMs: number;
}

export interface Timer {
  id: string;
  tenant: string;
  name: string;
  fireAt: Date;
  payload: Buffer;
  labels: Record<string, string>;
  action: Buffer;
  idempotencyKey: string | null;
  ackRequired: boolean;
  state: TimerState;
  /** Increases on every transition of this timer. */
  revision: number;
  createdAt: Date | null;
  armedAt: Date | null;
  firedAt: Date | null;
  settledAt: Date | null;
  attempts: number;
  /** The sequence number of the current fire's FIRED event (what `ackTimer` takes); null before. */
  fireId: number | null;
  /** On create results only: false when an idempotency key matched an existing timer. */
  created?: boolean;

  // ---- delivery (null / empty for a timer without one) ----
  /** The delivery URL (a managed endpoint's too). */
  webhook: string | null;
  webhookHeaders: Record<string, string>;
  queue: string | null;
  /** The managed endpoint it delivers to. */
  endpoint: string | null;
  /** The delivery policy's attempt budget (0: none). */
  maxAttempts: number;
  deliveryPolicy: DeliveryPolicy | null;
  /** Oldest first (the last 64). */
  deliveryAttempts: DeliveryAttempt[];
  /** A delivery retry waiting. */
  nextAttemptAt: Date | null;

  // ---- recurrence (fireAt is the next occurrence; attempts the occurrences so far) ----
  everyMs: number | null;
  cron: string;
  timeZone: string;
  until: Date | null;
  maxCount: number;
  /** Paused by pauseTimer (state SCHEDULED meanwhile). */
  paused: boolean;
  /** "once", "all", "skip"; "" for a one-shot timer. */
  catchUp: string;
  /** "skip", "buffer_one", "allow_all"; "" for a one-shot timer. */
  overlap: string;
  /** Extra fires from triggerTimer. */
  triggered: number;
  /** Occurrences the catch-up or overlap policy skipped. */
  skipped: number;
  flexMs: number | null;
  /** ackRequired recurring timers: the fires awaiting ackTimer, oldest first. */
  pendingFireIds: number[];
  /** An occurrence waits for them (overlap "buffer_one"). */
  buffered: boolean;

  // ---- graph: dependencies as created, the parents still awaited, the outcome, dependents ----
  after: string[];
  on: string;
  mode: string;
  afterDelayMs: number | null;
  onParentCancel: string;
  waitingOn: string[];
  /** "waiting", "met", "released", "cancelled" ("" without parents). */
  dependency: string;
  children: string[];
  escalate: Array<{ afterMs: number; action: Buffer }>;
  /** Escalation steps fired so far. */
  escalated: number;
}

/** A queue timer leased to this worker until `expiresAt`: ack, nack or extend it before then. */
export interface Lease {
  timer: Timer;
  leaseId: string;
  attempt: number;
  expiresAt: Date | null;
}

/** One timer's outcome in a bulk cancel / reschedule. */
export interface BulkResult {
  id: string;
  /** OK, NOT_FOUND, FAILED_PRECONDITION, INVALID_ARGUMENT, NO_MATCH */
  code: string;
  message: string;
  /** As the command left it (null for NOT_FOUND). */
  timer: Timer | null;
}

/** A managed webhook endpoint. `secret` only in the answers of addEndpoint and rotateEndpointSecret. */
export interface Endpoint {
  tenant: string;
  id: string;
  url: string;
  headers: Record<string, string>;
  /** Attempt timeout; 0: the timer's policy decides. */
  timeoutMs: number;
  createdAt: Date | null;
  secretRotatedAt: Date | null;
  secret: string | null;
}

/** A tenant's delivery defaults (every field set); `builtIn`: it has none of its own. */
export interface DeliveryDefaults extends DeliveryPolicy {
  tenant: string;
  builtIn: boolean;
}

export interface DeadLetterResult {
  id: string;
  ok: boolean;
  /** Why it was refused (not dead-lettered, not found, ...). */
  error: string;
}

export interface DeadLetterResults {
  results: DeadLetterResult[];
  /** More were selected than one call handles: call again. */
  truncated: boolean;
  /** The ids that were replayed / purged. */
  ok: string[];
}

export interface QueueStats {
  queue: string;
  /** Available to lease now. */
  visible: number;
  /** Under a live lease. */
  leased: number;
  /** A nack's backoff running. */
  waiting: number;
  /** Dead-lettered (still retained). */
  dead: number;
}

export interface Event {
  /** Kernel-wide, gap-free, in commit order. */
  sequence: number;
  kind: EventKind;
  tenant: string;
  timerId: string;
  /** The command time of the transition. */
  at: Date;
  revision: number;
  state: TimerState;
  fireAt: Date;
  fireId: number | null;
  /** ESCALATED events only: the ladder step that came due (1 = the first); 0 otherwise. */
  escalationStep: number;
  /** ESCALATED events only: that step's action bytes (empty otherwise). */
  action: Buffer;
}

export interface Member {
  id: string;
  raftAddress: string;
  grpcAddress: string;
  role: string;
  connected: boolean;
}

export interface ClusterStatus {
  node: string;
  cluster: string;
  leader: string | null;
  leaderGrpcAddress: string | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  members: Member[];
  /** Count by state name. */
  timers: Record<string, number>;
  role: string;
  hasQuorum: boolean;
}

export interface SubscriptionInfo {
  tenant: string;
  name: string;
  allTenants: boolean;
  /** The kinds it receives; every kind when empty. */
  kinds: EventKind[];
  /** The next event not committed: everything below is processed. */
  cursor: number;
  createdAt: Date | null;
  /** The events budget trimmed events it had not committed. */
  overrun: boolean;
  /** How many events it lost that way, in total. */
  lost: number;
  commits: number;
  /** The answering node's oldest retained event and newest applied one. */
  nodeEventFloor: number;
  nodeEventHead: number;
}
