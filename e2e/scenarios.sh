#!/usr/bin/env bash
# End-to-end storm scenarios on a real API server: the Helm chart installs the operator, sidecars in real pods run signed storms, and the MapChaos status, Events, sidecars and Prometheus are checked.
#
# Usage: bash e2e/scenarios.sh   (with `bash e2e/cluster up` done; see e2e/run-scenarios.sh)
#
# Against another cluster: KUBECONFIG=... MAPCHAOS_IMAGE_REPOSITORY=ghcr.io/you/mapchaos
# MAPCHAOS_IMAGE_TAG=... MAPCHAOS_APP_IMAGE=busybox:1.36 MAPCHAOS_E2E_PROM= bash e2e/scenarios.sh
# (no Prometheus URL skips the metrics checks; storm status is read through the pods' IPs, so
# the machine running this has to reach them, as the local cluster's host does).
#
# Every check looks at the real thing: the MapChaos status and Events from the API server,
# the sidecars' own storm API on the pod IPs, the operator pod's restarts, Prometheus' HTTP
# API. On failure it dumps pod states, Events, component, operator and sidecar logs.

set -uo pipefail

E2E_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_SRC/.." && pwd)
DIR="${MAPCHAOS_E2E_DIR:-/tmp/mapchaos-e2e}"
export KUBECONFIG="${KUBECONFIG:-$DIR/admin.kubeconfig}"
PROM="${MAPCHAOS_E2E_PROM-http://127.0.0.1:${MAPCHAOS_E2E_PROM_PORT:-19090}}"
OP_NS=mapchaos-system
NS=mapchaos-scenarios
RELEASE=mapchaos
# The local node maps the image name `mapchaos` (any tag) to target/debug/mapchaos.
IMAGE_REPO="${MAPCHAOS_IMAGE_REPOSITORY:-mapchaos}"
IMAGE_TAG="${MAPCHAOS_IMAGE_TAG:-e2e}"
APP_IMAGE="${MAPCHAOS_APP_IMAGE:-busybox}"

SUITE=scenarios
# shellcheck source=checks.sh
source "$E2E_SRC/checks.sh"

# jqe FILTER: jq -e on stdin, quiet, and false on empty input (plain `jq -e` says true).
jqe() {
    local input
    input=$(cat)
    [[ -n "$input" ]] && jq -e "$@" <<<"$input" >/dev/null
}
export NS
export -f k jqe
mc_json() { k get mapchaos "$1" -o json; }
# mc_jq NAME FILTER: jq -e over the MapChaos object.
mc_jq() { mc_json "$1" 2>/dev/null | jqe "$2"; }
mc_field() { mc_json "$1" 2>/dev/null | jq -r "$2"; }

operator_pod() {
    kubectl -n "$OP_NS" get pods -l app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=operator \
        -o jsonpath='{.items[0].metadata.name}' 2>/dev/null
}

