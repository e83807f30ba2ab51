#!/usr/bin/env python3
"""Chart and manifest checks with a real Helm engine (helm-python-sdk) and offline Kubernetes
schemas (kubernetes-validate). Run through scripts/check-chart.sh, which installs both.

    chart_check.py check              # lint, render, validate, compare manifests/ (exit 1 on any problem)
    chart_check.py render-manifests   # rewrite manifests/install.yaml from the chart
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import helm_python
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "nlu-operator"
MANIFESTS = ROOT / "manifests"
INSTALL_YAML = MANIFESTS / "install.yaml"

RELEASE = "nlu-operator"
NAMESPACE = "nlu-system"
# Oldest supported (the workspace's k8s-openapi feature, the chart's kubeVersion) and newest known.
KUBE_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
# Custom resources: no offline schema. Ours are checked against the CRD schema by the crds tests.
CUSTOM_GROUPS = ("nlu.dev/", "monitoring.coreos.com/")

# Value sets every check runs on: the defaults, everything optional switched on, external Redis
# (one server, or a cluster).
VALUE_SETS: dict[str, dict] = {
    "default": {},
    "in-cluster-redis+servicemonitor": {
        "replicaCount": 2,
        "imagePullSecrets": [{"name": "registry"}],
        "podAnnotations": {"example.com/team": "nlp"},
        "podLabels": {"tier": "control"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "nlu", "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "operator": {"watchNamespace": "nlu", "logFormat": "text", "extraEnv": [{"name": "TZ", "value": "UTC"}],
                     "policy": {"allowedImageRepositories": ["registry.example.com/nlu/", "ghcr.io/nlu-dev/nlu-server"],
                                "allowedIngressClasses": ["nginx"], "allowedIssuers": ["letsencrypt", "Issuer/team-ca"],
                                "allowedHostSuffixes": ["nlu.example.com"], "allowSchedulingOverrides": False}},
        "serviceAccount": {"annotations": {"example.com/role": "nlu"}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "redis": {"password": "fixed-for-render", "persistence": {"size": "2Gi", "storageClass": "fast"}},
    },
    "external-redis": {
        "redis": {"url": "rediss://:secret@redis.example.com:6380/0"},
        "operator": {"leaderElection": False},
        "serviceAccount": {"create": False, "name": "existing-sa"},
    },
    "external-redis-cluster": {
        "redis": {"url": "rediss+cluster://:secret@redis-0.example.com:6379,redis-1.example.com:6379"},
    },
    # Every image pinned by digest.
    "images-by-digest": {
        "image": {"digest": "sha256:" + "a" * 64},
        "serverImage": {"tag": "0.1.0", "digest": "sha256:" + "b" * 64},
        "redis": {"image": {"repository": "docker.io/library/redis", "digest": "sha256:" + "c" * 64}},
    },
    # Watching the release's own namespace: both Roles land there and must not collide.
    "watch-release-namespace": {
        "operator": {"watchNamespace": NAMESPACE},
    },
}
# Values the schema must refuse (proves it is strict).
BAD_VALUES: dict[str, dict] = {
    "unknown top-level key": {"replicas": 2},
    "unknown nested key": {"operator": {"logFormatt": "json"}},
    "bad enum": {"operator": {"logFormat": "xml"}},
    "a token TTL that is not a duration": {"operator": {"maxTokenTtl": "a year"}},
    "an image repository with a tag": {"operator": {"policy": {"allowedImageRepositories": ["ghcr.io/x/nlu-server:1.0"]}}},
    "an issuer of another kind": {"operator": {"policy": {"allowedIssuers": ["Certificate/x"]}}},
    "a host suffix that is a pattern": {"operator": {"policy": {"allowedHostSuffixes": ["*.example.com"]}}},
    "scheduling overrides as a string": {"operator": {"policy": {"allowSchedulingOverrides": "no"}}},
    "url and existingSecret": {"redis": {"url": "redis://r:6379", "existingSecret": "s"}},
    "url of another scheme": {"redis": {"url": "http://r:6379"}},
    "a digest that is not sha256:<64 hex>": {"image": {"repository": "r", "digest": "sha256:abc"}},
}
# Kubernetes' usual apply order, so `kubectl apply -f install.yaml` never refers forward.
KIND_ORDER = ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "ClusterRole", "ClusterRoleBinding",
              "Role", "RoleBinding", "Service", "StatefulSet", "Deployment", "ServiceMonitor"]


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def parse_objects(text: str, origin: str) -> list[dict]:
    """The Kubernetes objects of a YAML stream; each must name its apiVersion, kind and name."""
    objects = []
    for doc in yaml.load_all(text, Loader=UniqueKeyLoader):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ValueError(f"{origin}: a document is not a mapping")
        for field in ("apiVersion", "kind"):
            if not isinstance(doc.get(field), str):
                raise ValueError(f"{origin}: a document has no {field}")
        if not (doc.get("metadata") or {}).get("name"):
            raise ValueError(f"{origin}: {doc['kind']} has no metadata.name")
        objects.append(doc)
    return objects


def render(values: dict) -> dict[str, list[dict]]:
    """Rendered objects per template file (NOTES.txt left out)."""
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path: parse_objects(text, path) for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")}


def describe(obj: dict) -> str:
    return f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def is_generated_secret(obj: dict) -> bool:
    """The in-cluster Redis password Secret: random per render, so plain-YAML users create it."""
    return obj["kind"] == "Secret" and obj["metadata"]["name"] == f"{RELEASE}-redis"


def install_yaml() -> str:
    """manifests/install.yaml: the Namespace and the chart rendered with default values."""
    objects = [obj for objs in render({}).values() for obj in objs if not is_generated_secret(obj)]
    objects.sort(key=lambda o: (KIND_ORDER.index(o["kind"]) if o["kind"] in KIND_ORDER else len(KIND_ORDER), o["metadata"]["name"]))
    # Every pod of the install meets the `restricted` Pod Security Standard; enforce it.
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    header = (
        "# nlu-operator: everything but the CRDs, rendered from charts/nlu-operator with default values.\n"
        "# Generated by `scripts/check-chart.sh --write`; do not edit (a check keeps it in sync).\n"
        "# Before applying, create the in-cluster Redis password Secret (the chart makes a random one):\n"
        f"#   P=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')\n"
        f"#   kubectl create namespace {NAMESPACE}\n"
        f"#   kubectl -n {NAMESPACE} create secret generic {RELEASE}-redis --from-literal=password=$P \\\n"
        f"#     --from-literal=url=redis://:$P@{RELEASE}-redis.{NAMESPACE}.svc:6379/0\n"
        "#   kubectl apply --server-side -f manifests/crds/ -f manifests/install.yaml\n"
    )
    body = "---\n".join(yaml.safe_dump(obj, sort_keys=False, width=120) for obj in [namespace, *objects])
    return header + "---\n" + body


class Checks:
    """Collects failures so one run reports all of them."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def record(self, name: str, error: str | None) -> None:
        if error is None:
            self.passed += 1
        else:
            error = error.strip().splitlines()[0]
            self.failures.append(f"{name}: {error}")
            print(f"FAIL {name}: {error}", file=sys.stderr)

    def run(self, name: str, fn) -> object:
        try:
            result = fn()
        except Exception as e:  # every failure is reported, the run goes on
            self.record(name, f"{type(e).__name__}: {e}")
            return None
        self.record(name, None)
        return result


