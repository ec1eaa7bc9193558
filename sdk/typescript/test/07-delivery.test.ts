/**
 * Delivery and schedules against the real cluster: a webhook timer delivered to a real
 * node:http receiver on 127.0.0.1 and its Standard Webhooks signature checked here with
 * node:crypto; managed endpoints (add, get, list, rotate, remove); dead letters (list, replay,
 * purge); a pull queue (lease, extend, nack, ack, stream, stats); recurring timers (every,
 * cron, next occurrences, pause, resume, trigger); dependencies and escalation; bulk cancel
 * and reschedule; delete; typed errors. (The cluster allows webhooks to 127.0.0.1:
 * tests/test_ts_sdk.py starts it with --webhook-allow-hosts 127.0.0.1.)
 */
import { after, before, test } from "node:test";
import * as assert from "node:assert/strict";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import {
  FailedPrecondition, InvalidArgument, MinootsError, NotFound, type Timer, WebhookVerificationError, runWorker,
  verifyWebhook,
} from "../src/index";
import { client, tenant, waitState } from "./support";

const T = tenant("ts-delivery");
const c = client({ tenant: T });

interface Received { path: string; headers: IncomingHttpHeaders; body: Buffer }
const received: Received[] = [];
let failing = true;          // what /fail answers: 500 while true, else 200
let server: Server;
let base = "";

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (b: Buffer) => chunks.push(b));
    req.on("end", () => {
      received.push({ path: req.url ?? "", headers: req.headers, body: Buffer.concat(chunks) });
      res.statusCode = req.url === "/fail" && failing ? 500 : 200;
      res.end("ok");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  c.close();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

/** Standard Webhooks: any v1 signature in the header is HMAC-SHA256(key, "id.timestamp.body") for the secret's key. */
function verify(secret: string, r: Received): boolean {
  const id = String(r.headers["webhook-id"] ?? "");
  const ts = String(r.headers["webhook-timestamp"] ?? "");
  const sigs = String(r.headers["webhook-signature"] ?? "");
  if (!id || !ts || !sigs) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key).update(`${id}.${ts}.`).update(r.body).digest();
  return sigs.split(" ").some((s) => {
    const [version, value] = s.split(",", 2);
    const got = Buffer.from(value ?? "", "base64");
    return version === "v1" && got.length === expected.length && timingSafeEqual(got, expected);
  });
}

/** The requests received for timer `id` (bounded wait: a guard against hanging). */
async function requestsFor(id: string, count = 1): Promise<Received[]> {
  for (let i = 0; i < 600; i++) {
    const mine = received.filter((r) => JSON.parse(r.body.toString("utf8")).data?.timer_id === id);
    if (mine.length >= count) return mine;
    await sleep(50);
  }
  throw new Error(`no webhook for timer ${id} reached the receiver`);
}

async function until<X>(what: string, fn: () => Promise<X | null | undefined | false>): Promise<X> {
  for (let i = 0; i < 600; i++) {
    const v = await fn();
    if (v) return v;
    await sleep(50);
  }
  throw new Error(`${what} never happened`);
}

test("a webhook timer is POSTed to a real receiver, signed with the tenant's secret", { timeout: 120_000 }, async () => {
  const secret = await c.rotateWebhookSecret();
  assert.match(secret, /^whsec_[A-Za-z0-9+/=]+$/);
  const t = await c.createTimer({
    delayMs: 1, name: "hook", payload: "hello hook", webhook: `${base}/hook`, webhookHeaders: { "x-test": "yes" },
    maxAttempts: 3, backoffBaseMs: 100, backoffCapMs: 1000, attemptTimeoutMs: 5000,
  });
  assert.equal(t.webhook, `${base}/hook`);
  assert.deepEqual(t.webhookHeaders, { "x-test": "yes" });
  assert.equal(t.maxAttempts, 3);
  assert.equal(t.deliveryPolicy?.backoffBaseMs, 100);
  assert.equal(t.deliveryPolicy?.attemptTimeoutMs, 5000);
  assert.equal(t.queue, null);

  const settled = await waitState(c, t.id, "SETTLED");
  const [req] = await requestsFor(t.id);
  assert.equal(req.path, "/hook");
  assert.equal(req.headers["x-test"], "yes");
  assert.ok(verify(secret, req), "the signature verifies with the tenant's secret");
  assert.ok(!verify(secret.slice(0, -4) + "AAA=", req), "and not with another one");
  assert.equal(verifyWebhook(secret, req.headers, req.body), req.headers["webhook-id"]);   // the SDK's helper agrees
  assert.throws(() => verifyWebhook(secret.slice(0, -4) + "AAA=", req.headers, req.body), WebhookVerificationError);
  const body = JSON.parse(req.body.toString("utf8"));
  assert.equal(body.type, "timer.fired");
  assert.equal(Buffer.from(body.data.payload_base64, "base64").toString("utf8"), "hello hook");
  assert.equal(body.data.fire_id, settled.fireId);
  assert.ok(settled.deliveryAttempts.length >= 1);
  const lastAttempt = settled.deliveryAttempts[settled.deliveryAttempts.length - 1];
  assert.equal(lastAttempt.statusCode, 200);
  assert.equal(lastAttempt.errorClass, "");
});

test("endpoints: add (secret shown once), get, list, a timer signed with its secret, rotate, remove",
  { timeout: 120_000 }, async () => {
    const ep = await c.addEndpoint(`${base}/ep`, { headers: { "x-ep": "1" }, attemptTimeoutMs: 5000 });
    assert.match(ep.id, /^ep_/);
    assert.match(ep.secret ?? "", /^whsec_/);
    assert.equal(ep.timeoutMs, 5000);
    const got = await c.getEndpoint(ep.id);
    assert.equal(got.url, `${base}/ep`);
    assert.equal(got.secret, null);
    assert.deepEqual(got.headers, { "x-ep": "1" });
    assert.deepEqual((await c.listEndpoints()).map((e) => e.id), [ep.id]);

    const t = await c.createTimer({ delayMs: 1, endpoint: ep.id });
    assert.equal(t.endpoint, ep.id);
    await waitState(c, t.id, "SETTLED");
    const [req] = await requestsFor(t.id);
    assert.equal(req.path, "/ep");
    assert.equal(req.headers["x-ep"], "1");
    assert.ok(verify(ep.secret as string, req));

    const rotated = await c.rotateEndpointSecret(ep.id);
    assert.match(rotated.secret ?? "", /^whsec_/);
    assert.notEqual(rotated.secret, ep.secret);
    assert.ok(rotated.secretRotatedAt !== null);
    const t2 = await c.createTimer({ delayMs: 1, endpoint: ep.id });
    await waitState(c, t2.id, "SETTLED");
    const [req2] = await requestsFor(t2.id);
    assert.ok(verify(rotated.secret as string, req2), "signed with the new secret");

    // In use by a timer that has not ended: refused, until it is cancelled.
    const pending = await c.createTimer({ delayMs: 3_600_000, endpoint: ep.id });
    await assert.rejects(c.removeEndpoint(ep.id), FailedPrecondition);
    await c.cancelTimer(pending.id);
    const removed = await c.removeEndpoint(ep.id);
    assert.equal(removed.id, ep.id);
    await assert.rejects(c.getEndpoint(ep.id), NotFound);
    assert.deepEqual(await c.listEndpoints(), []);
  });

test("dead letters: list, replay (then delivered), purge", { timeout: 120_000 }, async () => {
  await c.rotateWebhookSecret();
  failing = true;
  const spec = { delayMs: 1, webhook: `${base}/fail`, maxAttempts: 1, labels: { dl: "yes" } };
  const a = await c.createTimer(spec);
  const b = await c.createTimer(spec);
  const dead = await waitState(c, a.id, "DEAD_LETTERED");
  await waitState(c, b.id, "DEAD_LETTERED");
  assert.equal(dead.deliveryAttempts[dead.deliveryAttempts.length - 1].statusCode, 500);

  const listed = await c.listDeadLetters({ labels: { dl: "yes" } });
  assert.deepEqual(listed.timers.map((t) => t.id).sort(), [a.id, b.id].sort());
  assert.equal(listed.truncated, false);
  assert.ok(listed.timers.every((t) => t.state === "DEAD_LETTERED"));

  failing = false;
  const replayed = await c.replayDeadLetters({ ids: [a.id] });
  assert.deepEqual(replayed.ok, [a.id]);
  await waitState(c, a.id, "SETTLED");
  const purged = await c.purgeDeadLetters({ ids: [b.id, a.id] });
  assert.deepEqual(purged.ok, [b.id]);                       // a is no longer dead-lettered
  assert.equal(purged.results.find((r) => r.id === a.id)?.ok, false);
  await assert.rejects(c.getTimer(b.id), NotFound);
  assert.deepEqual((await c.listDeadLetters({ labels: { dl: "yes" } })).timers, []);
});

test("delivery defaults: set, read, used by a new timer, cleared; a dead letter redriven", { timeout: 120_000 },
  async () => {
    await c.rotateWebhookSecret();
    assert.equal((await c.getDeliveryDefaults()).builtIn, true);
    const set = await c.setDeliveryDefaults({ maxAttempts: 1, backoffBaseMs: 50 });
    assert.deepEqual([set.builtIn, set.maxAttempts, set.backoffBaseMs], [false, 1, 50]);
    assert.equal((await c.getDeliveryDefaults()).maxAttempts, 1);
    failing = true;
    const t = await c.createTimer({ delayMs: 1, webhook: `${base}/fail` });
    const dead = await waitState(c, t.id, "DEAD_LETTERED");
    assert.equal(dead.deliveryAttempts.length, 1);                 // the tenant's default: one attempt
    failing = false;
    const redriven = await c.redriveTimer(t.id);
    assert.notEqual(redriven.state, "DEAD_LETTERED");
    await waitState(c, t.id, "SETTLED");
    const [first, second] = await requestsFor(t.id, 2);
    assert.equal(first.headers["webhook-id"], second.headers["webhook-id"]);   // the same webhook-id
    assert.equal((await c.setDeliveryDefaults({ clear: true })).builtIn, true);
  });

test("a pull queue: lease, extend, nack, lease again, ack; a lease stream; queue stats", { timeout: 120_000 },
  async () => {
    const q = "jobs";
    const t = await c.createTimer({ delayMs: 1, queue: q, maxAttempts: 3, backoffBaseMs: 10, backoffCapMs: 10 });
    assert.equal(t.queue, q);
    const [lease] = await until("a lease", async () => {
      const got = await c.leaseTimers(q, { waitMs: 2000, visibilityMs: 30_000 });
      return got.length ? got : null;
    });
    assert.equal(lease.timer.id, t.id);
    assert.ok(lease.leaseId.length > 0);
    assert.deepEqual((await c.queueStats(q)).map((s) => [s.queue, s.leased, s.visible]), [[q, 1, 0]]);
    const extended = await c.extendLease(lease, 60_000);
    assert.ok((extended.expiresAt as Date).getTime() > (lease.expiresAt as Date).getTime());

    const nacked = await c.nackLease(lease);
    assert.notEqual(nacked.state, "SETTLED");
    const [again] = await until("a second lease", async () => {
      const got = await c.leaseTimers(q, { waitMs: 2000 });
      return got.length ? got : null;
    });
    assert.equal(again.timer.id, t.id);
    assert.equal(again.attempt, lease.attempt + 1);
    const acked = await c.ackLease(again);
    assert.equal(acked.state, "SETTLED");

    const t2 = await c.createTimer({ delayMs: 1, queue: q });
    for await (const l of c.streamLeases(q, { maxOutstanding: 1 })) {
      assert.equal(l.timer.id, t2.id);
      assert.equal((await c.ackLease(l)).state, "SETTLED");
      break;
    }
    // runWorker: a handler that throws once (nack, retried), then succeeds (ack).
    const w = await c.createTimer({ delayMs: 1, queue: q, maxAttempts: 3, backoffBaseMs: 10, backoffCapMs: 10 });
    const stop = new AbortController();
    const seen: string[] = [];
    const acks = await runWorker(c, q, (timer) => {
      seen.push(timer.id);
      if (seen.length === 1) throw new Error("first try fails");
      stop.abort();
    }, { signal: stop.signal, waitMs: 1000 });
    assert.equal(acks, 1);
    assert.deepEqual(seen, [w.id, w.id]);
    const worked = await c.getTimer(w.id);
    assert.equal(worked.state, "SETTLED");
    const [stats] = await c.queueStats(q);
    assert.deepEqual([stats.visible, stats.leased, stats.waiting, stats.dead], [0, 0, 0, 0]);
  });

test("recurring timers: every and cron, next occurrences, pause, resume, trigger", { timeout: 120_000 }, async () => {
  const r = await c.createTimer({ delayMs: 3_600_000, everyMs: 60_000, maxCount: 5, catchUp: "all", flexMs: 0 });
  assert.equal(r.everyMs, 60_000);
  assert.equal(r.maxCount, 5);
  assert.equal(r.catchUp, "all");
  const occ = await c.nextOccurrences(r.id, 3);
  assert.deepEqual(occ.map((d) => d.getTime() - occ[0].getTime()), [0, 60_000, 120_000]);
  assert.equal(occ[0].getTime(), r.fireAt.getTime());

  const cron = await c.createTimer({ delayMs: 0, cron: "30 9 * * *", timeZone: "Europe/Paris", until: Date.now() + 30 * 86_400_000 });
  assert.equal(cron.cron, "30 9 * * *");
  assert.equal(cron.timeZone, "Europe/Paris");
  assert.ok(cron.until !== null);
  const days = await c.nextOccurrences(cron.id, 4);
  assert.equal(days.length, 4);
  const paris = new Intl.DateTimeFormat("en-GB", { timeZone: "Europe/Paris", hour: "2-digit", minute: "2-digit" });
  assert.deepEqual(days.map((d) => paris.format(d)), ["09:30", "09:30", "09:30", "09:30"]);

  const paused = await c.pauseTimer(r.id);
  assert.equal(paused.paused, true);
  assert.equal(paused.state, "SCHEDULED");
  await assert.rejects(c.pauseTimer(r.id), FailedPrecondition);
  const resumed = await c.resumeTimer(r.id);
  assert.equal(resumed.paused, false);
  assert.equal(resumed.state, "ARMED");
  const triggered = await c.triggerTimer(r.id);
  assert.equal(triggered.triggered, 1);
  const oneShot = await c.createTimer({ delayMs: 3_600_000 });
  await assert.rejects(c.pauseTimer(oneShot.id), FailedPrecondition);
  await c.cancelTimers({ ids: [r.id, cron.id, oneShot.id] });
});

test("dependencies: a child waits for its parent's condition; an escalation ladder fires its steps",
  { timeout: 120_000 }, async () => {
    const parent = await c.createTimer({ delayMs: 3_600_000 });
    const child = await c.createTimer({ after: parent.id, on: "cancelled", delayMs: 1 });
    assert.equal(child.state, "SCHEDULED");
    assert.deepEqual(child.after, [parent.id]);
    assert.deepEqual(child.waitingOn, [parent.id]);
    assert.equal(child.on, "cancelled");
    assert.equal(child.afterDelayMs, 1);
    assert.deepEqual((await c.getTimer(parent.id)).children, [child.id]);
    assert.deepEqual((await c.timerGraph(parent.id)).map((n) => [n.depth, n.timer.id]), [[0, parent.id], [1, child.id]]);
    await c.cancelTimer(parent.id);
    const done = await waitState(c, child.id, "SETTLED");
    assert.deepEqual(done.waitingOn, []);
    assert.equal(done.dependency, "met");

    const e = await c.createTimer({
      delayMs: 1, ackRequired: true,
      escalate: [{ afterMs: 100, action: "page-oncall" }, { afterMs: 200, action: "page-boss" }],
    });
    assert.deepEqual(e.escalate.map((s) => [s.afterMs, s.action.toString("utf8")]),
      [[100, "page-oncall"], [200, "page-boss"]]);
    const fired = await waitState(c, e.id, "FIRED");
    const escalated = await until("both escalation steps", async () => {
      const x = await c.getTimer(e.id);
      return x.escalated === 2 ? x : null;
    });
    assert.equal(escalated.state, "FIRED");
    assert.equal((await c.ackTimer(e.id, fired.fireId)).state, "SETTLED");
  });

test("bulk reschedule and cancel by ids or selector; delete a timer that ended", { timeout: 120_000 }, async () => {
  const made = await c.createTimers([1, 2, 3].map(() => ({ delayMs: 3_600_000, labels: { bulk: "yes" } })));
  const ids = made.map((t) => t.id);
  const target = Date.now() + 7_200_000;
  const moved = await c.rescheduleTimers({ ids: ids.slice(0, 2), fireAt: target });
  assert.deepEqual(moved.map((r) => [r.code, r.timer?.fireAt.getTime()]), [["OK", target], ["OK", target]]);
  const extended = await c.rescheduleTimers({ selector: { bulk: "yes" }, extendByMs: 1000 });
  assert.equal(extended.length, 3);
  assert.ok(extended.every((r) => r.code === "OK"));
  const missing = await c.cancelTimers({ ids: ["no-such-timer"] });
  assert.equal(missing[0].code, "NOT_FOUND");
  assert.equal(missing[0].timer, null);
  await assert.rejects(c.deleteTimer(ids[0]), FailedPrecondition);       // still armed
  const cancelled = await c.cancelTimers({ selector: "bulk=yes" });
  assert.deepEqual(cancelled.map((r) => r.id).sort(), [...ids].sort());
  assert.ok(cancelled.every((r) => r.code === "OK" && r.timer?.state === "CANCELLED"));
  const deleted = await c.deleteTimer(ids[0]);
  assert.equal(deleted.id, ids[0]);
  await assert.rejects(c.getTimer(ids[0]), NotFound);
});

test("bad input: typed errors from the SDK and from the server", { timeout: 120_000 }, async () => {
  // Server-side validation, mapped to the SDK's typed errors.
  await assert.rejects(c.createTimer({ delayMs: 0, cron: "not a cron", timeZone: "UTC" }), InvalidArgument);
  await assert.rejects(c.createTimer({ delayMs: 0, cron: "0 9 * * *" }), InvalidArgument);    // no time zone
  await assert.rejects(c.createTimer({ delayMs: 0, cron: "0 9 * * *", timeZone: "Mars/Olympus" }), InvalidArgument);
  await assert.rejects(c.createTimer({ delayMs: 1000, everyMs: 10 }), InvalidArgument);       // under 1 s
  await assert.rejects(c.createTimer({ delayMs: 1000, webhook: "ftp://example.com/x" }), InvalidArgument);
  await assert.rejects(c.createTimer({ after: "no-such-parent" }), NotFound);
  const endpointErr = await c.createTimer({ delayMs: 1000, endpoint: "ep_0000000000000000" }).catch((e) => e);
  assert.ok(endpointErr instanceof MinootsError && ["NOT_FOUND", "INVALID_ARGUMENT"].includes(endpointErr.code),
    String(endpointErr));
  await assert.rejects(c.rotateEndpointSecret("ep_0000000000000000"), NotFound);
  await assert.rejects(c.nextOccurrences("no-such-timer", 1), NotFound);
  // Client-side, as the Python SDK checks them.
  await assert.rejects(c.createTimer({ delayMs: 1, webhook: `${base}/x`, queue: "q" }), InvalidArgument);
  await assert.rejects(c.createTimer({ delayMs: 1, maxAttempts: 3 }), InvalidArgument);
  await assert.rejects(c.createTimer({ delayMs: 1, on: "fired" }), InvalidArgument);
  await assert.rejects(c.createTimer({ delayMs: 1, queue: "q", catchUp: "sometimes" }), InvalidArgument);
  await assert.rejects(c.nextOccurrences("x", 0), InvalidArgument);
  await assert.rejects(c.cancelTimers({}), InvalidArgument);
  await assert.rejects(c.rescheduleTimers({ ids: ["x"] }), InvalidArgument);
  const timers: Timer[] = [];
  for await (const t of c.listTimers({ states: ["armed"] })) timers.push(t);
  assert.deepEqual(timers, [], "nothing was half-created by the refused calls");
});
