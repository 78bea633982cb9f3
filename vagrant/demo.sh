#!/usr/bin/env bash
# The demo, run as root inside the test VM by `make demo` (vagrant/vm demo):
# start thurvtld with the example config on the local backend, log in over
# iSCSI from the same machine, and show what a backup server would see.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "Configuration (docs/examples/thurvtl.yaml, data under /var/lib/thurvtl)"
mkdir -p /etc/thurvtl
sed -e 's#^data_dir:.*#data_dir: /var/lib/thurvtl#' docs/examples/thurvtl.yaml >/etc/thurvtl/thurvtl.yaml
cat /etc/thurvtl/thurvtl.yaml

step "Starting thurvtld"
python3 -m thur.vtl.daemon --config /etc/thurvtl/thurvtl.yaml >/var/log/thurvtld.log 2>&1 &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    python3 -m thur.vtl.cli ping >/dev/null 2>&1 && break
    kill -0 $daemon 2>/dev/null || { cat /var/log/thurvtld.log; exit 1; }
    sleep 1
done
run python3 -m thur.vtl.cli library info

step "Logging in with open-iscsi (127.0.0.1:3260)"
modprobe iscsi_tcp
mkdir -p /run/lock/iscsi
pgrep -x iscsid >/dev/null || iscsid
sleep 1
run iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260
run iscsiadm -m node -p 127.0.0.1:3260 --login
for _ in $(seq 60); do
    lsscsi -g | grep -q mediumx && [ "$(lsscsi -g | grep -c ' tape ')" -ge 2 ] && break
    sleep 1
done
sleep 2

step "What the initiator sees"
run lsscsi -g
changer=$(lsscsi -g | awk '/mediumx/ {print $NF}')
run mt-st -f /dev/nst0 status

step "Cartridges: create three, load one into drive 0"
for barcode in DEMO01L8 DEMO02L8 DEMO03L8; do
    run python3 -m thur.vtl.cli cartridge create "$barcode"
done
run mtx -f "$changer" status
run mtx -f "$changer" load 1 0
for _ in $(seq 30); do mt-st -f /dev/nst0 status >/dev/null 2>&1 && break; sleep 1; done
run mt-st -f /dev/nst0 status

step "A real backup: tar /usr/share/doc and /usr/lib/python3 to tape, then verify"
run mt-st -f /dev/nst0 rewind
run tar -b 128 -cf /dev/nst0 /usr/share/doc /usr/lib/python3/dist-packages
run mt-st -f /dev/nst0 rewind
printf '$ tar -b 128 -tf /dev/nst0 | wc -l\n'
tar -b 128 -tf /dev/nst0 | wc -l
run mt-st -f /dev/nst0 rewind
mkdir -p /tmp/restore
run tar -b 128 -xf /dev/nst0 -C /tmp/restore
run diff -r /usr/share/doc /tmp/restore/usr/share/doc
echo "restore identical"
run mt-st -f /dev/nst0 status
run mtx -f "$changer" unload 1 0
run python3 -m thur.vtl.cli cartridge info DEMO01L8
printf '$ du -sh /var/lib/thurvtl/pool /var/lib/thurvtl/bucket\n'
du -sh /var/lib/thurvtl/pool /var/lib/thurvtl/bucket

step "Stopping (SIGTERM): logout, unexport, detach, remove our kernel objects"
run iscsiadm -m node --logoutall=all
kill -TERM $daemon
wait $daemon
trap - EXIT
tail -n 5 /var/log/thurvtld.log
run ls /sys/kernel/config/target/iscsi
echo
echo "Demo finished."
