#!/usr/bin/env bash
# The viewer test's own tools, into gitignored folders here; cached: a second run does nothing.
#  - ohif/: the prebuilt OHIF viewer (the dist/ folder of the npm package @ohif/app, whose
#    version is "ohifVersion" in package.json). `npm pack` fetches it through npm's own cache
#    (~/.npm) and checks its integrity; no build step, no Node.js build tool chain.
#  - node_modules/: playwright-core, exactly as package-lock.json says (it drives Debian's
#    /usr/bin/chromium; it never downloads a browser).
# Set HEPATICA_OHIF_TGZ to a local copy of the package's .tgz to skip the download.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null; then
  echo "tests/viewer: no npm; the viewer test will skip" >&2
  exit 0
fi
version=$(node -p "require('./package.json').ohifVersion")
if [ "$(cat ohif/.ohif-version 2>/dev/null)" != "$version" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  tgz=${HEPATICA_OHIF_TGZ:-}
  if [ -z "$tgz" ]; then
    echo "tests/viewer: fetching @ohif/app@$version (about 50 MB)"
    (cd "$work" && npm pack --silent "@ohif/app@$version" >/dev/null)
    tgz=$(ls "$work"/*.tgz)
  fi
  mkdir "$work/unpacked"
  tar -xzf "$tgz" -C "$work/unpacked" package/dist package/package.json
  actual=$(node -p "require('$work/unpacked/package/package.json').version")
  [ "$actual" = "$version" ] || { echo "expected @ohif/app $version, got $actual" >&2; exit 1; }
  echo "$version" > "$work/unpacked/package/dist/.ohif-version"
  rm -rf ohif
  mv "$work/unpacked/package/dist" ohif
fi
if [ ! -f node_modules/playwright-core/package.json ]; then
  npm ci --silent --no-audit --no-fund
fi
echo "tests/viewer: OHIF $version and playwright-core ready"
