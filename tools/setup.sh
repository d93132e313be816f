#!/usr/bin/env bash
# Install what the demo, the tests and the benchmarks need, idempotently:
# Debian packages (registry, skopeo, busybox-static, umoci, runc, podman, debootstrap, and
# postgresql: its binaries only, for the tests' own throwaway server; no service is started; uidmap
# and fuse-overlayfs: rootless runs) and a
# virtualenv in .venv with this project installed (editable) plus the test and postgres extras.
# Usage: tools/setup.sh [--bench]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

pkgs=(docker-registry skopeo busybox-static umoci runc podman debootstrap apache2-utils postgresql uidmap fuse-overlayfs)
[ "${1:-}" = "--bench" ] && pkgs+=(hyperfine proot time)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python >= 3.11 is required" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras="test,postgres"
[ "${1:-}" = "--bench" ] && extras="test,postgres,bench"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
