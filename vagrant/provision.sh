#!/bin/bash
# Provision a Debian 13 (trixie) system as a Thur test machine.
#
# Usage: provision.sh [SRC_DIR]
#   SRC_DIR is the Thur source tree (default /mnt/src); this script reads
#   SRC_DIR/vagrant/packages.txt and SRC_DIR/pyproject.toml from it.
#
# Runs as root in two places, so it must not assume either:
#   - inside the chroot that `vagrant/vm build` bootstraps (no init running,
#     services must not start; vm installs a policy-rc.d for that), and
#   - on a real debian/trixie64 box, called by the Vagrantfile.
#
# It installs the apt packages without recommends, then builds the venv
# /opt/thur-venv with the project's runtime and dev dependencies, installed
# by the guest's own pip (guest Python is 3.13: never copy a host venv).
set -euo pipefail

SRC=${1:-/mnt/src}
VENV=/opt/thur-venv
PKG_LIST="$SRC/vagrant/packages.txt"
PYPROJECT="$SRC/pyproject.toml"
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n=== provision: %s\n' "$*"; }

[ -r "$PKG_LIST" ] || { echo "provision: missing $PKG_LIST" >&2; exit 2; }
[ -r "$PYPROJECT" ] || { echo "provision: missing $PYPROJECT" >&2; exit 2; }

# Package names: strip comments and blank lines.
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]\+$//' -e '/^[[:space:]]*$/d' "$PKG_LIST")

step "apt-get install ${#packages[@]} packages"
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"

step "venv $VENV"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"

# [project].dependencies plus [project.optional-dependencies].dev, read with
# the guest's tomllib so the list is never duplicated by hand.
mapfile -t deps < <("$VENV/bin/python" - "$PYPROJECT" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
for req in project.get("dependencies", []) + project.get("optional-dependencies", {}).get("dev", []):
    print(req)
PY
)

step "pip install ${#deps[@]} requirements: ${deps[*]}"
# pip trusts the system CA store (where local CAs such as a TLS-inspecting
# proxy's are added), not only its bundled certifi.
update-ca-certificates > /dev/null
export PIP_CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
# Wheels only, unless packages.txt asked for a compiler (build-essential and
# python3-dev): a missing cp313 wheel must be a visible decision, not a silent
# slow build.
only_binary=(--only-binary=:all:)
command -v gcc > /dev/null && only_binary=()
if ! "$VENV/bin/pip" install -q --no-cache-dir --disable-pip-version-check \
        "${only_binary[@]}" "${deps[@]}"; then
    echo "provision: pip failed; if a wheel is missing for Python 3.13, add" \
         "build-essential and python3-dev to vagrant/packages.txt" >&2
    exit 1
fi
"$VENV/bin/python" -c 'import rtslib_fb, blake3, pyfastcdc, zstandard, cffi, pytest; print("provision: imports ok")'

# Login shells (vagrant ssh, vm shell) get the same environment as vm run.
# Both the qemu guest and the Vagrant box see the checkout at /mnt/src (SRC
# may differ: the image build provisions from a temporary copy).
cat > /etc/profile.d/thur.sh <<EOF
export PATH="$VENV/bin:\$PATH" PYTHONPATH=/mnt/src PYTHONDONTWRITEBYTECODE=1
EOF

step "clean up"
apt-get clean
rm -rf /var/lib/apt/lists/*
echo "provision: done"
