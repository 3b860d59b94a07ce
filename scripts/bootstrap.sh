#!/bin/sh
# Create HubForge's virtual environment and install the package into it.
# Usage: scripts/bootstrap.sh [EXTRAS]   (e.g. "test"); idempotent and quick when up to date.
# Prints the venv's path on stdout. Environment: HUBFORGE_VENV (venv location),
# HUBFORGE_PYTHON (interpreter to build it from).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXTRAS=${1:-}

log() { printf 'hubforge bootstrap: %s\n' "$*" >&2; }

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing Debian packages: $*"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        log "please install these packages: $*"; exit 1
    fi
}

# As root the hub runs servers as other system users (one per hub user), who must be
# able to run the environment. When this checkout is not reachable by them (a clone
# under /root, say), the environment goes to /opt and the package is installed by copy.
EDITABLE=-e
DEFAULT_VENV=$ROOT/.venv
if [ "$(id -u)" = 0 ]; then
    command -v runuser >/dev/null || apt_install util-linux
    if ! runuser -u nobody -- test -r "$ROOT/pyproject.toml" 2>/dev/null; then
        EDITABLE=
        DEFAULT_VENV=/opt/hubforge/venv-$(printf %s "$ROOT" | cksum | cut -d' ' -f1)
    fi
fi
VENV=${HUBFORGE_VENV:-$DEFAULT_VENV}

pick_python() {
    if [ -n "${HUBFORGE_PYTHON:-}" ]; then echo "$HUBFORGE_PYTHON"; return; fi
    # Other system users must be able to run the interpreter too: prefer the system one
    # over one in root's home (pyenv, for example).
    if [ "$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; return; fi
    command -v python3
}

if [ ! -x "$VENV/bin/python" ]; then
    PY=$(pick_python)
    "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null \
        || { log "$PY is older than Python 3.11"; exit 1; }
    "$PY" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    log "creating $VENV with $PY"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi

SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
STAMP="$VENV/.hubforge-installed-$EXTRAS"
WANT=$(cksum < "$ROOT/pyproject.toml")
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    log "installing HubForge${EXTRAS:+ with [$EXTRAS]} into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $EDITABLE "$SPEC"
    echo "$WANT" > "$STAMP"
elif [ -z "$EDITABLE" ]; then
    # A copy, not a link: refresh it so the code that runs is this checkout's.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$ROOT"
fi
echo "$VENV"
