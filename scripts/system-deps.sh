#!/usr/bin/env bash
# Debian packages the test suite drives for real: a headless browser, redis-server, PostgreSQL, and the one CJK
# font file the OCR tests render Chinese documents with (tests/unit/render.py names the same file:
# exact OCR output depends on the font, so no other Chinese font will do). Installs only what is
# missing; needs root.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
# the knowledge base's server store is tested against a real PostgreSQL (tests/kb/postgres.py)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# the container image test (tests/deploy/test_container_image.py): podman with runc, and debootstrap to
# make its plain Debian base image with no registry (scripts/container-base.sh)
command -v podman >/dev/null 2>&1 || need+=(podman netavark aardvark-dns iptables)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: please install: ${need[*]} (apt-get install -y ${need[*]})" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
