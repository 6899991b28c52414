#!/usr/bin/env bash
# Creates the two Python environments the interop suite drives, at the repo root:
#   .venv           the current Celery (test/py/requirements.txt)
#   .venv-celery54  Celery 5.4.0, the older auth wire format
#                   (test/py/requirements-celery54.txt)
# Idempotent: an environment whose stamp matches the hash of its requirements
# file and of the interpreter's version is left alone; any other is rebuilt from
# scratch. Safe to run concurrently (flock).
#
# Environment: PYTHON   the interpreter to base the venvs on (default python3)
#              FORCE=1  rebuild both environments
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
STAMP_NAME=".celery-sign-requirements.sha256"

log() { printf 'setup-python: %s\n' "$*" >&2; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  log "no $PYTHON on PATH"
  exit 1
fi

# The venv module and ensurepip (Debian splits them into python3-venv).
ensure_venv_module() {
  if "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
    log "$PYTHON has no working venv module; install python3-venv"
    exit 1
  fi
  log "installing python3-venv"
  local pyver
  pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "python${pyver}-venv" python3-venv >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq "python${pyver}-venv" python3-venv >/dev/null 2>&1 \
      || apt-get install -y -qq python3-venv >/dev/null
  fi
  "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || {
    log "$PYTHON still has no working venv module"
    exit 1
  }
}

# want_hash REQUIREMENTS -> hash of the requirements and the interpreter version
want_hash() {
  {
    cat "$1"
    "$PYTHON" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
}

# make_venv DIR REQUIREMENTS
make_venv() {
  local dir="$1" req="$2" want have=""
  want="$(want_hash "$req")"
  if [ -f "$dir/$STAMP_NAME" ]; then
    have="$(cat "$dir/$STAMP_NAME")"
  fi
  if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$want" ] && [ -x "$dir/bin/python" ] \
     && "$dir/bin/python" -c 'import celery.security, cryptography' >/dev/null 2>&1; then
    return 0
  fi
  ensure_venv_module
  log "building ${dir#"$ROOT"/} from ${req#"$ROOT"/}"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --require-virtualenv \
    -r "$req"
  "$dir/bin/python" -m pip check -q --disable-pip-version-check >/dev/null || {
    "$dir/bin/python" -m pip check --disable-pip-version-check >&2 || true
    log "inconsistent dependencies in ${dir#"$ROOT"/}"
    exit 1
  }
  "$dir/bin/python" -c 'import celery.security, cryptography, kombu' >/dev/null
  printf '%s\n' "$want" >"$dir/$STAMP_NAME"
}

exec 9>"$ROOT/.venv.setup.lock"
flock 9

make_venv "$ROOT/.venv" "$ROOT/test/py/requirements.txt"
make_venv "$ROOT/.venv-celery54" "$ROOT/test/py/requirements-celery54.txt"

# python/ (celery-sign-binding, the Python side of header binding) into .venv,
# every run: it is the repository's own code. The tests also put python/ on
# PYTHONPATH, so they always run the working tree's copy.
"$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check --require-virtualenv \
  --no-deps --force-reinstall "$ROOT/python"
rm -rf "$ROOT/python/build" "$ROOT/python"/*.egg-info
