#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls it).
# Installs what the tests need on a fresh Debian machine, then runs format and
# lint checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
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

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
