/** A durable subscription consumed with commits: the cluster keeps the cursor; a new consumer resumes there. */
import { after, test } from "node:test";
import * as assert from "node:assert/strict";
import { AlreadyExists, type Event } from "../src/index";
import { client, tenant } from "./support";

const T = tenant("ts-subs");
const c = client({ tenant: T });
after(() => c.close());

async function take(sub: AsyncIterator<Event>, n: number): Promise<Event[]> {
  const out: Event[] = [];
  while (out.length < n) {
    const r = await sub.next();
    assert.ok(!r.done, "the subscription ended early");
    out.push(r.value);
  }
  return out;
}

test("a subscription is consumed with commits and resumed by a new consumer", { timeout: 120_000 }, async () => {
  const info = await c.createSubscription("billing", { kinds: ["fired"] });
  assert.equal(info.name, "billing");
  assert.deepEqual(info.kinds, ["FIRED"]);
  assert.equal(info.commits, 0);
  await assert.rejects(c.createSubscription("billing"), AlreadyExists);

  const timers = await c.createTimers(Array.from({ length: 5 }, () => ({ delayMs: 1 })));
  const ids = new Set(timers.map((t) => t.id));

  const sub = await c.subscribe("billing", { commitEvery: 1000, commitIntervalMs: 3_600_000 });
  const firstThree = await take(sub, 3);
  assert.ok(firstThree.every((e) => e.kind === "FIRED" && ids.has(e.timerId)));
  const cursor = await sub.commit();
  assert.equal(cursor, firstThree[2].sequence + 1);
  assert.equal((await c.getSubscription("billing")).cursor, cursor);
  sub.watch.close();   // a consumer that dies here: the next one starts at the committed cursor

  const sub2 = await c.subscribe("billing", { commitEvery: 1000, commitIntervalMs: 3_600_000 });
  const lastTwo = await take(sub2, 2);
  assert.ok(lastTwo[0].sequence >= cursor);
  const all = [...firstThree, ...lastTwo];
  assert.deepEqual(new Set(all.map((e) => e.timerId)), ids);       // each of the 5 fires, once
  assert.deepEqual(all.map((e) => e.sequence), [...all.map((e) => e.sequence)].sort((x, y) => x - y));
  await sub2.close();                                                // commits what it handed out
  const done = await c.getSubscription("billing");
  assert.equal(done.cursor, lastTwo[1].sequence + 1);
  assert.ok(done.commits >= 2);
  assert.equal(done.lost, 0);
  await c.deleteSubscription("billing");
});
