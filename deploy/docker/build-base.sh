#!/usr/bin/env bash
# Build the images' base from Debian's archive, for machines that cannot pull from a registry
# (air-gapped sites, our CI). debootstrap installs from Debian's packages like apt does; the result
# is tagged with the name the Dockerfiles' `FROM ${BASE_IMAGE}` defaults to, so they build unchanged.
#   deploy/docker/build-base.sh            # tags python:3.11-slim-bookworm unless it exists
#   BASE_TAG=my/base:1 deploy/docker/build-base.sh
# Debian's interpreter is /usr/bin/python3 (3.11); a `python` link matches the official image.
# libpython3.11: Triton's Python-backend stub links against it. make: the model builder runs make.
set -euo pipefail
tag="${BASE_TAG:-python:3.11-slim-bookworm}"
docker info >/dev/null 2>&1 || { echo "build-base: no Docker daemon answers: run 'make system-deps' (as root) or start dockerd" >&2; exit 1; }
recipe="$(sha256sum "$0" | cut -c1-16)"  # a local base made by an older recipe is made again
if have="$(docker image inspect -f '{{index .Config.Labels "org.tritonstack.base"}}' "$tag" 2>/dev/null)"; then
  if [ -z "$have" ] || [ "$have" = "<no value>" ] || [ "$have" = "$recipe" ]; then
    echo "build-base: $tag exists"; exit 0
  fi
  echo "build-base: $tag was made by an older recipe; making it again"
elif [ "${BASE_PULL:-1}" = 1 ] && timeout 20 docker pull -q "$tag" >/dev/null 2>&1; then
  echo "build-base: pulled $tag"; exit 0
fi
command -v debootstrap >/dev/null 2>&1 || { echo "build-base: debootstrap missing: apt-get install debootstrap (make system-deps does)" >&2; exit 1; }
# The Debian mirror apt already uses on this machine (no host is written into the repository).
mirror="$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | tr -d ' ' || true)"
mirror="${mirror:-$(grep -rhE '^URIs: .*/debian/?$' /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | awk '{print $2}' || true)}"
[ -n "$mirror" ] || { echo "build-base: no Debian mirror found in /etc/apt/sources.list*: set DEBIAN_MIRROR" >&2; exit 1; }
mirror="${DEBIAN_MIRROR:-$mirror}"
root="$(mktemp -d /tmp/tritonstack-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "build-base: debootstrap bookworm from $mirror (about a minute) ..."
debootstrap --variant=minbase --include=python3,python3-venv,libpython3.11,ca-certificates,make \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; echo "build-base: debootstrap failed" >&2; exit 1; }
rm -f "$root.log"
ln -sf /usr/bin/python3 "$root/usr/bin/python"
# Docs, man pages and translations (~50 MB that no container reads); dpkg keeps them out of later
# installs too. Copyright files stay.
find "$root"/usr/share/doc -type f ! -name copyright -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
cat >"$root/etc/dpkg/dpkg.cfg.d/01-slim" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
DPKG
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  -c 'CMD ["python3"]' -c "LABEL org.tritonstack.base=$recipe" - "$tag" >/dev/null
echo "build-base: built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
