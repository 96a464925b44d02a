#!/usr/bin/env bash
# One command: bring the local e2e cluster up, run the storm scenarios (chart install, storms, broken engine, invalid spec, lifecycle, metrics), take the cluster down, and check nothing was left behind.
#
# Usage: sudo bash e2e/run-scenarios.sh    (root; about 10 minutes the first time, when
# Kubernetes is built from source, then a few minutes)

set -uo pipefail

E2E_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_SRC/.." && pwd)
DIR="${MAPCHAOS_E2E_DIR:-/tmp/mapchaos-e2e}"
BRIDGE="${MAPCHAOS_E2E_BRIDGE:-mapchaos0}"

say() { printf '[run-scenarios %(%H:%M:%S)T] %s\n' -1 "$*"; }
t0=$SECONDS

say "building the mapchaos binary (the operator and sidecar image)"
# The operator and the sidecars run the workspace's mapchaos binary (image `mapchaos`).
if ! (cd "$REPO" && nice -n 10 cargo build -q -p mapchaos); then
    say "FAIL: mapchaos did not build"
    exit 1
fi

rc=0
t_up=$SECONDS
if bash "$E2E_SRC/cluster" up; then
    t_up=$((SECONDS - t_up))
    t_scen=$SECONDS
    bash "$E2E_SRC/scenarios.sh" || rc=1
    t_scen=$((SECONDS - t_scen))
else
    say "cluster up failed; component logs are in $DIR/logs"
    bash "$E2E_SRC/cluster" logs || true
    rc=1
    t_up=$((SECONDS - t_up))
    t_scen=0
fi
t_down=$SECONDS
bash "$E2E_SRC/cluster" down || rc=1
t_down=$((SECONDS - t_down))

# `down` has to leave nothing: no component process, no pod namespace, no bridge.
leftovers=0
for f in "$DIR"/pids/*.pid; do
    [[ -f "$f" ]] || continue
    say "leftover pid file $f"
    leftovers=1
done
if ip netns list 2>/dev/null | grep -q '^mapchaos-'; then
    say "leftover network namespaces: $(ip netns list | grep '^mapchaos-' | tr '\n' ' ')"
    leftovers=1
fi
if ip link show "$BRIDGE" >/dev/null 2>&1; then
    say "leftover bridge $BRIDGE"
    leftovers=1
fi
# Every component was started with the state directory on its command line.
stray=$(pgrep -a -f -- "$DIR/" | grep -v -e pgrep -e run-scenarios || true)
if [[ -n "$stray" ]]; then
    say "leftover processes:"
    printf '%s\n' "$stray"
    leftovers=1
fi
if ((leftovers)); then
    rc=1
else
    say "down left no process, network namespace or bridge behind"
fi

say "timings: up ${t_up}s, scenarios ${t_scen}s, down ${t_down}s, total $((SECONDS - t0))s"
if ((rc == 0)); then say "PASS"; else say "FAIL (logs kept in $DIR)"; fi
exit "$rc"
