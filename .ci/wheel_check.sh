#!/usr/bin/env bash
# A plain (non-editable) install as a new user gets it: build the wheel, install it into a
# fresh virtual environment, and run the main job's smoke version from an empty folder.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo" 2>/dev/null \
  || "$PY" -m pip wheel -q --no-deps -w "$work/dist" "$repo"
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$work"/dist/astropt-*.whl
mkdir "$work/empty"
cd "$work/empty"
"$work/venv/bin/astropt" demo --quick
test -f demo/report.html
echo "wheel check: astropt demo --quick ran from an empty folder with a plain install"
