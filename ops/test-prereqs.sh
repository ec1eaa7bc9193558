#!/usr/bin/env bash
# What the test suite needs beyond the Python packages, installed only when missing:
# Debian's openssl (throw-away TLS certificates), fuse3 (the power-loss test's lazy filesystem), chromium + chromium-driver (the
# timeline explorer's browser test), nodejs + npm and the TypeScript SDK's npm packages
# (sdk/typescript, from the npm registry as package-lock.json pins them).
# Run by .ci/run (with --fresh: a clean npm install) and by the test session itself
# (tests/conftest.py) when something is missing, so the README's test command works on a
# fresh machine. apt-get needs root or passwordless sudo; without them it says what is
# missing and the tests that need it fail with the same hint (none is skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
FRESH=0
[ "${1:-}" = "--fresh" ] && FRESH=1
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_install() {   # apt_install PACKAGE...
    if ! $SUDO apt-get install -y -q "$@" >/dev/null 2>&1; then
        if [ $updated -eq 0 ]; then $SUDO apt-get update -q >/dev/null 2>&1; updated=1; fi
        $SUDO apt-get install -y -q "$@" >/dev/null 2>&1 || { echo "could not install $* with apt-get" >&2; return 1; }
    fi
}
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing from Debian: ${missing[*]}" >&2
    apt_install "${missing[@]}" || true
fi
if command -v npm >/dev/null; then
    if [ $FRESH -eq 1 ] || [ ! -d sdk/typescript/node_modules/@grpc/grpc-js ]; then
        (cd sdk/typescript && rm -rf node_modules && npm ci --no-audit --no-fund >/dev/null) \
            || echo "npm ci failed in sdk/typescript" >&2
    fi
    # The .proto copies must match proto/ (check-proto fails on drift); then sync, generate, tsc.
    if [ $FRESH -eq 1 ]; then
        (cd sdk/typescript && npm run --silent check-proto && npm run --silent build) || exit 1
    fi
else
    echo "npm is not installed: the TypeScript SDK is not built and its test will fail" >&2
fi
exit 0