def validate_object(obj: dict, version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def check_objects(checks: Checks, origin: str, objects: list[dict]) -> None:
    for obj in objects:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        for version in KUBE_VERSIONS:
            checks.run(f"{origin}: {describe(obj)} valid for Kubernetes {version}", lambda: validate_object(obj, version))


def check_secure_pods(checks: Checks, origin: str, objects: list[dict]) -> None:
    """Every workload of the chart runs non-root, read-only, with no capabilities."""
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = obj["spec"]["template"]["spec"]

        def secure() -> None:
            if not pod.get("securityContext", {}).get("runAsNonRoot"):
                raise ValueError("pod securityContext.runAsNonRoot is not true")
            if pod["securityContext"].get("seccompProfile", {}).get("type") != "RuntimeDefault":
                raise ValueError("pod seccompProfile is not RuntimeDefault")
            for c in pod["containers"]:
                sc = c.get("securityContext", {})
                if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
                    raise ValueError(f"container {c['name']}: root filesystem writable or privilege escalation allowed")
                if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                    raise ValueError(f"container {c['name']}: capabilities not dropped")
                if "limits" not in c.get("resources", {}):
                    raise ValueError(f"container {c['name']}: no resource limits")

        checks.run(f"{origin}: {describe(obj)} pods are locked down", secure)


def operator_flags() -> set[str]:
    """Long flags the operator's CLI defines (`#[arg(long ...)]` fields of operator/src/config.rs)."""
    source = (ROOT / "operator" / "src" / "config.rs").read_text()
    fields = re.findall(r"#\[arg\(\s*long[^\]]*\]\s*(?:#\[[^\]]*\]\s*)*pub (\w+):", source)
    return {"--" + f.replace("_", "-") for f in fields}


def check_operator_args(checks: Checks, origin: str, objects: list[dict]) -> None:
    """Every flag the chart passes exists in the operator (a renamed flag would crash-loop it)."""
    known = operator_flags()
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            def flags_exist(container: dict = container) -> None:
                unknown = [a.split("=")[0] for a in container.get("args", []) if a.split("=")[0] not in known]
                if unknown:
                    raise ValueError(f"not flags of nlu-operator: {unknown} (known: {sorted(known)})")
            checks.run(f"{origin}: {describe(obj)} passes only known operator flags", flags_exist)


def rules_of(obj: dict) -> list[dict]:
    return obj.get("rules") or []


def grants(rule: dict, group: str, resource: str, verb: str) -> bool:
    return (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
            and verb in rule.get("verbs", []))


def check_rbac(checks: Checks, origin: str, objects: list[dict], values: dict) -> None:
    """Least privilege: with `operator.watchNamespace` no ClusterRole at all (Roles in the watched
    and the release namespace instead), never a delete of Secrets or ConfigMaps, a ConfigMap
    grant only by name (`nlu-jwks`) besides create, and the same rules in both modes."""
    watched = (values.get("operator") or {}).get("watchNamespace") or ""
    roles = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects if o["kind"] == "Role"}
    cluster_roles = [o for o in objects if o["kind"] == "ClusterRole"]

    def scoped() -> None:
        if watched and cluster_roles:
            raise ValueError(f"watchNamespace {watched!r} but ClusterRoles rendered: {[describe(o) for o in cluster_roles]}")
        if not watched and len(cluster_roles) != 1:
            raise ValueError(f"expected one ClusterRole when watching every namespace, got {len(cluster_roles)}")
        namespaces = sorted(ns for ns, _ in roles)
        want = sorted([NAMESPACE] + ([watched] if watched else []))
        if namespaces != want:
            raise ValueError(f"Roles in namespaces {namespaces}, expected {want}")
        for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
            ns = binding["metadata"].get("namespace")
            ref = binding["roleRef"]
            if binding["kind"] == "RoleBinding" and ref["kind"] == "Role" and (ns, ref["name"]) not in roles:
                raise ValueError(f"{describe(binding)} refers to Role {ref['name']} not rendered in {ns}")
            for subject in binding["subjects"]:
                if subject.get("namespace") != NAMESPACE:
                    raise ValueError(f"{describe(binding)} binds a subject outside {NAMESPACE}")
    checks.run(f"{origin}: RBAC scoped to the watched namespaces", scoped)

    def no_cluster_secrets() -> None:
        for role in cluster_roles:
            for rule in rules_of(role):
                if "" in rule.get("apiGroups", []) and "secrets" in rule.get("resources", []) and watched:
                    raise ValueError(f"{describe(role)} grants Secrets cluster-wide")
    checks.run(f"{origin}: no ClusterRole grants Secrets with a watched namespace", no_cluster_secrets)

    def no_deletes() -> None:
        for role in [*cluster_roles, *roles.values()]:
            for rule in rules_of(role):
                for resource in ("secrets", "configmaps"):
                    for verb in ("delete", "deletecollection", "*"):
                        if grants(rule, "", resource, verb):
                            raise ValueError(f"{describe(role)} grants {verb} on {resource}")
                if grants(rule, "", "configmaps", "get") and rule.get("resourceNames") != ["nlu-jwks"]:
                    raise ValueError(f"{describe(role)} reads ConfigMaps other than nlu-jwks")
                if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []):
                    raise ValueError(f"{describe(role)} has a wildcard rule")
    checks.run(f"{origin}: no delete of Secrets or ConfigMaps, no wildcards", no_deletes)


