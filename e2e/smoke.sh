#!/usr/bin/env bash
# Smoke proof of the local e2e cluster: real Deployments, pods as processes, probes, env, tokens, Prometheus, crash back-off, image errors, graceful deletion.
#
# Usage: bash e2e/smoke.sh   (with `bash e2e/cluster up` done; see e2e/run-smoke.sh)
#
# Every check looks at the real thing: pod status from the API server, the container's
# process (/proc/PID/environ, its mount namespace), Prometheus' own HTTP API. On failure it
# dumps pod states, Events and component logs.

set -uo pipefail

DIR="${MAPCHAOS_E2E_DIR:-/tmp/mapchaos-e2e}"
export KUBECONFIG="$DIR/admin.kubeconfig"
PROM="http://127.0.0.1:${MAPCHAOS_E2E_PROM_PORT:-19090}"
NS=mapchaos-smoke
SA_DIR=/var/run/secrets/kubernetes.io/serviceaccount

SUITE=smoke
# shellcheck source=checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

jpod() { k get pod "$1" -o json; }

# The container's main process, from its containerID (mapchaos://PID).
container_pid() {
    k get pod "$1" -o jsonpath="{.status.containerStatuses[${2:-0}].containerID}" | sed 's|^mapchaos://||'
}

env_of() { tr '\0' '\n' <"/proc/$1/environ" | sed -n "s/^$2=//p"; }

# Runs a command inside a pod's namespaces with the container's own environment.
in_pod() {
    local pid=$1
    shift
    local -a envs=()
    mapfile -d '' envs <"/proc/$pid/environ"
    env -i "${envs[@]}" nsenter --target "$pid" --net --mount --uts -- "$@"
}
export -f in_pod

