#!/usr/bin/env bash
# The JavaScript and CSS that the data-quality report (GX Data Docs) would load from public CDNs,
# fetched once from the npm registry with the ordinary client (`npm pack`) into
# vendor/report-assets/<package>@<version>/, so that the published report works offline.
# Which packages: include/twin/etl/report_assets.json. Idempotent: a rerun compares a stamp.
set -euo pipefail
cd "$(dirname "$0")/.."

MANIFEST=include/twin/etl/report_assets.json
DEST=${TWIN_REPORT_ASSETS_DIR:-vendor/report-assets}
STAMP=$DEST/.twin-installed
want=$(cat "$MANIFEST" scripts/install_report_assets.sh | sha256sum | cut -d' ' -f1)
[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && exit 0

command -v npm >/dev/null || {
  echo "install_report_assets: npm not found; the data-quality report needs it once to fetch its scripts" \
       "and styles (install Node.js and npm, then rerun)" >&2
  exit 1
}
mkdir -p "$DEST"
downloads=$(mktemp -d)
trap 'rm -rf "$downloads"' EXIT
# package@version of every file the manifest names (a scoped name keeps its "@scope/").
packages=$(python3 -c '
import json, sys
files = json.load(open(sys.argv[1]))["files"].values()
print("\n".join(sorted({p[: p.index("@", 1)] + "@" + p[p.index("@", 1) + 1:].split("/")[0] for p in files})))
' "$MANIFEST")
for spec in $packages; do
  [ -f "$DEST/$spec/package.json" ] && continue
  tarball=$(cd "$downloads" && npm pack "$spec" --silent 2>"$downloads/npm.log" | tail -1) \
    || { cat "$downloads/npm.log" >&2; echo "install_report_assets: could not fetch $spec" >&2; exit 1; }
  mkdir -p "$DEST/$spec.tmp"
  tar -xzf "$downloads/$tarball" -C "$DEST/$spec.tmp" --strip-components=1
  rm -rf "${DEST:?}/$spec" && mv "$DEST/$spec.tmp" "$DEST/$spec"
done
echo "$want" > "$STAMP"
echo "install_report_assets: $(echo "$packages" | wc -w) packages ready in $DEST"