def check_digests(checks: Checks, origin: str, objects: list[dict], values: dict) -> None:
    """A digest in the values pins the image it belongs to: `repository:tag@digest`."""
    wanted = {
        "operator": (values.get("image") or {}).get("digest"),
        "server": (values.get("serverImage") or {}).get("digest"),
        "redis": ((values.get("redis") or {}).get("image") or {}).get("digest"),
    }
    refs: dict[str, list[str]] = {"operator": [], "server": [], "redis": []}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            who = "redis" if obj["kind"] == "StatefulSet" else "operator"
            refs[who].append(c["image"])
            refs["server"] += [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--image=")]

    def pinned() -> None:
        for who, digest in wanted.items():
            for ref in refs[who]:
                if digest and not re.fullmatch(r"[^@\s]+:[^@:/\s]+@" + re.escape(digest), ref):
                    raise ValueError(f"{who} image {ref!r} is not pinned to {digest}")
                if not digest and "@" in ref:
                    raise ValueError(f"{who} image {ref!r} has a digest nobody asked for")
    checks.run(f"{origin}: images pinned by digest exactly where the values say", pinned)


def check(checks: Checks) -> None:
    for version in KUBE_VERSIONS:
        def lint(version: str = version) -> None:
            report = helm_python.lint(CHART, strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
            if problems:
                raise ValueError("; ".join(str(p["error"]) for p in problems))
        checks.run(f"helm lint --strict (Kubernetes {version})", lint)

    for label, values in VALUE_SETS.items():
        per_file = checks.run(f"render [{label}]", lambda: render(values))
        if per_file is None:
            continue
        objects = [obj for objs in per_file.values() for obj in objs]
        check_objects(checks, f"render [{label}]", objects)
        check_secure_pods(checks, f"render [{label}]", objects)
        check_operator_args(checks, f"render [{label}]", objects)
        check_rbac(checks, f"render [{label}]", objects, values)
        check_digests(checks, f"render [{label}]", objects, values)

    def same_rules_in_both_modes() -> None:
        def watched_rules(values: dict) -> list[dict]:
            objects = [o for objs in render(values).values() for o in objs]
            return [rule for o in objects if o["kind"] == "ClusterRole" or o["metadata"]["name"].endswith("-watched")
                    for rule in rules_of(o)]
        if watched_rules({}) != watched_rules({"operator": {"watchNamespace": "nlu-apps"}}):
            raise ValueError("the ClusterRole and the watched namespace's Role grant different rules")
    checks.run("RBAC: the watched namespace's Role grants what the ClusterRole grants", same_rules_in_both_modes)

    with helm_python.Chart.load(CHART) as chart:
        for label, values in BAD_VALUES.items():
            def refused(values: dict = values) -> None:
                try:
                    chart.validate_schema(values)
                except helm_python.HelmValuesError:
                    return
                raise ValueError("values.schema.json accepted it")
            checks.run(f"values schema refuses {label}", refused)

    for path in sorted(MANIFESTS.rglob("*.yaml")):
        rel = path.relative_to(ROOT)
        objects = checks.run(f"{rel} parses", lambda: parse_objects(path.read_text(), str(rel)))
        if objects:
            check_objects(checks, str(rel), objects)

    for crd in sorted((CHART / "crds").glob("*.yaml")):
        twin = MANIFESTS / "crds" / crd.name
        checks.record(f"{crd.relative_to(ROOT)} equals manifests/crds/{crd.name}",
                      None if twin.exists() and twin.read_bytes() == crd.read_bytes() else "differs (run `cargo run -p nlu-crds --bin crdgen`)")

    for workflow in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        def jobs(workflow: Path = workflow) -> None:
            if not (yaml.load(workflow.read_text(), Loader=UniqueKeyLoader) or {}).get("jobs"):
                raise ValueError("no jobs")
        checks.run(f"{workflow.relative_to(ROOT)} parses", jobs)

    def in_sync() -> None:
        if not INSTALL_YAML.exists() or INSTALL_YAML.read_text() != install_yaml():
            raise ValueError("manifests/install.yaml is not the chart's rendering; run `scripts/check-chart.sh --write`")
    checks.run("manifests/install.yaml in sync with the chart", in_sync)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    if command == "render-manifests":
        INSTALL_YAML.write_text(install_yaml())
        print(f"wrote {INSTALL_YAML.relative_to(ROOT)}")
        return 0
    if command != "check":
        print(__doc__, file=sys.stderr)
        return 2
    checks = Checks()
    check(checks)
    print(f"chart: {checks.passed} passed, {len(checks.failures)} failed")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
