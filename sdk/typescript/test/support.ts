/**
 * What the cluster tests share: the cluster they run against and its control channel,
 * both given by the pytest side (tests/test_ts_sdk.py), which starts a real 3-node
 * LocalCluster and runs `node --test` with
 *   MINOOTS_TEST_NODES    the members' gRPC addresses, comma-separated
 *   MINOOTS_TOKEN         the cluster's admin token (the SDK's default token)
 *   MINOOTS_TEST_CONTROL  http://127.0.0.1:PORT: POST /kill-leader, POST /restart
 */
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, type ClientOptions, type Timer, type TimerState } from "../src/index";

function env(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: the cluster tests run from tests/test_ts_sdk.py (pytest), `
      + "which starts the cluster (or `npm test` in sdk/typescript)");
  }
  return value;
}

export function nodes(): string[] {
  return env("MINOOTS_TEST_NODES").split(",");
}

/** A client of the test cluster (token from $MINOOTS_TOKEN, as a user's would be). */
export function client(options: ClientOptions = {}): Client {
  env("MINOOTS_TOKEN");
  return new Client(nodes(), options);
}

/** A tenant of the test's own, so that its listings and filtered streams see only its timers. */
export function tenant(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Ask the pytest side to act on the cluster (kill the leader, restart it); returns its JSON answer. */
export async function control(action: "kill-leader" | "restart"): Promise<Record<string, string>> {
  const resp = await fetch(`${env("MINOOTS_TEST_CONTROL")}/${action}`, { method: "POST" });
  const body = await resp.text();
  if (!resp.ok) throw new Error(`control ${action} failed: ${resp.status} ${body}`);
  return JSON.parse(body) as Record<string, string>;
}

/** Poll a timer until it reaches `state` (bounded: a guard against hanging, not a timing assertion). */
export async function waitState(c: Client, id: string, state: TimerState, opts: { tenant?: string } = {}):
    Promise<Timer> {
  let t = await c.getTimer(id, opts);
  for (let i = 0; i < 600 && t.state !== state; i++) {
    await sleep(50);
    t = await c.getTimer(id, opts);
  }
  if (t.state !== state) throw new Error(`timer ${id} is ${t.state}, never became ${state}`);
  return t;
}
