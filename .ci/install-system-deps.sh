#!/usr/bin/env bash
# The system tools the test suite needs, from Debian's packages; idempotent and quiet. `make test`
# runs it (as `make system-deps`), so a fresh machine needs nothing installed by hand.
#   promtool  (package `prometheus`): tests/deploy checks the Prometheus config, alert rules and
#             alert unit tests with it (`python -m deploy.validate prometheus`).
# Docker Compose, hadolint and kubernetes-validate come from PyPI with the dev extra, not from here.
# Add a tool: one `need COMMAND PACKAGE` line below.
set -euo pipefail

missing=()  # Debian packages to install
need() {    # need COMMAND PACKAGE: install PACKAGE when COMMAND is not on PATH
  command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}

need promtool prometheus

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO="sudo -n"
    else
      echo "system-deps: missing Debian packages: ${missing[*]}." >&2
      echo "system-deps: install them as root: apt-get install --no-install-recommends ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  echo "system-deps: installing ${missing[*]} (apt) ..."
  # --no-install-recommends: the tools only. `prometheus` also ships the server; nothing starts it
  # on a machine without systemd.
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    echo "system-deps: apt-get install ${missing[*]} failed (see above)" >&2
    exit 1
  fi
fi

command -v promtool >/dev/null 2>&1 || { echo "system-deps: promtool still missing" >&2; exit 1; }
