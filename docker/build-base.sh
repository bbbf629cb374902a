#!/usr/bin/env bash
# Build the local base image the sixfold Dockerfile can use when no registry is reachable:
# a Debian bookworm rootfs made by debootstrap (python3, python3-venv, python3-pip,
# ca-certificates), imported with `docker import`.
#
#   docker/build-base.sh [TAG]        TAG defaults to $SIXFOLD_LOCAL_BASE or sixfold-base:bookworm
#
# A no-op (well under a second) when the image is already present; pass --force (or set
# SIXFOLD_REBUILD_BASE=1) to rebuild it. Needs root for debootstrap; installs debootstrap with
# apt-get when it is missing. DEBIAN_MIRROR overrides the mirror (default deb.debian.org).
set -euo pipefail

force=${SIXFOLD_REBUILD_BASE:-0}
tag=""
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) tag=$arg ;;
    esac
done
tag=${tag:-${SIXFOLD_LOCAL_BASE:-sixfold-base:bookworm}}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { echo "build-base: $*" >&2; }

if [[ $force != 1 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag already present; nothing to do"
    exit 0
fi

as_root=()
if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { log "debootstrap needs root (or sudo)"; exit 1; }
    as_root=(sudo)
fi

if ! command -v debootstrap >/dev/null && [[ ! -x /usr/sbin/debootstrap ]]; then
    log "installing debootstrap with apt-get"
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq debootstrap >/dev/null
fi
debootstrap_bin=$(command -v debootstrap || echo /usr/sbin/debootstrap)

workdir=$(mktemp -d "${TMPDIR:-/tmp}/sixfold-base.XXXXXX")
rootfs=$workdir/rootfs
cleanup() {
    # debootstrap mounts proc/sys (and may bind /dev) inside the rootfs: unmount before deleting.
    if [[ -d $rootfs ]]; then
        awk -v r="$rootfs" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts \
            | sort -r | while read -r m; do "${as_root[@]}" umount -l "$m" || true; done
    fi
    "${as_root[@]}" rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT

started=$(date +%s)
log "debootstrap --variant=minbase $suite from $mirror (takes a few minutes)"
"${as_root[@]}" "$debootstrap_bin" --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 30 "$workdir/debootstrap.log" >&2
    log "debootstrap failed"
    exit 1
}

# Trim what a container never needs; keep apt working (the Dockerfile may apt-get a compiler).
"${as_root[@]}" chroot "$rootfs" apt-get clean
"${as_root[@]}" rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/etc/machine-id "$rootfs"/var/lib/dbus/machine-id
"${as_root[@]}" find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' \
    -exec rm -rf {} + 2>/dev/null || true
: | "${as_root[@]}" tee "$rootfs"/etc/resolv.conf >/dev/null
"${as_root[@]}" mkdir -p "$rootfs"/etc/dpkg/dpkg.cfg.d
printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
    | "${as_root[@]}" tee "$rootfs"/etc/dpkg/dpkg.cfg.d/01-sixfold-nodoc >/dev/null

log "importing the rootfs as $tag"
"${as_root[@]}" tar --numeric-owner --xattrs --one-file-system -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $suite + python3 (sixfold docker/build-base.sh)" \
    - "$tag" >/dev/null

log "built $tag in $(($(date +%s) - started))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
