#!/bin/sh
# The service of the ipe-workload test case (test.yml; test/iso-ipe.test.ts):
# what root with a shell on the node would do to get a binary of its own run
# in place of a workload's. Every line it prints starts with "IPE-INTRUDER".
# It waits until the policy's container "ticker" (image sealkit/ipe-ticker)
# has run bin/tick from its rootfs on the store, then:
#   append   writes to bin/tick, a file of that rootfs (fs-verity: EPERM)
#   store    copies busybox to a new file on the store and runs it
#   rootfs   copies busybox into the rootfs as bin/busybox-new and runs it
#            (after giving it back the modes the ima service's watch took);
#            ticker's loop runs it too, inside the container
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
out() { echo "IPE-INTRUDER $*" > /dev/console; }
trap 'exit 0' TERM
# once done it stays (a service that ended would be started again)
idle() {
  while :; do
    sleep 3600 &
    wait $!
  done
}
manifests=/var/lib/sealkit/ima/manifests
store=/var/lib/containerd/sealkit
log=/var/lib/sealkit/runner/logs/ticker.log
tries=0
until m=$(ls "$manifests"/sealkit-ipe-ticker-1-*.json 2> /dev/null | head -n 1) && [ -n "$m" ] && grep -q '^tick$' "$log" 2> /dev/null; do
  tries=$((tries + 1))
  if [ "$tries" -gt 960 ]; then
    out "skip: ticker has not run bin/tick after 8 minutes"
    for s in ima runner; do tail -n 8 "/var/log/$s.log" | sed "s/^/IPE-INTRUDER $s | /"; done > /dev/console
    idle
  fi
  sleep 0.5
done
rootfs="$store/$(basename "$m" .json)/rootfs"
out "ticker ran bin/tick from $rootfs"
tmp=/tmp/ipe-intruder
mkdir -p "$tmp"
# the shell reports a redirection it cannot make on its own stderr: the subshell's is the file
if (echo 'echo changed' >> "$rootfs/bin/tick") 2> "$tmp/err"; then out "append ok"; else out "append refused: $(sed 's/.*: //' "$tmp/err")"; fi
# busybox runs as itself under any name that starts with "busybox"
run() {
  if o=$("$2" echo "$1 ran" 2>&1); then out "exec $1 ran: $o"; else out "exec $1 refused $?: $o"; fi
}
cp /bin/busybox "$store/busybox-intruder" && run store "$store/busybox-intruder"
# A new file in a watched rootfs: the ima service's watch finds it and takes
# its modes away (enforce: blocked, mode 0), which would refuse the exec
# before the kernel's integrity check is asked. Root gives them back, as an
# intruder would (the watch reports a file once), and then runs it.
new="$rootfs/bin/busybox-new"
cp /bin/busybox "$new"
tries=0
until [ "$(stat -c %a "$new")" = 0 ] || [ "$tries" -gt 60 ]; do
  tries=$((tries + 1))
  sleep 0.5
done
out "bin/busybox-new mode $(stat -c %a "$new") after $((tries / 2)) s; chmod 755"
chmod 755 "$new"
run rootfs "$new"
# the container's loop tries bin/busybox-new each second: wait for its word
tries=0
until grep -q '^busybox-new ' "$log" 2> /dev/null || [ "$tries" -gt 60 ]; do
  tries=$((tries + 1))
  sleep 0.5
done
grep '^busybox-new \|Permission denied\|new ran' "$log" | head -n 4 | sed 's/^/IPE-INTRUDER log | /' > /dev/console
out "done"
idle
