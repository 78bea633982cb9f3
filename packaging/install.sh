#!/bin/bash
# Install Thur (thurvtld, thurvsad and their CLIs) as systemd services.
#
# Usage: packaging/install.sh            (as root; `make install` runs it)
#
#   1. a venv in /opt/thur with Thur pip-installed from this checkout
#      (console scripts /opt/thur/bin/thurvtld, thurvtl, thurvsad, thurvsa)
#   2. the units thurvtld.service and thurvsad.service, the users and groups
#      (sysusers.d), LIO's shared db_root and the state directories (tmpfiles.d),
#      in /usr/local/lib
#   3. the default configs /etc/thurvtl/thurvtl.yaml and /etc/thurvsa/thurvsa.yaml,
#      only where none exists (an existing config is never overwritten)
#   4. systemd-sysusers, systemd-tmpfiles --create, systemctl daemon-reload
#
# It enables and starts nothing: `systemctl enable --now thurvtld thurvsad`.
# Running it again upgrades Thur in place (then see docs/OPERATIONS.md for
# restarting without dropping sessions).
#
# Environment: PYTHON (default python3) creates the venv; THUR_PIP_ARGS are
# extra `pip install` arguments (an offline install into a venv that already
# has the dependencies: "--no-index --no-build-isolation"); THUR_EXTRAS names
# optional extras, e.g. THUR_EXTRAS=otlp for the OTLP metrics export. The paths are
# fixed because the units name them; change one with `systemctl edit`.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/thur
UNIT_DIR=/usr/local/lib/systemd/system
SYSUSERS_DIR=/usr/local/lib/sysusers.d
TMPFILES_DIR=/usr/local/lib/tmpfiles.d
DOC_DIR=$PREFIX/share/doc/thur
PYTHON=${PYTHON:-python3}

say() { printf 'install: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "install: run as root (it writes /opt, /etc and /usr/local)" >&2; exit 1; }
command -v systemctl > /dev/null || { echo "install: systemd is required (no systemctl)" >&2; exit 1; }

if [ ! -x "$PREFIX/bin/python" ]; then
    say "venv $PREFIX"
    "$PYTHON" -m venv "$PREFIX"
fi
TARGET="$SRC${THUR_EXTRAS:+[$THUR_EXTRAS]}"
say "pip install $TARGET into $PREFIX"
# shellcheck disable=SC2086 # THUR_PIP_ARGS is a list of words
"$PREFIX/bin/pip" install -q --disable-pip-version-check ${THUR_PIP_ARGS:-} "$TARGET"
for script in thurvtld thurvtl thurvsad thurvsa; do
    [ -x "$PREFIX/bin/$script" ] || { echo "install: $PREFIX/bin/$script is missing" >&2; exit 1; }
done

say "units, sysusers.d and tmpfiles.d"
install -d -m 0755 "$UNIT_DIR" "$SYSUSERS_DIR" "$TMPFILES_DIR" "$DOC_DIR"
install -m 0644 "$SRC"/packaging/systemd/thurvtld.service "$SRC"/packaging/systemd/thurvsad.service "$UNIT_DIR/"
install -m 0644 "$SRC/packaging/sysusers.d/thur.conf" "$SYSUSERS_DIR/thur.conf"
install -m 0644 "$SRC/packaging/tmpfiles.d/thur.conf" "$TMPFILES_DIR/thur.conf"
install -m 0644 "$SRC"/docs/OPERATIONS.md "$SRC"/docs/VOLUMES.md "$DOC_DIR/"
systemd-sysusers "$SYSUSERS_DIR/thur.conf"
systemd-tmpfiles --create "$TMPFILES_DIR/thur.conf"

# The group may read its product's config (the CLI reads data_dir from it when
# the daemon is down); CHAP secrets in it stay hidden from everyone else.
for product in thurvtl thurvsa; do
    install -d -m 0750 -o root -g "$product" "/etc/$product"
    if [ -e "/etc/$product/$product.yaml" ]; then
        say "/etc/$product/$product.yaml exists: kept"
    else
        install -m 0640 -o root -g "$product" "$SRC/docs/examples/$product.yaml" \
            "/etc/$product/$product.yaml"
        say "/etc/$product/$product.yaml installed (review iscsi.listen and http.listen)"
    fi
done

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
else
    say "systemd is not running here: run systemctl daemon-reload once it is"
fi
say "done. Start with: systemctl enable --now thurvtld thurvsad"
say "let a user run the CLIs: usermod -aG thurvtl,thurvsa USER"
