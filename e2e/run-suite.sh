#!/usr/bin/env bash
# One e2e suite from a clean slate: build the mapchaos binary, bring the local cluster
# up, run the suite, take the cluster down, and check nothing was left behind.
#
# Usage: sudo bash e2e/run-suite.sh smoke|scenarios   (root; about 10 minutes the first
# time, when Kubernetes is built from source; then a few minutes). e2e/run-smoke.sh and
# e2e/run-scenarios.sh are the two suites by name.

set -uo pipefail

SUITE=${1:-}
E2E_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_SRC/.." && pwd)
DIR="${MAPCHAOS_E2E_DIR:-/tmp/mapchaos-e2e}"
BRIDGE="${MAPCHAOS_E2E_BRIDGE:-mapchaos0}"

case "$SUITE" in
    smoke | scenarios) ;;
    *)
        echo "usage: $0 smoke|scenarios" >&2
        exit 2
        ;;
esac

say() { printf '[run-%s %(%H:%M:%S)T] %s\n' "$SUITE" -1 "$*"; }
t0=$SECONDS

# The pods run the workspace's mapchaos binary (image `mapchaos`): the sidecars, and in
# the scenarios the operator too.
say "building the mapchaos binary (the image the pods run)"
if ! (cd "$REPO" && nice -n 10 cargo build -q -p mapchaos); then
    say "FAIL: mapchaos did not build"
    exit 1
fi

rc=0
t_up=$SECONDS
if bash "$E2E_SRC/cluster" up; then
    t_up=$((SECONDS - t_up))
    t_suite=$SECONDS
    bash "$E2E_SRC/$SUITE.sh" || rc=1
    t_suite=$((SECONDS - t_suite))
else
    say "cluster up failed; component logs are in $DIR/logs"
    bash "$E2E_SRC/cluster" logs || true
    rc=1
    t_up=$((SECONDS - t_up))
    t_suite=0
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
stray=$(pgrep -a -f -- "$DIR/" | grep -v -e pgrep -e run-suite || true)
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

say "timings: up ${t_up}s, $SUITE ${t_suite}s, down ${t_down}s, total $((SECONDS - t0))s"
if ((rc == 0)); then say "PASS"; else say "FAIL (logs kept in $DIR)"; fi
exit "$rc"
