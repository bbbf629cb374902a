#!/usr/bin/env bash
# Build the sixfold image (sixfold:latest) on a machine that may have no container registry and
# whose builds may have no network. This is what `make images` runs.
#
#  1. Base image: python:3.11-slim when present locally or pullable within
#     $SIXFOLD_PULL_TIMEOUT seconds (default 20; 0 skips the pull); otherwise the local Debian
#     bookworm base sixfold-base:bookworm, built by docker/build-base.sh when missing.
#     $SIXFOLD_BASE_IMAGE forces a base.
#  2. Python dependencies: from a wheelhouse in docker/wheelhouse/ when one matching
#     pyproject.toml exists or containers cannot reach the package index (it is then built on
#     the host with `pip wheel` by a CPython 3.11); otherwise the build installs from the index.
#     SIXFOLD_WHEELHOUSE=always|never overrides that choice (default auto).
#  3. docker build -f docker/Dockerfile --build-arg BASE_IMAGE=<base> -t sixfold:latest .
#
# It writes the base it used to docker/base-image.env as SIXFOLD_BASE_IMAGE=<base> (and prints
# that line), for `docker compose --env-file docker/base-image.env up --build`, or
# `export $(cat docker/base-image.env)`.
set -euo pipefail

cd "$(dirname "$0")/.."

upstream_base=python:3.11-slim
local_base=${SIXFOLD_LOCAL_BASE:-sixfold-base:bookworm}
image=${SIXFOLD_IMAGE:-sixfold:latest}
deps_image=${image%%:*}-deps:cache  # the intermediate stages, tagged so that they are not dangling
build_image=${image%%:*}-build:cache
pull_timeout=${SIXFOLD_PULL_TIMEOUT:-20}
wheelhouse_mode=${SIXFOLD_WHEELHOUSE:-auto}
wheelhouse=docker/wheelhouse
env_file=docker/base-image.env

log() { echo "images: $*" >&2; }
started=$(date +%s)

# ---- 1. the base image -------------------------------------------------------------------
if [[ -n ${SIXFOLD_BASE_IMAGE:-} ]]; then
    base=$SIXFOLD_BASE_IMAGE
    if docker image inspect "$base" >/dev/null 2>&1; then
        base_path="$base (from SIXFOLD_BASE_IMAGE, present locally)"
    elif [[ $base == "$local_base" ]]; then
        docker/build-base.sh "$base"
        base_path="$base (from SIXFOLD_BASE_IMAGE, built with debootstrap)"
    else
        base_path="$base (from SIXFOLD_BASE_IMAGE; docker build will pull it)"
    fi
elif docker image inspect "$upstream_base" >/dev/null 2>&1; then
    base=$upstream_base
    base_path="$base (present locally)"
elif [[ $pull_timeout != 0 ]] && timeout "$pull_timeout" docker pull -q "$upstream_base" >/dev/null 2>&1; then
    base=$upstream_base
    base_path="$base (pulled)"
else
    log "$upstream_base is not present and cannot be pulled: using the local base $local_base"
    base=$local_base
    if docker image inspect "$base" >/dev/null 2>&1; then
        base_path="$base (local debootstrap base, cached)"
    else
        docker/build-base.sh "$base"
        base_path="$base (local debootstrap base, built now)"
    fi
fi
log "base image: $base_path"

# ---- 2. the wheelhouse -------------------------------------------------------------------
stamp_value=$(sha256sum pyproject.toml | cut -d' ' -f1)
stamp_file=$wheelhouse/.pyproject.sha256

wheelhouse_fresh() {
    [[ -f $stamp_file && $(cat "$stamp_file") == "$stamp_value" ]] \
        && compgen -G "$wheelhouse/*.whl" >/dev/null
}

# Can a container on this base reach the package index? `docker build` RUN steps use the
# same default bridge network.
builds_reach_index() {
    docker run --rm "$base" python3 -c '
import urllib.request
urllib.request.urlopen(urllib.request.Request("https://pypi.org/simple/crc32c/", method="HEAD"), timeout=8)
' >/dev/null 2>&1
}

