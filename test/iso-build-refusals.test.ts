import test from 'ava';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, compile, repoRoot } from '../iso/build.ts';
import type { SealkitError } from '../services/lib/errors.ts';

// What the ISO build refuses before it assembles anything: code that does
// not typecheck (wherever it is, iso/ included), a test case LinuxKit would
// not accept, a test case that does not exist, and a kernel command line
// the two boot loaders (isolinux, GRUB) could not pass alike.

async function scratchRepo(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const repo = await mkdtemp(join(tmpdir(), 'sealkit-build-'));
  t.teardown(() => rm(repo, { recursive: true, force: true }));
  await symlink(join(repoRoot, 'node_modules'), join(repo, 'node_modules'));
  await copyFile(join(repoRoot, 'tsconfig.json'), join(repo, 'tsconfig.json'));
  await copyFile(join(repoRoot, 'linuxkit.yml'), join(repo, 'linuxkit.yml'));
  await mkdir(join(repo, 'iso', 'linuxkit'), { recursive: true });
  await copyFile(join(repoRoot, 'iso', 'linuxkit', 'schema.json'), join(repo, 'iso', 'linuxkit', 'schema.json'));
  await mkdir(join(repo, 'services', 'lib'), { recursive: true });
  await writeFile(join(repo, 'services', 'lib', 'ok.ts'), 'export const ok: number = 1;\n');
  await mkdir(join(repo, 'services', 'ima'), { recursive: true });
  await copyFile(join(repoRoot, 'services', 'ima', 'verity-enable.c'), join(repo, 'services', 'ima', 'verity-enable.c'));
  return repo;
}

test('a type error in iso/ fails the compile step, with the file named', async (t) => {
  t.timeout(5 * 60_000);
  const repo = await scratchRepo(t);
  compile(repo, () => {});
  t.true(existsSync(join(repo, 'dist', 'services', 'lib', 'ok.js')), 'the project compiles when it typechecks');

  await mkdir(join(repo, 'iso'), { recursive: true });
  await writeFile(join(repo, 'iso', 'bad.ts'), "export const n: number = 'not a number';\n");
  const lines: string[] = [];
  const err = t.throws<SealkitError>(() => compile(repo, (l) => lines.push(l)));
  t.is(err!.code, 'SEALKIT_CONFIG');
  t.deepEqual(err!.data?.files, ['iso/bad.ts']);
  t.true(lines.some((l) => l.includes('iso/bad.ts')), 'the build log names the file');
});

test('the C helper is built executable beside its module, and a C error fails the compile step with the file named', async (t) => {
  t.timeout(5 * 60_000);
  const repo = await scratchRepo(t);
  compile(repo, () => {});
  const helper = join(repo, 'dist', 'services', 'ima', 'sealkit-verity-enable');
  t.true(existsSync(helper), 'dist/services/ima/sealkit-verity-enable is built');
  t.is(statSync(helper).mode & 0o111, 0o111, 'and executable');

  await writeFile(join(repo, 'services', 'ima', 'verity-enable.c'), 'int main(void) { return missing; }\n');
  const lines: string[] = [];
  const err = t.throws<SealkitError>(() => compile(repo, (l) => lines.push(l)));
  t.is(err!.code, 'SEALKIT_CONFIG');
  t.is(err!.data?.file, 'services/ima/verity-enable.c');
  t.regex(err!.message, /'missing' undeclared/);
  t.true(lines.some((l) => l.includes('services/ima/verity-enable.c')), 'the build log names the file');
});

test('a test case with a key LinuxKit does not know is refused before anything is built', async (t) => {
  const repo = await scratchRepo(t);
  const dir = join(repo, 'test', 'cases', 'bad-key');
  await mkdir(dir, { recursive: true });
  const good = await readFile(join(repoRoot, 'test', 'cases', 'ima-kernel', 'test.yml'), 'utf8');
  await writeFile(join(dir, 'test.yml'), good.replace('    image: sealkit/test-tools:dev\n', '    image: sealkit/test-tools:dev\n    restart: always\n'));
  const out = join(repo, 'out');
  const err = await t.throwsAsync(build({ repo, out, state: join(repo, 'state'), testCase: 'bad-key', compile: false, log: () => {} }));
  t.regex(err!.message, /^test\/cases\/bad-key\/test\.yml does not validate: .*"additionalProperty":"restart"/);
  t.false(existsSync(out), 'nothing was written');
});

test('an unknown test case is refused, naming the ones there are', async (t) => {
  const repo = await scratchRepo(t);
  for (const c of ['ima-kernel', 'e2e-denials']) {
    await mkdir(join(repo, 'test', 'cases', c), { recursive: true });
    await copyFile(join(repoRoot, 'test', 'cases', c, 'test.yml'), join(repo, 'test', 'cases', c, 'test.yml'));
  }
  for (const name of ['no-such-case', '../../linuxkit']) {
    const err = await t.throwsAsync<SealkitError>(build({ repo, out: join(repo, 'out'), state: join(repo, 'state'), testCase: name, compile: false, log: () => {} }));
    t.is(err!.code, 'SEALKIT_CONFIG');
    t.is(err!.data?.testCase, name);
    t.true(err!.message.endsWith('the test cases are: e2e-denials, ima-kernel'), err!.message);
  }
});

test('a kernel command line GRUB and isolinux would not pass alike is refused before anything is built', async (t) => {
  const repo = await scratchRepo(t);
  const yml = await readFile(join(repo, 'linuxkit.yml'), 'utf8');
  t.regex(yml, /cmdline: "console=ttyS0 ima_appraise=enforce rootfstype=ramfs"/);
  await writeFile(join(repo, 'linuxkit.yml'), yml.replace('rootfstype=ramfs"', 'rootfstype=ramfs sealkit.note=\\"a b\\""'));
  const out = join(repo, 'out');
  const err = await t.throwsAsync<SealkitError>(build({ repo, out, state: join(repo, 'state'), compile: false, log: () => {} }));
  t.is(err!.code, 'SEALKIT_CONFIG');
  t.regex(err!.message, /^linuxkit\.yml kernel\.cmdline "console=ttyS0 ima_appraise=enforce rootfstype=ramfs sealkit\.note=\\"a b\\"": "\\"" cannot be passed the same way by isolinux and GRUB/);
  t.false(existsSync(out), 'nothing was written');
});
