import test from 'ava';
import { mkdtemp, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startContainerd, type ContainerdServer } from './helpers/containerd.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { EventLog } from './helpers/events.ts';
import { makeAdmin, policyYaml, pushPolicy, type Admin } from './helpers/policy.ts';
import { runReadme, spawnReadme } from './helpers/readme.ts';
import { assertBuilt, sealkit, sealkitBin } from './helpers/cli.ts';
import { spawnGroup, type Shell } from './helpers/make.ts';
import { repoRoot } from '../services/lib/config.ts';
import type { NatsConnection } from 'nats';
import { startTogether } from './helpers/together.ts';

// sealkit ps and sealkit logs as the README shows them, against the real
// runner running a real container (containerd + runc) from the rootfs the
// ima service labelled: what the table says is what the runner did, and
// what logs prints is what the container wrote.

const NAME = 'web';
const NS = 'services.linuxkit';
// busybox alone makes the image; the container says hello, then echoes
// whatever the test drops into its tmpfs, so that a line is written exactly
// when the test wants one
const SCRIPT = 'echo hello from web; trap "exit 0" TERM; while :; do if [ -f /run/say/line ]; then /bin/busybox cat /run/say/line; /bin/busybox rm /run/say/line; fi; /bin/busybox sleep 0.2; done';

let nats: NatsServer;
let ctd: ContainerdServer;
let work: string;
let image: BuiltImage;
let admin: Admin;
let adminNc: NatsConnection;
let events: EventLog;
let env: Record<string, string>;
let cli: Record<string, string>;
const services: RunningService[] = [];
const shells: Shell[] = [];
let serial = 0;

const shReadme = (cmd: string) => runReadme(cmd, { cwd: repoRoot, env: cli, timeoutMs: 60_000 });

async function push(containers: unknown[]): Promise<void> {
  serial++;
  const yaml = policyYaml({
    serial,
    images: [{ name: image.name, tag: image.tag, source: `file://${join(work, 'web.tar')}`, sha256: image.sha256, import: { containerd: { namespace: NS }, docker: false } }],
    containers,
  });
  await pushPolicy(adminNc, yaml, admin.key);
}

const web = { name: NAME, image: 'sealkit/web', command: ['/bin/busybox', 'sh', '-c', SCRIPT], restart: 'always', backoff: { initial: '100ms', max: '1s' }, mounts: [{ type: 'tmpfs', destination: '/run/say' }] };

// A line the container itself writes: dropped whole (rename) into its tmpfs,
// through the host's view of its mount namespace.
async function say(pid: number, line: string): Promise<void> {
  const dir = `/proc/${pid}/root/run/say`;
  await writeFile(join(dir, '.line'), `${line}\n`);
  await rename(join(dir, '.line'), join(dir, 'line'));
}

test.before(async () => {
  [nats, ctd] = await startTogether(startNats(), startContainerd());
  work = await mkdtemp(join(tmpdir(), 'sealkit-ps-logs-'));
  admin = await makeAdmin(nats.stateDir);
  image = await buildImage({ name: 'sealkit/web', tag: '1', format: 'oci', layers: [{ 'bin/busybox': await readFile('/bin/busybox') }] });
  await writeFile(join(work, 'web.tar'), image.archive);
  env = {
    SEALKIT_STATE: nats.stateDir,
    SEALKIT_NATS_URL: nats.url,
    SEALKIT_TRUST: admin.trustPath,
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_CONTAINER_STORE: join(work, 'containers'),
    SEALKIT_IMA_NAMESPACES: join(work, 'no-ima-namespaces'),
  };
  cli = { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url };
  adminNc = await nats.connectAs('admin');
  events = new EventLog(adminNc, 'container.*');
});

