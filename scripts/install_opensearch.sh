#!/usr/bin/env bash
# A real OpenSearch node for tests and benchmarks: the minimal distribution (integ-test zip) plus the
# k-NN plugin, fetched by Maven coordinates with the ordinary Maven client, unpacked into
# vendor/opensearch-<version>/. Idempotent: a second run only checks a stamp file.
# When the node cannot be installed it says why, records the reason in
# vendor/opensearch-<version>.unavailable (the test fixture repeats it) and exits 1, so `make test`
# stops there. Only TWIN_TEST_OPENSEARCH=osmem, set by hand, accepts the in-memory fallback server
# instead (exit 0, and the test summary says so).
set -uo pipefail
cd "$(dirname "$0")/.."

VERSION=${OPENSEARCH_VERSION:-2.19.1}
KNN_VERSION=${OPENSEARCH_KNN_VERSION:-${VERSION}.0}
VENDOR=${TWIN_VENDOR_DIR:-vendor}
HOME_DIR=$VENDOR/opensearch-${VERSION}
STAMP=$HOME_DIR/.twin-installed
UNAVAILABLE=$VENDOR/opensearch-${VERSION}.unavailable
DOWNLOADS=$VENDOR/downloads
MVN=${MVN:-mvn}

# The stamp is the hash of the recipe below its marker line: a changed recipe reinstalls, a changed
# message does not.
want=$(sed -n '/^# --- recipe ---$/,$p' scripts/install_opensearch.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -d "$HOME_DIR/plugins/opensearch-knn" ]; then
  rm -f "$UNAVAILABLE"
  exit 0
fi

skip() {
  mkdir -p "$VENDOR"
  echo "$1" > "$UNAVAILABLE"
  if [ "${TWIN_TEST_OPENSEARCH:-}" = osmem ]; then
    echo "install_opensearch: $1; TWIN_TEST_OPENSEARCH=osmem: the tests use the in-memory fallback server." >&2
    exit 0
  fi
  echo "install_opensearch: cannot install the OpenSearch ${VERSION} test node: $1." >&2
  echo "install_opensearch: fix that and rerun, or accept the in-memory fallback (no k-NN queries, no search" \
       "pipelines) by hand: TWIN_TEST_OPENSEARCH=osmem make test" >&2
  exit 1
}

command -v "$MVN" >/dev/null || skip "$MVN not found (Maven fetches the node by its coordinates)"
command -v unzip >/dev/null || skip "unzip not found"
command -v java >/dev/null || skip "java not found (OpenSearch ${VERSION} needs Java 17+)"
mkdir -p "$DOWNLOADS"
# The integ-test zip carries no JDK: point OpenSearch's tools at the system one.
export OPENSEARCH_JAVA_HOME=${OPENSEARCH_JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}

# --- recipe ---
fetch() {  # fetch GROUP:ARTIFACT:VERSION:zip into $DOWNLOADS
  "$MVN" -q -B dependency:copy -Dartifact="$1" -DoutputDirectory="$DOWNLOADS" -Dmdep.overWriteIfNewer=true \
    >"$DOWNLOADS/mvn.log" 2>&1 || { tail -20 "$DOWNLOADS/mvn.log" >&2; skip "could not fetch $1"; }
}

fetch "org.opensearch.distribution.integ-test-zip:opensearch:${VERSION}:zip"
fetch "org.opensearch.plugin:opensearch-knn:${KNN_VERSION}:zip"

# The integ-test zip holds only the transport module. Assemble the two modules we need from their
# published jars (the ones the full distribution ships): lang-painless (k-NN extends it; exact
# k-NN scoring is a script) and analysis-common (the english analyzer, stemming, stop words).
PAINLESS_JARS=(
  "org.opensearch.plugin:lang-painless:${VERSION}"
  "org.opensearch.plugin:opensearch-scripting-painless-spi:${VERSION}"
  "org.antlr:antlr4-runtime:4.13.1"
  "org.ow2.asm:asm:9.7" "org.ow2.asm:asm-util:9.7" "org.ow2.asm:asm-tree:9.7"
  "org.ow2.asm:asm-commons:9.7" "org.ow2.asm:asm-analysis:9.7"
)
ANALYSIS_JARS=("org.opensearch.plugin:analysis-common:${VERSION}")

fetch_jars() {  # fetch_jars DIR ARTIFACT...
  local dir=$1; shift
  mkdir -p "$dir"
  for artifact in "$@"; do
    "$MVN" -q -B dependency:copy -Dartifact="$artifact" -DoutputDirectory="$dir" \
      >"$DOWNLOADS/mvn.log" 2>&1 || { tail -20 "$DOWNLOADS/mvn.log" >&2; skip "could not fetch $artifact"; }
  done
}

add_module() {  # add_module NAME CLASSNAME EXTENDS JAR_DIR: a module folder as the distribution has it
  local module=$NODE/modules/$1
  mkdir -p "$module"
  cp "$4"/*.jar "$module/"
  cat >"$module/plugin-descriptor.properties" <<EOF
description=$1 module (assembled from its published jars)
version=${VERSION}
name=$1
classname=$2
java.version=11
opensearch.version=${VERSION}
extended.plugins=$3
has.native.controller=false
EOF
}

fetch_jars "$DOWNLOADS/lang-painless" "${PAINLESS_JARS[@]}"
fetch_jars "$DOWNLOADS/analysis-common" "${ANALYSIS_JARS[@]}"

# Assembled beside the installed node and swapped in at the end: a test run using it meanwhile keeps it.
BUILD=$VENDOR/.build-opensearch-$$
NODE=$BUILD/opensearch-${VERSION}
trap 'rm -rf "$BUILD"' EXIT
unzip -q -o "$DOWNLOADS/opensearch-${VERSION}.zip" -d "$BUILD" || skip "could not unpack the distribution"
[ -x "$NODE/bin/opensearch" ] || skip "unexpected archive layout (no opensearch-${VERSION}/bin/opensearch)"

add_module lang-painless org.opensearch.painless.PainlessPlugin "" "$DOWNLOADS/lang-painless"
cat >"$NODE/modules/lang-painless/plugin-security.policy" <<'EOF'
grant {
  // painless compiles scripts into classes at run time
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
EOF
add_module analysis-common org.opensearch.analysis.common.CommonAnalysisPlugin lang-painless \
  "$DOWNLOADS/analysis-common"

plugin_zip="$(cd "$DOWNLOADS" && pwd)/opensearch-knn-${KNN_VERSION}.zip"
"$NODE/bin/opensearch-plugin" install --batch "file://${plugin_zip}" >"$DOWNLOADS/plugin.log" 2>&1 \
  || { tail -20 "$DOWNLOADS/plugin.log" >&2; skip "could not install the k-NN plugin"; }

echo "$want" > "$NODE/.twin-installed"
rm -rf "$HOME_DIR.old"
[ ! -d "$HOME_DIR" ] || mv "$HOME_DIR" "$HOME_DIR.old"
mv "$NODE" "$HOME_DIR"
rm -rf "$HOME_DIR.old"
rm -f "$UNAVAILABLE"
echo "install_opensearch: OpenSearch ${VERSION} with k-NN ${KNN_VERSION} ready in ${HOME_DIR}"
