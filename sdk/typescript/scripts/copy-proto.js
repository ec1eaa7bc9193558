// Copies the contract (../../proto/minoots/v1/*.proto) into the package at build time: the
// one .proto is the source of the generated types and of what the client loads at run time.
const fs = require("fs");
const path = require("path");

const src = path.join(__dirname, "..", "..", "..", "proto", "minoots", "v1");
const dst = path.join(__dirname, "..", "proto", "minoots", "v1");
fs.mkdirSync(dst, { recursive: true });
for (const f of fs.readdirSync(src).filter((f) => f.endsWith(".proto"))) {
  fs.copyFileSync(path.join(src, f), path.join(dst, f));
}
