#!/usr/bin/env bash
# System packages the test suite needs, from apt; idempotent and quiet.
#   promtool  (Debian package `prometheus`): tests/deploy checks the Prometheus config, alert rules and
#             alert unit tests with it (`python -m deploy.validate prometheus`).
# Docker Compose, hadolint and kubernetes-validate come from PyPI with the dev extra, not from here.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-system-deps: promtool is missing and this user cannot install packages (not root, no sudo)" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# --no-install-recommends: promtool only, without the node exporter and its friends. The package
# also ships the Prometheus server; nothing starts it on a machine without systemd.
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends prometheus; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-system-deps: apt-get install prometheus failed" >&2
  exit 1
fi
command -v promtool >/dev/null 2>&1 || { echo "install-system-deps: promtool still missing" >&2; exit 1; }
echo "install-system-deps: $(promtool --version 2>&1 | head -n 1)"
