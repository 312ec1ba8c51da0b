#!/usr/bin/env bash
# Create .venv in the checkout and install the package with the given extras (idempotent).
# usage: scripts/setup.sh [EXTRAS]     e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
# torch and torchvision are pinned here, not in pyproject.toml, so that a laptop can pick its own build;
# these releases are the ones this project is tested with.
TORCH_PKGS="${TORCH_PKGS:-torch==2.14.1 torchvision==0.29.1}"

command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found; install Python 3.10+ first" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup: $PYTHON is $("$PYTHON" -V 2>&1); esn-video needs Python 3.10+" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV" || { echo "setup: 'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
fi

# the docs site's browser check (tests/test_docs_site.py) needs a Chromium: Debian's package, installed as root where
# none is on PATH (idempotent; where it cannot be installed, that test fails saying so)
case ",$EXTRAS," in
  *,dev,*|*,docs,*)
    if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Chromium (apt-get) for the docs site's browser check"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
          || echo "setup: could not install Chromium; tests/test_docs_site.py will fail until 'apt-get install chromium' works" >&2
      else
        echo "setup: no Chromium on PATH and not root; install it ('apt-get install chromium') for tests/test_docs_site.py" >&2
      fi
    fi
    ;;
esac

# stamp = what was installed: pyproject.toml, this script and the extras; unchanged stamp -> nothing to do
want="$( (cat pyproject.toml scripts/setup.sh; echo "extras=$EXTRAS torch=$TORCH_PKGS") | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.esn-video-installed"
if [ -f "$stamp" ] && grep -qx "$want" "$stamp" 2>/dev/null; then
  echo "setup: $VENV is up to date (extras: ${EXTRAS:-none})"
  exit 0
fi
# an install with more extras also satisfies fewer: keep one line per extras set
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q -U pip setuptools wheel
# shellcheck disable=SC2086
"${pip[@]}" install -q $TORCH_PKGS
spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
"${pip[@]}" install -q -e "$spec"
echo "$want" >> "$stamp"
echo "setup: installed esn-video ($spec) into $VENV"
