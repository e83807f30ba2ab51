#!/usr/bin/env bash
# Contract fuzzing: runs schemathesis against the server's own /openapi.json, on the tiny
# fixture models, with auth off and with auth on (keygen + token, a real redis-server with one
# tenant record). Fails on any 5xx, any response that violates the document, or a hang. Then the
# official OpenAI Python client calls the embedding server with auth on
# (scripts/openai_client_check.py).
#
#   scripts/contract-fuzz.sh            # EXAMPLES=30 per operation by default
#   EXAMPLES=100 scripts/contract-fuzz.sh
#
# Needs python3 (venv + pip from PyPI on first run), redis-server, curl. Reports (JUnit, and
# a pytest file reproducing each failure) go to target/contract-fuzz/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FIXTURES=${FIXTURES:-$ROOT/../shared/fixtures}
EXAMPLES=${EXAMPLES:-30}
OUT=$ROOT/target/contract-fuzz
VENV=$ROOT/target/contract-venv/venv
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
OPENAI_VERSION=${OPENAI_VERSION:-2.8.1}
mkdir -p "$OUT"

[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
# Quick, and without the network, once both are there.
"$VENV/bin/python" -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION" "openai==$OPENAI_VERSION"
# scripts/test.sh hands over the binary its `cargo test --workspace` built; a build of this
# package alone would resolve features differently and compile much of the tree again.
BIN=${NLU_SERVER_BIN:-}
if [[ -z $BIN ]]; then
    cargo build -q -p nlu-server --bin nlu-server
    BIN=$ROOT/target/debug/nlu-server
fi

WORK=$(mktemp -d)
# Servers start inside $(...) subshells, so their pids go to a file the cleanup can read.
PIDS=$WORK/pids
cleanup() {
    local pid
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < <(cat "$PIDS" 2>/dev/null)
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the server with the given flags, waits for /readyz, prints its port.
start_server() {
    local port log
    port=$(free_port)
    log=$OUT/server-$port.log
    "$BIN" serve --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
    echo "$!" >>"$PIDS"
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then
            echo "$port"
            return
        fi
        sleep 0.1
    done
    echo "server did not become ready; log:" >&2
    cat "$log" >&2
    exit 1
}

# fuzz NAME PORT [schemathesis flags...]
fuzz() {
    local name=$1 port=$2
    shift 2
    echo "== $name"
    local started=$SECONDS
    # Every check except positive_data_acceptance: the document cannot express every rule the
    # server checks (text or input but not both, not only whitespace, a schema string that
    # must hold JSON), so some schema-valid requests rightly get a 400.
    "$VENV/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
        --checks all --exclude-checks positive_data_acceptance \
        --phases examples,coverage,fuzzing \
        --max-examples "$EXAMPLES" --seed 1 \
        --request-timeout 10 --max-response-time 10 \
        --report junit,pytest --report-dir "$OUT/$name" \
        --no-color --suppress-health-check all \
        "$@"
    echo "== $name: $((SECONDS - started))s"
}

UNINLU=$FIXTURES/uninlu-tiny/model
GTE=$FIXTURES/gte-tiny/model
# A tiny XLM-RoBERTa cross-encoder (tests/parity/rerank.rs checks it against transformers).
RERANK=$ROOT/inference-server/tests/fixtures/rerank/xlmr-reranker-tiny
# A tiny bge-m3 (XLM-RoBERTa with the sparse and multi-vector heads): auth off it answers every
# embedding route; auth on, GTE (BERT, no heads) answers them with 404s.
M3=$ROOT/inference-server/tests/fixtures/rerank/xlmr-m3-tiny

# Auth off.
fuzz uninlu "$(start_server --model "$UNINLU" --task uninlu)"
fuzz embedding "$(start_server --model "$M3" --task embedding)"
fuzz rerank "$(start_server --model "$RERANK" --task rerank)"

# Auth on: keys, Redis with one tenant allowed every scope and generous limits, a token.
"$BIN" keygen --out-dir "$WORK/keys" >/dev/null
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
echo "$!" >>"$PIDS"
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$REDIS_PORT" HSET "nlu:tenant:{default/fuzz}" enabled 1 requests_per_day 10000000 \
    requests_per_minute 1000000 tokens_per_day 0 tokens_per_minute 0 max_concurrent_requests 0 \
    scopes predict,embed,rerank services "" gen 1 uid fuzz-1 >/dev/null
TOKEN=$("$BIN" token --signing-key "$WORK/keys/signing-key.pem" --tenant default/fuzz \
    --audience default/uninlu --audience default/gte --audience default/rerank \
    --scope predict,embed,rerank --ttl 3600 --gen 1 \
    --tenant-uid fuzz-1)
auth_flags() {
    echo --auth jwt --jwks "$WORK/keys/jwks.json" --service-id "$1" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
}
# shellcheck disable=SC2046
UNINLU_AUTH=$(start_server --model "$UNINLU" --task uninlu $(auth_flags default/uninlu))
# shellcheck disable=SC2046
GTE_AUTH=$(start_server --model "$GTE" --task embedding --served-model-name thenlper/gte-tiny \
    $(auth_flags default/gte))
# shellcheck disable=SC2046
RERANK_AUTH=$(start_server --model "$RERANK" --task rerank $(auth_flags default/rerank))
# The token is served (else the fuzzing below would only ever see refusals).
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GTE_AUTH/embed" \
    -H 'Content-Type: application/json' -d '{"inputs": "hello"}' ||
    { echo "the fuzzing tenant's token is refused" >&2; exit 1; }
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$RERANK_AUTH/v1/rerank" \
    -H 'Content-Type: application/json' -d '{"query": "hello", "documents": ["hi"]}' ||
    { echo "the fuzzing tenant's token is refused for rerank" >&2; exit 1; }
fuzz uninlu-auth "$UNINLU_AUTH" -H "Authorization: Bearer $TOKEN"
fuzz embedding-auth "$GTE_AUTH" -H "Authorization: Bearer $TOKEN"
fuzz rerank-auth "$RERANK_AUTH" -H "Authorization: Bearer $TOKEN"
# Without a token: every model route must refuse, as documented.
# shellcheck disable=SC2046
fuzz uninlu-no-token "$(start_server --model "$UNINLU" --task uninlu $(auth_flags default/uninlu))"

echo "== the official OpenAI client"
"$VENV/bin/python" scripts/openai_client_check.py "http://127.0.0.1:$GTE_AUTH" "$TOKEN" \
    thenlper/gte-tiny 64

echo "contract fuzzing passed"
