/** Pure parts of the SDK (no cluster): wire conversions, the watch cursor, retry classification, routing. */
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { status as Status, Metadata, type ServiceError } from "@grpc/grpc-js";
import {
  Client, InvalidArgument, NotFound, OutOfRange, Router, Unavailable, WatchCursor, classify, errorFromStatus,
} from "../src/index";
import {
  eventFromPb, msToDuration, msToTimestamp, specToPb, timerFromPb, timestampToMs, watchRequest, eventKindToPb,
} from "../src/wire";
import { bulkRequest, newWebhookSecret, rescheduleChange } from "../src/delivery";
import { WebhookVerificationError, parseWebhook, signWebhook, verifyWebhook } from "../src/webhooks";
import type { Event__Output } from "../src/gen/minoots/v1/Event";

function rpcError(code: Status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new Metadata() });
}

function pbEvent(sequence: number): Event__Output {
  return {
    sequence: String(sequence), kind: "EVENT_KIND_CREATED", tenant: "default", timerId: `t${sequence}`,
    at: msToTimestamp(1000), revision: "1", state: "TIMER_STATE_ARMED", fireAt: msToTimestamp(2000), fireId: "0",
    escalationStep: 0, action: Buffer.alloc(0),
  };
}

test("an escalated event carries its ladder step and action", () => {
  const ev = eventFromPb({ ...pbEvent(3), kind: "EVENT_KIND_ESCALATED", escalationStep: 2, action: Buffer.from("page") });
  assert.equal(ev.escalationStep, 2);
  assert.equal(ev.action.toString(), "page");
  const plain = eventFromPb(pbEvent(4));
  assert.equal(plain.escalationStep, 0);
  assert.equal(plain.action.length, 0);
});

test("times and durations convert at ms precision, negative ones too", () => {
  for (const ms of [0, 1, 999, 1000, 1_700_000_000_123, -1, -1500]) {
    assert.equal(timestampToMs(msToTimestamp(ms) as never), ms);
  }
  assert.deepEqual(msToDuration(1500), { seconds: "1", nanos: 500_000_000 });
  assert.deepEqual(msToDuration(-1500), { seconds: "-1", nanos: -500_000_000 });
  assert.deepEqual(msToDuration(0.2), { seconds: "0", nanos: 1_000_000 });   // rounded up
  assert.throws(() => msToDuration(Number.NaN), InvalidArgument);
});

test("a spec gets a generated id that doubles as its idempotency key", () => {
  const pb = specToPb({ delayMs: 5 }, "");
  assert.match(pb.id as string, /^[0-9a-f]{32}$/);
  assert.equal(pb.idempotencyKey, pb.id);
  const keyed = specToPb({ delayMs: 5, idempotencyKey: "k" }, "acme");
  assert.equal(keyed.idempotencyKey, "k");
  assert.equal(keyed.tenant, "acme");
  assert.equal(specToPb({ delayMs: 5 }, "", false).id, "");
  assert.throws(() => specToPb({}, ""), InvalidArgument);
  assert.throws(() => specToPb({ delayMs: 1, fireAt: new Date() }, ""), InvalidArgument);
});

test("event kinds are accepted by any spelling and refused when unknown", () => {
  assert.equal(eventKindToPb("fired"), "EVENT_KIND_FIRED");
  assert.equal(eventKindToPb("EVENT_KIND_ARMED"), "EVENT_KIND_ARMED");
  assert.equal(eventKindToPb("escalated"), "EVENT_KIND_ESCALATED");
  assert.equal(eventKindToPb("purged"), "EVENT_KIND_PURGED");
  assert.throws(() => eventKindToPb("exploded"), InvalidArgument);
  assert.throws(() => watchRequest(-1, "", undefined), InvalidArgument);
});