dump() {
    say "---- diagnostics ----"
    kubectl get nodes -o wide
    kubectl get pods -A -o wide
    k describe pods 2>/dev/null | tail -n 150
    kubectl get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 60
    local c
    for c in kube-apiserver kube-controller-manager kube-scheduler mapchaos-node mapchaos-pod-sd prometheus; do
        echo "==> $DIR/logs/$c.log (tail) <=="
        tail -n 30 "$DIR/logs/$c.log" 2>/dev/null
    done
    local f
    for f in "$DIR"/pods/"$NS"_*/logs/*.log; do
        [[ -f "$f" ]] || continue
        echo "==> $f (tail) <=="
        tail -n 15 "$f"
    done
}

# ---------------------------------------------------------------------------------------
# The app image: the real mapchaos sidecar when it is built, else a Python stand-in that
# serves the same HTTP endpoints (and exits cleanly on SIGTERM, as the sidecar does).
MAPCHAOS_BIN=$(sed -n 's/^  mapchaos: {path: \(.*\)}$/\1/p' "$DIR/images.yaml")
if [[ -x "$MAPCHAOS_BIN" ]] && "$MAPCHAOS_BIN" sidecar --help >/dev/null 2>&1; then
    APP_IMAGE="mapchaos:dev"
    APP_ARGS='["sidecar", "--resp-addr", "$(POD_IP):6379", "--http-addr", "0.0.0.0:9464"]'
    TERM_MARK="SIGTERM received"
    say "app image: mapchaos sidecar ($MAPCHAOS_BIN)"
else
    APP_IMAGE="python:3"
    APP_ARGS=$(jq -cn --arg prog '
import http.server, signal, sys
def stop(*_):
    print("SIGTERM received", flush=True); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"up_standin 1\n" if self.path == "/metrics" else b"ok\n"
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 9464), H).serve_forever()
' '["-c", $prog]')
    TERM_MARK="SIGTERM received"
    say "app image: Python stand-in (mapchaos binary not built)"
fi

say "cluster: $(kubectl version -o json 2>/dev/null | jq -r .serverVersion.gitVersion)"
kubectl delete namespace "$NS" --wait=true --timeout=60s >/dev/null 2>&1
kubectl create namespace "$NS" >/dev/null
eventually 30 "namespace has its default service account token" \
    bash -c "[[ -n \$(kubectl -n $NS get sa default -o jsonpath='{.secrets[0].name}') ]]"

kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: smoke-config, namespace: $NS}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: smoke-secret, namespace: $NS}
stringData: {password: s3cret}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke-app, namespace: $NS}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke-app}}
  template:
    metadata:
      labels: {app: smoke-app}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9464"}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: app
        image: $APP_IMAGE
        args: $APP_ARGS
        ports: [{name: http, containerPort: 9464}]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: HOST_IP, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
        - {name: SA_NAME, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
        - {name: CPU_LIMIT, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
        - {name: PASSWORD, valueFrom: {secretKeyRef: {name: smoke-secret, key: password}}}
        - {name: RESP_ADDR, value: "\$(POD_IP):6379"}
        volumeMounts: [{name: config, mountPath: /etc/smoke}]
        readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /healthz, port: 9464}, periodSeconds: 5, failureThreshold: 3}
      volumes: [{name: config, configMap: {name: smoke-config}}]
EOF

say "== Deployment: pods Running and Ready with pod IPs"
eventually 90 "Deployment smoke-app has 2 available replicas" \
    bash -c "[[ \$(kubectl -n $NS get deploy smoke-app -o jsonpath='{.status.availableReplicas}') == 2 ]]"
mapfile -t PODS < <(k get pods -l app=smoke-app -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
check "two smoke-app pods exist" test "${#PODS[@]}" -eq 2
declare -A PIDS IPS
for pod in "${PODS[@]}"; do
    json=$(jpod "$pod")
    ip=$(jq -r .status.podIP <<<"$json")
    IPS[$pod]=$ip
    check "$pod is Running" test "$(jq -r .status.phase <<<"$json")" = Running
    check "$pod is Ready" test "$(jq -r '.status.conditions[] | select(.type=="Ready") | .status' <<<"$json")" = True
    check "$pod has all four conditions True" \
        test "$(jq '[.status.conditions[] | select(.status=="True")] | length' <<<"$json")" -eq 4
    check "$pod has a pod IP in the pod range ($ip)" bash -c "[[ $ip == 10.213.0.* ]]"
    check "$pod hostIP and startTime are set" \
        test "$(jq -r '[.status.hostIP, .status.startTime] | map(select(. != null)) | length' <<<"$json")" -eq 2
    check "$pod container status is ready, started, with image and imageID" \
        test "$(jq -r '.status.containerStatuses[0] | [.ready, .started, (.image != ""), (.imageID | startswith("local://"))] | all' <<<"$json")" = true
    pid=$(container_pid "$pod")
    PIDS[$pod]=$pid
    check "$pod containerID names a live process (pid $pid)" test -d "/proc/$pid"
    check "$pod process lives in its own network namespace" \
        bash -c "[[ \$(readlink /proc/$pid/ns/net) != \$(readlink /proc/self/ns/net) ]]"
    check "$pod process lives in its own mount namespace" \
        bash -c "[[ \$(readlink /proc/$pid/ns/mnt) != \$(readlink /proc/self/ns/mnt) ]]"
done

say "== downward API and env"
for pod in "${PODS[@]}"; do
    pid=${PIDS[$pod]}
    json=$(jpod "$pod")
    check "$pod POD_NAME" test "$(env_of "$pid" POD_NAME)" = "$pod"
    check "$pod POD_NAMESPACE" test "$(env_of "$pid" POD_NAMESPACE)" = "$NS"
    check "$pod POD_IP equals status.podIP" test "$(env_of "$pid" POD_IP)" = "${IPS[$pod]}"
    check "$pod NODE_NAME equals spec.nodeName" test "$(env_of "$pid" NODE_NAME)" = "$(jq -r .spec.nodeName <<<"$json")"
    check "$pod HOST_IP equals status.hostIP" test "$(env_of "$pid" HOST_IP)" = "$(jq -r .status.hostIP <<<"$json")"
    check "$pod SA_NAME" test "$(env_of "$pid" SA_NAME)" = default
    check "$pod CPU_LIMIT defaults to node allocatable ($(nproc))" test "$(env_of "$pid" CPU_LIMIT)" = "$(nproc)"
    check "$pod secretKeyRef env" test "$(env_of "$pid" PASSWORD)" = s3cret
    check "$pod \$(POD_IP) expansion" test "$(env_of "$pid" RESP_ADDR)" = "${IPS[$pod]}:6379"
done

say "== volumes in the pod's mount namespace"
pod=${PODS[0]}
pid=${PIDS[$pod]}
check "service-account token exists inside the pod" nsenter -t "$pid" -m test -s "$SA_DIR/token"
check "service-account token is not on the host" test ! -e "$SA_DIR/token"
check "token is the one the API server issued for the namespace" bash -c "
    secret=\$(kubectl -n $NS get sa default -o jsonpath='{.secrets[0].name}')
    [[ \$(kubectl -n $NS get secret \$secret -o jsonpath='{.data.token}' | base64 -d) == \$(nsenter -t $pid -m cat $SA_DIR/token) ]]"
check "namespace file inside the pod" test "$(nsenter -t "$pid" -m cat "$SA_DIR/namespace")" = "$NS"
check "configMap volume at its mount path" test "$(nsenter -t "$pid" -m cat /etc/smoke/greeting)" = hello
check "pod hostname is the pod name" test "$(nsenter -t "$pid" -u hostname)" = "$pod"

say "== networking"
check "pod reaches the API server with its own token and CA (GET /version -> 200)" bash -c "
    code=\$(in_pod $pid sh -c 'curl -s -o /dev/null -w %{http_code} --cacert $SA_DIR/ca.crt -H \"Authorization: Bearer \$(cat $SA_DIR/token)\" https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/version')
    [[ \$code == 200 ]]"
check "the API server sees the pod as its service account" bash -c "
    in_pod $pid sh -c 'curl -s --cacert $SA_DIR/ca.crt -H \"Authorization: Bearer \$(cat $SA_DIR/token)\" https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/api/v1/nodes' \
    | grep -q 'system:serviceaccount:$NS:default'"
other=${PODS[1]}
check "pod reaches the other pod on its pod IP" bash -c "
    in_pod $pid curl -sf -o /dev/null http://${IPS[$other]}:9464/healthz"
check "pod has no route off the machine (forwarding off on the bridge)" \
    test "$(sysctl -n net.ipv4.conf.mapchaos0.forwarding 2>/dev/null || sysctl -n net.ipv4.ip_forward)" = 0

say "== Prometheus discovers and scrapes the pods"
prom_up() {
    local targets
    targets=$(curl -sf "$PROM/api/v1/targets?state=active") || return 1
    for pod in "${PODS[@]}"; do
        jq -e --arg url "http://${IPS[$pod]}:9464/metrics" --arg pod "$pod" \
            '.data.activeTargets[] | select(.scrapeUrl == $url and .labels.pod == $pod and .health == "up")' \
            <<<"$targets" >/dev/null || return 1
    done
}
eventually 60 "both pods are up targets in Prometheus (scraped on pod IP:9464)" prom_up
check "PromQL up{namespace=\"$NS\"} has 2 series equal to 1" bash -c "
    curl -sf '$PROM/api/v1/query' --data-urlencode 'query=sum(up{namespace=\"$NS\"})' | jq -e '.data.result[0].value[1] == \"2\"' >/dev/null"

say "== crash loop back-off"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: crasher, namespace: $NS}
spec:
  containers:
  - {name: crash, image: busybox, command: [sh, -c, "echo about to crash; exit 3"]}
EOF
crash_looping() {
    local s
    s=$(k get pod crasher -o json) || return 1
    jq -e '.status.containerStatuses[0] | .restartCount >= 2
        and .state.waiting.reason == "CrashLoopBackOff"
        and (.state.waiting.message | test("back-off [0-9]+s restarting failed container=crash"))
        and .lastState.terminated.exitCode == 3' <<<"$s" >/dev/null
}
eventually 60 "crashing container restarts and shows CrashLoopBackOff with exit code 3" crash_looping
sleep 5
restarts=$(k get pod crasher -o jsonpath='{.status.containerStatuses[0].restartCount}')
check "restarts are backed off (restartCount $restarts after ~15s, not a hot loop)" test "$restarts" -le 3
check "pod phase stays Running while it restarts" test "$(k get pod crasher -o jsonpath='{.status.phase}')" = Running
check "BackOff event recorded" bash -c "kubectl -n $NS get events --field-selector involvedObject.name=crasher -o json | jq -e '[.items[] | select(.reason==\"BackOff\")] | length > 0' >/dev/null"

say "== unknown image"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: no-such-image, namespace: $NS}
spec:
  containers:
  - {name: app, image: "registry.invalid/nope:1"}
EOF
image_pull_error() {
    k get pod no-such-image -o json | jq -e '.status.containerStatuses[0].state.waiting
        | .reason == "ErrImagePull" and (.message | contains("registry.invalid/nope:1"))' >/dev/null
}
eventually 30 "unknown image shows Waiting/ErrImagePull naming the image" image_pull_error
check "pod with unknown image is Pending, not Running" test "$(k get pod no-such-image -o jsonpath='{.status.phase}')" = Pending

say "== init containers, emptyDir, exec probe"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: with-init, namespace: $NS}
spec:
  initContainers:
  - {name: init, image: busybox, command: [sh, -c, "echo from-init > /data/scratch/ready"], volumeMounts: [{name: scratch, mountPath: /data/scratch}]}
  containers:
  - name: app
    image: busybox
    command: [sh, -c, "cat /data/scratch/ready; exec sleep 3600"]
    volumeMounts: [{name: scratch, mountPath: /data/scratch}]
    readinessProbe: {exec: {command: [test, -f, /data/scratch/ready]}, periodSeconds: 1}
  volumes: [{name: scratch, emptyDir: {}}]
EOF
init_done() {
    k get pod with-init -o json | jq -e '.status.phase == "Running"
        and (.status.conditions[] | select(.type == "Initialized") | .status == "True")
        and (.status.conditions[] | select(.type == "Ready") | .status == "True")
        and .status.initContainerStatuses[0].state.terminated.exitCode == 0' >/dev/null
}
eventually 30 "init container ran to completion before the app, which is Ready by exec probe" init_done
check "emptyDir is shared between init and app container" \
    test "$(nsenter -t "$(container_pid with-init)" -m cat /data/scratch/ready)" = from-init

say "== run-to-completion (Job)"
kubectl apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: $NS}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: once, image: busybox, command: [sh, -c, "echo done"]}
EOF
eventually 40 "Job completes (pod Succeeded, reported by the node)" \
    bash -c "[[ \$(kubectl -n $NS get job once -o jsonpath='{.status.succeeded}') == 1 ]]"
check "Job pod phase is Succeeded with exit code 0" bash -c "
    kubectl -n $NS get pods -l job-name=once -o json | jq -e '.items[0].status.phase == \"Succeeded\" and .items[0].status.containerStatuses[0].state.terminated.exitCode == 0' >/dev/null"
k delete job once --wait=false >/dev/null
k delete pods -l job-name=once --wait=true --timeout=30s >/dev/null

say "== graceful termination"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: stubborn, namespace: $NS}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - {name: app, image: busybox, command: [sh, -c, "trap 'echo ignoring TERM' TERM; while true; do sleep 0.2; done"]}
EOF
eventually 30 "stubborn pod is Running" bash -c "[[ \$(kubectl -n $NS get pod stubborn -o jsonpath='{.status.phase}') == Running ]]"
stubborn_pid=$(container_pid stubborn)
stubborn_log="$DIR/pods/${NS}_stubborn_$(k get pod stubborn -o jsonpath='{.metadata.uid}')/logs/app.log"
t0=$SECONDS
k delete pod stubborn --wait=true --timeout=30s >/dev/null
took=$((SECONDS - t0))
check "a process ignoring SIGTERM is killed after the 3s grace period (took ${took}s)" \
    bash -c "((${took} >= 3 && ${took} <= 10)) && [[ ! -d /proc/$stubborn_pid ]]"
check "stubborn container saw SIGTERM, then SIGKILL" bash -c "
    grep -q 'ignoring TERM' $stubborn_log && grep -q 'killed by SIGKILL after the grace period' $stubborn_log"

declare -A UIDS
for pod in "${PODS[@]}"; do UIDS[$pod]=$(k get pod "$pod" -o jsonpath='{.metadata.uid}'); done
t0=$SECONDS
k delete deployment smoke-app >/dev/null
pods_gone() { [[ -z "$(k get pods -l app=smoke-app -o name 2>/dev/null)" ]]; }
eventually 40 "deleting the Deployment removes its pods" pods_gone
for pod in "${PODS[@]}"; do
    pid=${PIDS[$pod]}
    log="$DIR/pods/${NS}_${pod}_${UIDS[$pod]}/logs/app.log"
    check "$pod process is gone" test ! -d "/proc/$pid"
    check "$pod app got SIGTERM and exited by itself (no SIGKILL)" bash -c "
        grep -q '$TERM_MARK' $log && grep -q 'stopped by SIGTERM' $log && ! grep -q SIGKILL $log"
    check "$pod network namespace is deleted" bash -c "! ip netns list | grep -q '^mapchaos-${UIDS[$pod]}'"
done

k delete pod crasher no-such-image with-init --grace-period=1 --wait=true --timeout=30s >/dev/null
check "all smoke pods are gone" bash -c "[[ -z \$(kubectl -n $NS get pods -o name) ]]"
check "no pod network namespaces remain" bash -c "! ip netns list | grep -q '^mapchaos-'"

if ((FAILED > 0)); then
    dump
    say "failed checks:"
    printf '  - %s\n' "${FAILURES[@]}"
else
    kubectl delete namespace "$NS" --wait=false >/dev/null
fi
echo "smoke: $PASSED passed, $FAILED failed"
((FAILED == 0))
