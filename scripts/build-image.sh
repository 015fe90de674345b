#!/usr/bin/env bash
# Build the flashvl CPU image (deploy/container/Containerfile) as flashvl:VERSION and flashvl:latest,
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
image="${IMAGE:-flashvl}"
engine="${CONTAINER_ENGINE:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}"
version="$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
context=build/container

start=$(date +%s)
rm -rf "$context/wheelhouse"
mkdir -p "$context/wheelhouse"
echo "image: gathering wheels into $context/wheelhouse (host pip configuration)" >&2
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheelhouse" '.[brain]' 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
ls "$context/wheelhouse"/flashvl-*.whl >/dev/null

args=(build --file deploy/container/Containerfile --build-arg "BASE=$base" --build-arg "VERSION=$version"
  --tag "$image:$version" --tag "$image:latest")
if [ "$(basename "$engine")" = podman ]; then
  runtime="${CONTAINER_RUNTIME-$(command -v runc >/dev/null 2>&1 && echo runc || true)}"
  [ -n "$runtime" ] && args+=(--runtime "$runtime")
  args+=(--format docker --network none --pull=never) # docker format keeps HEALTHCHECK
  [[ "$base" == localhost/* ]] || args=("${args[@]/--pull=never/--pull=missing}")
else
  args+=(--network none)
fi
for limit in ${CONTAINER_ULIMITS-nofile=4096:4096 nproc=4096:4096}; do
  args+=(--ulimit "$limit")
done
echo "image: $engine ${args[*]} $context" >&2
"$engine" "${args[@]}" "$context"
size="$("$engine" image inspect --format '{{.Size}}' "$image:$version")"
echo "image: built $image:$version (and :latest) in $(($(date +%s) - start)) s, $((size / 1000000)) MB" >&2