test("the watch cursor drops duplicates and refuses gaps on an unfiltered stream", () => {
  const cur = new WatchCursor(watchRequest(5, "", undefined));
  assert.equal(cur.accept(pbEvent(4)), null);                 // before the cursor
  assert.equal(cur.accept(pbEvent(5))?.sequence, 5);
  assert.equal(cur.accept(pbEvent(5)), null);                 // a duplicate after a resume
  assert.equal(cur.resumeRequest().fromSequence, "6");
  assert.throws(() => cur.accept(pbEvent(8)), /skipped from sequence 5 to 8/);
  const first = new WatchCursor(watchRequest(5, "", undefined));
  assert.throws(() => first.accept(pbEvent(7)), /asked for events from sequence 5, got 7/);
});

test("a filtered cursor moves past what the server examined", () => {
  const cur = new WatchCursor(watchRequest(5, "acme", ["fired"]));
  assert.equal(cur.accept(pbEvent(9))?.sequence, 9);          // gaps are the filter's
  cur.examined(20);
  assert.equal(cur.next, 21);
  cur.examined(3);
  assert.equal(cur.next, 21);
});

test("retry classification follows the Python SDK", () => {
  assert.equal(classify(rpcError(Status.UNAVAILABLE, "No connection established. Last error: connect ECONNREFUSED")), "safe");
  assert.equal(classify(rpcError(Status.UNAVAILABLE, "Raft did not commit the request (NOT_LEADER)")), "safe");
  assert.equal(classify(rpcError(Status.UNAVAILABLE, "Connection dropped")), "ambiguous");
  assert.equal(classify(rpcError(Status.DEADLINE_EXCEEDED, "Deadline exceeded")), "ambiguous");
  assert.equal(classify(rpcError(Status.NOT_FOUND, "no such timer")), "final");
  const nf = errorFromStatus(rpcError(Status.NOT_FOUND, "timer 'x' not found"));
  assert.ok(nf instanceof NotFound);
  assert.equal(nf.code, "NOT_FOUND");
  assert.equal(nf.message, "timer 'x' not found");
  assert.ok(errorFromStatus(rpcError(Status.OUT_OF_RANGE, "gone")) instanceof OutOfRange);
  assert.equal(errorFromStatus(rpcError(Status.DATA_LOSS, "lost")).code, "DATA_LOSS");
});

test("the router prefers the leader and rotates past failed members", () => {
  const r = new Router("a:1, b:2,a:1");
  assert.deepEqual(r.addresses, ["a:1", "b:2"]);
  r.learn({
    node: "n1", cluster: "c", leader: "n3", leaderGrpcAddress: "c:3", term: 1, commitIndex: 1, appliedIndex: 1,
    members: [{ id: "n3", raftAddress: "", grpcAddress: "c:3", role: "leader", connected: true }],
    timers: {}, role: "follower", hasQuorum: true,
  });
  assert.deepEqual(r.addresses, ["a:1", "b:2", "c:3"]);
  assert.equal(r.pick(), "c:3");
  r.failed("c:3");
  assert.equal(r.leader, null);
  assert.ok(r.stale(30_000));
  assert.notEqual(r.pick(["a:1"]), "a:1");
  assert.throws(() => new Router([]), InvalidArgument);
});

test("an ambiguous failure is retried for idempotent calls only; a refused connection always", async () => {
  // Nothing listens on port 1: discovery fails at once and the attempts below are the test's own.
  const c = new Client(["127.0.0.1:1"], { token: "t", timeoutMs: 20_000, backoffBaseMs: 1, backoffMaxMs: 2 });
  try {
    let n = 0;
    const dropped = () => rpcError(Status.UNAVAILABLE, "Connection dropped");
    const [value, ambiguous] = await c.call("create", async () => {
      if (n++ === 0) throw dropped();
      return 42;
    });
    assert.deepEqual([value, ambiguous, n], [42, true, 2]);

    n = 0;
    const err = await c.call("extend", async () => { n++; throw dropped(); }, { safeOnly: true })
      .catch((e: unknown) => e);
    assert.ok(err instanceof Unavailable && err.ambiguous, String(err));
    assert.equal(n, 1);

    n = 0;
    const [again] = await c.call("extend", async () => {
      if (n++ === 0) throw rpcError(Status.UNAVAILABLE, "No connection established. Last error: connect ECONNREFUSED");
      return "ok";
    }, { safeOnly: true });
    assert.deepEqual([again, n], ["ok", 2]);

    n = 0;
    const final = await c.call("get", async () => { n++; throw rpcError(Status.NOT_FOUND, "gone"); })
      .catch((e: unknown) => e);
    assert.ok(final instanceof NotFound);
    assert.equal(n, 1);
  } finally {
    c.close();
  }
});

