#!/bin/sh
# The service of the e2e-denials test case (test.yml; test/iso-e2e.test.ts).
# It waits for the first container rootfs the ima service labels, then does
# what an intruder with a root shell on the node would: forges the label of
# one file, adds a file that carries no label, and reads each of them and an
# untouched file. The kernel must refuse the first two; the auditor turns the
# refusals into audit.denial events for the host. Every line it prints starts
# with "E2E-DENIALS". The files are the test image's:
#   bin/app      label forged (the digest of other content)
#   bin/added    new, unlabelled (the kernel labels files created while the
#                node runs, so the label is removed, as an offline write
#                would leave it)
#   etc/motd     untouched
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
out() { echo "E2E-DENIALS $*" > /dev/console; }
# pid 1 of its container: without a handler SIGTERM (rcK) would be ignored
trap 'exit 0' TERM
# a service that ended would be started again (inittab respawn) and tamper
# once more: once done, it stays until rcK stops it
idle() {
  while :; do
    sleep 3600 &
    wait $!
  done
}
manifests=/var/lib/sealkit/ima/manifests
store=/var/lib/containerd/sealkit
tries=0
until m=$(ls "$manifests"/*.json 2> /dev/null | head -n 1) && [ -n "$m" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 960 ]; then
    out "skip: no labelled container rootfs after 8 minutes"
    for s in fetcher importer ima; do tail -n 8 "/var/log/$s.log" | sed "s/^/E2E-DENIALS $s | /"; done > /dev/console
    idle
  fi
  sleep 0.5
done
container=$(basename "$m" .json)
rootfs="$store/$container/rootfs"
out "rootfs $rootfs"
tmp=/tmp/e2e-denials
mkdir -p "$tmp"
try() {
  if cat "$2" > /dev/null 2> "$tmp/err"; then
    out "read $1 allowed"
  else
    out "read $1 denied: $(cat "$tmp/err")"
  fi
}
try untouched "$rootfs/etc/motd"
forged="0x0404$(echo forged | sha256sum | cut -d' ' -f1)"
if setfattr -n security.ima -v "$forged" "$rootfs/bin/app" 2> "$tmp/err"; then out "forged bin/app"; else out "error: cannot forge bin/app: $(cat "$tmp/err")"; fi
try forged "$rootfs/bin/app"
echo 'echo added' > "$rootfs/bin/added"
setfattr -x security.ima "$rootfs/bin/added" 2> /dev/null
if getfattr -n security.ima "$rootfs/bin/added" > /dev/null 2>&1; then out "error: bin/added still has a label"; else out "added bin/added without a label"; fi
try added "$rootfs/bin/added"
out "done"
idle
