#!/usr/bin/env bash
# One command for contributors: bring the local e2e cluster up, run the smoke proof, take the cluster down, and check nothing was left behind.
#
# Usage: sudo bash e2e/run-smoke.sh    (root; about 10 minutes the first time, when
# Kubernetes is built from source, then well under two minutes)

set -uo pipefail

E2E_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_SRC/.." && pwd)
DIR="${MAPCHAOS_E2E_DIR:-/tmp/mapchaos-e2e}"
BRIDGE="${MAPCHAOS_E2E_BRIDGE:-mapchaos0}"

say() { printf '[run-smoke %(%H:%M:%S)T] %s\n' -1 "$*"; }
t0=$SECONDS

# The smoke Deployment runs the real sidecar when the mapchaos binary builds; otherwise
# smoke.sh falls back to a stand-in and says so.
say "building the mapchaos binary (the smoke app image)"
(cd "$REPO" && nice -n 10 cargo build -q -p mapchaos) || say "mapchaos did not build; the smoke test will use its stand-in"

rc=0
t_up=$SECONDS
if bash "$E2E_SRC/cluster" up; then
    t_up=$((SECONDS - t_up))
    t_smoke=$SECONDS
    bash "$E2E_SRC/smoke.sh" || rc=1
    t_smoke=$((SECONDS - t_smoke))
else
    say "cluster up failed; component logs are in $DIR/logs"
    bash "$E2E_SRC/cluster" logs || true
    rc=1
    t_up=$((SECONDS - t_up))
    t_smoke=0
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
stray=$(pgrep -a -f -- "$DIR/" | grep -v -e pgrep -e run-smoke || true)
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

say "timings: up ${t_up}s, smoke ${t_smoke}s, down ${t_down}s, total $((SECONDS - t0))s"
if ((rc == 0)); then say "PASS"; else say "FAIL (logs kept in $DIR)"; fi
exit "$rc"