host_python() {
    local c
    for c in "${SIXFOLD_HOST_PYTHON:-}" .venv/bin/python python3.11 python3; do
        [[ -n $c ]] && command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys, platform; sys.exit(not (sys.version_info[:2] == (3, 11) and sys.implementation.name == "cpython" and platform.system() == "Linux" and platform.machine() == "x86_64"))' 2>/dev/null; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

build_wheelhouse() {
    local py tmp
    py=$(host_python) || {
        log "building the wheelhouse needs CPython 3.11 on Linux x86_64 (set SIXFOLD_HOST_PYTHON, or run make up first)"
        exit 1
    }
    log "building the wheelhouse in $wheelhouse with $py (pip wheel, cp311 linux x86_64)"
    tmp=$(mktemp -d "$wheelhouse.tmp.XXXXXX")
    chmod 755 "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    "$py" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        >"$tmp/requirements.txt"
    # setuptools and wheel: the Dockerfile builds sixfold itself from this wheelhouse too.
    if ! "$py" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$tmp" \
        -r "$tmp/requirements.txt" 'setuptools>=68' wheel; then
        log "pip wheel failed"
        exit 1
    fi
    rm "$tmp/requirements.txt"
    echo "$stamp_value" >"$tmp/.pyproject.sha256"
    rm -rf "$wheelhouse"
    mv "$tmp" "$wheelhouse"
    trap - EXIT
    log "wheelhouse: $(ls "$wheelhouse"/*.whl | wc -l) wheels"
}

case $wheelhouse_mode in
    never)
        rm -rf "$wheelhouse"
        deps_path="package index (SIXFOLD_WHEELHOUSE=never)"
        ;;
    always)
        if wheelhouse_fresh; then deps_path="wheelhouse (reused)"; else build_wheelhouse; deps_path="wheelhouse (built now)"; fi
        ;;
    auto)
        if wheelhouse_fresh; then
            deps_path="wheelhouse (reused: pyproject.toml unchanged)"
        elif builds_reach_index; then
            rm -rf "$wheelhouse"
            deps_path="package index (containers reach it)"
        else
            log "containers cannot reach the package index"
            build_wheelhouse
            deps_path="wheelhouse (built now: containers cannot reach the package index)"
        fi
        ;;
    *)
        log "SIXFOLD_WHEELHOUSE must be auto, always or never"
        exit 2
        ;;
esac
log "python dependencies: $deps_path"

# ---- 3. the image ------------------------------------------------------------------------
# The deps and build stages are tagged too: the legacy builder would leave them as dangling
# <none> images, and they are the layer cache that makes a rerun fast. --force-rm: a failed
# step leaves no stopped container holding an image that could then never be pruned.
log "docker build -f docker/Dockerfile --build-arg BASE_IMAGE=$base -t $image ."
docker build --force-rm -f docker/Dockerfile --build-arg "BASE_IMAGE=$base" --target deps -t "$deps_image" .
docker build --force-rm -f docker/Dockerfile --build-arg "BASE_IMAGE=$base" --target build -t "$build_image" .
docker build --force-rm -f docker/Dockerfile --build-arg "BASE_IMAGE=$base" -t "$image" .
# Images this script built before and that no tag or container uses any more.
docker image prune -f --filter label=org.sixfold.image=sixfold >/dev/null

echo "SIXFOLD_BASE_IMAGE=$base" >"$env_file"
log "built $image in $(($(date +%s) - started))s"
log "  base: $base_path"
log "  python dependencies: $deps_path"
log "next: docker compose up -d   (or docker-compose up -d where only compose v1 exists)"
log "  to rebuild through compose: docker compose --env-file $env_file up -d --build"
echo "SIXFOLD_BASE_IMAGE=$base"
