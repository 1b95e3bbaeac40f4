import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../services/lib/config.ts';
import { bootKernel, buildInitrd, debianKernel, EXT4_VIRTIO_MODULES, guestInit, NODE_LIBS, nodeInGuest, results } from './helpers/kernel-vm.ts';

// The ima service's enableVerity (services/ima/fsverity.ts) against a kernel
// that has fs-verity, which this host's does not: Debian's 6.12 in QEMU, a
// store made like the node's (ext4 -b 4096 -O verity), and the compiled
// code run by Node in the guest (test/helpers/verity-guest.ts), through
// sealkit-verity-enable (built by make build) and through the fsverity tool
// it falls back to. More files than one batch, hard links (one inode,
// enabled once), a file that already has fs-verity, a second run over the
// same files, and a tmpfs file.

const K612 = debianKernel(/^6\.12\.\S+-amd64$/);
const dir = mkdtempSync(join(tmpdir(), 'sealkit-verity-vm-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const INIT = `${guestInit({ mounts: 'mount -t tmpfs tmpfs /tmp', modules: EXT4_VIRTIO_MODULES, disk: '/dev/vda' })}
mkdir -p /s; mount -t ext4 /dev/vda /s
fsverity enable /s/t/a/already && fsverity enable /s/t/b/already && echo "RESULT already enabled"
/s/app/node /s/app/dist/test/helpers/verity-guest.js /s/t 2>&1
echo "RESULT done"
poweroff -f
`;

test('enableVerity gives every file of a tree fs-verity once, hard links and all, through its helper and through the fsverity tool, and the kernel measures the digests sealkit computes', async (t) => {
  const missing = [!K612 && 'a Debian 6.12 kernel (/boot/vmlinuz-6.12.*)', ...['/usr/bin/fsverity', '/usr/bin/busybox', '/lib/x86_64-linux-gnu/libfsverity.so.0', '/lib/x86_64-linux-gnu/libcrypto.so.3'].filter((f) => !existsSync(f))].filter(Boolean);
  if (missing.length || !K612) return t.fail(`missing ${missing.join(', ')}: run make deps`);
  const s = join(dir, 's');
  for (const tree of ['a', 'b']) {
    const t3 = join(s, 't', tree);
    mkdirSync(t3, { recursive: true });
    // 300 files: more than one batch (256) and both lanes
    for (let i = 0; i < 297; i++) writeFileSync(join(t3, `f${i}`), Buffer.alloc(i * 37, i % 251));
    writeFileSync(join(t3, 'big'), Buffer.alloc(3 * 1024 * 1024 + 5, 7));
    linkSync(join(t3, 'big'), join(t3, 'big-link'));
    writeFileSync(join(t3, 'already'), 'enabled before sealkit');
  }
  nodeInGuest(s, repoRoot);
  const img = join(dir, 's.img');
  execFileSync('mkfs.ext4', ['-q', '-b', '4096', '-O', 'verity', '-d', s, img, '512M']);
  const files: Record<string, string> = { '/usr/bin/fsverity': '/usr/bin/fsverity', '/lib/x86_64-linux-gnu/libfsverity.so.0': '/lib/x86_64-linux-gnu/libfsverity.so.0', '/lib/x86_64-linux-gnu/libcrypto.so.3': '/lib/x86_64-linux-gnu/libcrypto.so.3' };
  for (const l of NODE_LIBS) files[l] = l;
  const initrd = buildInitrd(dir, { init: INIT, modulesDir: K612.modules, modules: EXT4_VIRTIO_MODULES, files });
  const out = await bootKernel(['-m', '1024', '-smp', '2', '-kernel', K612.kernel, '-initrd', initrd, '-append', 'console=ttyS0 panic=-1 loglevel=1', '-drive', `file=${img},format=raw,if=virtio`], 8 * 60_000);
  const r = results(out);
  const tail = out.slice(-3000);
  t.is(r.done, '', tail);
  t.is(r.already, 'enabled', tail);
  t.regex(r.helper ?? '', /\/s\/app\/dist\/services\/ima\/sealkit-verity-enable$/, 'the helper built by make build is in dist/, beside its module');
  for (const tree of ['a', 'b']) {
    const how = tree === 'a' ? 'sealkit-verity-enable' : 'the fsverity tool';
    t.is(r[`first-${tree}`], 'ok', `${how}: ${tail}`);
    t.is(r[`second-${tree}`], 'ok', `${how}: a second run over files that have fs-verity is not an error`);
    t.is(r[`measured-${tree}`], '300/300 ', `${how}: every file, the hard link and the one enabled before included, has the digest sealkit computes`);
    t.is(r[`write-${tree}`], 'refused EPERM', `${how}: a file with fs-verity is immutable`);
    t.is(r[`tmpfs-${tree}`], 'SEALKIT_VERITY_FAILED true', `${how}: a store without fs-verity is refused with what to do`);
  }
});
