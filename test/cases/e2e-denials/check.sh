#!/bin/sh
# The service of the e2e-denials test case (test.yml; test/iso-e2e.test.ts).
# It waits for the rootfs the ima service labels from sealkit/e2e, then does
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
# Then it changes a binary a running workload execs, offline (below): its
# lines start with "E2E-WORKLOAD".
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
# the rootfs of sealkit/e2e:1.0 (rootfs/names.ts: name-tag-hash)
until m=$(ls "$manifests"/sealkit-e2e-1.0-*.json 2> /dev/null | head -n 1) && [ -n "$m" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 960 ]; then
    out "skip: no labelled container rootfs after 8 minutes"
    for s in fetcher importer ima runner; do tail -n 8 "/var/log/$s.log" | sed "s/^/E2E-DENIALS $s | /"; done > /dev/console
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

# The workload: the policy's container "ticker" (image sealkit/e2e-ticker)
# execs /bin/tick every second from its labelled rootfs, read-only. Once its
# log shows a run, bin/tick gets other content of the same length offline:
# written into the store's block device under the mounted ext4, as an edit of
# the disk from elsewhere would be. A write through this kernel would relabel
# the file, and the ima service's watch would see it and block the file
# before the container's next exec; this way nothing on the node sees a
# write. Dropping the caches makes the kernel read the file, and appraise it,
# again at the next exec. Nothing here reads bin/tick afterwards: that read
# would be refused too, and its denial would not be the container's.
wout() { echo "E2E-WORKLOAD $*" > /dev/console; }
log=/var/lib/sealkit/runner/logs/ticker.log
tries=0
until w=$(ls "$manifests"/sealkit-e2e-ticker-1-*.json 2> /dev/null | head -n 1) && [ -n "$w" ] && grep -q '^tick$' "$log" 2> /dev/null; do
  tries=$((tries + 1))
  if [ "$tries" -gt 960 ]; then
    wout "skip: ticker has not run bin/tick after 8 minutes"
    for s in ima runner; do tail -n 8 "/var/log/$s.log" | sed "s/^/E2E-WORKLOAD $s | /"; done > /dev/console
    idle
  fi
  sleep 0.5
done
wout "ticker ran bin/tick: $(grep -c '^tick$' "$log") times"
. /run/sealkit/store.env
dev=/host$STORE_DEVICE
tick="$store/$(basename "$w" .json)/rootfs/bin/tick"
# the path inside the store's filesystem, and where its first block is on the device
inside=${tick#"$STORE_MOUNT"}
sync
block=$(debugfs -R "bmap $inside 0" "$dev" 2> "$tmp/err")
bs=$(debugfs -R stats "$dev" 2> /dev/null | sed -n 's/^Block size: *//p')
size=$(stat -c %s "$tick")
# the image's bin/tick with one word changed: same size, other digest
new='#!/bin/busybox sh
echo TICK'
if [ -z "$block" ] || [ "$block" = 0 ] || [ -z "$bs" ] || [ "$size" -gt "$bs" ] || [ "$((${#new} + 1))" -ne "$size" ]; then
  wout "error: cannot place bin/tick on $STORE_DEVICE (block '$block', block size '$bs', $size bytes): $(cat "$tmp/err")"
  idle
fi
if printf '%s\n' "$new" | dd of="$dev" bs="$bs" seek="$block" conv=notrunc,sync,fsync 2> "$tmp/err" && echo 3 > /proc/sys/vm/drop_caches; then
  wout "rewrote bin/tick offline at $(cut -d' ' -f1 /proc/uptime) s (block $block of $STORE_DEVICE, $size bytes)"
else
  wout "error: cannot write bin/tick on $STORE_DEVICE: $(cat "$tmp/err")"
  idle
fi
# an inode in use (an exec under way) is not evicted and keeps its verdict:
# drop again once that run is over
sleep 0.3
echo 3 > /proc/sys/vm/drop_caches
tries=0
until grep -q 'Permission denied' "$log" 2> /dev/null || [ "$tries" -gt 120 ]; do
  tries=$((tries + 1))
  sleep 0.5
done
tail -n 4 "$log" | sed 's/^/E2E-WORKLOAD log | /' > /dev/console
wout "done"
idle
