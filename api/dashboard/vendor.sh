#!/bin/sh
# Refresh static/vendor/ from the npm registry, at the versions pinned in package-lock.json.
# The dashboard has no build step: the browser loads these files as they are, from the API.
#
#   sh api/dashboard/vendor.sh            (or: make vendor)
#
# To move to a newer uPlot: change its version in package.json, run
#   (cd api/dashboard && npm install --package-lock-only --ignore-scripts)
# then this script, and commit package.json, package-lock.json and static/vendor/ together.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
vendor="$here/static/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cp "$here/package.json" "$here/package-lock.json" "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

mkdir -p "$vendor"
uplot="$tmp/node_modules/uplot"
cp "$uplot/dist/uPlot.iife.min.js" "$uplot/dist/uPlot.min.css" "$vendor/"
cp "$uplot/LICENSE" "$vendor/uPlot.LICENSE"
echo "vendored uPlot $(node -p "require('$uplot/package.json').version") into $vendor"
