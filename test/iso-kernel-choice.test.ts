import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelVersion, repoRoot } from '../iso/build.ts';
import type { SealkitError } from '../services/lib/errors.ts';
import { testStateDir } from './helpers/qemu.ts';
import { runReadme } from './helpers/readme.ts';

// Which installed kernel the ISO is built with: the newest (on Debian 12,
// bookworm-backports' 6.12, which make deps installs beside bookworm's 6.1),
// or the one KERNEL= names, as a version or a series. 6.1 must not pick 6.12.

async function bootDir(t: { teardown: (fn: () => Promise<void>) => void }, versions: string[], withoutModules: string[] = []): Promise<{ boot: string; modules: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-kernels-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const boot = join(dir, 'boot');
  const modules = join(dir, 'modules');
  await mkdir(boot);
  for (const v of versions) {
    await writeFile(join(boot, `vmlinuz-${v}`), '');
    await writeFile(join(boot, `config-${v}`), '');
    if (withoutModules.includes(v)) continue;
    await mkdir(join(modules, v), { recursive: true });
    await writeFile(join(modules, v, 'modules.dep'), '');
  }
  return { boot, modules };
}

const installed = ['6.1.0-57-amd64', '6.12.95+deb12-amd64', '6.12.118+deb12-amd64', '6.1.0-9-amd64'];

test('the newest installed kernel with its modules is the default: 6.12 over 6.1, 6.12.118 over 6.12.95', async (t) => {
  const { boot, modules } = await bootDir(t, [...installed, '6.13.0-1-amd64'], ['6.13.0-1-amd64']);
  t.is(kernelVersion(undefined, boot, modules), '6.12.118+deb12-amd64', 'a vmlinuz without modules is not a candidate');
});

test('KERNEL=6.1 takes the newest 6.1, never a 6.12; an exact version is taken as it is', async (t) => {
  const { boot, modules } = await bootDir(t, installed);
  t.is(kernelVersion('6.1', boot, modules), '6.1.0-57-amd64');
  t.is(kernelVersion('6.12', boot, modules), '6.12.118+deb12-amd64');
  t.is(kernelVersion('6.12.95+deb12-amd64', boot, modules), '6.12.95+deb12-amd64');
});

test('a kernel that is not installed is refused, naming the ones that are', async (t) => {
  const { boot, modules } = await bootDir(t, installed);
  for (const choice of ['6.6', '6.1.0-5', '6.1.0-57-amd64/../x']) {
    const err = t.throws<SealkitError>(() => kernelVersion(choice, boot, modules), undefined, choice);
    t.is(err!.code, 'SEALKIT_CONFIG');
    t.true(err!.message.startsWith(`kernel "${choice}"`), err!.message);
    t.true(err!.message.includes('installed: 6.1.0-9-amd64, 6.1.0-57-amd64, 6.12.95+deb12-amd64, 6.12.118+deb12-amd64'), err!.message);
  }
  const none = await bootDir(t, []);
  t.is(t.throws<SealkitError>(() => kernelVersion(undefined, none.boot, none.modules))!.code, 'SEALKIT_CONFIG');
});

test('make iso KERNEL=… refuses a kernel this host does not have before anything is built', (t) => {
  const out = join(repoRoot, 'build', 'iso-kernel-choice-refusal');
  const env = { ...process.env, SEALKIT_STATE: testStateDir, SEALKIT_ISO_OUT: out };
  const r = spawnSync('make', ['--no-print-directory', 'iso', 'KERNEL=5.10'], { cwd: repoRoot, env, encoding: 'utf8', timeout: 10 * 60_000 });
  t.not(r.status, 0);
  t.regex(r.stderr, /iso: kernel "5\.10" \(KERNEL= \/ SEALKIT_KERNEL\): no \/boot\/vmlinuz-5\.10\* with its modules; installed: .*6\.1\.0-\d+-amd64/);
  t.false(existsSync(out), 'nothing was written');
});

test('make iso KERNEL=6.1 builds the ISO with bookworm\'s 6.1 and its modules', async (t) => {
  t.timeout(15 * 60_000);
  const out = join(repoRoot, 'build', 'test-iso-kernel-6.1');
  const want = kernelVersion('6.1');
  // make iso takes the ISO build lock itself
  const r = await runReadme('make iso KERNEL=6.1', { cwd: repoRoot, env: { SEALKIT_STATE: testStateDir, SEALKIT_ISO_OUT: out }, timeoutMs: 15 * 60_000 });
  t.is(r.code, 0, r.stderr);
  const manifest = JSON.parse(await readFile(join(out, 'build-manifest.json'), 'utf8')) as { kernel: { version: string }; inputs: Array<{ path: string; role: string }> };
  t.is(manifest.kernel.version, want);
  t.true(manifest.inputs.some((i) => i.role === 'kernel' && i.path === `/boot/vmlinuz-${want}`), 'the 6.1 vmlinuz is the kernel');
  const modules = manifest.inputs.filter((i) => i.role === 'module').map((i) => i.path);
  t.true(modules.length > 0 && modules.every((m) => m.startsWith(`/lib/modules/${want}/`)), modules.join('\n'));
  t.true((await readFile(join(out, 'kernel'))).equals(await readFile(`/boot/vmlinuz-${want}`)), 'the ISO carries that kernel');
});
