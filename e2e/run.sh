#!/usr/bin/env bash
# End-to-end suite on a throwaway kind cluster:
#   1. a kind cluster with the model folders mounted into the node and the ingress HTTPS port
#      mapped to 127.0.0.1:$NLU_E2E_HTTPS_PORT;
#   2. ingress-nginx and cert-manager from their release manifests, a test CA ClusterIssuer;
#   3. both images built from this checkout and `kind load`ed;
#   4. the chart installed (in-cluster Redis), the test namespace with the model PVC and the
#      Redis URL Secret;
#   5. `NLU_E2E_BACKEND=kind cargo test -p e2e --test scenarios --test disruptions`
#      (e2e/tests/scenarios.rs, e2e/tests/disruptions.rs).
# On failure it dumps objects, `kubectl describe` and logs into $NLU_E2E_ARTIFACTS.
#
# Needs: docker, kind, kubectl, helm, cargo. Environment (all optional):
#   NLU_E2E_MODEL_DIR     UniNLU model folder (default: ../shared/fixtures/uninlu-tiny/model)
#   NLU_E2E_EXPECTED      expected.json whose first case the served model must reproduce
#                         (default: the fixture's, when the fixture model is used)
#   NLU_E2E_CLUSTER       kind cluster name (default nlu-e2e); an existing one is reused
#   NLU_E2E_HTTPS_PORT    host port of the ingress HTTPS listener (default 8443)
#   NLU_E2E_KEEP=1        keep the cluster afterwards (default: delete it when it was created here)
#   NLU_E2E_SKIP_BUILD=1  use images already loaded into the cluster
#   NLU_E2E_ARTIFACTS     where failure diagnostics go (default target/e2e-artifacts)
#   INGRESS_NGINX_VERSION, CERT_MANAGER_VERSION   release manifests to install
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cluster=${NLU_E2E_CLUSTER:-nlu-e2e}
https_port=${NLU_E2E_HTTPS_PORT:-8443}
artifacts=${NLU_E2E_ARTIFACTS:-$root/target/e2e-artifacts}
ingress_nginx_version=${INGRESS_NGINX_VERSION:-controller-v1.12.1}
cert_manager_version=${CERT_MANAGER_VERSION:-v1.17.2}
fixture="$root/../shared/fixtures/uninlu-tiny"
model_dir=${NLU_E2E_MODEL_DIR:-$fixture/model}
if [ -z "${NLU_E2E_EXPECTED:-}" ] && [ "$model_dir" = "$fixture/model" ]; then
  export NLU_E2E_EXPECTED="$fixture/expected.json"
fi
export NLU_E2E_HTTPS_PORT=$https_port
operator_image=nlu-operator:e2e
server_image=nlu-server:e2e
namespace=nlu-e2e
work="$root/target/e2e"
mkdir -p "$work"
export KUBECONFIG="$work/kubeconfig"

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
die() { echo "e2e: $*" >&2; exit 2; }

for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || die "$tool is not installed (needs docker, kind, kubectl, helm, cargo; see docs/deploy.md)"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable"
[ -f "$model_dir/config.json" ] || die "no model folder at $model_dir (set NLU_E2E_MODEL_DIR to a UniNLU model folder)"
model_dir=$(cd "$model_dir" && pwd)
# The embedding scenario serves the GTE fixture (its expected embedding is the fixture's).
embed_model_dir=$(cd "$root/../shared/fixtures/gte-tiny/model" && pwd)

# Everything a person needs to see why a test failed, gathered before the cluster goes away.
dump_diagnostics() {
  mkdir -p "$artifacts"
  echo "e2e: dumping diagnostics into $artifacts" >&2
  kubectl get all,nluservices,tenants,ingresses,hpa,pdb,networkpolicies,certificates,secrets,configmaps,pvc \
    -A -o wide >"$artifacts/objects.txt" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$artifacts/events.txt" 2>&1 || true
  for ns in nlu-system "$namespace" ingress-nginx cert-manager; do
    kubectl -n "$ns" describe pods,deployments,statefulsets,ingresses,nluservices,tenants,hpa \
      >"$artifacts/describe-$ns.txt" 2>&1 || true
    for pod in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
      kubectl -n "$ns" logs "$pod" --all-containers --prefix --tail=2000 \
        >"$artifacts/logs-$ns-${pod#pod/}.txt" 2>&1 || true
      kubectl -n "$ns" logs "$pod" --all-containers --prefix --previous --tail=2000 \
        >>"$artifacts/logs-$ns-${pod#pod/}.txt" 2>/dev/null || true
    done
  done
  tail -n 50 "$artifacts"/logs-nlu-system-* 2>/dev/null || true
}

