#!/bin/bash
# Installs the Node packages of the offline checks (package.json, package-lock.json beside this
# script) into DIR/node_modules with `npm ci`, npm's cache in DIR/npm-cache. Skipped when DIR
# already holds exactly this lock file's packages.
#   deploy/check/npm_ci.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: npm_ci.sh DIR}
command -v npm >/dev/null || { echo "npm_ci: npm not found (scripts/bootstrap.sh installs nodejs and npm)" >&2; exit 1; }
mkdir -p "$dir"
if [ -f "$dir/node_modules/.lopt-lock" ] && cmp -s "$here/package-lock.json" "$dir/node_modules/.lopt-lock"; then
  echo "npm_ci: $dir/node_modules is up to date"
  exit 0
fi
cp "$here/package.json" "$here/package-lock.json" "$dir/"
cd "$dir"
# Debian's nodejs trusts only its bundled CAs; use the system's store as well,
# so that a registry reached through a TLS-inspecting proxy the system trusts
# works (the system bundle is what apt and curl use).
ca=()
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
  ca=(--cafile /etc/ssl/certs/ca-certificates.crt)
fi
npm ci "${ca[@]}" --no-audit --no-fund --loglevel=error --cache "$dir/npm-cache" 2> >(grep -v 'Unknown user config' >&2)
cp "$here/package-lock.json" node_modules/.lopt-lock
echo "npm_ci: installed $(ls node_modules | wc -l) packages into $dir/node_modules"
