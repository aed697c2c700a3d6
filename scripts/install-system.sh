#!/usr/bin/env bash
# Installs the system packages platforge's tests, demo and benchmarks use and
# registers the QEMU binfmt_misc handlers (with the F flag) that foreign-platform
# RUN steps and the QEMU tests need.
#
# Idempotent and quiet when nothing is missing: a second run only reads dpkg's
# status and /proc/sys/fs/binfmt_misc. Runs without standard input. Packages
# are installed with one `apt-get install` (apt re-reads every list on each call);
# no service is started (this machine's policy-rc.d refuses, and the test bed
# starts its own servers on 127.0.0.1).
set -euo pipefail

packages=(
    # the test bed: registries, verifier, inputs
    docker-registry skopeo apache2-utils ca-certificates
    # foreign architectures
    qemu-user-static arch-test
    # RUN sandboxes and reference builders
    crun runc buildah docker.io uidmap fuse-overlayfs proot
    # OCI layout validators and base filesystems
    umoci oci-image-tool mmdebstrap
    # the project's venv (Debian's python3 has no ensurepip without it)
    python3-venv
)

log() { echo "install-system: $*" >&2; }

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing packages: ${missing[*]}; run this script as root"
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null >/dev/null
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null >/dev/null
fi

# QEMU handlers. qemu-user-static's own script skips registration when it thinks
# it runs in a container (/.dockerenv), so register from its binfmt.d files.
# Overridable so the test suite can check this logic on a scratch directory.
binfmt=${PLATFORGE_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}
binfmt_conf=${PLATFORGE_BINFMT_CONF_DIR:-/usr/lib/binfmt.d}
wanted=(qemu-aarch64 qemu-arm qemu-ppc64le qemu-s390x qemu-riscv64)
if [[ $(id -u) -eq 0 ]]; then
    if [[ ! -e $binfmt/register ]]; then
        mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
    fi
    if [[ -w $binfmt/register ]]; then
        # Every handler the package ships (mips64el, riscv64, … cost nothing);
        # only the ones in $wanted are checked below.
        for conf in "$binfmt_conf"/qemu-*.conf; do
            [[ -e $conf ]] || continue
            name=$(basename "$conf" .conf)
            [[ -e $binfmt/$name ]] && continue
            # "File exists" means another process registered it meanwhile: fine.
            if ! printf '%s' "$(cat "$conf")" >"$binfmt/register" 2>/dev/null; then
                [[ -e $binfmt/$name ]] || log "could not register $name"
            fi
        done
    fi
fi

# Report handlers that cannot serve chroots: registered without F, or absent.
for name in "${wanted[@]}"; do
    if [[ ! -e $binfmt/$name ]]; then
        log "warning: binfmt handler $name is not registered (QEMU tests will skip)"
    elif ! grep -q '^flags:.*F' "$binfmt/$name"; then
        log "warning: binfmt handler $name lacks the F flag; remove it" \
            "(echo -1 > $binfmt/$name) and run this script again"
    fi
done
