#!/usr/bin/env bash
# Browser test of the playground in headless Debian Chromium, driven by playwright-core (npm;
# it never downloads a browser): starts nlu-server on the uninlu-tiny fixture, picks the NER
# template, submits, compares the highlighted spans and chains with the API's answer, and saves
# a screenshot to target/browser-test/ner.png.
#
# Needs /usr/bin/chromium (Debian: apt-get install -y chromium), node >= 18, npm (first run).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FIXTURES=${FIXTURES:-$ROOT/../shared/fixtures}
OUT=$ROOT/target/browser-test
NODE_DIR=$ROOT/target/browser-test-node
PLAYWRIGHT_VERSION=${PLAYWRIGHT_VERSION:-1.65.1}
mkdir -p "$OUT"

[[ -x ${CHROMIUM:-/usr/bin/chromium} ]] || { echo "no Chromium at ${CHROMIUM:-/usr/bin/chromium}: apt-get install -y chromium" >&2; exit 1; }
if [[ ! -f $NODE_DIR/node_modules/playwright-core/package.json ]]; then
    mkdir -p "$NODE_DIR"
    npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" "playwright-core@$PLAYWRIGHT_VERSION"
fi
cargo build -q -p nlu-server --bin nlu-server

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ROOT/target/debug/nlu-server" serve --model "$FIXTURES/uninlu-tiny/model" --task uninlu \
    --listen "127.0.0.1:$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$OUT/server.log" >&2; exit 1; }

PLAYWRIGHT_CORE_DIR=$NODE_DIR/node_modules/playwright-core \
    timeout 120 node "$ROOT/scripts/browser-test.mjs" "http://127.0.0.1:$PORT" "$OUT"