test("delivery, recurrence and graph fields of a spec go to the wire as the Python SDK sends them", () => {
  const hook = specToPb({ delayMs: 5, webhook: "https://example.com/h", webhookHeaders: { a: "b" }, maxAttempts: 4,
    backoffBaseMs: 1500, attemptTimeoutMs: 2000 }, "");
  assert.deepEqual(hook.webhook, { url: "https://example.com/h", headers: { a: "b" } });
  assert.deepEqual(hook.deliveryPolicy, { maxAttempts: 4, backoffBase: msToDuration(1500), attemptTimeout: msToDuration(2000) });
  assert.deepEqual(specToPb({ delayMs: 5, endpoint: "ep_1" }, "").endpoint, { id: "ep_1" });
  assert.deepEqual(specToPb({ delayMs: 5, queue: "jobs" }, "").queue, { queue: "jobs" });

  const rec = specToPb({ fireAt: 1000, cron: "0 9 * * *", timeZone: "UTC", until: 5000, maxCount: 3,
    catchUp: "ALL", overlap: "buffer-one", flexMs: 100 }, "");
  assert.equal(rec.cron, "0 9 * * *");
  assert.equal(rec.timeZone, "UTC");
  assert.deepEqual(rec.until, msToTimestamp(5000));
  assert.equal(rec.maxCount, 3);
  assert.equal(rec.catchUp, "CATCH_UP_POLICY_ALL");
  assert.equal(rec.overlap, "OVERLAP_POLICY_BUFFER_ONE");
  assert.deepEqual(rec.flex, msToDuration(100));
  assert.deepEqual(specToPb({ delayMs: 0, everyMs: 60_000 }, "").every, msToDuration(60_000));

  // With parents the deadline is optional, and delayMs is the delay after the condition.
  const child = specToPb({ after: "p1", on: "fired", delayMs: 250, escalate: [{ afterMs: 10, action: "x" }] }, "");
  assert.deepEqual(child.after, ["p1"]);
  assert.equal(child.delay, undefined);
  assert.deepEqual(child.afterDelay, msToDuration(250));
  assert.deepEqual(child.escalate, [{ after: msToDuration(10), action: Buffer.from("x") }]);

  for (const bad of [
    { delayMs: 1, webhook: "https://x", queue: "q" }, { delayMs: 1, endpoint: "ep_1", webhookHeaders: { a: "b" } },
    { delayMs: 1, maxAttempts: 2 }, { delayMs: 1, webhook: "https://x", maxAttempts: 0 }, { delayMs: 1, on: "fired" },
    { delayMs: 1, everyMs: 1000, catchUp: "sometimes" }, { delayMs: 1, overlap: "never" },
  ]) {
    assert.throws(() => specToPb(bad as never, ""), InvalidArgument, JSON.stringify(bad));
  }
});

