// Copies the repository's one contract, proto/minoots/v1/*.proto, into this package's
// proto/ (what the SDK loads at run time and what `npm pack` ships). The copies are
// never edited by hand: `--check` exits 1 naming every file that differs or is missing
// or extra, so CI fails when a .proto changed and the copies were not synced.
import { readdirSync, readFileSync, writeFileSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "..", "..", "..", "proto", "minoots", "v1");
const target = join(here, "..", "proto", "minoots", "v1");
const check = process.argv.includes("--check");

const protos = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".proto")).sort() : []);
const wanted = protos(source);
if (wanted.length === 0) {
  console.error(`sync-proto: no .proto files in ${source}`);
  process.exit(1);
}
const drift = [];
for (const name of wanted) {
  const src = readFileSync(join(source, name));
  const dst = join(target, name);
  if (!existsSync(dst) || !readFileSync(dst).equals(src)) {
    drift.push(`${name}: differs from proto/minoots/v1/${name}`);
    if (!check) {
      mkdirSync(target, { recursive: true });
      writeFileSync(dst, src);
    }
  }
}
for (const name of protos(target)) {
  if (!wanted.includes(name)) {
    drift.push(`${name}: not in proto/minoots/v1`);
    if (!check) rmSync(join(target, name));
  }
}
if (check && drift.length) {
  console.error("sync-proto --check: the SDK's copies of the .proto files drifted from proto/minoots/v1 " +
    "(run `npm run sync-proto` in sdk/typescript, never edit the copies):\n  " + drift.join("\n  "));
  process.exit(1);
}
if (!check && drift.length) console.log(`sync-proto: copied ${drift.length} file(s) into proto/minoots/v1`);
