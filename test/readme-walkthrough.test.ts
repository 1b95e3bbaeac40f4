import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { repoRoot } from '../services/lib/config.ts';
import { serviceNames } from '../services/lib/subjects.ts';
import { buildImage } from './helpers/images.ts';
import { killAll, pidsWithEnv, running, type Shell } from './helpers/make.ts';
import { freePort } from './helpers/qemu.ts';
import { runReadme, spawnReadme } from './helpers/readme.ts';

// The README's "A first session" and "Watching the node", command by command
// as written, in a copy of this checkout (so ./state is the copy's, never
// the developer's): make dev, status, keygen, sign-image, policy sign/push,
// fetch, the three watches, and the packed install. Only the bus port is
// moved (SEALKIT_DEV_PORT and SEALKIT_NATS_URL), so that it never meets a
// developer's own node on 4222.

const run = promisify(execFile);
const minutes = (n: number) => n * 60_000;

// What git tracks or would track (the working tree as it is, uncommitted
// changes included), modes and mtimes kept; node_modules hard-linked.
async function copyCheckout(to: string): Promise<void> {
  const { stdout } = await run('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repoRoot, maxBuffer: 64 << 20 });
  for (const f of stdout.split('\0').filter(Boolean)) {
    const from = join(repoRoot, f);
    const st = await lstat(from).catch(() => undefined);
    if (!st) continue; // deleted in the working tree
    await mkdir(dirname(join(to, f)), { recursive: true });
    if (st.isSymbolicLink()) await symlink(await readlink(from), join(to, f));
    else {
      await copyFile(from, join(to, f));
      await chmod(join(to, f), st.mode & 0o7777);
    }
  }
  await run('cp', ['-al', join(repoRoot, 'node_modules'), join(to, 'node_modules')]);
  // make's npm target compares node_modules/.package-lock.json with these
  await run('touch', ['-r', join(repoRoot, 'package.json'), join(to, 'package.json')]);
  await run('touch', ['-r', join(repoRoot, 'package-lock.json'), join(to, 'package-lock.json')]);
}

test('the README first session works as written: make dev, status, sign, push, fetch, watch, install', async (t) => {
  t.timeout(minutes(15));
  const root = await mkdtemp(join(tmpdir(), 'sealkit-readme-'));
  const co = join(root, 'sealkit');
  await copyCheckout(co);
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { SEALKIT_DEV_PORT: String(port), SEALKIT_NATS_URL: `nats://127.0.0.1:${port}`, SEALKIT_STATE: undefined };
  const shells: Shell[] = [];
  t.teardown(async () => {
    for (const s of shells) if (!s.done()) s.signal('SIGKILL');
    killAll(pidsWithEnv('SEALKIT_DEV_PORT', String(port)));
    await rm(root, { recursive: true, force: true });
  });
  const shReadme = (cmd: string, o: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) => runReadme(cmd, { cwd: o.cwd ?? co, env: { ...env, ...o.env } as Record<string, string>, timeoutMs: minutes(5) });
  const bgReadme = (cmd: string) => {
    const s = spawnReadme(cmd, { cwd: co, env });
    shells.push(s);
    return s;
  };

  const dev = bgReadme('make dev');
  await dev.waitFor(/sealkit dev node: bus nats:\/\/127\.0\.0\.1:\d+/, minutes(6));

  // status exits 1 while a service has not answered yet; the node is up when it exits 0
  let status = await shReadme('bin/sealkit status');
  for (let i = 0; status.code !== 0 && i < 30; i++) status = await shReadme('bin/sealkit status');
  t.is(status.code, 0, status.stdout + status.stderr);
  t.regex(status.stdout, new RegExp(`^node: ${hostname()}\\b`, 'm'));
  for (const s of serviceNames) t.regex(status.stdout, new RegExp(`^ {2}${s} +pid [1-9]\\d* ?, up`, 'm'));
  t.notRegex(status.stdout, /pid 1,/, 'host pids, not pid 1');

  const keygen = await shReadme('bin/sealkit keygen --id release');
  t.is(keygen.code, 0, keygen.stderr);
  const release = YAML.parse(await readFile(join(co, 'state', 'keys', 'release.pub'), 'utf8')) as { id: string; ed25519: string };

  const img = await buildImage({ name: 'acme/base', tag: '1', format: 'docker', layers: [{ 'bin/app': '#!/bin/sh\necho app\n', 'etc/motd': 'hello\n' }] });
  await writeFile(join(co, 'base.tar'), img.archive);
  const signed = await shReadme('bin/sealkit sign-image base.tar --name acme/base --tag 1 --key state/keys/release.key');
  t.is(signed.code, 0, signed.stderr);
  t.true(existsSync(join(co, 'base.tar.sig')), 'sign-image writes base.tar.sig beside the archive');

  // the README's example policy, with this archive's path, digest and key
  const policy = `apiVersion: sealkit/v1
kind: NodePolicy
serial: 1
keys:
  - id: release
    ed25519: ${release.ed25519}
images:
  - name: acme/base
    tag: "1"
    source: file://${join(co, 'base.tar')}
    sha256: ${img.sha256}
    signatures: {keys: [release], threshold: 1}
`;
  await writeFile(join(co, 'policy.yaml'), policy);
  const json = bgReadme("bin/sealkit watch 'image.*' --json");
  const audit = bgReadme("bin/sealkit watch 'audit.*'");
  // both watches subscribe before the push: wait until each says it is watching
  await json.waitFor(/^watching image\.\* on /m, minutes(1));
  await audit.waitFor(/^watching audit\.\* on /m, minutes(1));

  t.is((await shReadme('bin/sealkit policy sign policy.yaml --key state/keys/admin.key')).code, 0);
  const pushed = await shReadme('bin/sealkit policy push policy.yaml');
  t.is(pushed.code, 0, pushed.stdout + pushed.stderr);

  const fetched = await shReadme('bin/sealkit fetch acme/base');
  t.is(fetched.code, 0, fetched.stdout + fetched.stderr);
  t.regex(fetched.stdout, new RegExp(`^verified acme/base:1 sha256:${img.sha256}`, 'm'));
  t.regex(fetched.stdout, /^imported into containerd/m);
  t.regex(fetched.stdout, /^labelled \d+ files in /m);

  // --json: CloudEvents only, one per line, each once
  await json.waitFor(new RegExp(`"type":"image.imported".*${img.sha256}`), minutes(1));
  const lines = json.output().split('\n').filter((l) => l.startsWith('{'));
  const events = lines.map((l) => JSON.parse(l) as { specversion: string; id: string; type: string });
  t.true(events.every((e) => e.specversion === '1.0' && e.type.startsWith('image.')), lines.join('\n'));
  t.is(new Set(events.map((e) => e.id)).size, events.length, 'no event twice');
  t.deepEqual(json.output().split('\n').filter((l) => l.trim() && !l.startsWith('{') && !/^watching /.test(l)), [], 'nothing but events on stdout');

  // a replayed push is refused and recorded on audit.policy
  const replayed = await shReadme('bin/sealkit policy push policy.yaml');
  t.not(replayed.code, 0);
  t.regex(replayed.stderr + replayed.stdout, /SEALKIT_POLICY_ROLLBACK/);
  await audit.waitFor(/audit\.policy\b.*ROLLBACK/i, minutes(1));

  const replay = bgReadme("bin/sealkit watch '>' --replay");
  await replay.waitFor(/policy\.applied\b/, minutes(1));
  await replay.waitFor(/ima\.labeled\b/, minutes(1));
  // Ctrl-C reaches the whole group, as at a terminal: the shell running the
  // line dies of it, the watch ends quietly (no error, nothing left running)
  for (const w of [json, audit, replay]) {
    w.signal('SIGINT');
    const end = await w.exited;
    t.true(end.code === 0 || end.signal === 'SIGINT', `${end.code ?? end.signal}`);
    t.notRegex(w.output(), /^sealkit: /m, 'no error on Ctrl-C');
  }

  // the packed install, into a prefix of the test's (npm_config_prefix is where -g goes)
  const prefix = join(root, 'prefix');
  t.is((await shReadme('npm pack')).code, 0);
  const installed = await shReadme('npm install -g ./sealkit-0.1.0.tgz', { env: { npm_config_prefix: prefix, npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' } });
  t.is(installed.code, 0, installed.stderr);
  const elsewhere = join(root, 'elsewhere');
  await mkdir(elsewhere);
  const help = await shReadme('sealkit --help', { cwd: elsewhere, env: { PATH: `${join(prefix, 'bin')}:${process.env.PATH}` } });
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /usage: sealkit <command>/);

  // Ctrl-C stops the node and leaves nothing
  const pids = pidsWithEnv('SEALKIT_DEV_PORT', String(port));
  dev.signal('SIGINT');
  await dev.exited;
  t.deepEqual(pids.filter(running), [], 'nothing make dev started is left');
});
