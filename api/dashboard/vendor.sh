#!/bin/sh
# Refresh static/vendor/ from the npm registry, at the versions pinned in package-lock.json.
# The dashboard has no build step: the browser loads these files as they are, from the API.
#
#   sh api/dashboard/vendor.sh            (or: make vendor)
#
# To move to a newer uPlot or yaml: change its version in package.json, run
#   (cd api/dashboard && npm install --package-lock-only --ignore-scripts)
# then this script, and commit package.json, package-lock.json and static/vendor/ together.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
vendor="$here/static/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

cp "$here/package.json" "$here/package-lock.json" "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
version() { node -p "require('$1/package.json').version"; }

mkdir -p "$vendor"
uplot="$tmp/node_modules/uplot"
cp "$uplot/dist/uPlot.iife.min.js" "$uplot/dist/uPlot.min.css" "$vendor/"
cp "$uplot/LICENSE" "$vendor/uPlot.LICENSE"
echo "vendored uPlot $(version "$uplot") into $vendor"

# yaml's browser build is a tree of ES modules (index.js imports its siblings): copy it whole,
# replacing the previous copy so that no module of an older version lingers.
yaml="$tmp/node_modules/yaml"
rm -rf "$vendor/yaml"
cp -R "$yaml/browser/dist" "$vendor/yaml"
cp "$yaml/LICENSE" "$vendor/yaml/LICENSE"
echo "vendored yaml $(version "$yaml") into $vendor/yaml"
