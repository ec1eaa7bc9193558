// The TypeScript SDK against a real 3-node cluster (test/cluster_harness.py): node's own test runner.
const test = require("node:test");
const assert = require("node:assert/strict");
const { execFile } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { Client, NotFound, FailedPrecondition, Unauthenticated, InvalidArgument } = require("..");
const { startCluster } = require("./cluster");

let cluster;
test.before(async () => { cluster = await startCluster(); });
test.after(async () => { if (cluster) await cluster.stop(); });

const until = async (pred, what, ms = 60_000) => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
};

test("create, get, list, extend, cancel, ack; typed errors; retry-safe create", async () => {
  const client = new Client(cluster.seeds, { token: cluster.token });
  try {
    const t = await client.create({ delay: 3600, name: "ts-1", labels: { sdk: "ts" }, payload: "hi" });
    assert.equal(t.state, "ARMED");
    assert.equal(t.created, true);
    assert.equal(t.payload.toString(), "hi");
    assert.equal(t.idempotencyKey, t.id);           // the id doubles as the idempotency key
    const again = await client.create({ delay: 3600, id: t.id });
    assert.equal(again.created, false);
    assert.equal(again.id, t.id);
    const got = await client.get(t.id);
    assert.equal(got.name, "ts-1");
    assert.deepEqual(got.labels, { sdk: "ts" });
    const listed = [];
    for await (const x of client.list({ labels: { sdk: "ts" }, states: ["ARMED"] })) listed.push(x.id);
    assert.deepEqual(listed, [t.id]);
    const moved = await client.extend(t.id, 60);
    assert.equal(moved.fireAt.getTime(), t.fireAt.getTime() + 60_000);
    const at = new Date(Date.UTC(2099, 0, 1));
    assert.equal((await client.reschedule(t.id, at)).fireAt.getTime(), at.getTime());
    assert.equal((await client.cancel(t.id)).state, "CANCELLED");
    await assert.rejects(client.cancel(t.id), (e) => e instanceof FailedPrecondition && e.code === "FAILED_PRECONDITION");
    await assert.rejects(client.get("no-such-timer"), (e) => e instanceof NotFound && /no-such-timer/.test(e.message));
    await assert.rejects(client.create({ delay: 1, labels: { "bad key": "v" } }), InvalidArgument);
    await assert.rejects(client.create({}), InvalidArgument);

    const a = await client.create({ delay: 0.2, ackRequired: true });
    await until(async () => (await client.get(a.id)).state === "FIRED", "the timer to fire");
    const fired = await client.get(a.id);
    assert.ok(fired.fireId > 0);
    assert.equal((await client.ack(a.id, fired.fireId)).state, "SETTLED");
  } finally {
    client.close();
  }
  const stranger = new Client(cluster.seeds, { token: "mnt_bogus_token", timeout: 5 });
  try {
    await assert.rejects(stranger.get("x"), Unauthenticated);
  } finally {
    stranger.close();
  }
});

test("watch() resumes on another node after the leader is killed: every sequence once", async () => {
  const client = new Client(cluster.seeds, { token: cluster.token, timeout: 60 });
  const seen = [];
  const want = new Set();
  let stop = false;
  const watching = (async () => {
    for await (const ev of client.watch({ fromSequence: 1 })) {
      seen.push(ev);
      if (stop && [...want].every((id) => seen.some((e) => e.kind === "FIRED" && e.timerId === id))) break;
    }
  })();
  try {
    for (let i = 0; i < 10; i++) want.add((await client.create({ delay: 1 })).id);
    await until(() => seen.some((e) => e.kind === "FIRED"), "a FIRED event");
    const leader = (await cluster.command("leader")).trim();
    assert.equal(await cluster.command(`kill ${leader}`), `killed ${leader}`);
    for (let i = 0; i < 10; i++) want.add((await client.create({ delay: 1 })).id);   // across the election
    stop = true;
    await until(() => [...want].every((id) => seen.some((e) => e.kind === "FIRED" && e.timerId === id)),
      "every timer's FIRED event", 120_000);
    await watching;
    const seqs = seen.map((e) => e.sequence);
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "a gap or a duplicate");
  } finally {
    stop = true;
    client.close();
  }
});

test("the README's TypeScript example runs as written", async () => {
  const readme = fs.readFileSync(path.join(__dirname, "..", "..", "..", "README.md"), "utf8");
  const block = readme.match(/```ts\n([\s\S]*?)```/);
  assert.ok(block, "a ```ts block in README.md");
  const code = block[1].replace('["127.0.0.1:7201"]', JSON.stringify(cluster.seeds));
  assert.notEqual(code, block[1], "the example names 127.0.0.1:7201");
  const file = path.join(__dirname, ".readme-example.mjs");
  fs.writeFileSync(file, code);
  try {
    const out = await new Promise((resolve, reject) => execFile(process.execPath, [file],
      { env: { ...process.env, MINOOTS_TOKEN: cluster.token }, timeout: 120_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))));
    const id = out.match(/acked (\w+)/)[1];
    const client = new Client(cluster.seeds, { token: cluster.token });
    try {
      assert.equal((await client.get(id)).state, "SETTLED");
    } finally {
      client.close();
    }
  } finally {
    fs.rmSync(file, { force: true });
  }
});
