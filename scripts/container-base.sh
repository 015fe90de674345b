#!/usr/bin/env bash
# Make a plain Debian bookworm base image (python3, python3-venv, ca-certificates only) with no image
# registry: debootstrap from this machine's configured Debian mirror, then `podman import`.
# Usage: scripts/container-base.sh [IMAGE]   (default localhost/debian-py:bookworm; kept if it exists)
# Needs root and the Debian packages podman + debootstrap (scripts/system-deps.sh --containers).
set -euo pipefail
image="${1:-localhost/debian-py:bookworm}"
engine="${CONTAINER_ENGINE:-podman}"
if "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "container-base: $image exists" >&2
  exit 0
fi
# The mirror apt uses here (deb822 .sources or a one-line .list), else deb.debian.org.
mirror="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security | head -n1 | awk '{print $2}' || true)"
if [ -z "$mirror" ]; then
  mirror="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | grep -v security \
    | head -n1 | awk '{print $2}' || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d /tmp/flashvl-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "container-base: debootstrap bookworm from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | "$engine" import - "$image" >/dev/null
echo "container-base: made $image" >&2
