#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Installs what the tests need on a fresh Debian machine, then runs format and
# lint checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The HTML report test drives Debian's chromium headless (never a downloaded browser).
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]} from Debian"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "==> installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

# playwright-core (the driver only) for the HTML report test, pinned, in the
# target dir where the test looks for it.
PLAYWRIGHT_CORE_VERSION=1.65.1
browser_dir="${CARGO_TARGET_DIR:-target}/browser-test"
if ! grep -qs "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$browser_dir/node_modules/playwright-core/package.json"; then
    echo "==> installing playwright-core $PLAYWRIGHT_CORE_VERSION from npm into $browser_dir"
    mkdir -p "$browser_dir"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --no-save \
        --prefix "$browser_dir" "playwright-core@$PLAYWRIGHT_CORE_VERSION"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
