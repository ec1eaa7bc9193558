/**
 * The watch survives its node's death: the pytest side kills the leader the watch streams
 * from (on this test's request), and the watch resumes from its cursor on another member,
 * with no duplicate and no gap in the sequence numbers.
 */
import { after, test } from "node:test";
import * as assert from "node:assert/strict";
import type { Event, Watch } from "../src/index";
import { client, control, tenant, waitState } from "./support";

const T = tenant("ts-watch");
const c = client({ tenant: T, timeoutMs: 90_000 });   // a bound for the election on a loaded machine
after(() => c.close());

/** Read `w` into `seen` until a CREATED event of every id in `ids` is among them. */
async function readCreated(w: Watch, seen: Event[], ids: string[]): Promise<void> {
  const want = new Set(ids);
  while (want.size) {
    const r = await w.next();
    assert.ok(!r.done, "the watch ended");
    seen.push(r.value);
    if (r.value.kind === "CREATED") want.delete(r.value.timerId);
  }
}

test("a watch resumes from its cursor on another member after the leader is killed", { timeout: 300_000 }, async () => {
  // A known starting sequence: the FIRED event of an ack-required timer (its fireId).
  const start = await c.createTimer({ delayMs: 1, ackRequired: true });
  const fired = await waitState(c, start.id, "FIRED");
  const from = fired.fireId as number;

  const w = c.watch(from, { tenant: "" });   // unfiltered: every sequence must arrive
  try {
    await followAcrossKill(w, from, start.id);
  } finally {
    w.close();
  }
  const restarted = await control("restart");
  assert.ok(restarted.restarted);
});

async function followAcrossKill(w: Watch, from: number, startId: string): Promise<void> {
  const seen: Event[] = [];
  const first = await w.next();
  assert.ok(!first.done);
  assert.deepEqual([first.value.sequence, first.value.kind, first.value.timerId], [from, "FIRED", startId]);
  seen.push(first.value);

  const before = await c.createTimers(Array.from({ length: 10 }, () => ({ delayMs: 3_600_000 })));
  await readCreated(w, seen, before.map((t) => t.id));

  const killed = await control("kill-leader");
  assert.equal(w.node, killed.address, "the watch streamed from the leader");
  assert.equal(w.reconnects, 0);

  // Retried across the election until a new leader commits them.
  const afterKill = await c.createTimers(Array.from({ length: 10 }, () => ({ delayMs: 3_600_000 })));
  await readCreated(w, seen, afterKill.map((t) => t.id));

  assert.ok(w.reconnects >= 1, "the watch reconnected");
  assert.notEqual(w.node, killed.address);
  const seqs = seen.map((e) => e.sequence);
  assert.deepEqual(seqs, seqs.map((_, i) => from + i), "no duplicate, no gap");
  assert.equal(w.lastSequence, seqs[seqs.length - 1]);
}
