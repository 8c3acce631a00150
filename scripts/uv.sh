#!/usr/bin/env bash
# Run uv, installing it for this user first if the machine lacks it: with pip, or, where the
# system Python refuses user installs (PEP 668, as on Debian 12) or has no pip, in a virtual
# environment of its own (as root on Debian, installing python3-venv if that is missing).
set -euo pipefail
VENV="${XDG_DATA_HOME:-$HOME/.local/share}/cinema-uv"
export PATH="$HOME/.local/bin:$VENV/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
  echo "==> installing uv" >&2
  if ! python3 -m pip install --quiet --user uv 2>/dev/null; then
    if ! python3 -m venv --clear "$VENV" >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -qq python3-venv >/dev/null 2>&1 \
          || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
        python3 -m venv --clear "$VENV"
      else
        echo "uv is missing and python3 can install it neither with pip nor in a venv:" \
          "install uv, or python3-venv, and run this again" >&2
        exit 1
      fi
    fi
    "$VENV/bin/python" -m pip install --quiet uv
  fi
fi
exec uv "$@"
