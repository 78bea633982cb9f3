#!/bin/bash
# Check the units, sysusers.d and tmpfiles.d files with systemd's own tools,
# without installing anything: `systemd-analyze verify` in a scratch root that
# holds the system's units, ours, and stand-ins for the /opt/thur executables
# (verify insists that ExecStart= exists). Any message fails the check.
# `make lint` runs it when systemd-analyze is present; the systemd e2e test
# (tests/e2e_systemd) verifies the installed units in the VM as well.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
system=/usr/lib/systemd/system
[ -d "$system" ] || system=/lib/systemd/system
mkdir -p "$root/etc" "$root/usr/lib/systemd" "$root/usr/local/lib/systemd/system" "$root/opt/thur/bin"
cp -a "$system" "$root/usr/lib/systemd/"
cp "$HERE"/systemd/*.service "$root/usr/local/lib/systemd/system/"
for unit in "$HERE"/systemd/*.service; do
    exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
    mkdir -p "$root$(dirname "$exe")"
    printf '#!/bin/sh\n' > "$root$exe"
    chmod +x "$root$exe"
done
units=$(cd "$HERE/systemd" && echo *.service)
# shellcheck disable=SC2086 # one word per unit
out=$(systemd-analyze verify --root="$root" $units 2>&1) || { echo "$out" >&2; exit 1; }
# Created for real in the scratch root: tmpfiles.d names the groups.
out+=$(systemd-sysusers --root="$root" "$HERE/sysusers.d/thur.conf" 2>&1 \
       | grep -v '^Creating ' || true)
# tmpfiles has no dry run before systemd 256; --remove parses every line and
# removes only D and R entries (we have none), so it changes nothing.
out+=$(systemd-tmpfiles --root="$root" --remove "$HERE/tmpfiles.d/thur.conf" 2>&1 \
       || echo "systemd-tmpfiles failed")
if [ -n "$out" ]; then
    echo "$out" >&2
    exit 1
fi
echo "packaging: units, sysusers.d and tmpfiles.d verified ($units)"
