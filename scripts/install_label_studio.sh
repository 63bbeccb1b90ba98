#!/usr/bin/env bash
# Idempotently install a pinned Label Studio into <repo>/.venv-ls (separate from
# the project's .venv: LS pins its own Django/DRF/SDK stack).
#
# Usage: scripts/install_label_studio.sh            (uses python3 on PATH)
#        PYTHON=/usr/bin/python3.11 scripts/install_label_studio.sh
# Env:   LS_VERSION (default 1.23.2), LS_VENV (default <repo>/.venv-ls)
set -euo pipefail

LS_VERSION="${LS_VERSION:-1.23.2}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VENV="${LS_VENV:-$REPO_ROOT/.venv-ls}"
PYTHON="${PYTHON:-python3}"

installed_version() {
    [ -x "$LS_VENV/bin/python" ] || return 1
    "$LS_VENV/bin/python" - <<'PY' 2>/dev/null
from importlib.metadata import version
print(version("label-studio"))
PY
}

if v="$(installed_version)" && [ "$v" = "$LS_VERSION" ] && [ -x "$LS_VENV/bin/label-studio" ]; then
    echo "label-studio $LS_VERSION already installed in $LS_VENV"
    exit 0
fi

start=$(date +%s)
if [ -e "$LS_VENV" ] && ! "$LS_VENV/bin/python" -c '' 2>/dev/null; then
    echo "removing broken virtualenv $LS_VENV"
    rm -rf "$LS_VENV"
fi
if [ ! -x "$LS_VENV/bin/python" ]; then
    echo "creating virtualenv $LS_VENV"
    if ! "$PYTHON" -m venv "$LS_VENV" 2>/dev/null; then
        # Debian/Ubuntu python3 without the ensurepip package: fall back to virtualenv.
        rm -rf "$LS_VENV"
        "$PYTHON" -m pip install --quiet --user virtualenv 2>/dev/null \
            || "$PYTHON" -m pip install --quiet --break-system-packages --user virtualenv
        "$PYTHON" -m virtualenv "$LS_VENV"
    fi
fi

"$LS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$LS_VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    "label-studio==$LS_VERSION"

v="$(installed_version)"
if [ "$v" != "$LS_VERSION" ]; then
    echo "ERROR: expected label-studio $LS_VERSION in $LS_VENV, found '$v'" >&2
    exit 1
fi
echo "installed label-studio $LS_VERSION in $LS_VENV in $(( $(date +%s) - start ))s"
