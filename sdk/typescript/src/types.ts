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

/** What `createTimer` takes. Give exactly one of `fireAt` and `delayMs`. */
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
