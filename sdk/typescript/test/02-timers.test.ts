/** Timers against the real cluster: create, get, list, cancel, reschedule, extend, ack; idempotent retries; typed errors. */
import { after, test } from "node:test";
import * as assert from "node:assert/strict";
import {
  Client, FailedPrecondition, InvalidArgument, MinootsError, NotFound, Unauthenticated, type Timer,
} from "../src/index";
import { client, nodes, tenant, waitState } from "./support";

const T = tenant("ts-timers");
const c = client({ tenant: T });
after(() => c.close());

test("create, get, list and cancel", { timeout: 120_000 }, async () => {
  const fireAt = new Date(Date.now() + 3_600_000);
  const a = await c.createTimer({ fireAt, name: "a", payload: "hello", labels: { team: "infra" } });
  assert.equal(a.state, "ARMED");
  assert.equal(a.created, true);
  assert.equal(a.tenant, T);
  assert.equal(a.fireAt.getTime(), fireAt.getTime());
  const b = await c.createTimer({ delayMs: 3_600_000, payload: new Uint8Array([0, 255]), labels: { team: "ops" } });

  const got = await c.getTimer(a.id);
  assert.equal(got.id, a.id);
  assert.equal(got.name, "a");
  assert.equal(got.payload.toString("utf8"), "hello");
  assert.deepEqual(got.labels, { team: "infra" });
  assert.deepEqual([...(await c.getTimer(b.id)).payload], [0, 255]);

  const more = await c.createTimers(Array.from({ length: 5 }, () => ({ delayMs: 3_600_000, labels: { team: "ops" } })));
  assert.equal(more.length, 5);
  assert.ok(more.every((t) => t.created === true && t.state === "ARMED"));

  // Pages of 2: the iterator follows the page tokens to the end.
  const pages: Timer[][] = [];
  for await (const page of c.listTimerPages({ pageSize: 2 })) pages.push(page);
  assert.ok(pages.length >= 4, `expected 4 pages of 2, got ${pages.length}`);
  const listed = pages.flat().map((t) => t.id).sort();
  assert.deepEqual(listed, [a.id, b.id, ...more.map((t) => t.id)].sort());

  const ops: string[] = [];
  for await (const t of c.listTimers({ labels: { team: "ops" }, pageSize: 2 })) ops.push(t.id);
  assert.deepEqual(ops.sort(), [b.id, ...more.map((t) => t.id)].sort());
  let limited = 0;
  for await (const _ of c.listTimers({ limit: 3 })) limited++;
  assert.equal(limited, 3);

  const cancelled = await c.cancelTimer(a.id);
  assert.equal(cancelled.state, "CANCELLED");
  const states: string[] = [];
  for await (const t of c.listTimers({ states: ["cancelled"] })) states.push(t.id);
  assert.deepEqual(states, [a.id]);
});

test("reschedule to an absolute time, extend by a delta", { timeout: 120_000 }, async () => {
  const t = await c.createTimer({ delayMs: 3_600_000 });
  const target = new Date(Date.now() + 7_200_000);
  const moved = await c.rescheduleTimer(t.id, target);
  assert.equal(moved.fireAt.getTime(), target.getTime());
  const extended = await c.extendTimer(t.id, 60_000);
  assert.equal(extended.fireAt.getTime(), target.getTime() + 60_000);
  assert.ok(extended.revision > t.revision);
});

test("an ack-required timer fires, waits, and settles on ack", { timeout: 120_000 }, async () => {
  const t = await c.createTimer({ delayMs: 1, ackRequired: true });
  const fired = await waitState(c, t.id, "FIRED");
  assert.ok(fired.fireId !== null && fired.fireId > 0);
  assert.ok(fired.firedAt !== null);
  const acked = await c.ackTimer(t.id, fired.fireId as number);
  assert.equal(acked.state, "SETTLED");
  assert.equal(acked.fireId, fired.fireId);
  await assert.rejects(c.ackTimer(t.id, fired.fireId as number), FailedPrecondition);
});

