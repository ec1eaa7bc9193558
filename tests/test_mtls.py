"""Mutual TLS for clients: a verified certificate's subject is the principal when no token is sent."""
from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

import minoots
from minoots.raft.testing import LocalCluster

from support import require_tool, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _openssl_installed():
    require_tool("openssl", "openssl")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(d: Path) -> dict:
    """A CA, a server certificate for 127.0.0.1, and client certificates signed by it
    (plus one from a CA the server does not trust)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
             "-days", "1", "-subj", "/CN=minoots-test-ca")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "rogue.key"),
             "-out", str(d / "rogue.pem"), "-days", "1", "-subj", "/CN=rogue-ca")
    (d / "srv.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def issue(name: str, subj: str, ca: str = "ca", ext: str | None = None):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"), "-subj", subj)
        more = ["-extfile", str(d / ext)] if ext else []
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.pem"), "-CAkey",
                 str(d / f"{ca}.key"), "-CAcreateserial", "-out", str(d / f"{name}.pem"), "-days", "1", *more)

    issue("srv", "/CN=localhost", ext="srv.ext")
    issue("harness", "/CN=harness")
    issue("agent", "/O=acme/CN=agent-7")
    issue("stranger", "/CN=stranger")
    issue("forged", "/O=acme/CN=agent-7", ca="rogue")
    return {name: (d / f"{name}.pem", d / f"{name}.key") for name in ("srv", "harness", "agent", "stranger",
                                                                       "forged")}


def creds(ca: Path, pair=None) -> grpc.ChannelCredentials:
    cert, key = (p.read_bytes() for p in pair) if pair else (None, None)
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes(), private_key=key, certificate_chain=cert)


def test_client_certificate_subject_is_the_principal(tmp_path):
    pki = make_pki(tmp_path)
    ca = tmp_path / "ca.pem"
    srv_cert, srv_key = pki["srv"]
    cluster = LocalCluster(tmp_path / "cluster", size=1, tls_ca=ca, tls_client=pki["harness"],
                           node_args=("--tls-cert", str(srv_cert), "--tls-key", str(srv_key),
                                      "--tls-client-ca", str(ca)))
    try:
        cluster.start()
        cluster.leader(timeout=60)
        addr = [n.grpc for n in cluster.nodes.values()]
        # The harness presents a certificate too (mutual TLS) and the admin token.
        with minoots.Client(addr, tls=creds(ca, pki["harness"]), timeout=60) as admin:
            token, info = admin.create_token("", "writer", ["acme"], cert_subject="CN=agent-7,O=acme")
            assert token == "" and info.name == "CN=agent-7,O=acme"

        def agent(pair):
            return minoots.Client(addr, tls=creds(ca, pair), token="", timeout=10)

        def bound():
            try:
                with agent(pki["agent"]) as c:
                    return c.whoami().role == "writer"
            except minoots.Unauthenticated:
                return False
        wait_for(bound, "the certificate binding to apply")
        with agent(pki["agent"]) as c:
            me = c.whoami()
            assert me.principal == "cert:CN=agent-7,O=acme" and me.tenants == ("acme",)
            assert c.create(delay=3600, id="by-cert").tenant == "acme"
            with pytest.raises(minoots.PermissionDenied):
                c.create(delay=3600, id="x", tenant="other")
        with agent(pki["stranger"]) as c:                 # a valid certificate, bound to nothing
            with pytest.raises(minoots.Unauthenticated, match="bound to no role"):
                c.get("by-cert", tenant="acme")
        for pair in (pki["forged"], None):                # another CA's certificate, or none at all
            with agent(pair) as c:
                with pytest.raises(minoots.MinootsError):
                    c.get("by-cert", tenant="acme", timeout=3)
    finally:
        cluster.stop()


def test_http_gateway_serves_https_and_requires_a_client_certificate(tmp_path):
    """--http with --tls-cert/--tls-client-ca: HTTPS with the node's certificate; a client
    without a certificate the CA signed is refused in the handshake; the bearer token is
    still what authenticates the request."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    pki = make_pki(tmp_path)
    ca = tmp_path / "ca.pem"
    srv_cert, srv_key = pki["srv"]
    cluster = LocalCluster(tmp_path / "cluster", size=1, tls_ca=ca, tls_client=pki["harness"], http=True,
                           node_args=("--tls-cert", str(srv_cert), "--tls-key", str(srv_key),
                                      "--tls-client-ca", str(ca)))
    try:
        cluster.start()
        cluster.leader(timeout=60)
        node = cluster.nodes["n1"]

        def get(path, pair, token):
            ctx = ssl.create_default_context(cafile=str(ca))
            if pair is not None:
                ctx.load_cert_chain(str(pair[0]), str(pair[1]))
            req = urllib.request.Request(f"https://{node.http}{path}",
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        wait_for(lambda: get("/v1/cluster/status", pki["harness"], cluster.admin_token())[0] == 200,
                 "the HTTPS gateway", retry_on=(OSError,))
        status, body = get("/v1/cluster/status", pki["harness"], cluster.admin_token())
        assert status == 200 and body["node"] == "n1"
        status, body = get("/v1/cluster/status", pki["harness"], None)     # a certificate is not a token here
        assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
        for pair in (None, pki["forged"]):
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                get("/v1/cluster/status", pair, cluster.admin_token())
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):   # and never plain HTTP
            urllib.request.urlopen(f"http://{node.http}/v1/openapi.json", timeout=10).read()
    finally:
        cluster.stop()
