/** A watch from a sequence no member retains fails with OutOfRange (the cluster runs with --events-keep 1000). */
import { after, test } from "node:test";
import * as assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { OutOfRange } from "../src/index";
import { client, tenant } from "./support";

const c = client({ tenant: tenant("ts-range") });
after(() => c.close());

test("watching from a trimmed sequence throws OutOfRange", { timeout: 120_000 }, async () => {
  // 2 events a create (CREATED, ARMED): 1200 events push every member's floor past 1.
  for (let i = 0; i < 2; i++) {
    await c.createTimers(Array.from({ length: 300 }, () => ({ delayMs: 3_600_000 })));
  }
  // A member trims as it writes events, which may trail the create's answer: until every
  // member has, a watch from 1 still finds sequence 1 somewhere (bounded retries, each
  // after one more write).
  let err: unknown = undefined;
  for (let attempt = 0; attempt < 100 && !(err instanceof OutOfRange); attempt++) {
    const w = c.watch(1, { tenant: "" });
    let r: IteratorResult<unknown> | undefined = undefined;
    try {
      r = await w.next();
    } catch (e) {
      err = e;
    } finally {
      w.close();
    }
    if (r !== undefined) {   // a member that still retains sequence 1 streams from it
      assert.equal((r.value as { sequence: number }).sequence, 1);
      err = undefined;
    }
    if (!(err instanceof OutOfRange)) {
      await c.createTimer({ delayMs: 3_600_000 });
      await sleep(100);
    }
  }
  assert.ok(err instanceof OutOfRange, String(err));
  assert.equal(err.code, "OUT_OF_RANGE");
  assert.match(err.message, /sequence 1/);
});