test("a timer's view fields: delivery, schedule and graph as the proto has them", () => {
  const base = specToPb({ delayMs: 1 }, "");
  const pb = {
    id: "t", tenant: "x", name: "", fireAt: msToTimestamp(1000), payload: Buffer.alloc(0), labels: {}, action: Buffer.alloc(0),
    idempotencyKey: base.idempotencyKey, ackRequired: true, state: "TIMER_STATE_ARMED", revision: "2", createdAt: null,
    armedAt: null, firedAt: null, settledAt: null, attempts: 0, fireId: "0",
    webhook: { url: "https://h", headers: { k: "v" } }, queue: null, endpointId: "ep_1",
    deliveryPolicy: { maxAttempts: 5, backoffBase: msToDuration(1000), backoffCap: null, attemptTimeout: null, ackDeadline: null },
    deliveryAttempts: [{ attempt: 1, fireId: "9", at: msToTimestamp(2000), statusCode: 500, latencyMs: 3, errorClass: "http_status",
      responseBody: Buffer.from("no"), nextAttemptAt: null }],
    nextAttemptAt: msToTimestamp(3000), every: msToDuration(60_000), until: null, maxCount: 4, cron: "", timeZone: "",
    after: ["p"], on: "fired", mode: "any", afterDelay: msToDuration(5), onParentCancel: "release", escalate: [],
    waitingOn: ["p"], dependency: "waiting", children: ["c"], escalated: 0, paused: true,
    catchUp: "CATCH_UP_POLICY_SKIP", overlap: "OVERLAP_POLICY_ALLOW_ALL", triggered: 2, skippedOccurrences: "7",
    flex: null, pendingFireIds: ["11", "12"], buffered: false,
  };
  const t = timerFromPb(pb as never);
  assert.equal(t.webhook, "https://h");
  assert.equal(t.endpoint, "ep_1");
  assert.equal(t.maxAttempts, 5);
  assert.equal(t.deliveryPolicy?.backoffBaseMs, 1000);
  assert.deepEqual(t.deliveryAttempts.map((a) => [a.fireId, a.statusCode, a.errorClass]), [[9, 500, "http_status"]]);
  assert.equal(t.nextAttemptAt?.getTime(), 3000);
  assert.deepEqual([t.everyMs, t.maxCount, t.paused, t.catchUp, t.overlap, t.triggered, t.skipped, t.flexMs],
    [60_000, 4, true, "skip", "allow_all", 2, 7, null]);
  assert.deepEqual(t.pendingFireIds, [11, 12]);
  assert.deepEqual([t.after, t.on, t.mode, t.afterDelayMs, t.onParentCancel, t.waitingOn, t.dependency, t.children],
    [["p"], "fired", "any", 5, "release", ["p"], "waiting", ["c"]]);
});

test("bulk selections: ids or a selector, and exactly one change", () => {
  assert.deepEqual(bulkRequest({ ids: "a" }, "t").ids, ["a"]);
  assert.equal(bulkRequest({ selector: { team: "ops", env: "prod" } }, "t").labelSelector, "team=ops,env=prod");
  assert.throws(() => bulkRequest({}, "t"), InvalidArgument);
  assert.throws(() => bulkRequest({ ids: ["a"], selector: "x=y" }, "t"), InvalidArgument);
  assert.deepEqual(rescheduleChange({ extendByMs: 1000 }), { extendBy: msToDuration(1000) });
  assert.throws(() => rescheduleChange({}), InvalidArgument);
  assert.throws(() => rescheduleChange({ delayMs: 1, extendByMs: 1 }), InvalidArgument);
});

test("webhook signatures: the Python SDK's vector, verified; a wrong secret, a stale timestamp refused", () => {
  const secret = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=";
  const body = '{"a":1}';
  // api/client/webhooks.py: sign(secret, "msg_1", 1700000000, b'{"a":1}')
  const sig = "v1,Wawk9A0NrnybA9mBcX3CQCb1zuKutWQkqd8/KN8MaXs=";
  assert.equal(signWebhook(secret, "msg_1", 1700000000, body), sig);
  const headers = { "Webhook-Id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": `v1,bm9wZQ== ${sig}` };
  assert.equal(verifyWebhook(secret, headers, Buffer.from(body), { nowMs: 1700000000_000 }), "msg_1");
  assert.equal(verifyWebhook(secret, new Headers(headers), body, { nowMs: 1700000100_000 }), "msg_1");
  assert.throws(() => verifyWebhook(newWebhookSecret(), headers, body, { nowMs: 1700000000_000 }), WebhookVerificationError);
  assert.throws(() => verifyWebhook(secret, headers, body + " ", { nowMs: 1700000000_000 }), WebhookVerificationError);
  assert.throws(() => verifyWebhook(secret, headers, body, { nowMs: 1700000301_000 }), /more than 300 s/);
  assert.throws(() => verifyWebhook(secret, { "webhook-id": "msg_1" }, body), /missing/);
  assert.match(newWebhookSecret(), /^whsec_[A-Za-z0-9+/]{43}=$/);
});