created_cluster=0
finish() {
  local status=$?
  if [ "$status" != 0 ]; then dump_diagnostics; fi
  if [ "$created_cluster" = 1 ] && [ "${NLU_E2E_KEEP:-0}" != 1 ]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap finish EXIT

step "kind cluster $cluster"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind get kubeconfig --name "$cluster" >"$KUBECONFIG"
else
  kind create cluster --name "$cluster" --kubeconfig "$KUBECONFIG" --wait 120s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    labels:
      ingress-ready: "true"
    extraMounts:
      - hostPath: $model_dir
        containerPath: /models/uninlu
        readOnly: true
      - hostPath: $embed_model_dir
        containerPath: /models/gte
        readOnly: true
    extraPortMappings:
      - containerPort: 443
        hostPort: $https_port
        listenAddress: 127.0.0.1
        protocol: TCP
EOF
  created_cluster=1
fi

step "ingress-nginx $ingress_nginx_version and cert-manager $cert_manager_version"
kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$ingress_nginx_version/deploy/static/provider/kind/deploy.yaml"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$cert_manager_version/cert-manager.yaml"
kubectl -n ingress-nginx wait --for=condition=Available deployment/ingress-nginx-controller --timeout=300s
kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=300s

step "test CA ClusterIssuer"
# Retried: cert-manager's webhook may refuse requests for a few seconds after it is Available.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  kubectl apply -f - <<'EOF' && break
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: e2e-selfsigned
spec:
  selfSigned: {}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: e2e-ca
  namespace: cert-manager
spec:
  isCA: true
  commonName: nlu e2e test CA
  secretName: e2e-ca
  privateKey:
    algorithm: ECDSA
    size: 256
  issuerRef:
    kind: ClusterIssuer
    name: e2e-selfsigned
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata:
  name: e2e-ca
spec:
  ca:
    secretName: e2e-ca
EOF
  [ "$attempt" = 10 ] && die "cert-manager did not accept the issuers"
  sleep 6
done
kubectl wait --for=condition=Ready clusterissuer/e2e-ca --timeout=120s

if [ "${NLU_E2E_SKIP_BUILD:-0}" != 1 ]; then
  step "images"
  docker build -f operator/Dockerfile -t "$operator_image" .
  docker build -f inference-server/Dockerfile -t "$server_image" .
  kind load docker-image --name "$cluster" "$operator_image" "$server_image"
fi

step "chart"
# Both namespaces enforce the `restricted` Pod Security Standard: the operator, Redis and every
# inference pod the operator creates must run with it.
for ns in nlu-system "$namespace"; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted --overwrite
done
helm upgrade --install nlu-operator charts/nlu-operator --namespace nlu-system \
  --set image.repository=nlu-operator,image.tag=e2e,image.pullPolicy=Never \
  --set serverImage.repository=nlu-server,serverImage.tag=e2e \
  --set operator.logFormat=text,operator.logLevel=info\\,nlu_operator=debug \
  --wait --timeout 5m

step "namespace $namespace: model PVC and Redis URL"
kubectl apply -f - <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: nlu-e2e-models
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef:
    namespace: $namespace
    name: models
  hostPath:
    path: /models
    type: Directory
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: models
  namespace: $namespace
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: nlu-e2e-models
  resources:
    requests:
      storage: 1Gi
EOF
# No Redis Secret here: the operator writes `nlu-redis` (the namespace's own Redis ACL user)
# once an NluService with auth on exists.

step "cargo test -p e2e --test scenarios --test disruptions (kind backend)"
NLU_E2E_BACKEND=kind cargo test -p e2e --test scenarios --test disruptions -- --test-threads=1
