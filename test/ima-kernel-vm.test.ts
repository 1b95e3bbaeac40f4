import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HashPool } from '../services/ima/hashpool.ts';
import { hashAndLabelTree } from '../services/ima/labeltree.ts';
import { digestLabel, writeLabel } from '../services/ima/label.ts';
import { loadOrCreateSigningKey, signatureLabel } from '../services/ima/digsig.ts';
import { composeHostPolicy } from '../services/ima/hostpolicy.ts';
import { bootKernel, buildInitrd, debianKernel, guestInit, results as resultsOf } from './helpers/kernel-vm.ts';

// The real kernel (Debian 6.1, ima_appraise=enforce) in QEMU/TCG appraises
// what we label, under the host policy we compose: two ext4 stores, one
// appraised by digest and one requiring our v2 signatures (cert in _ima).

// whichever Debian 6.1 kernel is installed: a point release renames it
const K61 = debianKernel(/^6\.1\.\S+-amd64$/);
const KERNEL = K61?.kernel ?? '/boot/vmlinuz-6.1-not-installed';
const MODULES = K61?.modules ?? '/usr/lib/modules/6.1-not-installed/kernel';
const ready = existsSync(KERNEL) && existsSync(MODULES) && existsSync('/usr/bin/busybox');
const dir = mkdtempSync(join(tmpdir(), 'sealkit-ima-vm-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const UUID_DIGEST = '5ea1c0de-0000-4000-8000-00000000000d';
const UUID_SIG = '5ea1c0de-0000-4000-8000-00000000000e';

// in the order insmod needs them (virtio needs virtio_ring)
const IMA_MODULES = ['drivers/virtio/virtio_ring.ko', 'drivers/virtio/virtio.ko', 'drivers/virtio/virtio_pci_legacy_dev.ko', 'drivers/virtio/virtio_pci_modern_dev.ko', 'drivers/virtio/virtio_pci.ko', 'drivers/block/virtio_blk.ko', 'lib/crc16.ko', 'fs/mbcache.ko', 'fs/jbd2/jbd2.ko', 'crypto/crc32c_generic.ko', 'fs/ext4/ext4.ko'];

const INIT = `${guestInit({ mounts: 'mount -t securityfs securityfs /sys/kernel/security', modules: IMA_MODULES, disk: '/dev/vdb', audit: true })}
mkdir -p /d /s; mount -t ext4 /dev/vda /d; mount -t ext4 /dev/vdb /s
keyctl newring _ima @u >/dev/null; keyctl padd asymmetric '' %keyring:_ima < /cert.der >/dev/null
cat /policy > /sys/kernel/security/ima/policy; echo "RESULT policy $?"
try() { if cat "$1" >/dev/null 2>&1; then echo "RESULT $1 ok"; else echo "RESULT $1 denied"; fi; }
for f in /d/good /d/forged /d/unlabelled /s/signed /s/hashonly; do try $f; done
if /d/bin/tool >/dev/null 2>&1; then echo "RESULT exec ok"; else echo "RESULT exec denied"; fi
[ -e /sys/kernel/security/ima/policy ] && echo "RESULT policy-file present" || echo "RESULT policy-file gone"
# the kernel prints audit records from its kauditd thread, after the read
# that caused them returned: wait for the three denials (a CI run read
# dmesg before the last one was there)
i=0; while [ $(dmesg | grep -c 'type=1800') -lt 3 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
dmesg | grep 'type=1800'
poweroff -f
`;

test('the kernel accepts our labels and signatures and denies forged and missing ones', async (t) => {
  // make deps installs linux-image-amd64 and busybox-static: a missing one is a broken set-up, not a pass
  if (!ready) return t.fail(`no Debian 6.1 kernel, its modules or /usr/bin/busybox (looked for ${KERNEL}, ${MODULES}): run make deps`);
  const initrdFiles: Record<string, string> = { '/usr/bin/keyctl': '/usr/bin/keyctl', '/lib64/ld-linux-x86-64.so.2': '/lib64/ld-linux-x86-64.so.2' };
  for (const l of ['libkeyutils.so.1', 'libc.so.6']) initrdFiles[`/lib/x86_64-linux-gnu/${l}`] = `/lib/x86_64-linux-gnu/${l}`;
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
  initrdFiles[key.certDer] = '/cert.der';
  writeFileSync(join(s, 'signed'), 'signed\n');
  await writeLabel(join(s, 'signed'), signatureLabel(sha('signed\n'), key));
  writeFileSync(join(s, 'hashonly'), 'hash\n');
  await writeLabel(join(s, 'hashonly'), digestLabel(sha('hash\n')));

  const digestPolicy = composeHostPolicy({ uuid: UUID_DIGEST, magic: 0xef53, dev: '254:0' }, { signatures: false });
  const sigRule = composeHostPolicy({ uuid: UUID_SIG, magic: 0xef53, dev: '254:16' }, { signatures: true }).at(-1)!;
  writeFileSync(join(dir, 'policy'), [...digestPolicy, sigRule].join('\n') + '\n');
  initrdFiles[join(dir, 'policy')] = '/policy';
  const initrd = buildInitrd(dir, {
    init: INIT,
    modulesDir: MODULES,
    modules: IMA_MODULES,
    files: initrdFiles,
  });
  for (const [img, src, uuid] of [['d.img', d, UUID_DIGEST], ['s.img', s, UUID_SIG]]) {
    execFileSync('mkfs.ext4', ['-q', '-U', uuid, '-I', '256', '-d', src, join(dir, img), '16M']);
  }

  // loglevel=1: a kernel warning printed mid-line (a TCG guest on a loaded
  // host warns about its clock) would cut a RESULT line; init prints the
  // records it needs with dmesg
  const out = await bootKernel(['-m', '384', '-kernel', KERNEL, '-initrd', initrd, '-append', 'console=ttyS0 ima_appraise=enforce panic=-1 loglevel=1',
    '-drive', `file=${join(dir, 'd.img')},format=raw,if=virtio`, '-drive', `file=${join(dir, 's.img')},format=raw,if=virtio`], 100_000);
  const results = resultsOf(out);
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
