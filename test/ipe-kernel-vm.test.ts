import test from 'ava';
import { execFileSync } from 'node:child_process';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verityDigestOfFile } from '../services/ima/verity.ts';
import { composeIpePolicy, signIpePolicy } from '../services/ima/ipe.ts';
import { bootKernel, buildInitrd, debianKernel, EXT4_VIRTIO_MODULES, guestInit, OVMF_CODE, OVMF_VARS, ovmfWithOwner, ownerCert, results } from './helpers/kernel-vm.ts';

// Debian's 6.12 kernel (IPE built in) under OVMF with a throwaway owner
// certificate enrolled in db, so the kernel loads it into .platform: the IPE
// policy composed and signed by sealkit's code, with the fs-verity digest
// computed by it, is what the kernel enforces on an ext4 store made with
// -O verity. Refusals are the kernel's; their audit records are printed.

const K612 = debianKernel(/^6\.12\.\S+-amd64$/);
const SECURITYFS = '/sys/kernel/security/ipe';
const dir = mkdtempSync(join(tmpdir(), 'sealkit-ipe-vm-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const IPE_MODULES = [...EXT4_VIRTIO_MODULES, 'fs/efivarfs/efivarfs.ko'];

const INIT = `${guestInit({ mounts: 'mount -t securityfs securityfs /sys/kernel/security', modules: IPE_MODULES, disk: '/dev/vda', audit: true })}
mkdir -p /s /t; mount -t ext4 /dev/vda /s; mount -t tmpfs tmpfs /t
mount -t efivarfs efivarfs /sys/firmware/efi/efivars && echo "RESULT setupmode $(od -An -tx1 /sys/firmware/efi/efivars/SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c | tr -d ' ')"
dmesg | grep -q 'UEFI:db' && echo "RESULT platform-key loaded"
echo "RESULT enforce-at-boot $(cat ${SECURITYFS}/enforce)"
fsverity enable /s/ok; fsverity enable /s/unlisted; fsverity enable /s/bundle/rootfs/bin/busybox
echo "RESULT measure $(fsverity measure /s/ok | cut -d' ' -f1)"
pol() { if cat "$2" > "$3" 2>/tmp/e; then echo "RESULT $1 ok"; else echo "RESULT $1 refused $(cat /tmp/e)"; fi; }
pol unsigned /p/v2.txt ${SECURITYFS}/new_policy
pol otherkey /p/other.p7b ${SECURITYFS}/new_policy
pol v1 /p/v1.p7b ${SECURITYFS}/new_policy
pol v1-active /p/one ${SECURITYFS}/policies/sealkit/active
pol v2 /p/v2.p7b ${SECURITYFS}/policies/sealkit/update
pol v2-active /p/one ${SECURITYFS}/policies/sealkit/active
pol rollback /p/v1.p7b ${SECURITYFS}/policies/sealkit/update
pol same /p/v2.p7b ${SECURITYFS}/policies/sealkit/update
echo "RESULT version $(cat ${SECURITYFS}/policies/sealkit/version)"
run() { if out=$("$2" 2>&1); then echo "RESULT $1 ran"; else echo "RESULT $1 refused $? $out"; fi; }
run allowed /s/a/true
run unlisted /s/b/true
run plain /s/c/true
run spaced /s/d/true
cp /s/ok /t/true; run tmpfs-copy /t/true
mkdir -p /tmp/w; cp /s/unlisted /tmp/w/true; run initramfs-copy /tmp/w/true
mkdir -p /sys/fs/cgroup; mount -t cgroup2 none /sys/fs/cgroup
cd /s/bundle; if /usr/sbin/runc run --no-pivot c1 > /tmp/rc.out 2>&1; then echo "RESULT runc ran"; else echo "RESULT runc refused $(head -1 /tmp/rc.out)"; fi; cd /
if (echo x >> /s/ok) 2>/tmp/e; then echo "RESULT write ok"; else echo "RESULT write refused $(cat /tmp/e)"; fi
echo 0 > ${SECURITYFS}/enforce; echo "RESULT enforce-after $(cat ${SECURITYFS}/enforce)"
run unlisted-unenforced /s/b/true
dmesg | grep -E 'type=14(04|20|21|22) '
timeout 2 cat /dev/kmsg | grep -E 'audit: type=14(04|20) ' | sed 's/^/KMSG /'
poweroff -f
`;

test('the 6.12 kernel enforces the owner-signed IPE policy sealkit composes, and refuses what it does not list', async (t) => {
  // make deps installs these: a missing one is a broken set-up, not a pass
  const missing = [!K612 && 'a Debian 6.12 kernel (/boot/vmlinuz-6.12.*)', !existsSync(OVMF_CODE) && OVMF_CODE, !existsSync(OVMF_VARS) && OVMF_VARS,
    !existsSync('/usr/bin/virt-fw-vars') && '/usr/bin/virt-fw-vars', !existsSync('/usr/bin/fsverity') && '/usr/bin/fsverity', !existsSync('/usr/bin/busybox') && '/usr/bin/busybox', !existsSync('/usr/sbin/runc') && '/usr/sbin/runc'].filter(Boolean);
  if (missing.length || !K612) return t.fail(`missing ${missing.join(', ')}: run make deps`);

  // the store: one binary listed by digest, one verity file not listed, one
  // copy of the listed bytes without verity
  const s = join(dir, 's');
  for (const d of ['a', 'b', 'c', 'd']) mkdirSync(join(s, d), { recursive: true });
  copyFileSync('/usr/bin/busybox', join(s, 'ok'));
  copyFileSync('/usr/bin/busybox', join(s, 'unlisted'));
  appendFileSync(join(s, 'unlisted'), '\0');
  copyFileSync('/usr/bin/busybox', join(s, 'plain'));
  copyFileSync(join(s, 'unlisted'), join(s, 'un listed')); // the kernel prints its path in hex
  // busybox picks its applet by the name it was run as
  symlinkSync('../ok', join(s, 'a/true'));
  symlinkSync('../unlisted', join(s, 'b/true'));
  symlinkSync('../plain', join(s, 'c/true'));
  symlinkSync('../un listed', join(s, 'd/true'));
  // runc (on the initramfs) runs a container whose only file is the listed binary
  mkdirSync(join(s, 'bundle/rootfs/bin'), { recursive: true });
  copyFileSync('/usr/bin/busybox', join(s, 'bundle/rootfs/bin/busybox'));
  execFileSync('sh', ['-c', `cd '${join(s, 'bundle')}' && runc spec && sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"sh"/"\\/bin\\/busybox", "true"/' config.json`]);
  execFileSync('mkfs.ext4', ['-q', '-b', '4096', '-O', 'verity', '-d', s, join(dir, 's.img'), '32M']);
  const digest = await verityDigestOfFile(join(s, 'ok'));

  const owner = ownerCert(dir, 'owner');
  const other = ownerCert(dir, 'other');
  const p = join(dir, 'p');
  mkdirSync(p);
  writeFileSync(join(p, 'v1.txt'), composeIpePolicy({ serial: 1, digests: [] }));
  writeFileSync(join(p, 'v2.txt'), composeIpePolicy({ serial: 2, digests: [digest] }));
  await signIpePolicy(join(p, 'v1.txt'), owner.cert, owner.key, join(p, 'v1.p7b'));
  await signIpePolicy(join(p, 'v2.txt'), owner.cert, owner.key, join(p, 'v2.p7b'));
  await signIpePolicy(join(p, 'v2.txt'), other.cert, other.key, join(p, 'other.p7b'));
  writeFileSync(join(p, 'one'), '1');

  const ovmf = ovmfWithOwner(dir, owner.cert);

  const files: Record<string, string> = {
    '/usr/bin/fsverity': '/usr/bin/fsverity',
    '/lib/x86_64-linux-gnu/libfsverity.so.0': '/lib/x86_64-linux-gnu/libfsverity.so.0',
    '/lib/x86_64-linux-gnu/libcrypto.so.3': '/lib/x86_64-linux-gnu/libcrypto.so.3',
    '/lib/x86_64-linux-gnu/libc.so.6': '/lib/x86_64-linux-gnu/libc.so.6',
    '/lib64/ld-linux-x86-64.so.2': '/lib64/ld-linux-x86-64.so.2',
    '/usr/sbin/runc': '/usr/sbin/runc',
    '/lib/x86_64-linux-gnu/libseccomp.so.2': '/lib/x86_64-linux-gnu/libseccomp.so.2',
  };
  for (const f of ['v1.txt', 'v2.txt', 'v1.p7b', 'v2.p7b', 'other.p7b', 'one']) files[join(p, f)] = `/p/${f}`;
  const initrd = buildInitrd(dir, {
    init: INIT,
    modulesDir: K612.modules,
    modules: IPE_MODULES,
    files,
  });

  // loglevel=1: a kernel warning printed mid-line (a TCG guest on a loaded
  // host warns about its clock) would cut a RESULT line; init prints the
  // records it needs with dmesg
  const out = await bootKernel(['-m', '512', ...ovmf,
    '-kernel', K612.kernel, '-initrd', initrd, '-append', 'console=ttyS0 panic=-1 loglevel=1 audit_backlog_limit=8192',
    '-drive', `file=${join(dir, 's.img')},format=raw,if=virtio`]);
  const r = results(out);
  const tail = out.slice(-4000);
  t.is(r['platform-key'], 'loaded', tail);
  t.is(r.measure, `sha256:${digest}`, 'the kernel measures the digest sealkit computed');
  t.like(r, {
    'enforce-at-boot': '1',
    unsigned: 'refused cat: write error: Bad message', // EBADMSG
    otherkey: 'refused cat: write error: Required key not available', // ENOKEY
    v1: 'ok',
    'v1-active': 'ok',
    v2: 'ok',
    'v2-active': 'ok',
    rollback: 'refused cat: write error: Stale file handle', // ESTALE
    same: 'refused cat: write error: Stale file handle',
    version: '0.0.2',
    allowed: 'ran',
    'initramfs-copy': 'ran', // boot_verified trusts whatever is on the initramfs root
    'enforce-after': '0',
    'unlisted-unenforced': 'ran',
  }, tail);
  for (const k of ['unlisted', 'plain', 'spaced', 'tmpfs-copy']) t.regex(r[k] ?? '', /^refused 126 .*Permission denied$/, `${k}: ${tail}`);
  t.regex(r.write ?? '', /^refused .*can't create \/s\/ok: Operation not permitted$/, 'a verity file is immutable: EPERM');
  // Debian's runc 1.1 re-executes itself from a memfd, which IPE refuses:
  // services/ima/runtime.ts keeps the policy from being activated with it
  t.regex(r.runc ?? '', /^refused .*could not ensure we are a cloned binary: Permission denied/, tail);
  t.regex(out, /audit: type=1420 .* comm="runc" path=2F6D656D66643A72756E635F636C6F6E65643A2F70726F632F73656C662F657865202864656C6574656429 dev="tmpfs"/); // memfd:runc_cloned:/proc/self/exe (deleted)
  // only db enrolled: the firmware stays in Setup Mode (attributes, then 1)
  t.is(r.setupmode, '0600000001');
  t.regex(out, /audit: type=1420 audit\([\d.:]+\): ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=\d+ comm="init" path="\/s\/unlisted" dev="vda" ino=\d+ rule="DEFAULT op=EXECUTE action=DENY"/);
  t.regex(out, /audit: type=1420 .* path="\/t\/true" dev="tmpfs"/);
  t.regex(out, /audit: type=1404 audit\([\d.:]+\): enforcing=0 old_enforcing=1 .* lsm=ipe res=1/);
  t.regex(out, /audit: type=1421 .* new_active_pol_name="sealkit" new_active_pol_version=0\.0\.2/);
});
