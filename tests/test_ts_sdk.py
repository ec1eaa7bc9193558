"""The TypeScript SDK (sdk/typescript) against a real 3-node cluster.

This test starts a LocalCluster (with --events-keep 1000, so that the OutOfRange test can
trim), builds the SDK (`npm run build`: syncs the .proto copies, generates the types, runs
tsc) and runs its `node --test` suite with the cluster's addresses and admin token in the
environment. The node tests ask for faults over a small HTTP control channel served
here on 127.0.0.1 (POST /kill-leader: SIGKILL the current leader and answer its id and
address once it is dead; POST /restart: start it again), so the kill happens exactly when
the test is ready for it. Node.js and npm are required: without them this test fails
(it does not skip), and `.ci/run` installs the SDK's packages with `npm ci` first.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support import cluster_grpc, start_cluster

pytestmark = pytest.mark.cluster

SDK = Path(__file__).resolve().parent.parent / "sdk" / "typescript"
NODE_TESTS = 7          # files under sdk/typescript/test/*.test.ts
MIN_NODE_TESTS = 31     # test() cases in them: the run must have executed at least these


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: the TypeScript SDK tests need Node.js >= 20 and npm "
                    "(Debian: apt-get install nodejs npm; .ci/run installs them when missing)", pytrace=False)
    return path


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=SDK, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return proc


class _Control(ThreadingHTTPServer):
    """The node tests' fault channel into this process's LocalCluster."""

    daemon_threads = True

    def __init__(self, cluster) -> None:
        super().__init__(("127.0.0.1", 0), _ControlHandler)
        self.cluster = cluster
        self.killed: str | None = None
        self.actions: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ControlHandler(BaseHTTPRequestHandler):
    server: _Control

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        c = self.server.cluster
        try:
            with self.server.lock:
                if self.path == "/kill-leader":
                    nid = c.leader(timeout=60)
                    c.kill(nid)
                    self.server.killed = nid
                    body = {"node": nid, "address": c.nodes[nid].grpc}
                elif self.path == "/restart" and self.server.killed:
                    nid, self.server.killed = self.server.killed, None
                    c.start_node(nid)
                    body = {"restarted": nid}
                else:
                    self.send_error(404, f"no action {self.path}")
                    return
                self.server.actions.append(self.path)
        except Exception as exc:  # noqa: BLE001 - reported to the node test, which fails
            self.send_error(500, repr(exc))
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def _run_node_tests(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    """Run the node test runner in a process group of its own (it starts a process per test
    file), and stop the whole group by its id if it outlives its bound."""
    proc = subprocess.Popen(cmd, cwd=SDK, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"node --test did not finish within 900 s:\n{out}\n{err}", pytrace=False)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _prepare(cluster) -> None:
    # 07-delivery's webhooks go to a node:http receiver on 127.0.0.1 (refused by default).
    for node in cluster.nodes.values():
        node.extra_args = tuple(node.extra_args) + ("--events-keep", "1000", "--webhook-allow-hosts", "127.0.0.1")


def test_typescript_sdk_against_a_real_cluster(tmp_path):
    node, npm = _tool("node"), _tool("npm")
    if not (SDK / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("sdk/typescript/node_modules is missing: run `npm ci` in sdk/typescript (.ci/run does)",
                    pytrace=False)
    _run([npm, "run", "build"], "npm run build (sync-proto, gen-types, tsc)")
    files = sorted(str(p.relative_to(SDK)) for p in (SDK / "dist" / "test").glob("*.test.js"))
    assert len(files) == NODE_TESTS, files

    cluster = start_cluster(tmp_path / "cluster", prepare=_prepare)
    control = _Control(cluster)
    server = threading.Thread(target=control.serve_forever, name="ts-sdk-control", daemon=True)
    server.start()
    try:
        env = {**os.environ, "MINOOTS_TEST_NODES": ",".join(cluster_grpc(cluster)),
               "MINOOTS_TOKEN": cluster.admin_token(), "MINOOTS_TEST_CONTROL": control.url}
        env.pop("MINOOTS_TOKEN_FILE", None)
        proc = _run_node_tests([node, "--test", "--test-concurrency=1", "--test-force-exit", "--test-reporter=tap",
                                *files], env)
    finally:
        control.shutdown()
        control.server_close()
        cluster.stop()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{out}"
    counts = {k: int(v) for k, v in re.findall(r"^# (tests|pass|fail) (\d+)$", proc.stdout, re.M)}
    assert counts.get("fail") == 0 and counts.get("tests", 0) >= MIN_NODE_TESTS, f"{counts}\n{out}"
    assert counts["pass"] == counts["tests"], out
    assert control.actions == ["/kill-leader", "/restart"], control.actions
    print(proc.stdout)   # shown with -s or -rP: every node test by name
