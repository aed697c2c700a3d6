#!/usr/bin/env bash
# Installs the system packages platforge's tests, demo and benchmarks use (one
# apt-get install, only what is missing) and registers QEMU binfmt_misc handlers
# with the F flag. Idempotent; safe to run again.
set -euo pipefail

packages=(
    docker-registry skopeo qemu-user-static crun runc buildah docker.io umoci
    oci-image-tool proot uidmap apache2-utils mmdebstrap arch-test fuse-overlayfs
)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-system: missing packages: ${missing[*]}; run this script as root" >&2
        exit 1
    fi
    echo "install-system: installing ${missing[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# QEMU handlers: the package's own script skips registration inside a container.
if [[ $(id -u) -eq 0 ]]; then
    binfmt=/proc/sys/fs/binfmt_misc
    if [[ ! -e $binfmt/register ]]; then
        mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
    fi
    if [[ -w $binfmt/register ]]; then
        for conf in /usr/lib/binfmt.d/qemu-*.conf; do
            [[ -e $conf ]] || continue
            name=$(cut -d: -f2 "$conf")
            [[ -e $binfmt/$name ]] && continue
            # "File exists" races are harmless: another process registered it.
            cat "$conf" >"$binfmt/register" 2>/dev/null || true
        done
    fi
fi