# sidecar_storms FILTER "IP ID"...: each storm's status from its sidecar's own API (unsigned
# GET on the pod IP) matches FILTER; false with fewer than two storms to look at.
sidecar_storms() {
    local filter=$1 t ip id
    shift
    (($# >= 2)) || return 1
    for t in "$@"; do
        read -r ip id <<<"$t"
        curl -sf --max-time 5 "http://$ip:9464/v1/storms/$id" | jqe "$filter" || return 1
    done
}
export -f sidecar_storms

dump() {
    say "---- diagnostics ----"
    kubectl get nodes -o wide
    kubectl get pods -A -o wide
    kubectl get mapchaos -A -o wide 2>/dev/null
    kubectl get mapchaos -A -o yaml 2>/dev/null | tail -n 200
    kubectl -n "$OP_NS" describe pods 2>/dev/null | tail -n 60
    kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 80
    local c
    for c in kube-apiserver kube-controller-manager mapchaos-node mapchaos-pod-sd prometheus; do
        echo "==> $DIR/logs/$c.log (tail) <=="
        tail -n 30 "$DIR/logs/$c.log" 2>/dev/null
    done
    local f
    for f in "$DIR"/pods/"$OP_NS"_*/logs/*.log; do
        [[ -f "$f" ]] || continue
        echo "==> $f (tail) <=="
        tail -n 80 "$f"
    done
    for f in "$DIR"/pods/"$NS"_*/logs/*.log; do
        [[ -f "$f" ]] || continue
        echo "==> $f (tail) <=="
        tail -n 15 "$f"
    done
}

finish() {
    if ((FAILED > 0)); then
        dump
        say "failed checks:"
        printf '  - %s\n' "${FAILURES[@]}"
    fi
    echo "scenarios: $PASSED passed, $FAILED failed"
    ((FAILED == 0))
    exit
}

# ---------------------------------------------------------------------------------------
# Helm: the pinned binary scripts/chart-check.sh uses too.
if ! HELM=$(bash "$REPO/scripts/helm-tool.sh"); then
    fail "Helm is available (scripts/helm-tool.sh)"
    finish
fi
HELM_HOME=$(mktemp -d)
trap 'rm -rf "$HELM_HOME"' EXIT
export HELM_CACHE_HOME="$HELM_HOME/cache" HELM_CONFIG_HOME="$HELM_HOME/config" HELM_DATA_HOME="$HELM_HOME/data"
helm() { "$HELM" "$@"; }

say "cluster: $(kubectl version -o json 2>/dev/null | jq -r .serverVersion.gitVersion), $(helm version --short)"
kubectl delete namespace "$NS" --wait=true --timeout=60s >/dev/null 2>&1
kubectl create namespace "$NS" >/dev/null

# =======================================================================================
say "== 1. install: CRD, then the chart; the operator runs with the chart's RBAC and token"
check "kubectl apply --server-side -f crds/" \
    bash -c "kubectl apply --server-side --force-conflicts -f '$REPO/crds/' >/dev/null"
eventually 30 "CRD mapchaos.mapchaos.io is Established" \
    bash -c "[[ \$(kubectl get crd mapchaos.mapchaos.io -o jsonpath='{.status.conditions[?(@.type==\"Established\")].status}') == True ]]"
if helm install "$RELEASE" "$REPO/charts/mapchaos" -n "$OP_NS" --create-namespace \
    --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" \
    --set operator.logFormat=text >"$HELM_HOME/install.out" 2>&1; then
    pass "helm install $RELEASE charts/mapchaos -n $OP_NS --create-namespace"
else
    fail "helm install $RELEASE charts/mapchaos: $(head -c 600 "$HELM_HOME/install.out")"
    finish
fi
eventually 90 "operator Deployment has 1 available replica" \
    bash -c "[[ \$(kubectl -n $OP_NS get deploy $RELEASE -o jsonpath='{.status.availableReplicas}') == 1 ]]"
OP_POD=$(operator_pod)
check "operator pod $OP_POD runs as the chart's ServiceAccount" \
    test "$(kubectl -n "$OP_NS" get pod "$OP_POD" -o jsonpath='{.spec.serviceAccountName}')" = "$RELEASE"
op_pid=$(kubectl -n "$OP_NS" get pod "$OP_POD" -o jsonpath='{.status.containerStatuses[0].containerID}' | sed 's|^mapchaos://||')
check "operator process (pid $op_pid) is 'mapchaos operator'" \
    bash -c "tr '\0' ' ' </proc/$op_pid/cmdline | grep -q ' operator '"
check "operator's mounted token belongs to system:serviceaccount:$OP_NS:$RELEASE" bash -c "
    tok=\$(nsenter -t $op_pid -m cat /var/run/secrets/kubernetes.io/serviceaccount/token)
    kubectl create -o json -f - <<EOF | jqe '.status.user.username == \"system:serviceaccount:$OP_NS:$RELEASE\"'
{\"apiVersion\": \"authentication.k8s.io/v1\", \"kind\": \"TokenReview\", \"spec\": {\"token\": \"\$tok\"}}
EOF"
check "chart RBAC: the operator may patch mapchaos/status" \
    bash -c "[[ \$(kubectl auth can-i patch mapchaos.mapchaos.io --subresource=status --as=system:serviceaccount:$OP_NS:$RELEASE -n default) == yes ]]"
check "chart RBAC: the operator may not delete pods" \
    bash -c "[[ \$(kubectl auth can-i delete pods --as=system:serviceaccount:$OP_NS:$RELEASE -n default) == no ]]"
check "kubectl get mc works" bash -c "kubectl get mc -A >/dev/null"

# The operator's public key, as NOTES.txt tells users to compute it.
PUBKEY=$(kubectl -n "$OP_NS" get secret "$RELEASE-signing-key" -o jsonpath='{.data.signing-key\.pem}' | base64 -d |
    openssl pkey -pubout -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n')
check "operator public key from the chart's Secret is 64 hex characters" bash -c "[[ '$PUBKEY' =~ ^[0-9a-f]{64}\$ ]]"
check "operator logs have no ERROR so far" bash -c "! grep -q ERROR '$DIR'/pods/${OP_NS}_${OP_POD}_*/logs/operator.log"

# A Deployment of NAME with REPLICAS pods: an app container and the mapchaos sidecar, added
# by hand as README "The sidecar in your pods" describes. EXTRA: extra sidecar args (JSON).
demo_deployment() {
    local name=$1 replicas=$2 extra=${3:-}
    kubectl apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name, namespace: $NS}
spec:
  replicas: $replicas
  selector: {matchLabels: {app: $name}}
  template:
    metadata:
      labels: {app: $name, mapchaos.io/sidecar: "true"}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9464"}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: $APP_IMAGE
        command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
      - name: mapchaos-sidecar
        image: $IMAGE_REPO:$IMAGE_TAG
        args: [sidecar, --http-addr, "0.0.0.0:9464", --log-format, text$extra]
        env: [{name: MAPCHAOS_OPERATOR_PUBLIC_KEY, value: "$PUBKEY"}]
        ports: [{name: mapchaos-http, containerPort: 9464}]
        readinessProbe: {httpGet: {path: /readyz, port: mapchaos-http}, periodSeconds: 2}
EOF
}

# A MapChaos NAME on pods labelled app=APP: MODE, VALUE, DURATION, small synthetic keyspace.
mapchaos() {
    local name=$1 app=$2 mode=$3 value=$4 duration=$5
    kubectl apply -f - >/dev/null <<EOF
apiVersion: mapchaos.io/v1alpha1
kind: MapChaos
metadata: {name: $name, namespace: $NS}
spec:
  selector:
    labelSelectors: {app: $app}
  mode: $mode
  value: "$value"
  duration: $duration
  storm:
    workers: 8
    mix: {del: 40, get: 30, set: 20, exists: 5, scan: 5}
    keys: {source: synthetic, prefix: "e2e:$name:", count: 16, distribution: uniform}
  check: {history: true, maxOps: 200000, timeoutPerKey: 5s}
EOF
}

# =======================================================================================
say "== 2. storm: 4 pods with sidecars, fixed-percent 50"
demo_deployment demo 4
eventually 120 "Deployment demo has 4 available replicas (app + sidecar Ready)" \
    bash -c "[[ \$(kubectl -n $NS get deploy demo -o jsonpath='{.status.availableReplicas}') == 4 ]]"
mapfile -t DEMO_PODS < <(k get pods -l app=demo -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
mapchaos storm demo fixed-percent 50 10s
eventually 20 "MapChaos storm is Running" mc_jq storm '.status.phase == "Running"'
eventually 120 "MapChaos storm is Completed" mc_jq storm '.status.phase == "Completed"'
S=$(mc_json storm)
say "storm summary: $(jq -c '.status.summary | {targets, ops, errors, totalExposures, totalAnomalies, verdict, p99}' <<<"$S")"
check "exactly 2 targets (50% of 4)" test "$(jq -r .status.summary.targets <<<"$S")" = 2
check "the 2 targets are 2 distinct demo pods" bash -c "
    jq -r '.status.targets[].pod' <<<'$S' | sort -u | grep -cxF -f <(printf '%s\n' ${DEMO_PODS[*]}) | grep -qx 2"
check "ops > 0" jqe '.status.summary.ops > 0' <<<"$S"
check "exposures > 0 (the storm raced)" jqe '.status.summary.totalExposures > 0' <<<"$S"
check "anomalies = 0" jqe '.status.summary.totalAnomalies == 0' <<<"$S"
check "verdict Pass" jqe '.status.summary.verdict == "Pass"' <<<"$S"
mapfile -t STORMS < <(jq -r '.status.targets[]? | "\(.ip) \(.stormId)"' <<<"$S")
check "each target's sidecar reports its storm Completed with ops > 0" \
    sidecar_storms '.phase == "Completed" and .ops > 0' "${STORMS[@]}"
mapfile -t OTHER_IPS < <(k get pods -l app=demo -o json |
    jq -r --argjson t "$(jq -c '[.status.targets[]?.pod]' <<<"$S")" '.items[] | select(.metadata.name as $n | $t | index($n) | not) | .status.podIP')
unselected_idle() {
    local ip metrics
    ((${#OTHER_IPS[@]} == 2)) || return 1
    for ip in "${OTHER_IPS[@]}"; do
        metrics=$(curl -sf --max-time 5 "http://$ip:9464/metrics") || return 1
        grep -q '^mapchaos_ops_total{.*source="storm"' <<<"$metrics" && return 1
    done
    return 0
}
check "the 2 unselected pods' sidecars served no storm ops" unselected_idle
check "Events recorded for MapChaos storm" bash -c "
    k get events --field-selector involvedObject.kind=MapChaos,involvedObject.name=storm -o json | jqe '.items | length > 0'"
say "storm events: $(k get events --field-selector involvedObject.kind=MapChaos,involvedObject.name=storm -o json | jq -r '[.items[].reason] | join(",")')"
GET_MC=$(k get mc storm)
say "kubectl get mc: $(tr '\n' '|' <<<"$GET_MC")"
check "kubectl get mc shows the printer columns PHASE TARGETS EXPOSURES ANOMALIES P99" \
    bash -c "head -n1 <<<'$GET_MC' | grep -Eq 'NAME +PHASE +TARGETS +EXPOSURES +ANOMALIES +P99 +AGE'"
check "kubectl get mc row: Completed, 2 targets, exposures, 0 anomalies, a p99" bash -c "
    tail -n1 <<<'$GET_MC' | grep -Eq '^storm +Completed +2 +[1-9][0-9]* +0 +[0-9.]+(ns|us|µs|ms|s)'"

# =======================================================================================
say "== 3. broken engine: sidecars with --engine lagging"
demo_deployment lagging 2 ', --engine, lagging'
eventually 120 "Deployment lagging has 2 available replicas" \
    bash -c "[[ \$(kubectl -n $NS get deploy lagging -o jsonpath='{.status.availableReplicas}') == 2 ]]"
mapchaos broken lagging all 0 10s
eventually 120 "MapChaos broken finishes" mc_jq broken '.status.phase == "Completed" or .status.phase == "Failed"'
B=$(mc_json broken)
say "broken summary: phase $(jq -r .status.phase <<<"$B"), $(jq -c '.status.summary | {targets, ops, totalExposures, totalAnomalies, anomalies, verdict}' <<<"$B")"
check "broken: 2 targets" jqe '.status.summary.targets == 2' <<<"$B"
check "broken: anomalies > 0" jqe '.status.summary.totalAnomalies > 0' <<<"$B"
check "broken: verdict Fail" jqe '.status.summary.verdict == "Fail"' <<<"$B"

# =======================================================================================
say "== 4. invalid spec: fixed-percent 150"
mapchaos invalid demo fixed-percent 150 10s
restarts_before=$(kubectl -n "$OP_NS" get pod "$OP_POD" -o jsonpath='{.status.containerStatuses[0].restartCount}')
eventually 30 "invalid: condition Valid=False with a message" \
    mc_jq invalid '.status.conditions[] | select(.type == "Valid") | .status == "False" and (.message | length > 0)'
say "invalid: $(mc_field invalid '.status.phase + ": " + (.status.conditions[] | select(.type == "Valid") | .reason + ": " + .message)')"
check "invalid: no storm started (no targets)" mc_jq invalid '(.status.targets // []) | length == 0'
eventually 20 "invalid: a Warning Event names the problem" bash -c "
    k get events --field-selector involvedObject.kind=MapChaos,involvedObject.name=invalid -o json | jqe '[.items[] | select(.type == \"Warning\")] | length > 0'"
sleep 5
check "operator pod still Ready with no restarts" bash -c "
    kubectl -n $OP_NS get pod $OP_POD -o json | jqe '.status.containerStatuses[0].ready and .status.containerStatuses[0].restartCount == $restarts_before'"
k delete mapchaos invalid --wait=true --timeout=30s >/dev/null
check "invalid MapChaos deletes cleanly" bash -c "! kubectl -n $NS get mapchaos invalid >/dev/null 2>&1"

# =======================================================================================
say "== 5a. lifecycle: delete a MapChaos mid-storm"
mapchaos midstorm demo fixed-percent 50 5m
running_storms() {
    mc_jq midstorm '.status.phase == "Running" and ([.status.targets[]? | select(.stormPhase == "Running")] | length == 2)'
}
eventually 60 "midstorm: 2 storms Running" running_storms
M=$(mc_json midstorm)
mapfile -t MID < <(jq -r '.status.targets[] | "\(.ip) \(.stormId)"' <<<"$M")
check "midstorm: the sidecars report their storms Running" sidecar_storms '.phase == "Running"' "${MID[@]}"
check "midstorm: the finalizer mapchaos.io/storms is on" mc_jq midstorm '.metadata.finalizers | index("mapchaos.io/storms")'
t0=$SECONDS
k delete mapchaos midstorm --wait=false >/dev/null
eventually 30 "midstorm: the MapChaos disappears (finalizer released)" bash -c "! kubectl -n $NS get mapchaos midstorm >/dev/null 2>&1"
# A DELETE stops the workers at once; the sidecar then checks what ran, and ends Aborted.
eventually 30 "midstorm: each sidecar's storm is stopped (Aborted)" sidecar_storms '.phase == "Aborted"' "${MID[@]}"

# =======================================================================================
say "== 5b. lifecycle: the kill switch pauses a running experiment"
mapchaos paused demo fixed-percent 50 5m
eventually 60 "paused: storms Running" \
    mc_jq paused '.status.phase == "Running" and ([.status.targets[]? | select(.stormPhase == "Running")] | length == 2)'
mapfile -t PAUSED < <(mc_field paused '.status.targets[] | "\(.ip) \(.stormId)"')
kubectl -n "$OP_NS" create configmap mapchaos-kill-switch >/dev/null
eventually 30 "paused: phase Paused with condition Paused/KillSwitch" \
    mc_jq paused '.status.phase == "Paused" and (.status.conditions[] | select(.type == "Paused") | .status == "True" and .reason == "KillSwitch")'
eventually 20 "paused: the sidecars' storms are stopped (Aborted)" sidecar_storms '.phase == "Aborted"' "${PAUSED[@]}"
mapchaos paused-late demo one 0 10s
sleep 5
check "paused: a new experiment under the kill switch starts no storm" \
    mc_jq paused-late '.status.phase != "Running" and ([.status.targets[]? | select(.stormPhase == "Running")] | length == 0)'
kubectl -n "$OP_NS" delete configmap mapchaos-kill-switch >/dev/null
# What the operator does on release: the interrupted run (its storms were stopped) ends
# Aborted and is not restarted; an experiment that never started starts now.
eventually 40 "paused: after release, condition Paused=False and the interrupted run ends Aborted" \
    mc_jq paused '.status.phase == "Aborted" and (.status.conditions[] | select(.type == "Paused") | .status == "False")'
check "paused: a Resumed Event" bash -c "
    k get events --field-selector involvedObject.kind=MapChaos,involvedObject.name=paused -o json | jqe '[.items[] | select(.reason == \"Resumed\")] | length > 0'"
eventually 40 "paused: the experiment created under the kill switch starts after release and completes" \
    mc_jq paused-late '.status.phase == "Completed" and .status.summary.targets == 1'
k delete mapchaos paused paused-late --wait=false >/dev/null
eventually 30 "paused: both experiments delete cleanly" bash -c "[[ -z \$(kubectl -n $NS get mapchaos paused paused-late -o name 2>/dev/null) ]]"

# =======================================================================================
say "== 6. metrics through Prometheus"
if [[ -n "$PROM" ]]; then
    promq() { curl -sf --max-time 5 "$PROM/api/v1/query" --data-urlencode "query=$1"; }
    eventually 60 "Prometheus: sum(mapchaos_ops_total{namespace=\"$NS\",source=\"storm\"}) > 0 from the sidecars" bash -c "
        curl -sf '$PROM/api/v1/query' --data-urlencode 'query=sum(mapchaos_ops_total{namespace=\"$NS\",source=\"storm\"})' | jqe '(.data.result[0].value[1] | tonumber) > 0'"
    eventually 60 "Prometheus: every sidecar pod is an up target (6 pods)" bash -c "
        curl -sf '$PROM/api/v1/query' --data-urlencode 'query=sum(up{namespace=\"$NS\"})' | jqe '.data.result[0].value[1] == \"6\"'"
    eventually 60 "Prometheus: the operator (annotated by the chart) reports mapchaos_experiments{phase=\"Completed\"} >= 2" bash -c "
        curl -sf '$PROM/api/v1/query' --data-urlencode 'query=sum(mapchaos_experiments{namespace=\"$NS\",phase=\"Completed\"})' | jqe '(.data.result[0].value[1] | tonumber) >= 2'"
else
    say "no Prometheus URL: metrics checks skipped"
fi

# =======================================================================================
say "== 5c. lifecycle: helm uninstall"
k delete mapchaos --all --wait=true --timeout=60s >/dev/null
check "all MapChaos objects deleted while the operator runs" bash -c "[[ -z \$(kubectl get mapchaos -A -o name) ]]"
check "operator pod never restarted during the scenarios" bash -c "
    kubectl -n $OP_NS get pod $OP_POD -o json | jqe '.status.containerStatuses[0].restartCount == 0'"
check "helm uninstall $RELEASE" helm uninstall "$RELEASE" -n "$OP_NS" --wait --timeout 60s
eventually 60 "operator pod is gone" bash -c "[[ -z \$(kubectl -n $OP_NS get pods -o name) ]]"
check "no object with a mapchaos.io finalizer is left" bash -c "
    ! kubectl get mapchaos -A -o json | jqe '.items[] | select(.metadata.finalizers // [] | map(startswith(\"mapchaos.io\")) | any)'"
check "no chart ClusterRole/Binding is left" bash -c "
    [[ -z \$(kubectl get clusterrole,clusterrolebinding -l app.kubernetes.io/instance=$RELEASE -o name) ]]"

if ((FAILED == 0)); then
    kubectl delete namespace "$NS" "$OP_NS" --wait=false >/dev/null 2>&1
fi
finish