test("a retried create returns the first attempt's timer, never a second one", { timeout: 120_000 }, async () => {
  const first = await c.createTimer({ delayMs: 3_600_000, idempotencyKey: "order-42", payload: "v1" });
  const again = await c.createTimer({ delayMs: 3_600_000, idempotencyKey: "order-42", payload: "v1" });
  assert.equal(first.created, true);
  assert.equal(again.created, false);
  assert.equal(again.id, first.id);

  // Without a key the client-side id is the key: resending the same spec is a no-op.
  const id = `ts-${Date.now().toString(36)}`;
  const byId = await c.createTimer({ id, delayMs: 3_600_000 });
  const byIdAgain = await c.createTimer({ id, delayMs: 3_600_000 });
  assert.deepEqual([byId.created, byIdAgain.created, byIdAgain.id], [true, false, id]);

  // With generated ids turned off the server names the timer (such a create is retried
  // only when it certainly never reached Raft).
  const bare = new Client(nodes(), { tenant: T, generateIds: false });
  try {
    const named = await bare.createTimer({ delayMs: 3_600_000 });
    assert.match(named.id, /^[0-9a-f]{32}$/);
    assert.equal(named.idempotencyKey, null);
  } finally {
    bare.close();
  }

  // A batch resent as a whole (what the SDK does after an ambiguous failure) makes nothing twice.
  const specs = Array.from({ length: 3 }, (_, i) => ({ id: `${id}-${i}`, delayMs: 3_600_000 }));
  const batch = await c.createTimers(specs);
  const batchAgain = await c.createTimers(specs);
  assert.deepEqual(batch.map((t) => t.created), [true, true, true]);
  assert.deepEqual(batchAgain.map((t) => t.created), [false, false, false]);
  let n = 0;
  for await (const t of c.listTimers()) if (t.id.startsWith(id)) n++;
  assert.equal(n, 4);
});

test("gRPC status codes come back as typed errors", { timeout: 120_000 }, async () => {
  const missing = await c.getTimer("no-such-timer").catch((e: unknown) => e);
  assert.ok(missing instanceof NotFound, String(missing));
  assert.ok(missing instanceof MinootsError);
  assert.equal(missing.code, "NOT_FOUND");
  assert.match(missing.message, /no-such-timer/);

  const t = await c.createTimer({ delayMs: 3_600_000 });
  await c.cancelTimer(t.id);
  const twice = await c.cancelTimer(t.id).catch((e: unknown) => e);
  assert.ok(twice instanceof FailedPrecondition, String(twice));

  const big = await c.createTimer({ delayMs: 1000, payload: new Uint8Array(65 * 1024) }).catch((e: unknown) => e);
  assert.ok(big instanceof InvalidArgument, String(big));
  assert.match(big.message, /payload/);

  const stranger = new Client(nodes(), { token: "mnt_0000000000000000_not-a-real-token", timeoutMs: 10_000 });
  try {
    const denied = await stranger.getTimer(t.id, { tenant: T }).catch((e: unknown) => e);
    assert.ok(denied instanceof Unauthenticated, String(denied));
  } finally {
    stranger.close();
  }
});

test("a dead seed is skipped: the client discovers the members and the leader from the others", { timeout: 120_000 }, async () => {
  const dead = "127.0.0.1:1";   // nothing listens on port 1: connection refused
  const c2 = new Client([dead, ...nodes()], { tenant: T });
  try {
    const t = await c2.createTimer({ delayMs: 3_600_000 });
    assert.equal((await c2.getTimer(t.id)).id, t.id);
    const st = await c2.status();
    assert.ok(st.leaderGrpcAddress !== null && nodes().includes(st.leaderGrpcAddress));
    assert.equal(c2.router.leader, st.leaderGrpcAddress);
    assert.equal(st.members.length, 3);
  } finally {
    c2.close();
  }
});
