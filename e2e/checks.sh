# Sourced by the e2e suites (smoke.sh, scenarios.sh): numbered checks, checks that
# may take a while to hold, and the counters behind the suite's closing line.
# Set SUITE (the log prefix) and NS (the suite's namespace) before sourcing.

PASSED=0
FAILED=0
FAILURES=()

say() { printf '[%s %(%H:%M:%S)T] %s\n' "$SUITE" -1 "$*"; }
pass() { PASSED=$((PASSED + 1)); say "ok $((PASSED + FAILED)) - $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); say "not ok $((PASSED + FAILED)) - $*"; }

# check DESCRIPTION COMMAND...: one assertion.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# eventually TIMEOUT DESCRIPTION COMMAND...: an assertion that may take a while to hold.
eventually() {
    local timeout=$1 what=$2 start=$SECONDS
    shift 2
    until "$@" 2>/dev/null; do
        if ((SECONDS - start >= timeout)); then
            fail "$what (not within ${timeout}s)"
            return 1
        fi
        sleep 1
    done
    pass "$what ($((SECONDS - start))s)"
}

k() { kubectl -n "$NS" "$@"; }
