#!/usr/bin/env bash
# The system tools the test suite needs, from Debian's packages; idempotent and quiet. `make test`
# runs it (as `make system-deps`), so a fresh machine needs nothing installed by hand.
#   promtool  (package `prometheus`): tests/deploy checks the Prometheus config, alert rules and
#             alert unit tests with it (`python -m deploy.validate prometheus`).
#   dockerd   (package `docker.io`): the containers tier (tests/containers) builds and runs the
#             compose stack; nothing starts a daemon on these machines, so this script does (below).
#   debootstrap: `make images` makes the local Debian base image where no registry can be pulled.
#   chromium: tests/e2e/test_playground.py drives it headless through Playwright (PyPI); the
#             browser comes from Debian because `playwright install` downloads one.
# Docker Compose, hadolint and kubernetes-validate come from PyPI with the dev extra, not from here.
#   libb64-0d: perf_analyzer (deploy/bench/perf_analyzer.py, taken from the tritonclient 2.51 wheel)
#             links libb64.so.0d.
# Add a tool: one `need COMMAND PACKAGE` line below (a shared library: `need_lib SONAME PACKAGE`).
set -euo pipefail

missing=()  # Debian packages to install
need() {    # need COMMAND PACKAGE: install PACKAGE when COMMAND is not on PATH
  command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}

need_lib() { # need_lib SONAME PACKAGE: install PACKAGE when the dynamic linker does not know SONAME
  { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -F "$1" >/dev/null || missing+=("$2")
}

need promtool prometheus
need dockerd docker.io
need debootstrap debootstrap
need chromium chromium
need_lib libb64.so.0d libb64-0d

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
command -v chromium >/dev/null 2>&1 || { echo "system-deps: chromium still missing" >&2; exit 1; }

# A Docker daemon: start one in the background when none answers (as root; there is no systemd).
# Its log goes to build/dockerd.log. Readiness is polled, not slept for. No daemon is no failure
# here: the containers tier skips without one, except under CI=true where it fails on purpose.
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
    mkdir -p build
    echo "system-deps: starting dockerd in the background (log: build/dockerd.log) ..."
    nohup dockerd >build/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 120); do
      docker info >/dev/null 2>&1 && break
      kill -0 $! 2>/dev/null || break
      sleep 0.5
    done
    if docker info >/dev/null 2>&1; then
      echo "system-deps: dockerd is up"
    else
      echo "system-deps: dockerd did not start (see build/dockerd.log); the containers tier will not run" >&2
    fi
  else
    echo "system-deps: no Docker daemon answers; start one (as root: dockerd &) to run the containers tier" >&2
  fi
fi
