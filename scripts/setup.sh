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

# checkov (the ARM templates' checker in the test suite) pins dependencies that clash with the project's: it gets
# an environment of its own, .venv-checkov, made when the dev extra is asked for (idempotent: kept while its pin holds)
CHECKOV_PKG="${CHECKOV_PKG:-checkov==3.3.30}"
if [[ ",$EXTRAS," == *,dev,* ]]; then
  cv=".venv-checkov"
  if ! grep -qx "$CHECKOV_PKG" "$cv/.esn-video-installed" 2>/dev/null; then
    echo "setup: creating $cv ($CHECKOV_PKG)"
    [ -x "$cv/bin/python" ] || "$PYTHON" -m venv "$cv"
    "$cv/bin/python" -m pip --disable-pip-version-check install -q "$CHECKOV_PKG"
    echo "$CHECKOV_PKG" > "$cv/.esn-video-installed"
  fi
fi

# the test setup (any extras naming dev): the pinned Azure Storage emulator (tools/azurite) that the storage tests
# start; npm ci installs exactly the committed lock file, and only when the install is missing or out of date
if [[ ",$EXTRAS," == *",dev,"* ]]; then
  az=tools/azurite
  if [ ! -x "$az/node_modules/.bin/azurite-blob" ] || ! cmp -s "$az/package-lock.json" "$az/node_modules/.package-lock.json.installed"; then
    if command -v npm >/dev/null; then
      echo "setup: installing Azurite (npm ci in $az)"
      (cd "$az" && npm ci --no-audit --no-fund --loglevel=error) && cp "$az/package-lock.json" "$az/node_modules/.package-lock.json.installed"
    else
      echo "setup: WARNING: npm not found, so Azurite (the Azure Storage emulator the storage tests need) is not installed; install Node.js 18+ and run make setup-dev again" >&2
    fi
  fi
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
