"""Fixtures shared by the test modules. Plain helpers are in support.py, the fake gRPC
cluster in fake_grpc.py; test modules never import each other.

Markers (registered in pyproject.toml; pytest runs with --strict-markers):
  cluster    starts real node processes or Raft clusters (seconds to minutes per test)
  chaos      fault drills (`minoots chaos ...`) against a real cluster
  bench      load/bench harness runs
  packaging  builds the wheel and checks what it holds
The fast loop is `pytest -m "not cluster and not chaos and not bench and not packaging"`;
plain `pytest` runs everything. A test that takes `real_cluster` or `fresh_cluster`
must be marked `cluster` (collection stops with an error otherwise), so the fast loop
stays fast.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import grpc
import pytest
from click.testing import CliRunner

import fake_grpc
import support
from minoots.raft.tokens import new_token

CLUSTER_FIXTURES = frozenset({"real_cluster", "fresh_cluster"})

# Every call to a node needs an API token (api/auth.py). The clusters the tests start
# (raft/testing.py's LocalCluster) take $MINOOTS_TOKEN as their bootstrap admin token,
# and the SDK and CLI send $MINOOTS_TOKEN: one admin token for the whole run. Tests of
# authentication itself make their own tokens or clear this one.
os.environ.setdefault("MINOOTS_TOKEN", new_token()[1])


def _prerequisites_missing() -> list[str]:
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    out = [t for t in ("openssl", "fusermount3", "chromium", "chromedriver", "node", "npm") if shutil.which(t) is None]
    if not (root / "sdk" / "typescript" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        out.append("sdk/typescript/node_modules")
    return out


def pytest_sessionstart(session):
    """On a fresh machine, install what the suite needs beyond Python packages (Debian's
    fuse3, chromium, nodejs/npm; the TypeScript SDK's npm packages) with
    ops/test-prereqs.sh, so the README's test command works as written. Only when something
    is missing; what cannot be installed (no root, no network) makes the tests that need it
    fail with a hint, never skip."""
    missing = _prerequisites_missing()
    if not missing or os.environ.get("MINOOTS_NO_PREREQS"):
        return
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "ops" / "test-prereqs.sh"
    print(f"\ninstalling test prerequisites ({', '.join(missing)}): {script}", flush=True)
    subprocess.run(["bash", str(script)], check=False)


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("cluster") is None]
    if unmarked:
        raise pytest.UsageError("these tests start a real cluster but are not marked "
                                "`@pytest.mark.cluster`: " + ", ".join(unmarked))


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def runner():
    return CliRunner()


# ---------------------------------------------------------------- the fake cluster (in-process gRPC)


@pytest.fixture
def fake():
    """Three fake nodes sharing one backend; the first is the leader. Yields the FakeBackend."""
    with fake_grpc.running(fake_grpc.FakeTimers, fake_grpc.FakeTimers, fake_grpc.FakeTimers) as backend:
        yield backend


@pytest.fixture
def tls_fake(tmp_path):
    """One fake node serving TLS with a throw-away self-signed certificate for 127.0.0.1.
    Yields (backend, path of the certificate)."""
    if shutil.which("openssl") is None:
        support.require_tool("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    with fake_grpc.running(fake_grpc.FakeTimers, credentials=creds) as backend:
        yield backend, cert


# ---------------------------------------------------------------- the API's event store


@pytest.fixture
def event_store(tmp_path):
    """An EventLog attached to a support.FakeMachine. Yields (log, machine); closes the log."""
    from minoots.api.events import EventLog

    log = EventLog(tmp_path / "events", keep=1000)
    m = support.FakeMachine()
    log.attach(m)
    yield log, m
    log.close()


# ---------------------------------------------------------------- real clusters (mark the tests `cluster`)


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    """A 3-node LocalCluster (node processes) shared by the tests of one module, ready for
    SDK clients (see support.start_cluster). Tests must not kill its nodes."""
    c = support.start_cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture
def fresh_cluster(tmp_path):
    """A 3-node LocalCluster of the test's own, for tests that kill or partition nodes."""
    c = support.start_cluster(tmp_path / "cluster")
    yield c
    c.stop()
