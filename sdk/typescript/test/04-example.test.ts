/**
 * The README's TypeScript example (create, watch, ack) runs as written: the first ```ts block
 * of the repository's README.md (the same as this package's README's) is written to a module
 * in the package and run with node against the test cluster.
 */
import { test } from "node:test";
import * as assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { nodes } from "./support";

const PACKAGE = join(__dirname, "..", "..");

function firstTsBlock(readme: string): string {
  const block = readFileSync(readme, "utf8").match(/```ts\n([\s\S]*?)```/);
  assert.ok(block, `a \`\`\`ts block in ${readme}`);
  return block[1];
}

test("the README example creates a timer, watches it fire and acks it", { timeout: 120_000 }, async () => {
  const code = firstTsBlock(join(PACKAGE, "..", "..", "README.md"));
  assert.equal(firstTsBlock(join(PACKAGE, "README.md")), code, "the SDK's README shows the same example");
  const file = join(PACKAGE, ".readme-example.mjs");   // inside the package: "@minoots/client" resolves to it
  writeFileSync(file, code);
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [file], {
      env: { ...process.env, MINOOTS_NODES: nodes().join(",") }, timeout: 110_000,
    });
    assert.equal(stdout.trim(), "acked SETTLED");
  } finally {
    rmSync(file, { force: true });
  }
});
