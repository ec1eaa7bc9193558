// Starts the real cluster of test/cluster_harness.py (Python, the installed minoots package:
// $MINOOTS_PYTHON, else python3) and talks to it line by line.
const { spawn } = require("node:child_process");
const path = require("node:path");
const readline = require("node:readline");

async function startCluster() {
  const python = process.env.MINOOTS_PYTHON || "python3";
  const proc = spawn(python, [path.join(__dirname, "cluster_harness.py")], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = readline.createInterface({ input: proc.stdout });
  const queue = [];
  const waiters = [];
  lines.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  const next = () => new Promise((resolve, reject) => {
    if (queue.length) return resolve(queue.shift());
    waiters.push(resolve);
    exited.then((code) => reject(new Error(`the cluster harness exited (${code})`)));
  });
  const info = JSON.parse(await next());
  return {
    nodes: info.nodes,
    token: info.token,
    seeds: Object.values(info.nodes),
    async command(text) {
      proc.stdin.write(text + "\n");
      return next();
    },
    async stop() {
      proc.stdin.end();
      await exited;
    },
  };
}

module.exports = { startCluster };
