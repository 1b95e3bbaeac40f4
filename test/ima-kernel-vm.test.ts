import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HashPool } from '../services/ima/hashpool.ts';
import { hashAndLabelTree } from '../services/ima/labeltree.ts';
import { digestLabel, writeLabel } from '../services/ima/label.ts';
import { loadOrCreateSigningKey, signatureLabel } from '../services/ima/digsig.ts';
import { composeHostPolicy } from '../services/ima/hostpolicy.ts';

// The real kernel (Debian 6.1, ima_appraise=enforce) in QEMU/TCG appraises
// what we label, under the host policy we compose: two ext4 stores, one
// appraised by digest and one requiring our v2 signatures (cert in _ima).

// whichever Debian 6.1 kernel is installed: a point release renames it
const KVER = (existsSync('/boot') ? readdirSync('/boot') : []).map((f) => /^vmlinuz-(6\.1\.\S+-amd64)$/.exec(f)?.[1]).find((v) => v !== undefined) ?? '6.1-not-installed';
const KERNEL = `/boot/vmlinuz-${KVER}`;
const MODULES = `/usr/lib/modules/${KVER}/kernel`;
const ready = existsSync(KERNEL) && existsSync(MODULES) && existsSync('/usr/bin/busybox');
const dir = mkdtempSync(join(tmpdir(), 'sealkit-ima-vm-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const UUID_DIGEST = '5ea1c0de-0000-4000-8000-00000000000d';
const UUID_SIG = '5ea1c0de-0000-4000-8000-00000000000e';

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t securityfs securityfs /sys/kernel/security
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4; do insmod /lib/modules/$m.ko; done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vdb ] && break; sleep 0.3; done
mkdir -p /d /s; mount -t ext4 /dev/vda /d; mount -t ext4 /dev/vdb /s
keyctl newring _ima @u >/dev/null; keyctl padd asymmetric '' %keyring:_ima < /cert.der >/dev/null
cat /policy > /sys/kernel/security/ima/policy; echo "RESULT policy $?"
try() { if cat "$1" >/dev/null 2>&1; then echo "RESULT $1 ok"; else echo "RESULT $1 denied"; fi; }
for f in /d/good /d/forged /d/unlabelled /s/signed /s/hashonly; do try $f; done
if /d/bin/tool >/dev/null 2>&1; then echo "RESULT exec ok"; else echo "RESULT exec denied"; fi
[ -e /sys/kernel/security/ima/policy ] && echo "RESULT policy-file present" || echo "RESULT policy-file gone"
dmesg | grep 'type=1800'
poweroff -f
`;

test('the kernel accepts our labels and signatures and denies forged and missing ones', async (t) => {
  // make deps installs linux-image-amd64 and busybox-static: a missing one is a broken set-up, not a pass
  if (!ready) return t.fail(`no Debian 6.1 kernel, its modules or /usr/bin/busybox (looked for ${KERNEL}, ${MODULES}): run make deps`);
  const initrd = join(dir, 'initrd');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'lib/modules', 'lib/x86_64-linux-gnu', 'lib64', 'usr/bin']) mkdirSync(join(initrd, d), { recursive: true });
  copyFileSync('/usr/bin/busybox', join(initrd, 'bin/busybox'));
  for (const m of ['drivers/virtio/virtio.ko', 'drivers/virtio/virtio_ring.ko', 'drivers/virtio/virtio_pci_legacy_dev.ko', 'drivers/virtio/virtio_pci_modern_dev.ko', 'drivers/virtio/virtio_pci.ko', 'drivers/block/virtio_blk.ko', 'lib/crc16.ko', 'fs/mbcache.ko', 'fs/jbd2/jbd2.ko', 'crypto/crc32c_generic.ko', 'fs/ext4/ext4.ko']) {
    copyFileSync(join(MODULES, m), join(initrd, 'lib/modules', m.split('/').at(-1)!));
  }
  copyFileSync('/usr/bin/keyctl', join(initrd, 'usr/bin/keyctl'));
  for (const l of ['libkeyutils.so.1', 'libc.so.6']) copyFileSync(`/lib/x86_64-linux-gnu/${l}`, join(initrd, 'lib/x86_64-linux-gnu', l));
  copyFileSync('/lib64/ld-linux-x86-64.so.2', join(initrd, 'lib64/ld-linux-x86-64.so.2'));
  writeFileSync(join(initrd, 'init'), INIT);
  chmodSync(join(initrd, 'init'), 0o755);

  // store 1: digest labels written by the hash pool and by label.ts
  const d = join(dir, 'd');
  mkdirSync(join(d, 'bin'), { recursive: true });
  writeFileSync(join(d, 'bin/tool'), '#!/bin/sh\necho tool\n', { mode: 0o755 });
  writeFileSync(join(d, 'good'), 'good\n');
  const pool = new HashPool(2);
  await hashAndLabelTree(d, pool);
  await pool.close();
  writeFileSync(join(d, 'forged'), 'real\n');
  await writeLabel(join(d, 'forged'), digestLabel(sha('what the manifest said\n')));
  writeFileSync(join(d, 'unlabelled'), 'none\n');
  // store 2: signatures required
  const s = join(dir, 's');
  mkdirSync(s);
  const key = await loadOrCreateSigningKey(join(dir, 'keys'), 'vm');
  copyFileSync(key.certDer, join(initrd, 'cert.der'));
  writeFileSync(join(s, 'signed'), 'signed\n');
  await writeLabel(join(s, 'signed'), signatureLabel(sha('signed\n'), key));
  writeFileSync(join(s, 'hashonly'), 'hash\n');
  await writeLabel(join(s, 'hashonly'), digestLabel(sha('hash\n')));

  const digestPolicy = composeHostPolicy({ uuid: UUID_DIGEST, magic: 0xef53, dev: '254:0' }, { signatures: false });
  const sigRule = composeHostPolicy({ uuid: UUID_SIG, magic: 0xef53, dev: '254:16' }, { signatures: true }).at(-1)!;
  writeFileSync(join(initrd, 'policy'), [...digestPolicy, sigRule].join('\n') + '\n');
  execFileSync('sh', ['-c', `cd '${initrd}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.gz`]);
  for (const [img, src, uuid] of [['d.img', d, UUID_DIGEST], ['s.img', s, UUID_SIG]]) {
    execFileSync('mkfs.ext4', ['-q', '-U', uuid, '-I', '256', '-d', src, join(dir, img), '16M']);
  }

  const out = await new Promise<string>((resolve, reject) => {
    const q = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-cpu', 'max', '-m', '384', '-nographic', '-no-reboot', '-kernel', KERNEL, '-initrd', join(dir, 'initrd.gz'),
      '-append', 'console=ttyS0 ima_appraise=enforce panic=-1 loglevel=4',
      '-drive', `file=${join(dir, 'd.img')},format=raw,if=virtio`, '-drive', `file=${join(dir, 's.img')},format=raw,if=virtio`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    q.stdout.on('data', (c: Buffer) => (log += c.toString()));
    const timer = setTimeout(() => q.kill('SIGKILL'), 100_000);
    q.on('exit', () => (clearTimeout(timer), resolve(log)));
    q.on('error', reject);
  });
  const results = Object.fromEntries([...out.matchAll(/RESULT (\S+) (\S+)/g)].map((m) => [m[1], m[2]]));
  t.like(results, {
    policy: '0',
    '/d/good': 'ok',
    '/d/forged': 'denied',
    '/d/unlabelled': 'denied',
    '/s/signed': 'ok',
    '/s/hashonly': 'denied',
    exec: 'ok',
    'policy-file': 'gone',
  }, out.slice(-3000));
  t.regex(out, /cause=invalid-hash comm="cat" name="\/d\/forged"/);
  t.regex(out, /cause=missing-hash comm="cat" name="\/d\/unlabelled"/);
  t.regex(out, /cause=IMA-signature-required comm="cat" name="\/s\/hashonly"/);
});
