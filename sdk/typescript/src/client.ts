/**
 * `Client`: the MINOOTS TypeScript client. How calls are routed and retried is the Python
 * SDK's (api/client/__init__.py):
 *
 * - Routing: given a few seed addresses, the client asks one for Cluster.Status, learns
 *   every member's gRPC address and the leader's, and sends each call to the leader when
 *   known (any member otherwise; a follower forwards writes). It asks again after a
 *   failure and every `refreshIntervalMs`.
 * - Retries: each call has a total deadline (`timeoutMs`) and each attempt a shorter one
 *   (`attemptTimeoutMs`). UNAVAILABLE or an attempt deadline makes the client forget the
 *   leader, rotate to another member and retry after a jittered exponential backoff until
 *   the total deadline. Every other status is final and thrown as a typed error.
 * - What is safe to retry: reads; creates (the SDK gives every spec an id, and uses it as
 *   the idempotency key unless one is given, so a retried create returns the timer its
 *   first attempt made, `created: false`); cancel, ack and reschedule-to-an-absolute-time
 *   (after an ambiguous attempt a FAILED_PRECONDITION is checked by reading the timer).
 *   `extendTimer` is not idempotent: it is retried only when the request certainly never
 *   reached Raft, else it throws `Unavailable` with `ambiguous: true`. So are (as in the Python
 *   SDK) `addEndpoint` (the server draws its id), `leaseTimers`, `nackLease`, `triggerTimer`
 *   and `rescheduleTimers` by `extendByMs`; `ackLease`, `pauseTimer`, `resumeTimer` and
 *   `redriveTimer` read the timer back like cancel; secrets are drawn client-side.
 */
import * as grpc from "@grpc/grpc-js";
import { setTimeout as sleep } from "node:timers/promises";
import {
  FailedPrecondition, InvalidArgument, MinootsError, NotFound, Unavailable, classify, errorFromStatus,
} from "./errors";
import {
  CHANNEL_OPTIONS, DEFAULT_ATTEMPT_TIMEOUT_MS, DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_MAX_MS,
  DEFAULT_REFRESH_INTERVAL_MS, DEFAULT_STALL_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, DISCOVERY_ATTEMPT_TIMEOUT_MS, Router,
  backoff, giveUp, resolveToken,
} from "./policy";
import { minootsV1 } from "./proto";
import type { TimersClient } from "./gen/minoots/v1/Timers";
import type { ClusterClient } from "./gen/minoots/v1/Cluster";
import type { SubscriptionsClient } from "./gen/minoots/v1/Subscriptions";
import type { EndpointServiceClient } from "./gen/minoots/v1/EndpointService";
import type { ListTimersRequest } from "./gen/minoots/v1/ListTimersRequest";
import type { CreateSubscriptionRequest } from "./gen/minoots/v1/CreateSubscriptionRequest";
import type {
  BulkResult, ClusterStatus, DeadLetterResults, DeliveryDefaults, Endpoint, EventKind, Lease, QueueStats,
  SubscriptionInfo, Timer, TimerSpec,
} from "./types";
import {
  type ListOptions, eventKindToPb, labelSelector, listRequest, msToDuration, msToTimestamp, specToPb, statusFromPb,
  subscriptionFromPb, timeToMs, timerFromPb, timestampToMs, watchRequest,
} from "./wire";
import { StreamReader, Watch, type WatchOptions } from "./watch";
import {
  type DeadLetterSelection, type Selection, bulkFromPb, bulkRequest, deadLettersRequest, deadResultsFromPb,
  defaultsFromPb, endpointFromPb, leaseFromPb, newWebhookSecret, queueStatsFromPb, rescheduleChange,
} from "./delivery";
import { Subscriber, type SubscribeOptions } from "./subscriber";

export interface ClientOptions {
  /** The API token (`authorization: Bearer`); default $MINOOTS_TOKEN, then $MINOOTS_TOKEN_FILE, then ./minoots-data/admin.token. */
  token?: string;
  /** Default tenant of every call (the server's "default", or the token's only tenant, when absent). */
  tenant?: string;
  /** Total deadline of a call, retries included (default 30 s). */
  timeoutMs?: number;
  /** Deadline of one attempt (default 5 s). */
  attemptTimeoutMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  refreshIntervalMs?: number;
  /** false (plaintext, default), true (TLS with the system roots) or PEM root certificates. */
  tls?: boolean | Buffer;
  /** Give specs without an id a generated one (default true). When false, a create with
   * neither an id nor an idempotency key is retried only when it certainly never reached Raft. */
  generateIds?: boolean;
}

export interface CallOptions {
  tenant?: string;
  timeoutMs?: number;
}

interface Stubs {
  channel: grpc.Channel;
  timers: TimersClient;
  cluster: ClusterClient;
  subscriptions: SubscriptionsClient;
  endpoints: EndpointServiceClient;
}

type Attempt<T> = (addr: string, deadline: Date) => Promise<T>;

