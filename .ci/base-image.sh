#!/usr/bin/env bash
# A Debian bookworm base image for building the Dockerfile with podman where
# Docker Hub (and so python:3.11.*-slim-bookworm) cannot be reached: a
# debootstrapped minbase with python3, python3-venv and ca-certificates,
# imported into podman's store. Prints the image reference on its last line;
# pass it as `--build-arg BASE_IMAGE=<ref>`.
#
# Cached: the tag is a digest of what goes into the image (suite, variant,
# packages, this script's trimming), so when podman already holds it nothing
# is downloaded again. Takes about 80 s when it is not. Needs root (debootstrap
# and a rootful podman); installs podman, runc and debootstrap with apt-get
# when they are missing. Podman runs with .ci/podman/containers.conf unless
# CONTAINERS_CONF says otherwise. Used by tests/test_container.py.
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/.ci/podman/containers.conf}

suite=bookworm
variant=minbase
packages=python3,python3-venv,ca-certificates
mirror=${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}
# Bump when the trimming or the image settings below change.
recipe=2
tag=$(printf '%s\n' "$suite" "$variant" "$packages" "$recipe" | sha256sum | cut -c1-12)
image=localhost/clearout-gateway-base:$suite-$tag

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing with apt-get: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]}. Install them first: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "debootstrap needs root to make $image" >&2
  exit 1
fi

work=$(mktemp -d /var/tmp/clearout-gateway-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "debootstrap $suite ($variant, $packages) from $mirror ..." >&2
PATH=$PATH:/usr/sbin:/sbin debootstrap --variant="$variant" --include="$packages" \
  "$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}
# The host's resolver and name stay on the host (podman provides its own);
# downloaded .debs and package lists are dead weight in an image.
: >"$work/root/etc/resolv.conf"
: >"$work/root/etc/hostname"
tar -C "$work/root" --numeric-owner \
  --exclude='./var/cache/apt/archives/*.deb' \
  --exclude='./var/lib/apt/lists/*' \
  -cf - . |
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=$variant --include=$packages $suite" \
    - "$image" >/dev/null
echo "$image"
