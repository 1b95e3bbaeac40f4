#!/bin/sh
# IMA appraisal in the node's kernel, the first onboot step of the
# ima-kernel test case (test.yml; test/iso-ima.test.ts reads the result
# lines, each starting with "IMA-KERNEL"). It makes the boot's one policy
# write, so it never runs on a production node.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
exec > /dev/console 2>&1
out() { echo "IMA-KERNEL $*"; }
sec=/sys/kernel/security/ima
d=/run/imatest
if [ ! -e "$sec/policy" ]; then
  out "skip: $sec/policy is missing (no IMA, or the policy was already written)"
  exit 0
fi
hash() { sha256sum "$1" | cut -d' ' -f1; }
label() {
  case $2 in
    good) setfattr -n security.ima -v "0x0404$(hash "$1")" "$1" ;;
    bad) setfattr -n security.ima -v "0x0404$(echo tampered | sha256sum | cut -d' ' -f1)" "$1" ;;
  esac
}
xattr() { getfattr -e hex -n security.ima "$1" 2>/dev/null | sed -n 's/^security.ima=//p'; }
try() {
  if cat "$2" > /dev/null 2> "$d/err"; then
    out "read $1 allowed"
  else
    out "read $1 denied: $(cat "$d/err")"
  fi
}

mkdir -p "$d/ext4" "$d/lower" "$d/upper" "$d/work" "$d/merged"
# an ext4 filesystem on a loop file, named in the policy by its fsuuid
uuid=$(cat /proc/sys/kernel/random/uuid)
truncate -s 64M "$d/ext4.img"
mkfs.ext4 -q -U "$uuid" -E lazy_itable_init=1,lazy_journal_init=1 "$d/ext4.img"
mount -o loop "$d/ext4.img" "$d/ext4" || out "error: cannot mount ext4"
# an overlay (as containerd mounts container rootfs) whose lower dir is on
# tmpfs, which the policy does not name: only the overlay rule can match
for dir in "$d/ext4" "$d/lower"; do
  for k in good bad none; do
    echo "content of $k" > "$dir/$k"
    label "$dir/$k" "$k"
  done
done
mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" || out "error: cannot mount overlay"
out "label ext4/good $(xattr "$d/ext4/good")"

policy="appraise fsuuid=$uuid
appraise fsmagic=0x794c7630"
echo "$policy" | while read -r l; do out "policy $l"; done
if echo "$policy" > "$sec/policy"; then out "policy written"; else out "policy write failed"; fi
if [ -e "$sec/policy" ]; then out "policy file still present"; else out "policy file gone after the write"; fi
if (echo "appraise fsmagic=0x01021994" > "$sec/policy") 2> "$d/err"; then out "second write accepted"; else out "second write refused: $(cat "$d/err")"; fi

try ext4-good "$d/ext4/good"
try ext4-bad "$d/ext4/bad"
try ext4-none "$d/ext4/none"
try overlay-good "$d/merged/good"
try overlay-bad "$d/merged/bad"
try overlay-none "$d/merged/none"
try tmpfs-bad-direct "$d/lower/bad"

# what the kernel does with a hash label when the file is rewritten
before=$(xattr "$d/ext4/good")
if (echo appended >> "$d/ext4/good") 2> "$d/err"; then out "append ext4-good allowed"; else out "append ext4-good denied: $(cat "$d/err")"; fi
after=$(xattr "$d/ext4/good")
[ "$before" = "$after" ] && out "label after append: unchanged" || out "label after append: rewritten by the kernel to $after"
try ext4-good-after-append "$d/ext4/good"
if (echo more >> "$d/ext4/bad") 2> "$d/err"; then out "append ext4-bad allowed"; else out "append ext4-bad denied: $(cat "$d/err")"; fi
# a new file created after the policy is in force
echo fresh > "$d/ext4/new"
out "label ext4/new $(xattr "$d/ext4/new")"
try ext4-new "$d/ext4/new"

sleep 1
dmesg | grep -E 'type=180[0-7]' | while read -r l; do out "kmsg $l"; done
out "done"