export class Client {
  readonly router: Router;
  readonly tenant: string;
  readonly timeoutMs: number;
  readonly attemptTimeoutMs: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly refreshIntervalMs: number;
  readonly generateIds: boolean;
  private readonly token: string | undefined;
  private readonly creds: grpc.ChannelCredentials;
  private readonly stubs = new Map<string, Stubs>();
  /** Watches (and so subscribers) open on this client: `close()` ends them. */
  readonly openWatches = new Set<Watch>();
  private closed = false;

  /** `nodes`: gRPC addresses HOST:PORT of some members (an array or a comma-separated string). */
  constructor(nodes: string[] | string, options: ClientOptions = {}) {
    this.router = new Router(nodes);
    this.token = resolveToken(options.token);
    this.tenant = options.tenant ?? "";
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
    this.backoffBaseMs = options.backoffBaseMs ?? DEFAULT_BACKOFF_BASE_MS;
    this.backoffMaxMs = options.backoffMaxMs ?? DEFAULT_BACKOFF_MAX_MS;
    this.refreshIntervalMs = options.refreshIntervalMs ?? DEFAULT_REFRESH_INTERVAL_MS;
    this.generateIds = options.generateIds ?? true;
    const tls = options.tls ?? false;
    this.creds = tls === false ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(tls === true ? null : tls);
  }

  // ---- plumbing ---------------------------------------------------------------------

  /** The service clients bound to member `addr` (one channel per member). */
  stubsFor(addr: string): Stubs {
    if (this.closed) throw new MinootsError("the client is closed", "CANCELLED");
    let s = this.stubs.get(addr);
    if (s === undefined) {
      const v1 = minootsV1();
      const channel = new grpc.Channel(addr, this.creds, CHANNEL_OPTIONS);
      const opts = { channelOverride: channel };
      s = {
        channel,
        timers: new v1.Timers(addr, this.creds, opts),
        cluster: new v1.Cluster(addr, this.creds, opts),
        subscriptions: new v1.Subscriptions(addr, this.creds, opts),
        endpoints: new v1.EndpointService(addr, this.creds, opts),
      };
      this.stubs.set(addr, s);
    }
    return s;
  }

