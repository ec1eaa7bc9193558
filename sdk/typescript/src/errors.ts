/**
 * Typed errors, one class per gRPC status code, as the Python SDK's `minoots.NotFound`,
 * `minoots.FailedPrecondition`, ... Every error the SDK throws on purpose is a
 * `MinootsError`; `code` is the gRPC status name ("NOT_FOUND"), `message` the server's
 * explanation. `classify` decides whether a failed attempt may be retried.
 */
import { status as Status, type ServiceError } from "@grpc/grpc-js";

export class MinootsError extends Error {
  /** The gRPC status code name, e.g. "NOT_FOUND". */
  readonly code: string;
  /** Set on a final error that followed an attempt whose outcome was unknown. */
  afterAmbiguous = false;

  constructor(message: string, code = "UNKNOWN") {
    super(message || code);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The request breaks a rule (server- or SDK-side validation). */
export class InvalidArgument extends MinootsError {
  constructor(message: string) { super(message, "INVALID_ARGUMENT"); }
}
/** No such timer (or subscription) in that tenant. */
export class NotFound extends MinootsError {
  constructor(message: string) { super(message, "NOT_FOUND"); }
}
/** The id (or name) is taken in that tenant and no idempotency key matched. */
export class AlreadyExists extends MinootsError {
  constructor(message: string) { super(message, "ALREADY_EXISTS"); }
}
/** The timer exists but its state does not allow the operation. */
export class FailedPrecondition extends MinootsError {
  constructor(message: string) { super(message, "FAILED_PRECONDITION"); }
}
/** E.g. watch(fromSequence) older than every reachable member's event retention. */
export class OutOfRange extends MinootsError {
  constructor(message: string) { super(message, "OUT_OF_RANGE"); }
}
/**
 * No member could serve the request within the deadline. `ambiguous`: the request may
 * have been applied anyway (only thrown so for calls the SDK cannot retry blindly).
 */
export class Unavailable extends MinootsError {
  readonly ambiguous: boolean;
  constructor(message: string, ambiguous = false) {
    super(message, "UNAVAILABLE");
    this.ambiguous = ambiguous;
  }
}
/** The call's total deadline passed before it completed. */
export class DeadlineExceeded extends MinootsError {
  constructor(message: string) { super(message, "DEADLINE_EXCEEDED"); }
}
/** No token, or one the cluster does not accept. */
export class Unauthenticated extends MinootsError {
  constructor(message: string) { super(message, "UNAUTHENTICATED"); }
}
/** The token's role or tenants do not allow this call. */
export class PermissionDenied extends MinootsError {
  constructor(message: string) { super(message, "PERMISSION_DENIED"); }
}
/** A quota or a node's cap refused the call; nothing was done. */
export class ResourceExhausted extends MinootsError {
  constructor(message: string) { super(message, "RESOURCE_EXHAUSTED"); }
}

const BY_CODE: Record<string, new (message: string) => MinootsError> = {
  INVALID_ARGUMENT: InvalidArgument,
  NOT_FOUND: NotFound,
  ALREADY_EXISTS: AlreadyExists,
  FAILED_PRECONDITION: FailedPrecondition,
  OUT_OF_RANGE: OutOfRange,
  UNAVAILABLE: Unavailable,
  DEADLINE_EXCEEDED: DeadlineExceeded,
  UNAUTHENTICATED: Unauthenticated,
  PERMISSION_DENIED: PermissionDenied,
  RESOURCE_EXHAUSTED: ResourceExhausted,
};

/** The name of a numeric gRPC status code ("UNAVAILABLE"). */
export function codeName(code: number | undefined): string {
  if (code === undefined) return "UNKNOWN";
  return (Status as unknown as Record<number, string>)[code] ?? "UNKNOWN";
}

export function isServiceError(err: unknown): err is ServiceError {
  return typeof err === "object" && err !== null && typeof (err as ServiceError).code === "number"
    && "details" in err;
}

/** A typed MinootsError carrying the server's message and code name. */
export function errorFromStatus(err: unknown): MinootsError {
  if (err instanceof MinootsError) return err;
  if (!isServiceError(err)) return new MinootsError(String((err as Error)?.message ?? err));
  const name = codeName(err.code);
  const message = err.details || name;
  const cls = BY_CODE[name];
  return cls ? new cls(message) : new MinootsError(message, name);
}

export type Outcome = "final" | "safe" | "ambiguous";

// Texts that prove a request was not (and will never be) applied: the client could not
// connect, or Raft refused it (PySyncObj's MISSING_LEADER, NOT_LEADER, QUEUE_FULL, DISCARDED,
// as the server reports them). Leader changes, timeouts and broken connections are ambiguous.
// The list is the Python SDK's (api/client/policy.py) plus grpc-js' wording of a refused connect.
const NOT_SENT_MARKERS = [
  "failed to connect", "connection refused", "econnrefused", "no connection established",
  "dns resolution failed", "name resolution",
  "missing_leader", "not_leader", "no leader", "no raft leader", "not the leader", "queue_full",
  "discarded",
];

/** "final" (a real answer), "safe" (retry: never reached Raft) or "ambiguous" (retry only idempotent calls). */
export function classify(err: unknown): Outcome {
  if (!isServiceError(err)) return "final";
  const text = `${err.details ?? ""} ${err.message ?? ""}`.toLowerCase();
  if (err.code === Status.UNAVAILABLE) {
    return NOT_SENT_MARKERS.some((m) => text.includes(m)) ? "safe" : "ambiguous";
  }
  if (err.code === Status.DEADLINE_EXCEEDED) return "ambiguous";
  if (err.code === Status.UNKNOWN && text.includes("socket closed")) return "ambiguous";
  return "final";
}
