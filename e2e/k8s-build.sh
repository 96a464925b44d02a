#!/usr/bin/env bash
# Builds (or reuses from cache) the Kubernetes 1.20.2 control-plane binaries from Debian's source package.
#
# Sourced by e2e/cluster; also runnable on its own: `bash e2e/k8s-build.sh` prints the
# directory holding kube-apiserver, kube-controller-manager and kube-scheduler.
# Why from source: there is no container engine and no internet here, only Debian's
# archive, whose `kubernetes` source package vendors every Go dependency (E2E.md).

set -euo pipefail
shopt -s inherit_errexit

# The upstream version Debian's bookworm `kubernetes` source package carries
# (1.20.5+really1.20.2-<debian revision>); the revision actually built is recorded in
# the cache directory's SOURCE file.
K8S_VERSION="1.20.2"
K8S_CACHE_ROOT="${MAPCHAOS_E2E_CACHE:-${HOME}/.cache/mapchaos-e2e}"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)

e2e_log() { printf '[e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Installs the Debian packages that are missing, without starting any service they ship
# (etcd-server and prometheus carry init scripts; we run our own instances instead).
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    e2e_log "installing Debian packages: ${missing[*]}"
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null; then
        e2e_log "apt-get install failed; refreshing package lists and retrying"
        apt-get update -q >/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >/dev/null || rc=$?
    fi
    [[ $made_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

# `apt-get source` needs a deb-src line; add a twin of the existing bookworm entry.
ensure_deb_src() {
    local twin=/etc/apt/sources.list.d/mapchaos-e2e-src.sources
    if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    local src
    src=$(grep -lE '^Suites:.*bookworm' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
    if [[ -n "$src" ]]; then
        sed -E 's/^Types:.*/Types: deb-src/' "$src" >"$twin"
    else
        grep -hE '^deb .*bookworm' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
            >"${twin%.sources}.list"
    fi
    e2e_log "added deb-src entry; running apt-get update"
    apt-get update -q >/dev/null
}

# The one patch we carry: reflect2 1.0.1 (vendored) crashes kube-apiserver on Go >= 1.18
# with `fatal error: fault` in runtime.mapiternext; Debian's 1.0.2 does not.
apply_patches() {
    local src=$1
    local fixed=/usr/share/gocode/src/github.com/modern-go/reflect2
    [[ -d "$fixed" ]] || { e2e_log "missing $fixed (golang-github-modern-go-reflect2-dev)"; return 1; }
    rm -rf "$src/vendor/github.com/modern-go/reflect2"
    cp -r "$fixed" "$src/vendor/github.com/modern-go/reflect2"
    rm -f "$src/vendor/github.com/modern-go/reflect2/go.mod"
}

# Cache key: source version plus a hash of the patch step itself, so changing the patch
# invalidates old binaries without anyone having to remember to.
k8s_cache_dir() {
    local patch_hash
    patch_hash=$(declare -f apply_patches | sha256sum | cut -c1-12)
    printf '%s/%s-%s\n' "$K8S_CACHE_ROOT" "$K8S_VERSION" "$patch_hash"
}

k8s_cached() {
    local dir=$1 bin
    for bin in "${K8S_BINARIES[@]}"; do [[ -x "$dir/$bin" ]] || return 1; done
}

# Prints the directory holding the three binaries, building them on a cache miss.
ensure_k8s_binaries() {
    local dir
    dir=$(k8s_cache_dir)
    if k8s_cached "$dir"; then
        printf '%s\n' "$dir"
        return 0
    fi
    ensure_packages golang-go rsync make dpkg-dev golang-github-modern-go-reflect2-dev
    ensure_deb_src
    local work
    work=$(mktemp -d /tmp/mapchaos-e2e-k8s-build.XXXXXX)
    e2e_log "building Kubernetes ${K8S_VERSION} in $work (about 8 minutes of both cores, niced)"
    # Not `if ! ( ... )`: inside a tested command bash ignores `set -e`.
    local rc=0
    set +e
    (
        set -e
        cd "$work"
        apt-get source -q --download-only kubernetes >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null; apt-get source -q --download-only kubernetes >/dev/null; }
        ls ./kubernetes_*.dsc >"$work/SOURCE"
        grep -q "really${K8S_VERSION}" "$work/SOURCE" \
            || { e2e_log "unexpected source version: $(cat "$work/SOURCE")"; exit 1; }
        # apt verified the files against the signed archive index; dpkg-source's own check
        # of the .dsc signature only complains about a missing keyring, so keep it quiet.
        dpkg-source -x ./kubernetes_*.dsc src >"$work/dpkg-source.log" 2>&1 \
            || { cat "$work/dpkg-source.log" >&2; exit 1; }
        apply_patches "$work/src"
        cd src
        mkdir -p .go/src/k8s.io
        ln -sfn ../../.. .go/src/k8s.io/kubernetes
        cd .go/src/k8s.io/kubernetes
        GOPATH="$work/src/.go" GOCACHE="$work/gocache" GOFLAGS=-mod=vendor CGO_ENABLED=0 \
            nice -n 10 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" \
            >"$work/build.log" 2>&1 \
            || { tail -n 40 "$work/build.log" >&2; exit 1; }
    )
    rc=$?
    set -e
    if ((rc != 0)); then
        e2e_log "Kubernetes build failed; sources and build.log kept in $work"
        return 1
    fi
    mkdir -p "$dir.tmp"
    local bin
    for bin in "${K8S_BINARIES[@]}"; do
        cp "$work/src/_output/bin/$bin" "$dir.tmp/$bin"
    done
    cp "$work/SOURCE" "$dir.tmp/SOURCE"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    rm -rf "$work"
    e2e_log "cached Kubernetes binaries in $dir"
    printf '%s\n' "$dir"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ensure_k8s_binaries
fi