  /** Call metadata: the bearer token. */
  metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.token) md.set("authorization", `Bearer ${this.token}`);
    return md;
  }

  /** One unary call of `method` on `stub` with the token and `deadline`. */
  unary<Req, Res>(stub: grpc.Client, method: string, req: Req, deadline: Date): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      const fn = (stub as unknown as Record<string, Function>)[method];
      fn.call(stub, req, this.metadata(), { deadline }, (err: grpc.ServiceError | null, res: Res) => {
        if (err) reject(err);
        else resolve(res);
      });
    });
  }

  /** Ask members for Cluster.Status until one answers (or `deadline`, ms of performance.now()); learn from it. */
  async refresh(deadline: number, avoid?: string): Promise<ClusterStatus | null> {
    for (const addr of this.router.discoveryOrder(avoid)) {
      const remaining = deadline - performance.now();
      if (remaining <= 0) return null;
      try {
        const st = await this.statusOf(addr, Math.min(DISCOVERY_ATTEMPT_TIMEOUT_MS, remaining));
        this.router.learn(st);
        return st;
      } catch (err) {
        if (err instanceof MinootsError && err.code === "CANCELLED") throw err;
        continue;
      }
    }
    return null;
  }

  /** Cluster.Status of member `addr` itself (not routed). */
  async statusOf(addr: string, timeoutMs: number): Promise<ClusterStatus> {
    const s = this.stubsFor(addr);
    return statusFromPb(await this.unary(s.cluster, "Status", {}, new Date(Date.now() + timeoutMs)));
  }

  /**
   * Run `fn(address, attemptDeadline)` with routing and retries; returns [result, ambiguousSeen].
   * `safeOnly`: retry only failures known not to have reached Raft; throw Unavailable(ambiguous)
   * on any other transient failure.
   */
  async call<T>(what: string, fn: Attempt<T>,
                opts: { safeOnly?: boolean; timeoutMs?: number; attemptExtraMs?: number } = {}): Promise<[T, boolean]> {
    const extra = opts.attemptExtraMs ?? 0;   // a long poll's wait: added to each attempt's deadline and the total
    const total = (opts.timeoutMs ?? this.timeoutMs) + extra;
    const deadline = performance.now() + total;
    let last: unknown = undefined;
    let ambiguous = false;
    let failedAt: string | undefined = undefined;
    let n = 0;
    for (;;) {
      if (this.router.stale(this.refreshIntervalMs)) {
        await this.refresh(Math.min(deadline, performance.now() + DISCOVERY_ATTEMPT_TIMEOUT_MS), failedAt);
      }
      let remaining = deadline - performance.now();
      if (remaining <= 0) throw giveUp(last, what, total, n);
      const addr = this.router.pick(failedAt === undefined ? [] : [failedAt]);
      n++;
      try {
        const result = await fn(addr, new Date(Date.now() + Math.min(this.attemptTimeoutMs + extra, remaining)));
        return [result, ambiguous];
      } catch (err) {
        const kind = classify(err);
        if (kind === "final") {
          const e = errorFromStatus(err);
          e.afterAmbiguous = ambiguous;
          throw e;
        }
        if (kind === "ambiguous") {
          if (opts.safeOnly) {
            const e = errorFromStatus(err);
            throw new Unavailable(`${what}: the request may or may not have been applied (${e.code}: ${e.message}); `
              + "it is not safe to retry blindly: read the timer to find out", true);
          }
          ambiguous = true;
        }
        last = err;
        failedAt = addr;
        this.router.failed(addr);
      }
      remaining = deadline - performance.now();
      if (remaining <= 0) throw giveUp(last, what, total, n);
      await sleep(Math.min(remaining, backoff(n - 1, this.backoffBaseMs, this.backoffMaxMs)));
    }
  }

  private tenantOf(tenant: string | undefined): string {
    return tenant ?? this.tenant;
  }

  private timers<Res>(method: string, req: object): Attempt<Res> {
    return (addr, deadline) => this.unary<object, Res>(this.stubsFor(addr).timers, method, req, deadline);
  }

  private subs<Res>(method: string, req: object): Attempt<Res> {
    return (addr, deadline) => this.unary<object, Res>(this.stubsFor(addr).subscriptions, method, req, deadline);
  }

  private eps<Res>(method: string, req: object): Attempt<Res> {
    return (addr, deadline) => this.unary<object, Res>(this.stubsFor(addr).endpoints, method, req, deadline);
  }

  // ---- timers -----------------------------------------------------------------------

  /**
   * Create one timer (ARMED). Give exactly one of `fireAt` (Date or ms since the epoch) and
   * `delayMs`. Safe to retry: see the class doc; a retry that finds the timer its first
   * attempt made returns it with `created: false`.
   */
  async createTimer(spec: TimerSpec, opts: { timeoutMs?: number } = {}): Promise<Timer> {
    const pb = specToPb(spec, this.tenant, this.generateIds);
    const [resp] = await this.call<any>("createTimer", this.timers("CreateTimer", { timer: pb }),
      { timeoutMs: opts.timeoutMs, safeOnly: !pb.id && !pb.idempotencyKey });
    return timerFromPb(resp.timer, resp.created);
  }

  /** Create up to 10,000 timers in one replicated command: all or nothing (safe to retry as a whole). */
  async createTimers(specs: TimerSpec[], opts: { timeoutMs?: number } = {}): Promise<Timer[]> {
    const pbs = specs.map((s) => specToPb(s, this.tenant, this.generateIds));
    const [resp] = await this.call<any>("createTimers", this.timers("CreateTimers", { timers: pbs }),
      { timeoutMs: opts.timeoutMs, safeOnly: pbs.some((p) => !p.id && !p.idempotencyKey) });
    return resp.results.map((r: any) => timerFromPb(r.timer, r.created));
  }

  async getTimer(id: string, opts: CallOptions = {}): Promise<Timer> {
    const req = { tenant: this.tenantOf(opts.tenant), id };
    const [resp] = await this.call<any>("getTimer", this.timers("GetTimer", req), opts);
    return timerFromPb(resp);
  }

  /** Matching timers, one page at a time (each page retried on its own). */
  async *listTimerPages(opts: ListOptions & { timeoutMs?: number } = {}): AsyncGenerator<Timer[], void, undefined> {
    const req: ListTimersRequest = listRequest(opts, this.tenantOf(opts.tenant));
    for (;;) {
      const [resp] = await this.call<any>("listTimers", this.timers("ListTimers", { ...req }), opts);
      yield resp.timers.map((t: any) => timerFromPb(t));
      if (!resp.nextPageToken) return;
      req.pageToken = resp.nextPageToken;
    }
  }

  /** Matching timers, fetching pages as needed; `limit` stops after that many. */
  async *listTimers(opts: ListOptions & { timeoutMs?: number } = {}): AsyncGenerator<Timer, void, undefined> {
    let n = 0;
    if (opts.limit === 0) return;
    for await (const page of this.listTimerPages(opts)) {
      for (const t of page) {
        yield t;
        if (opts.limit !== undefined && ++n >= opts.limit) return;
      }
    }
  }

  /** Cancel a scheduled, armed or fired timer; returns it (CANCELLED). */
  async cancelTimer(id: string, opts: CallOptions = {}): Promise<Timer> {
    const req = { tenant: this.tenantOf(opts.tenant), id };
    return this.settleCall("cancelTimer", this.timers("CancelTimer", req), id, opts, (t) => t.state === "CANCELLED");
  }

  /** Move a scheduled or armed timer's deadline to `fireAt` (absolute; safe to retry). */
  async rescheduleTimer(id: string, fireAt: Date | number, opts: CallOptions = {}): Promise<Timer> {
    const ms = timeToMs(fireAt);
    const req = { tenant: this.tenantOf(opts.tenant), id, fireAt: msToTimestamp(ms) };
    return this.settleCall("rescheduleTimer", this.timers("RescheduleTimer", req), id, opts,
      (t) => t.fireAt.getTime() === ms);
  }

  /**
   * Move the deadline by `byMs` (may be negative). Not idempotent: retried only when the
   * request certainly did not reach Raft; otherwise throws Unavailable with `ambiguous: true`.
   */
  async extendTimer(id: string, byMs: number, opts: CallOptions = {}): Promise<Timer> {
    const req = { tenant: this.tenantOf(opts.tenant), id, extendBy: msToDuration(byMs, "byMs") };
    const [resp] = await this.call<any>("extendTimer", this.timers("RescheduleTimer", req),
      { ...opts, safeOnly: true });
    return timerFromPb(resp);
  }

  /** Acknowledge fire `fireId` (Timer.fireId) of a FIRED timer; returns it (SETTLED). */
  async ackTimer(id: string, fireId: number | null, opts: CallOptions = {}): Promise<Timer> {
    // `number | null` so that Event.fireId / Timer.fireId can be passed as they are (null is refused).
    if (fireId === null || !Number.isSafeInteger(fireId) || fireId < 1) {
      throw new InvalidArgument(`fireId must be an integer >= 1, got ${fireId}`);
    }
    const req = { tenant: this.tenantOf(opts.tenant), id, fireId: String(fireId) };
    return this.settleCall("ackTimer", this.timers("AckTimer", req), id, opts,
      (t) => t.state === "SETTLED" && t.fireId === fireId);
  }

  private async settleCall(what: string, fn: Attempt<any>, id: string, opts: CallOptions,
                           reached: (t: Timer) => boolean): Promise<Timer> {
    try {
      const [resp] = await this.call<any>(what, fn, opts);
      return timerFromPb(resp);
    } catch (err) {
      if (err instanceof FailedPrecondition && err.afterAmbiguous) {
        const t = await this.getTimer(id, opts);
        if (reached(t)) return t;
      }
      throw err;
    }
  }

  /**
   * Remove a settled, cancelled or dead-lettered timer now (before its tenant's retention
   * ends); returns it as it was. FailedPrecondition for a timer that has not ended; NotFound
   * for one that is gone (`afterAmbiguous` true when an earlier attempt may have deleted it).
   */
  async deleteTimer(id: string, opts: CallOptions = {}): Promise<Timer> {
    const [resp] = await this.call<any>("deleteTimer",
      this.timers("DeleteTimer", { tenant: this.tenantOf(opts.tenant), id }), opts);
    return timerFromPb(resp);
  }

  /**
   * The timer and its dependents, depth first: [{ depth, timer }, ...] (at most `maxNodes`;
   * a purged dependent is left out). Its parents are `after` of the first entry.
   */
  async timerGraph(id: string, opts: CallOptions & { maxNodes?: number } = {}):
      Promise<Array<{ depth: number; timer: Timer }>> {
    const maxNodes = opts.maxNodes ?? 200;
    const out: Array<{ depth: number; timer: Timer }> = [];
    const stack: Array<[number, string]> = [[0, id]];
    const seen = new Set<string>();
    while (stack.length && out.length < maxNodes) {
      const [depth, tid] = stack.pop() as [number, string];
      if (seen.has(tid)) continue;
      seen.add(tid);
      let timer: Timer;
      try {
        timer = await this.getTimer(tid, opts);
      } catch (err) {
        if (err instanceof NotFound && depth > 0) continue;
        throw err;
      }
      out.push({ depth, timer });
      for (const child of [...timer.children].reverse()) stack.push([depth + 1, child]);
    }
    return out;
  }

  // ---- bulk -------------------------------------------------------------------------

  /**
   * Cancel the timers `ids`, or every live timer matching the label `selector`, each on its
   * own: a BulkResult per timer. One replicated command per page of up to 1,000 timers.
   */
  async cancelTimers(sel: Selection, opts: CallOptions = {}): Promise<BulkResult[]> {
    const req = bulkRequest(sel, this.tenantOf(opts.tenant));
    return this.bulkPages("cancelTimers", "CancelTimers", req, opts, false);
  }

  /**
   * Move the deadline of scheduled or armed timers (`ids` or a label `selector`) to `fireAt`,
   * to `delayMs` from when the cluster accepts it, or by `extendByMs` (exactly one): a
   * BulkResult per timer. `extendByMs` is not retried after an ambiguous failure.
   */
  async rescheduleTimers(sel: Selection & { fireAt?: Date | number; delayMs?: number; extendByMs?: number },
                         opts: CallOptions = {}): Promise<BulkResult[]> {
    const change = rescheduleChange(sel);
    const req = { ...bulkRequest(sel, this.tenantOf(opts.tenant)), ...change };
    return this.bulkPages("rescheduleTimers", "RescheduleTimers", req, opts, sel.extendByMs !== undefined);
  }

  private async bulkPages(what: string, method: string, req: Record<string, unknown>, opts: CallOptions,
                          safeOnly: boolean): Promise<BulkResult[]> {
    const out: BulkResult[] = [];
    for (;;) {
      const [resp] = await this.call<any>(what, this.timers(method, { ...req }), { ...opts, safeOnly });
      out.push(...bulkFromPb(resp));
      if (!resp.nextPageToken) return out;
      req.pageToken = resp.nextPageToken;
    }
  }

  // ---- recurring timers -------------------------------------------------------------

  /** Pause an armed recurring timer (state SCHEDULED, `paused` true) until resumeTimer. Safe to retry. */
  async pauseTimer(id: string, opts: CallOptions = {}): Promise<Timer> {
    const req = { tenant: this.tenantOf(opts.tenant), id };
    return this.settleCall("pauseTimer", this.timers("PauseTimer", req), id, opts, (t) => t.paused);
  }

  /** Resume a paused timer: armed again at its next occurrence after now. Safe to retry. */
  async resumeTimer(id: string, opts: CallOptions = {}): Promise<Timer> {
    const req = { tenant: this.tenantOf(opts.tenant), id };
    return this.settleCall("resumeTimer", this.timers("ResumeTimer", req), id, opts, (t) => !t.paused);
  }

  /**
   * Fire one extra occurrence of a recurring timer now (its own fireId); the schedule is
   * unchanged. Not idempotent: retried only when the request certainly did not reach Raft.
   */
  async triggerTimer(id: string, opts: CallOptions = {}): Promise<Timer> {
    const [resp] = await this.call<any>("triggerTimer",
      this.timers("TriggerTimer", { tenant: this.tenantOf(opts.tenant), id }), { ...opts, safeOnly: true });
    return timerFromPb(resp);
  }

  /** The timer's next `count` (1..100) fire times, computed by the server's kernel code; [] once it ended. */
  async nextOccurrences(id: string, count = 5, opts: CallOptions = {}): Promise<Date[]> {
    if (!Number.isSafeInteger(count) || count < 1 || count > 100) {
      throw new InvalidArgument(`count must be an integer within 1..100, got ${count}`);
    }
    const [resp] = await this.call<any>("nextOccurrences",
      this.timers("NextOccurrences", { tenant: this.tenantOf(opts.tenant), id, count }), opts);
    return resp.occurrences.map((ts: any) => new Date(timestampToMs(ts)));
  }

  // ---- webhooks and dead letters ----------------------------------------------------

  /**
   * Set the tenant's webhook signing secret and return it: the only time it is shown. Without
   * `secret` a fresh whsec_ secret is drawn here (so a retry sets the same one).
   */
  async rotateWebhookSecret(opts: CallOptions & { secret?: string } = {}): Promise<string> {
    const req = { tenant: this.tenantOf(opts.tenant), secret: opts.secret || newWebhookSecret() };
    const [resp] = await this.call<any>("rotateWebhookSecret", this.timers("RotateWebhookSecret", req), opts);
    return resp.secret;
  }

  /** Deliver a DEAD_LETTERED timer again with a fresh attempt budget (same webhook-id). Safe to retry. */
  async redriveTimer(id: string, opts: CallOptions = {}): Promise<Timer> {
    const req = { tenant: this.tenantOf(opts.tenant), id };
    return this.settleCall("redriveTimer", this.timers("RedriveTimer", req), id, opts,
      (t) => t.state !== "DEAD_LETTERED");
  }

  /** Dead-lettered timers (of a queue, an endpoint, matching labels) and whether more matched than `limit` (<= 1000). */
  async listDeadLetters(opts: CallOptions & { queue?: string; endpoint?: string;
    labels?: Record<string, string> | string; limit?: number } = {}): Promise<{ timers: Timer[]; truncated: boolean }> {
    const req = {
      tenant: this.tenantOf(opts.tenant), queue: opts.queue ?? "", endpoint: opts.endpoint ?? "",
      labelSelector: labelSelector(opts.labels), limit: opts.limit ?? 100,
    };
    const [resp] = await this.call<any>("listDeadLetters", this.eps("ListDeadLetters", req), opts);
    return { timers: resp.timers.map((t: any) => timerFromPb(t)), truncated: resp.truncated };
  }

  /**
   * Re-arm dead letters (by id, or selected by queue / endpoint / labels / all) with their
   * attempts reset and history kept, in one replicated command: a result per timer.
   */
  async replayDeadLetters(sel: DeadLetterSelection, opts: CallOptions = {}): Promise<DeadLetterResults> {
    const [resp] = await this.call<any>("replayDeadLetters",
      this.eps("ReplayDeadLetters", deadLettersRequest(sel, this.tenantOf(opts.tenant))), opts);
    return deadResultsFromPb(resp);
  }

  /** Delete dead letters (by id, or selected): a result per timer. */
  async purgeDeadLetters(sel: DeadLetterSelection, opts: CallOptions = {}): Promise<DeadLetterResults> {
    const [resp] = await this.call<any>("purgeDeadLetters",
      this.eps("PurgeDeadLetters", deadLettersRequest(sel, this.tenantOf(opts.tenant))), opts);
    return deadResultsFromPb(resp);
  }

  // ---- managed endpoints and delivery defaults --------------------------------------

  /**
   * Add a managed webhook endpoint; the answer carries its whsec_ secret (drawn here unless
   * given): the only time it is shown. Timers reach it with `createTimer({ endpoint: id })`.
   * Not retried after an ambiguous failure (the server draws the id: a retry could add a twin).
   */
  async addEndpoint(url: string, opts: CallOptions & { headers?: Record<string, string>; timeoutMs?: number;
    attemptTimeoutMs?: number; secret?: string } = {}): Promise<Endpoint> {
    const req = {
      tenant: this.tenantOf(opts.tenant), url, headers: { ...(opts.headers ?? {}) },
      timeoutMs: opts.attemptTimeoutMs ?? 0, secret: opts.secret || newWebhookSecret(),
    };
    const [resp] = await this.call<any>("addEndpoint", this.eps("CreateEndpoint", req),
      { timeoutMs: opts.timeoutMs, safeOnly: true });
    return endpointFromPb(resp);
  }

  async listEndpoints(opts: CallOptions = {}): Promise<Endpoint[]> {
    const [resp] = await this.call<any>("listEndpoints",
      this.eps("ListEndpoints", { tenant: this.tenantOf(opts.tenant) }), opts);
    return resp.endpoints.map(endpointFromPb);
  }

  async getEndpoint(id: string, opts: CallOptions = {}): Promise<Endpoint> {
    const [resp] = await this.call<any>("getEndpoint",
      this.eps("GetEndpoint", { tenant: this.tenantOf(opts.tenant), id }), opts);
    return endpointFromPb(resp);
  }

  /** A new secret (returned, shown once); the old one keeps signing beside it for 24 h. Safe to retry. */
  async rotateEndpointSecret(id: string, opts: CallOptions & { secret?: string } = {}): Promise<Endpoint> {
    const req = { tenant: this.tenantOf(opts.tenant), id, secret: opts.secret || newWebhookSecret() };
    const [resp] = await this.call<any>("rotateEndpointSecret", this.eps("RotateEndpointSecret", req), opts);
    return endpointFromPb(resp);
  }

  /** Remove an endpoint; FailedPrecondition while a timer that has not ended uses it. */
  async removeEndpoint(id: string, opts: CallOptions = {}): Promise<Endpoint> {
    const [resp] = await this.call<any>("removeEndpoint",
      this.eps("DeleteEndpoint", { tenant: this.tenantOf(opts.tenant), id }), opts);
    return endpointFromPb(resp);
  }

  /**
   * Set the policy the tenant's new webhook/queue timers take for every field they do not
   * give (fields not given here: the built-in defaults); `clear: true` removes them.
   */
  async setDeliveryDefaults(policy: { maxAttempts?: number; backoffBaseMs?: number; backoffCapMs?: number;
    attemptTimeoutMs?: number; ackDeadlineMs?: number; clear?: boolean }, opts: CallOptions = {}): Promise<DeliveryDefaults> {
    const req: Record<string, unknown> = { tenant: this.tenantOf(opts.tenant), clear: Boolean(policy.clear) };
    if (!policy.clear) {
      const p: Record<string, unknown> = { maxAttempts: policy.maxAttempts ?? 0 };
      for (const [k, pb] of [["backoffBaseMs", "backoffBase"], ["backoffCapMs", "backoffCap"],
        ["attemptTimeoutMs", "attemptTimeout"], ["ackDeadlineMs", "ackDeadline"]] as const) {
        if (policy[k] !== undefined) p[pb] = msToDuration(policy[k] as number, k);
      }
      req.policy = p;
    }
    const [resp] = await this.call<any>("setDeliveryDefaults", this.eps("SetDeliveryDefaults", req), opts);
    return defaultsFromPb(resp);
  }

  async getDeliveryDefaults(opts: CallOptions = {}): Promise<DeliveryDefaults> {
    const [resp] = await this.call<any>("getDeliveryDefaults",
      this.eps("GetDeliveryDefaults", { tenant: this.tenantOf(opts.tenant) }), opts);
    return defaultsFromPb(resp);
  }

  // ---- pull queues ------------------------------------------------------------------

  /**
   * Lease up to `maxTimers` fired timers of `queue` for `visibilityMs` (default 30 s),
   * waiting up to `waitMs` (<= 20 s) for one; [] when none came. Not retried after an
   * ambiguous failure (a lost answer would hide leases, which then expire).
   */
  async leaseTimers(queue: string, opts: CallOptions & { maxTimers?: number; visibilityMs?: number; waitMs?: number } = {}):
      Promise<Lease[]> {
    const waitMs = opts.waitMs ?? 0;
    const req = {
      tenant: this.tenantOf(opts.tenant), queue, maxTimers: opts.maxTimers ?? 1,
      visibilityTimeout: msToDuration(opts.visibilityMs ?? 30_000, "visibilityMs"), wait: msToDuration(waitMs, "waitMs"),
    };
    const [resp] = await this.call<any>("leaseTimers", this.timers("LeaseTimers", req),
      { timeoutMs: opts.timeoutMs, safeOnly: true, attemptExtraMs: Math.max(0, Math.ceil(waitMs)) });
    return resp.leases.map(leaseFromPb);
  }

  /** Done with a leased timer: it settles. Safe to retry. */
  async ackLease(lease: Lease, opts: { timeoutMs?: number } = {}): Promise<Timer> {
    const req = { tenant: lease.timer.tenant, id: lease.timer.id, leaseId: lease.leaseId };
    return this.settleCall("ackLease", this.timers("AckLease", req), lease.timer.id,
      { tenant: lease.timer.tenant, timeoutMs: opts.timeoutMs }, (t) => t.state === "SETTLED");
  }

  /** Give a leased timer back: retried per its policy (or dead-lettered after the last attempt). */
  async nackLease(lease: Lease, opts: { timeoutMs?: number } = {}): Promise<Timer> {
    const req = { tenant: lease.timer.tenant, id: lease.timer.id, leaseId: lease.leaseId };
    const [resp] = await this.call<any>("nackLease", this.timers("NackLease", req),
      { timeoutMs: opts.timeoutMs, safeOnly: true });
    return timerFromPb(resp);
  }

  /** Heartbeat: the lease now expires `visibilityMs` (default 30 s) from now. Safe to retry. */
  async extendLease(lease: Lease, visibilityMs = 30_000, opts: { timeoutMs?: number } = {}): Promise<Lease> {
    const req = {
      tenant: lease.timer.tenant, id: lease.timer.id, leaseId: lease.leaseId,
      visibilityTimeout: msToDuration(visibilityMs, "visibilityMs"),
    };
    const [resp] = await this.call<any>("extendLease", this.timers("ExtendLease", req), opts);
    return leaseFromPb(resp);
  }

  /** Per queue of the tenant (or just `queue`): visible, leased, waiting (backoff) and dead timers. */
  async queueStats(queue?: string, opts: CallOptions = {}): Promise<QueueStats[]> {
    const [resp] = await this.call<any>("queueStats",
      this.eps("QueueStats", { tenant: this.tenantOf(opts.tenant), queue: queue ?? "" }), opts);
    return resp.queues.map(queueStatsFromPb);
  }

  /**
   * Leases of `queue` as its timers become available, with at most `maxOutstanding` live at
   * once: ack or nack each (or let it expire) to get the next. Survives node deaths and
   * failovers by reopening the stream on another member, throwing Unavailable after
   * `reconnectTimeoutMs` (default: the client's timeout) without one. `break` out of the
   * loop (or call the generator's `return()`) to stop.
   */
  async *streamLeases(queue: string, opts: { tenant?: string; maxOutstanding?: number; visibilityMs?: number;
    reconnectTimeoutMs?: number } = {}): AsyncGenerator<Lease, void, undefined> {
    const req = {
      tenant: this.tenantOf(opts.tenant), queue, maxOutstanding: opts.maxOutstanding ?? 1,
      visibilityTimeout: msToDuration(opts.visibilityMs ?? 30_000, "visibilityMs"),
    };
    const budget = opts.reconnectTimeoutMs ?? this.timeoutMs;
    let failedAt: string | undefined = undefined;
    let last: unknown = undefined;
    let n = 0;
    let downSince = performance.now();
    for (;;) {
      if (this.router.stale(this.refreshIntervalMs) || failedAt !== undefined) {
        await this.refresh(performance.now() + DISCOVERY_ATTEMPT_TIMEOUT_MS, failedAt);
      }
      const addr = this.router.pick(failedAt === undefined ? [] : [failedAt]);
      const reader = new StreamReader<any>(this.stubsFor(addr).timers.StreamLeases(req, this.metadata()));
      try {
        for (;;) {
          const pb = await reader.next();
          if (pb === null) break;
          n = 0;
          failedAt = undefined;
          downSince = performance.now();
          yield leaseFromPb(pb);
        }
      } catch (err) {
        if (classify(err) === "final") throw errorFromStatus(err);
        last = err;
        failedAt = addr;
        this.router.failed(addr);
      } finally {
        reader.call.cancel();
      }
      n++;
      if (performance.now() - downSince > budget) throw giveUp(last, "streamLeases", budget, n);
      await sleep(backoff(n - 1, this.backoffBaseMs, this.backoffMaxMs));
    }
  }

  // ---- cluster ----------------------------------------------------------------------

  /** Cluster.Status from the leader when known, else any member. */
  async status(opts: { timeoutMs?: number } = {}): Promise<ClusterStatus> {
    const [st] = await this.call("status", async (addr, deadline) =>
      statusFromPb(await this.unary(this.stubsFor(addr).cluster, "Status", {}, deadline)), opts);
    this.router.learn(st);
    return st;
  }

  // ---- events -----------------------------------------------------------------------

  /**
   * Events from sequence `fromSequence` on (0: only new ones), as an async iterator that
   * survives disconnects, node deaths and failovers: it resumes on another member from its
   * cursor (last sequence seen + 1), drops events it already yielded and, unfiltered, throws
   * if a sequence is ever skipped. Throws OutOfRange when no reachable member retains the
   * sequence asked for, Unavailable when none could be reached for `reconnectTimeoutMs`.
   */
  watch(fromSequence = 0, options: WatchOptions & { tenant?: string; kinds?: Array<EventKind | string> } = {}): Watch {
    const req = watchRequest(fromSequence, this.tenantOf(options.tenant), options.kinds);
    return new Watch(this, req, {
      reconnectTimeoutMs: options.reconnectTimeoutMs ?? this.timeoutMs,
      stallTimeoutMs: options.stallTimeoutMs === undefined ? DEFAULT_STALL_TIMEOUT_MS : options.stallTimeoutMs,
    });
  }

  // ---- durable subscriptions ---------------------------------------------------------

  /**
   * A durable subscription named `name` (its cursor is kept by the cluster), starting at
   * event `fromSequence` (0: the next event), receiving `kinds` (all when absent).
   * Not retried blindly after an unknown outcome (like the Python SDK).
   */
  async createSubscription(name: string, opts: CallOptions & {
    kinds?: Array<EventKind | string>; fromSequence?: number; allTenants?: boolean;
  } = {}): Promise<SubscriptionInfo> {
    const req: CreateSubscriptionRequest = {
      tenant: this.tenantOf(opts.tenant), name, fromSequence: String(opts.fromSequence ?? 0),
      allTenants: Boolean(opts.allTenants),
      kinds: (opts.kinds ?? []).map(eventKindToPb) as CreateSubscriptionRequest["kinds"],
    };
    const [resp] = await this.call<any>("createSubscription", this.subs("CreateSubscription", req),
      { ...opts, safeOnly: true });
    return subscriptionFromPb(resp);
  }

  async getSubscription(name: string, opts: CallOptions = {}): Promise<SubscriptionInfo> {
    const [resp] = await this.call<any>("getSubscription",
      this.subs("GetSubscription", { tenant: this.tenantOf(opts.tenant), name }), opts);
    return subscriptionFromPb(resp);
  }

  async listSubscriptions(opts: CallOptions = {}): Promise<SubscriptionInfo[]> {
    const [resp] = await this.call<any>("listSubscriptions",
      this.subs("ListSubscriptions", { tenant: this.tenantOf(opts.tenant) }), opts);
    return resp.subscriptions.map(subscriptionFromPb);
  }

  async deleteSubscription(name: string, opts: CallOptions = {}): Promise<SubscriptionInfo> {
    const [resp] = await this.call<any>("deleteSubscription",
      this.subs("DeleteSubscription", { tenant: this.tenantOf(opts.tenant), name }), { ...opts, safeOnly: true });
    return subscriptionFromPb(resp);
  }

  /** Every event below `cursor` is processed (the cursor never moves back; idempotent). */
  async commitSubscription(name: string, cursor: number, opts: CallOptions = {}): Promise<SubscriptionInfo> {
    const req = { tenant: this.tenantOf(opts.tenant), name, cursor: String(cursor) };
    const [resp] = await this.call<any>("commitSubscription", this.subs("CommitSubscription", req), opts);
    return subscriptionFromPb(resp);
  }

  /**
   * Count the events gone from the subscription's cursor as lost and move it to the oldest
   * event the answering node still serves (FailedPrecondition when nothing is missing there).
   */
  async skipLostEvents(name: string, opts: CallOptions = {}): Promise<SubscriptionInfo> {
    const [resp] = await this.call<any>("skipLostEvents",
      this.subs("SkipLostEvents", { tenant: this.tenantOf(opts.tenant), name }), opts);
    return subscriptionFromPb(resp);
  }

  /**
   * Iterate over the subscription's events from its committed cursor (with its filters, on
   * any member, across failovers), committing as it goes: every `commitEvery` events, and
   * everything handed out on `commit()` and `close()`. At-least-once: after a crash the
   * consumer sees again the events since its last commit.
   */
  async subscribe(name: string, opts: SubscribeOptions & { tenant?: string } = {}): Promise<Subscriber> {
    const tenant = this.tenantOf(opts.tenant);
    const info = await this.getSubscription(name, { tenant });
    return new Subscriber(this, info, tenant, opts);
  }

  // ---- lifecycle --------------------------------------------------------------------

  /** Close every watch and subscriber stream of this client and its channels. */
  close(): void {
    this.closed = true;
    for (const w of [...this.openWatches]) w.close();
    for (const s of this.stubs.values()) {
      s.timers.close();
      s.cluster.close();
      s.subscriptions.close();
      s.endpoints.close();
      s.channel.close();
    }
    this.stubs.clear();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}
