#!/usr/bin/env bash
# Browser test of the playground in headless Debian Chromium, driven by playwright-core (npm;
# it never downloads a browser): starts nlu-server on the uninlu-tiny, gte-tiny and tiny XLM-R
# reranker fixtures, picks the NER template, submits, compares the highlighted spans and chains
# with the API's answer, checks the similarity and rerank bars, and saves screenshots to
# target/browser-test/.
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
# scripts/test.sh hands over the binary its `cargo test --workspace` built; a build of this
# package alone would resolve features differently and compile much of the tree again.
BIN=${NLU_SERVER_BIN:-}
if [[ -z $BIN ]]; then
    cargo build -q -p nlu-server --bin nlu-server
    BIN=$ROOT/target/debug/nlu-server
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# Servers start inside $(...) subshells, so their pids go to a file the cleanup can read.
PIDS=$(mktemp)
stop_servers() {
    local pid
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$PIDS"
    rm -f "$PIDS"
}
trap stop_servers EXIT
# start NAME MODEL TASK: starts a server, waits for /readyz, prints its URL.
start() {
    local port
    port=$(free_port)
    "$BIN" serve --model "$2" --task "$3" --listen "127.0.0.1:$port" >"$OUT/$1.log" 2>&1 &
    echo "$!" >>"$PIDS"
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && { echo "http://127.0.0.1:$port"; return; }
        sleep 0.1
    done
    cat "$OUT/$1.log" >&2
    exit 1
}
UNINLU_URL=$(start uninlu "$FIXTURES/uninlu-tiny/model" uninlu)
EMBEDDING_URL=$(start embedding "$FIXTURES/gte-tiny/model" embedding)
RERANK_URL=$(start rerank "$ROOT/inference-server/tests/fixtures/rerank/xlmr-reranker-tiny" rerank)

PLAYWRIGHT_CORE_DIR=$NODE_DIR/node_modules/playwright-core \
    timeout 120 node "$ROOT/scripts/browser-test.mjs" "$UNINLU_URL" "$EMBEDDING_URL" "$RERANK_URL" "$OUT"
