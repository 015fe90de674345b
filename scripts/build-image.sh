#!/usr/bin/env bash
# Build the flashvl CPU image (deploy/container/Containerfile) as flashvl:VERSION and flashvl:latest
# (`--gpu`: flashvl-gpu:VERSION, with the GLM-4.6V extra; torch's CUDA wheels from the host's index),
# with podman or docker (whichever exists; CONTAINER_ENGINE to choose), and no network inside the build:
#   1. every wheel is gathered here first, with this machine's pip configuration (index, mirror, proxy,
#      certificates), into build/container/wheelhouse (made afresh each time; pip's own cache makes
#      it quick);
#   2. the build installs from that wheelhouse only (--no-index) and assembles + sha256-checks the
#      language model, so the container starts offline.
# Settings (environment or `make image VAR=...`):
#   BASE               base image with python3 (3.11+) and its venv module
#                      (default docker.io/library/python:3.11-slim-bookworm; scripts/container-base.sh
#                      makes localhost/debian-py:bookworm with no registry)
#   PYTHON             the Python whose pip gathers the wheels (default .venv/bin/python)
#   CONTAINER_ENGINE   podman | docker (default: podman if installed, else docker)
#   CONTAINER_RUNTIME  podman's OCI runtime (default runc when installed; empty: podman's default)
#   CONTAINER_ULIMITS  ulimits for the build's containers (default "nofile=4096:4096 nproc=4096:4096";
#                      empty: the engine's defaults)
#   IMAGE              image name (default flashvl)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
base="${BASE:-docker.io/library/python:3.11-slim-bookworm}"
extras=brain
image="${IMAGE:-flashvl}"
if [ "${1:-}" = --gpu ]; then # + the glm extra (torch with CUDA from the host's index); built only when asked
  extras=brain,glm
  image="${IMAGE:-flashvl-gpu}"
fi
engine="${CONTAINER_ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}"
version="$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
context=build/container

start=$(date +%s)
rm -rf "$context/wheelhouse"
mkdir -p "$context/wheelhouse"
echo "image: gathering wheels into $context/wheelhouse (host pip configuration)" >&2
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheelhouse" ".[$extras]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
ls "$context/wheelhouse"/flashvl-*.whl >/dev/null

# System libraries some wheels expect and a plain Debian base lacks (xllamacpp: libgomp.so.1): the Debian
# package through this machine's apt configuration, else this machine's own file.
rm -rf "$context/syslibs"
mkdir -p "$context/syslibs"
for package in libgomp1; do
  if ! (cd "$context/syslibs" && apt-get download "$package" >/dev/null 2>&1); then
    library="$(ldconfig -p | awk -v name="${package%1}.so.1" '$1 == name {print $NF; exit}')"
    [ -n "$library" ] || { echo "image: neither apt-get download $package nor a local ${package%1}.so.1" >&2; exit 1; }
    cp -L "$library" "$context/syslibs/"
  fi
done

engine_args=() # podman's global options (its OCI runtime), for `run`
build_args=()  # `build` options
limit_args=()  # --ulimit, for `run` and `build`
if [ "$(basename "$engine")" = podman ]; then
  runtime="${CONTAINER_RUNTIME-$(command -v runc >/dev/null 2>&1 && echo runc || true)}"
  if [ -n "$runtime" ]; then
    engine_args+=(--runtime "$runtime")
    build_args+=(--runtime "$runtime")
  fi
  build_args+=(--format docker) # the docker format keeps HEALTHCHECK
  if [[ "$base" == localhost/* ]]; then build_args+=(--pull=never); else build_args+=(--pull=missing); fi
fi
for limit in ${CONTAINER_ULIMITS-nofile=4096:4096 nproc=4096:4096}; do
  limit_args+=(--ulimit "$limit")
done

# pip chose those wheels for this machine's Python; the base image's may differ (a marker such as
# python_full_version < "3.11.3" pulls in one more package there). Resolve once in the base image,
# offline, and add what it misses (gathered here, as above) until it resolves.
for _ in 1 2 3 4 5 6; do
  if out="$("$engine" "${engine_args[@]}" run --rm --network none "${limit_args[@]}" -v "$PWD/$context/wheelhouse:/wheelhouse:ro" \
    "$base" sh -c 'python3 -m venv /tmp/venv && /tmp/venv/bin/pip install --quiet --disable-pip-version-check \
    --dry-run --no-index --find-links /wheelhouse "flashvl[$0]"' "$extras" 2>&1)"; then
    break
  fi
  missing="$(printf '%s\n' "$out" | sed -n 's/.*No matching distribution found for \([^; ]*\).*/\1/p' | head -n1)"
  if [ -z "$missing" ]; then
    printf '%s\n' "$out" >&2
    exit 1
  fi
  echo "image: the base image's Python also needs $missing" >&2
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheelhouse" "$missing" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
done

args=(build --file deploy/container/Containerfile --build-arg "BASE=$base" --build-arg "VERSION=$version"
  --build-arg "EXTRAS=$extras"
  --tag "$image:$version" --tag "$image:latest" --network none "${build_args[@]}" "${limit_args[@]}")
echo "image: $engine ${args[*]} $context" >&2
"$engine" "${args[@]}" "$context"
# The build stage (wheelhouse + venv, ~3.5 GB) is no part of the image: drop it, keep nothing unrepeatable.
"$engine" image prune --force --filter label=flashvl.stage=build >/dev/null 2>&1 || true
size="$("$engine" image inspect --format '{{.Size}}' "$image:$version")"
echo "image: built $image:$version (and :latest) in $(($(date +%s) - start)) s, $((size / 1000000)) MB" >&2
