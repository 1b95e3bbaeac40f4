import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, copyFile, readlink, rm, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { assertBuilt, sealkit, sealkitBin } from './helpers/cli.ts';
import { repoRoot } from '../services/lib/config.ts';
import { serviceNames } from '../services/lib/subjects.ts';

// The CLI as someone who is not in the checkout gets it: npm pack, npm
// install -g into a prefix, sealkit on PATH, run from another directory.

const run = promisify(execFile);
let dir: string;
let nats: NatsServer;

test.before(async () => {
  assertBuilt();
  dir = await mkdtemp(join(tmpdir(), 'sealkit-install-'));
  nats = await startNats();
});

test.after.always(async () => {
  await nats?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('npm pack and npm install -g put a working sealkit on PATH that runs from any directory', async (t) => {
  // dist/ is built already; --ignore-scripts keeps prepack's tsc from
  // rewriting dist/ under tests running next to this one
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: repoRoot, maxBuffer: 16 << 20 });
  const tarball = join(dir, stdout.trim().split('\n').pop()!);
  const { stdout: list } = await run('tar', ['tzf', tarball], { maxBuffer: 16 << 20 });
  t.true(list.includes('package/bin/sealkit'));
  t.true(list.includes('package/dist/services/cli/main.js'));
  t.true(list.includes('package/dist/services/cli/commands/status.js'));
  t.true(list.includes('package/docs/signatures.md'));
  t.true(list.includes('package/dist/services/lib/policy.schema.json'), 'the policy schema ships, for the CLI and for editors');
  t.false(list.includes('package/services/cli/main.ts'), 'sources are not shipped');
  t.false(list.includes('package/dist/test/'), 'tests are not shipped');
  t.false(list.includes('package/dist/services/cli/dev.js'), 'make dev is for a checkout (it needs iso/)');

  const prefix = join(dir, 'prefix');
  await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: dir, maxBuffer: 16 << 20 });
  const bin = join(prefix, 'bin', 'sealkit');
  t.regex(await readlink(bin), /node_modules\/sealkit\/bin\/sealkit$/, 'npm links the bin; bin/sealkit resolves its root through the link');

  const elsewhere = join(dir, 'elsewhere');
  await mkdir(elsewhere);
  const PATH = `${join(prefix, 'bin')}:${process.env.PATH}`;
  // no tsx anywhere near: the installed package has no devDependencies
  const env = { PATH, SEALKIT_STATE: join(dir, 'state'), NODE_OPTIONS: '' };
  const help = await run('sealkit', ['--help'], { cwd: elsewhere, env: { ...process.env, ...env } });
  t.regex(help.stdout, /usage: sealkit <command>/);

  const key = await run('sealkit', ['keygen', '--id', 'elsewhere', '--out', join(elsewhere, 'k')], { cwd: elsewhere, env: { ...process.env, ...env } });
  t.regex(key.stdout, /trust entry:\n {2}- id: elsewhere\n {4}ed25519: \S{44}\n/);
  t.is(JSON.parse(await readFile(join(elsewhere, 'k.key'), 'utf8')).id, 'elsewhere');

  // policy sign checks the file with the validator generated from the schema
  // the package carries: ajv is for generating it, not installed with sealkit
  t.false(existsSync(join(prefix, 'lib', 'node_modules', 'sealkit', 'node_modules', 'ajv')), 'ajv is a devDependency');
  const policy = (sha256: string) => `apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nimages: [{name: a, tag: "1", source: "https://x.example/a.tar", sha256: ${sha256}}]\n`;
  await writeFile(join(elsewhere, 'bad.yaml'), policy('abc'));
  const refused = await run('sealkit', ['policy', 'sign', 'bad.yaml', '--key', 'k.key'], { cwd: elsewhere, env: { ...process.env, ...env } }).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => e,
  );
  t.is(refused.code, 1);
  t.regex(refused.stderr, /^sealkit: policy images\[0\]\.sha256: .*\[SEALKIT_POLICY_SCHEMA\]$/m);
  await writeFile(join(elsewhere, 'good.yaml'), policy('a'.repeat(64)));
  const signed = await run('sealkit', ['policy', 'sign', 'good.yaml', '--key', 'k.key'], { cwd: elsewhere, env: { ...process.env, ...env } });
  t.regex(signed.stdout, /^signed good\.yaml with elsewhere/);

  // a command that talks to a real bus: no service runs, so each is named and the exit code is 1
  const status = await run('sealkit', ['status', '--server', nats.url, '--timeout', '2'], { cwd: elsewhere, env: { ...process.env, ...env } }).then(
    () => ({ code: 0, stdout: '', stderr: '' }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  t.is(status.code, 1);
  for (const s of serviceNames) t.regex(status.stdout, new RegExp(`${s}\\s+NOT ANSWERING`));
  t.regex(status.stderr, new RegExp(`${serviceNames.length} of ${serviceNames.length} services do not answer`));
});

test('bin/sealkit in a tree without dist/ says how to build it and fails', async (t) => {
  const root = join(dir, 'unbuilt');
  await mkdir(join(root, 'bin'), { recursive: true });
  await copyFile(sealkitBin, join(root, 'bin', 'sealkit'));
  const r = await sealkit(['--help'], {}, { bin: join(root, 'bin', 'sealkit'), cwd: dir });
  t.is(r.code, 1);
  t.is(r.stderr, `sealkit is not built: run make build in ${root}\n`);
  t.is(r.stdout, '');
});

test('bin/sealkit of the checkout runs from another directory', async (t) => {
  const r = await sealkit(['keygen', '--id', 'other', '--out', join(dir, 'other')], {}, { cwd: tmpdir() });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /- id: other/);
});