test.after.always(async () => {
  for (const s of shells) s.signal('SIGKILL');
  events?.close();
  await adminNc?.close();
  await Promise.all(services.map((s) => s.stop()));
  // nothing left in containerd: tasks and containers go before it does
  if (ctd) {
    for (const id of (await ctd.ctr(['tasks', 'ls', '-q'], NS).catch(() => '')).split('\n').filter(Boolean)) await ctd.ctr(['tasks', 'delete', '--force', id], NS).catch(() => '');
    for (const id of (await ctd.ctr(['containers', 'ls', '-q'], NS).catch(() => '')).split('\n').filter(Boolean)) await ctd.ctr(['containers', 'delete', id], NS).catch(() => '');
    await ctd.cleanup();
  }
  await nats?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

test.serial('ps without a runner says the runner is not answering', async (t) => {
  const r = await shReadme('bin/sealkit ps');
  t.is(r.code, 1, r.stdout);
  t.regex(r.stderr, /the runner is not answering/);
  t.regex(r.stderr, /SEALKIT_NO_RESPONDER/);
  t.is(r.stdout, '');
});

test.serial('ps lists the running container with its image digest, restarts and uptime', async (t) => {
  for (const name of ['policy', 'fetcher', 'importer', 'ima', 'runner']) services.push(await startService(name, env));
  await push([web]);
  const first = await events.wait((e) => e.type === 'container.started' && e.data.name === NAME, 120_000);
  t.is(first.data.restarts, 0);
  // a crash: the runner starts it again, and counts it
  process.kill(first.data.pid as number, 'SIGKILL');
  const again = await events.wait((e) => e.type === 'container.started' && e.data.name === NAME && e.data.restarts === 1, 30_000);

  const j = await sealkit(['ps', '--json'], cli);
  t.is(j.code, 0, j.stderr);
  const [c, ...others] = (JSON.parse(j.stdout) as { containers: Array<Record<string, any>> }).containers;
  t.deepEqual(others, []);
  t.like(c, { name: NAME, state: 'running', pid: again.data.pid, restarts: 1, startedAt: again.data.startedAt, image: { name: 'sealkit/web', tag: '1', digest: image.sha256 } });
  const up = (Date.now() - Date.parse(again.data.startedAt as string)) / 1000;
  t.true(c.uptimeSec >= 0 && c.uptimeSec <= up + 1, `uptimeSec ${c.uptimeSec}, started ${up} s ago`);

  const r = await shReadme('bin/sealkit ps');
  t.is(r.code, 0, r.stderr);
  const [head, row, ...rest] = r.stdout.trimEnd().split('\n');
  t.deepEqual(head.split(/\s+/), ['NAME', 'IMAGE', 'DIGEST', 'STATE', 'RESTARTS', 'UPTIME', 'REASON']);
  t.deepEqual(rest, []);
  const cells = row.split(/\s+/);
  t.deepEqual(cells.slice(0, 5), [NAME, 'sealkit/web:1', image.sha256.slice(0, 12), 'running', '1']);
  t.regex(cells[5], /^(\d+s|\d+m\d\ds)$/);

  // status counts them (it exits 1 here: auditor and nodeinfo are not run)
  const s = await sealkit(['status', '--json', '--timeout', '2'], cli);
  t.deepEqual((JSON.parse(s.stdout) as { containers: unknown }).containers, { running: 1, total: 1 });
});

test.serial('logs prints what the container wrote, across its runs', async (t) => {
  // container.started comes when the second run's task is up, which may be
  // before its first write reaches the log: read until that write is there
  let r = await shReadme('bin/sealkit logs web');
  for (const until = Date.now() + 10_000; r.code === 0 && (r.stdout.match(/^hello from web$/gm)?.length ?? 0) < 2 && Date.now() < until; ) {
    await new Promise((done) => setTimeout(done, 100));
    r = await shReadme('bin/sealkit logs web');
  }
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.match(/^hello from web$/gm)?.length, 2, r.stdout);
  const none = await sealkit(['logs', NAME, '--bytes', '0'], cli);
  t.is(none.code, 0, none.stderr);
  t.is(none.stdout, '');
});

test.serial('an unknown name is refused, naming the containers the runner knows', async (t) => {
  const r = await sealkit(['logs', 'nosuch'], cli);
  t.not(r.code, 0);
  t.regex(r.stderr, /nosuch/);
  t.regex(r.stderr, /\bweb\b/);
  t.is(r.stdout, '');
});

// An interactive shell runs a command in a process group of its own, the
// terminal's foreground group, and Ctrl-C is SIGINT to that group: sealkit's
// own exit status is what the person sees (under "sh -c" it would be the
// shell's, which dies of the signal itself).
function follower(args: string[] = []): Shell {
  assertBuilt();
  const f = spawnGroup(sealkitBin, ['logs', NAME, '--follow', ...args], { cwd: repoRoot, env: cli });
  shells.push(f);
  return f;
}

test.serial('logs --follow prints a line the container writes after it started, and Ctrl-C ends it with 0', async (t) => {
  const f = follower();
  shells.push(f);
  await f.waitFor(/following web from byte \d+/, 30_000);
  t.regex(f.output(), /hello from web/);
  const ps = JSON.parse((await sealkit(['ps', '--json'], cli)).stdout) as { containers: Array<{ pid: number }> };
  const marker = `written after follow started ${process.hrtime.bigint()}`;
  await say(ps.containers[0].pid, marker);
  await f.waitFor(new RegExp(`^${marker}$`, 'm'), 10_000);

  // rotated under it (copytruncate): the follower says so and reads the new start
  await truncate(join(nats.stateDir, 'runner', 'logs', `${NAME}.log`), 0);
  await say(ps.containers[0].pid, 'after truncation');
  // without the restart from 0 it would ask past the new end and print nothing
  await f.waitFor(/^after truncation$/m, 10_000);
  t.regex(f.output(), /sealkit: the log of web was truncated or rotated \(it has \d+ bytes, \d+ were printed\); printing it from its start/);
  f.signal('SIGINT');
  const end = await f.exited;
  t.deepEqual(end, { code: 0, signal: null }, f.output());
});

test.serial('logs --follow, as the README shows it, ends by itself, exit 0, when the container is removed from the policy', async (t) => {
  const f = spawnReadme('bin/sealkit logs web --follow', { cwd: repoRoot, env: { ...process.env, ...cli } });
  shells.push(f);
  await f.waitFor(/following web from byte \d+/, 30_000);
  await push([]);
  await events.wait((e) => e.type === 'container.stopped' && e.data.name === NAME && e.data.reason === 'removed', 30_000);
  const end = await f.exited;
  t.deepEqual(end, { code: 0, signal: null }, f.output());
  t.regex(f.output(), /web was removed from the node/);
});

test.serial('logs --follow ends with exit 1 and says so when the bus goes away and stays away', async (t) => {
  // the log of a removed container is kept, and can still be followed
  const f = follower(['--timeout', '1']);
  await f.waitFor(/following web from byte \d+/, 30_000);
  await nats.stop();
  try {
    const end = await f.exited;
    t.deepEqual(end, { code: 1, signal: null }, f.output());
    t.regex(f.output(), /lost the bus at nats:\/\/127\.0\.0\.1:\d+ and it did not come back within 1 s; stopped following web/);
    t.regex(f.output(), /SEALKIT_UNAVAILABLE/);
  } finally {
    await nats.restart();
  }
});
