import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

// A Debian kernel booted with -kernel and a tiny busybox initramfs in QEMU
// (TCG): the kernel tests run their /init and read its RESULT lines.

// whichever point release of a Debian kernel line is installed
export function debianKernel(line: RegExp): { version: string; kernel: string; modules: string } | null {
  const v = (existsSync('/boot') ? readdirSync('/boot') : []).map((f) => /^vmlinuz-(\S+)$/.exec(f)?.[1]).find((x) => x !== undefined && line.test(x));
  return v ? { version: v, kernel: `/boot/vmlinuz-${v}`, modules: `/usr/lib/modules/${v}/kernel` } : null;
}

// a module's file in the initrd: its name under /lib/modules, unpacked
const moduleFile = (m: string): string => m.split('/').at(-1)!.replace(/\.xz$/, '');

// Modules are copied by path under the kernel's module tree (.ko or .ko.xz,
// unpacked: busybox insmod reads plain ELF) to /lib/modules/<name>.ko; files
// (host path → initrd path) keep their mode.
export function buildInitrd(dir: string, o: { init: string; modulesDir: string; modules: string[]; files?: Record<string, string> }): string {
  const root = join(dir, 'initrd');
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'lib/modules', 'usr/bin']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/usr/bin/busybox', join(root, 'bin/busybox'));
  for (const m of o.modules) {
    const name = moduleFile(m);
    const src = join(o.modulesDir, m);
    if (existsSync(src)) copyFileSync(src, join(root, 'lib/modules', name));
    else execFileSync('sh', ['-c', `xz -dc '${src}.xz' > '${join(root, 'lib/modules', name)}'`]);
  }
  for (const [from, to] of Object.entries(o.files ?? {})) {
    mkdirSync(dirname(join(root, to)), { recursive: true });
    copyFileSync(from, join(root, to));
  }
  writeFileSync(join(root, 'init'), o.init);
  chmodSync(join(root, 'init'), 0o755);
  const out = join(dir, 'initrd.gz');
  execFileSync('sh', ['-c', `cd '${root}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '${out}'`]);
  return out;
}

// The first lines of every kernel test's /init: busybox's applets, the
// kernel's file systems (and \`mounts\`, more of them), the modules in
// order (their files as buildInitrd puts them), and a wait for
// the disk the test mounts. \`audit\`: the guest reads the kernel's audit
// records from its log, so printk's rate limit goes off.
export function guestInit(o: { mounts?: string; modules: string[]; disk: string; audit?: boolean }): string {
  return [
    '#!/bin/busybox sh',
    '/bin/busybox --install -s /bin',
    'export PATH=/bin:/usr/bin',
    `mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev${o.mounts ? `; ${o.mounts}` : ''}`,
    ...(o.audit
      ? [
          '# without auditd the kernel prints audit records through printk_ratelimit()',
          '# (10 in 5 s): the boot\'s own records and a few denials can use that up and',
          '# a denial record is dropped for good (seen: the third of ima-kernel-vm\'s',
          '# never came). Interval 0 turns the limit off.',
          'echo 0 > /proc/sys/kernel/printk_ratelimit',
        ]
      : []),
    `for m in ${o.modules.map(moduleFile).join(' ')}; do insmod /lib/modules/$m; done`,
    `for i in 1 2 3 4 5 6 7 8 9 10; do [ -b ${o.disk} ] && break; sleep 0.3; done`,
    '',
  ].join('\n');
}

// Runs QEMU until the guest powers off (or is killed after limitMs: a hung
// guest is a failure, and its console says where it stopped). TCG in one
// host thread (thread=single) also for a guest of several vCPUs: with one
// thread per vCPU, code one vCPU patches can still run unpatched on another
// (seen: the 6.12 kernel's boot died with "Oops: int3" in sched_clock_cpu,
// where its text_poke_bp had already put the final instruction back, under
// -smp 2 in bench/verity.ts, once in several boots).
export function bootKernel(args: string[], limitMs = 150_000): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const q = spawn('qemu-system-x86_64', ['-accel', 'tcg,thread=single', '-cpu', 'max', '-nographic', '-no-reboot', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    q.stdout.on('data', (c: Buffer) => (log += c.toString()));
    q.stderr.on('data', (c: Buffer) => (log += c.toString()));
    const timer = setTimeout(() => q.kill('SIGKILL'), limitMs);
    q.on('exit', () => (clearTimeout(timer), resolve(log)));
    q.on('error', reject);
  });
}

export const results = (out: string): Record<string, string> => Object.fromEntries([...out.matchAll(/RESULT (\S+) ?(.*?)\r?$/gm)].map((m) => [m[1], m[2]]));

// Node.js and the compiled project (dist/, with fs-xattr) copied into
// <store>/app, so a guest can run the services' own code from the store
// disk; the shared libraries Node needs are files for buildInitrd.
export const NODE_LIBS = ['/lib/x86_64-linux-gnu/libc.so.6', '/lib64/ld-linux-x86-64.so.2', '/lib/x86_64-linux-gnu/libdl.so.2', '/lib/x86_64-linux-gnu/libstdc++.so.6',
  '/lib/x86_64-linux-gnu/libm.so.6', '/lib/x86_64-linux-gnu/libgcc_s.so.1', '/lib/x86_64-linux-gnu/libpthread.so.0'];
export function nodeInGuest(store: string, repo: string): void {
  for (const f of [process.execPath, join(repo, 'dist'), join(repo, 'node_modules/fs-xattr/package.json')]) if (!existsSync(f)) throw new Error(`${f} is missing: run make build`);
  mkdirSync(join(store, 'app/node_modules'), { recursive: true });
  execFileSync('cp', ['-a', join(repo, 'dist'), join(store, 'app/dist')]);
  execFileSync('cp', ['-a', join(repo, 'node_modules/fs-xattr'), join(store, 'app/node_modules/fs-xattr')]);
  copyFileSync(process.execPath, join(store, 'app/node'));
  chmodSync(join(store, 'app/node'), 0o755);
}

// ext4 on a virtio disk, for a 6.12 guest's store (busybox insmod, in order)
export const EXT4_VIRTIO_MODULES = ['drivers/block/virtio_blk.ko', 'lib/crc16.ko', 'fs/mbcache.ko', 'fs/jbd2/jbd2.ko', 'crypto/crc32c_generic.ko', 'fs/ext4/ext4.ko'];

// OVMF with an owner certificate in db: the kernel loads it into .platform,
// the keyring IPE policies must be signed from
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
const OWNER_GUID = '5ea1c0de-0000-4000-8000-000000000014';
export function ownerCert(dir: string, name: string): { cert: string; key: string } {
  const c = { cert: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) };
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', c.key, '-out', c.cert, '-days', '2', '-subj', `/CN=sealkit test ${name}`,
    '-addext', 'extendedKeyUsage=codeSigning', '-addext', 'keyUsage=digitalSignature'], { stdio: 'ignore' });
  return c;
}
// a copy of OVMF's variable store with cert in db, and the QEMU arguments to boot with it
export function ovmfWithOwner(dir: string, cert: string): string[] {
  return ['-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,file=${ownerVars(dir, cert)}`];
}
// the variable store alone (dir/vars.fd), as the README's virt-fw-vars line makes it
export function ownerVars(dir: string, cert: string): string {
  const vars = join(dir, 'vars.fd');
  execFileSync('virt-fw-vars', ['--input', OVMF_VARS, '--output', vars, '--add-db', OWNER_GUID, cert], { stdio: 'ignore' });
  return vars;
}