test("parseWebhook: the Python dispatcher's occurrence and escalation envelopes, typed; unsigned or foreign bodies refused", () => {
  const secret = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=";
  // api/dispatcher.py envelope() of an occurrence "beat@7" and of escalation step 2 "pager@12", signed by sign()
  const occ = '{"data":{"attempt":1,"fire_id":7,"fired_at":"2023-11-14T22:13:20.003Z","labels":{"team":"ops"},"name":"","payload_base64":"eyJuIjoxfQ==","recurring_timer_id":"beat","scheduled_at":"2023-11-14T22:13:20Z","schema":"minoots.webhook.v1","tenant":"default","timer_id":"beat@7"},"timestamp":"2023-11-14T22:13:20.003Z","type":"timer.fired"}';
  const esc = '{"data":{"action_base64":"d2FrZQ==","attempt":1,"escalated_timer_id":"pager","escalation_step":2,"fire_id":3,"fired_at":"2023-11-14T22:13:20.003Z","labels":{},"name":"","payload_base64":"","scheduled_at":"2023-11-14T22:13:20Z","schema":"minoots.webhook.v1","tenant":"default","timer_id":"pager@12"},"timestamp":"2023-11-14T22:13:20.003Z","type":"timer.escalated"}';
  const at = { nowMs: 1700000000_000 };
  const h = (id: string, sig: string) => ({ "webhook-id": id, "webhook-timestamp": "1700000000", "webhook-signature": sig });
  const o = parseWebhook(secret, h("msg_7", "v1,AYgGT3xTVSVLaKagllsUKS7T1NeSmt1qNKF6BRgFs8Q="), Buffer.from(occ), at);
  assert.equal(o.id, "msg_7");
  assert.equal(o.envelope.type, "timer.fired");
  assert.equal(o.envelope.data.recurring_timer_id, "beat");
  assert.equal(o.envelope.data.fire_id, 7);
  assert.deepEqual(o.envelope.data.labels, { team: "ops" });
  assert.equal(Buffer.from(o.envelope.data.payload_base64, "base64").toString(), '{"n":1}');
  const e = parseWebhook(secret, h("msg_3", "v1,R1W1buGL/oYoUJ6GJntqQNwDLYnJ/8xTuIA4EmNtHEo="), esc, at);
  assert.equal(e.envelope.type, "timer.escalated");
  assert.equal(e.envelope.data.escalated_timer_id, "pager");
  assert.equal(e.envelope.data.escalation_step, 2);
  assert.equal(Buffer.from(e.envelope.data.action_base64 ?? "", "base64").toString(), "wake");
  assert.equal(e.envelope.data.recurring_timer_id, undefined);
  assert.throws(() => parseWebhook(secret, h("msg_7", "v1,AYgGT3xTVSVLaKagllsUKS7T1NeSmt1qNKF6BRgFs8Q="), occ.replace("beat", "evil"), at),
                WebhookVerificationError);
  const notJson = "hello";
  assert.throws(() => parseWebhook(secret, h("m", signWebhook(secret, "m", 1700000000, notJson)), notJson, at), /not JSON/);
  const foreign = '{"type":"x","data":{"schema":"other"}}';
  assert.throws(() => parseWebhook(secret, h("m", signWebhook(secret, "m", 1700000000, foreign)), foreign, at), /minoots.webhook.v1/);
});
