import test from 'ava';
import { appendFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startContainerd, type ContainerdServer } from './helpers/containerd.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { EventLog } from './helpers/events.ts';
import { makeAdmin, policyYaml, pushPolicy, type Admin } from './helpers/policy.ts';
import { request } from '../services/lib/bus.ts';
import { subjects } from '../services/lib/subjects.ts';
import { isSealkitError } from '../services/lib/errors.ts';
import type { LogsReply, PsEntry } from '../services/lib/contract.ts';
import { startTogether } from './helpers/together.ts';

// The runner on this host with the real parts: nats-server, containerd and
// runc, and the policy, fetcher, importer and ima services in front of it.
// A pushed policy's containers run from the rootfs the ima service labelled,
// crash and come back with backoff, are stopped when that rootfs is changed,
// replaced by a new image, removed with the policy, and adopted by a runner
// that was killed. containerd's own `ctr tasks ls` is the evidence beside
// the events.

const NS = 'services.linuxkit';
let nats: NatsServer;
let ctd: ContainerdServer;
let work: string;
let admin: Admin;
let nc: NatsConnection;
let events: EventLog;
let v1: BuiltImage;
let v2: BuiltImage;
const services: RunningService[] = [];
let runner: RunningService;
let env: Record<string, string>;

// a workload that prints, tries to write its root, and stops on SIGTERM
const SERVE = 'echo "hello from $0"; echo x > /x || echo "write refused"; trap "exit 0" TERM; /bin/busybox sleep 1000 & wait';

const busybox = readFileSync('/bin/busybox');

test.before(async () => {
  [nats, ctd] = await startTogether(startNats(), startContainerd());
  work = await mkdtemp(join(tmpdir(), 'sealkit-runner-'));
  admin = await makeAdmin(nats.stateDir);
  v1 = await buildImage({ name: 'sealkit/app', tag: 'v1', layers: [{ 'bin/busybox': busybox }, { 'etc/motd': 'v1\n' }] });
  v2 = await buildImage({ name: 'sealkit/app', tag: 'v2', layers: [{ 'bin/busybox': busybox }, { 'etc/motd': 'v2\n' }] });
  await writeFile(join(work, 'v1.tar'), v1.archive);
  await writeFile(join(work, 'v2.tar'), v2.archive);
  env = {
    SEALKIT_STATE: nats.stateDir,
    SEALKIT_NATS_URL: nats.url,
    SEALKIT_TRUST: admin.trustPath,
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_CONTAINER_STORE: join(work, 'containers'),
    SEALKIT_RUNNER_STOP_GRACE_MS: '3000',
    SEALKIT_IMA_NAMESPACES: join(work, 'no-ima-namespaces'),
  };
  for (const name of ['policy', 'fetcher', 'importer', 'ima']) services.push(await startService(name, env));
  runner = await startService('runner', env);
  nc = await nats.connectAs('admin');
  events = new EventLog(await nats.connectAs(null), ['container.*', 'audit.tamper', 'ima.labeled']);
});

test.after.always(async () => {
  events?.close();
  await runner?.stop();
  await Promise.all(services.map((s) => s.stop()));
  // nothing left in containerd: tasks, shims and containers go before it does
  if (ctd) {
    const tasks = await ctd.ctr(['tasks', 'ls', '-q'], NS).catch(() => '');
    for (const id of tasks.split('\n').filter(Boolean)) await ctd.ctr(['tasks', 'delete', '--force', id], NS).catch(() => {});
    const containers = await ctd.ctr(['containers', 'ls', '-q'], NS).catch(() => '');
    for (const id of containers.split('\n').filter(Boolean)) await ctd.ctr(['containers', 'delete', id], NS).catch(() => {});
    await ctd.cleanup();
  }
  await nats?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

let serial = 0;
type Container = Record<string, unknown> & { name: string };
async function push(image: BuiltImage, containers: Container[]) {
  const yaml = policyYaml({
    serial: ++serial,
    images: [{ name: image.name, tag: image.tag, source: `file://${join(work, `${image.tag}.tar`)}`, sha256: image.sha256 }],
    containers: containers.map((c) => ({ image: image.name, ...c })),
  });
  await pushPolicy(nc, yaml, admin.key);
  return serial;
}

const web: Container = { name: 'web', command: ['/bin/busybox', 'sh', '-c', SERVE, 'web'], onTamper: 'report' };
const guard: Container = { name: 'guard', command: ['/bin/busybox', 'sh', '-c', SERVE, 'guard'], onTamper: 'stop', mounts: [{ type: 'tmpfs', destination: '/scratch' }], resources: { pids: 32 } };
const crash: Container = { name: 'crash', command: ['/bin/busybox', 'sh', '-c', 'echo crashing; exit 1'], restart: 'on-failure', backoff: { initial: '200ms', max: '10s' } };

const of = (type: string, name: string, more: (d: any) => boolean = () => true) => (e: { type: string; data: any }) => e.type === type && e.data?.name === name && more(e.data);

async function tasks(): Promise<Map<string, { pid: number; status: string }>> {
  const out = await ctd.ctr(['tasks', 'ls'], NS);
  return new Map(out.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/)).map(([id, pid, status]) => [id, { pid: Number(pid), status }]));
}
async function containerIds(): Promise<string[]> {
  return (await ctd.ctr(['containers', 'ls', '-q'], NS)).split('\n').filter(Boolean);
}
const ps = async () => (await request<{ containers: PsEntry[] }>(nc, subjects.runner.ps, {})).containers;
const logs = (name: string, from?: number) => request<LogsReply>(nc, subjects.runner.logs, { name, from });
// as `sealkit logs --follow` reads: from where the last answer ended, until `until` shows up
async function follow(name: string, until: RegExp, timeoutMs = 20_000): Promise<{ data: string }> {
  let data = '';
  let from = 0;
  for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
    const r = await logs(name, from);
    data += r.data;
    from = r.next;
    if (until.test(data)) return { data };
  }
  throw new Error(`runner.logs of ${name} never showed ${until}: ${JSON.stringify(data)}`);
}

test.serial('a pushed policy runs its containers from the labelled rootfs, read-only, without capabilities, with their output in runner.logs', async (t) => {
  const s = await push(v1, [web, guard]);
  const [w, g] = await Promise.all([events.wait(of('container.started', 'web'), 120_000), events.wait(of('container.started', 'guard'), 120_000)]);
  const labeled = await events.wait('ima.labeled');
  t.is(w.data.image.digest, v1.sha256);
  t.is(w.data.rootfs, labeled.data.rootfs);
  t.is(w.data.policySerial, s);
  t.is(w.data.verifiedFiles, 2, 'both files of the rootfs re-hashed before the start');
  t.is(w.data.imaNamespace, 'absent');
  t.is(g.data.rootfs, w.data.rootfs, 'one labelled rootfs per image, shared');

  const listed = await tasks();
  t.deepEqual(listed.get('web'), { pid: w.data.pid, status: 'RUNNING' });
  t.deepEqual(listed.get('guard'), { pid: g.data.pid, status: 'RUNNING' });
  // the task's root is the store's rootfs itself: the same inode, seen through /proc
  const inside = await stat(`/proc/${w.data.pid}/root/bin/busybox`);
  const store = await stat(join(w.data.rootfs, 'bin/busybox'));
  t.deepEqual([inside.dev, inside.ino], [store.dev, store.ino]);
  t.is(w.data.mntNs, (await stat(`/proc/${w.data.pid}/ns/mnt`)).ino);
  t.regex(await readFile(`/proc/${w.data.pid}/cgroup`, 'utf8'), new RegExp(`:${w.data.cgroup}$`, 'm'));
  t.regex(await readFile(`/proc/${w.data.pid}/status`, 'utf8'), /^CapEff:\s+0000000000000000$/m, 'capabilities: [] is none, not Docker\'s set');

  // its output: the write to / failed, on a read-only filesystem
  const out = await follow('web', /write refused/);
  t.regex(out.data, /hello from web/);
  t.regex(out.data, /Read-only file system/);
  t.regex(out.data, /write refused/);
  t.is(await readFile(join(w.data.rootfs, 'etc/motd'), 'utf8'), 'v1\n');

  const err = await t.throwsAsync(logs('nobody'));
  t.true(isSealkitError(err, 'SEALKIT_BAD_REQUEST'));
  t.regex(err!.message, /"nobody".*guard, web/);
  const rows = await ps();
  t.deepEqual(rows.map((r) => [r.name, r.state, r.pid]), [['guard', 'running', g.data.pid], ['web', 'running', w.data.pid]]);
});

test.serial('a container that exits 1 is restarted with a doubling backoff, re-verified each time', async (t) => {
  await push(v1, [web, guard, crash]);
  const exited = await events.wait(of('container.exited', 'crash'), 60_000);
  t.is(exited.data.code, 1);
  t.is(exited.data.signal, null);
  const delays: number[] = [];
  for (let attempt = 1; attempt <= 3; attempt++) {
    const r = await events.wait(of('container.restarting', 'crash', (d) => d.attempt === attempt), 30_000);
    delays.push(r.data.inMs);
    await events.wait(of('container.started', 'crash', (d) => d.restarts === attempt), 30_000);
  }
  t.deepEqual(delays, [200, 400, 800]);
  t.true(events.of('container.started').filter((e) => e.data.name === 'crash').every((e) => e.data.verifiedFiles === 2), 'every restart re-hashed the rootfs first');
  t.true(events.of('container.exited').filter((e) => e.data.name === 'crash').length >= 3);
});

test.serial('a file changed in the rootfs stops the container whose policy says stop, and its restart is refused naming the file', async (t) => {
  await push(v1, [web, guard]);
  await events.wait(of('container.stopped', 'crash', (d) => d.reason === 'removed'), 30_000);
  const before = await tasks();
  const guardStarted = events.of('container.started').filter((e) => e.data.name === 'guard').at(-1)!;
  const rootfs = guardStarted.data.rootfs as string;

  await appendFile(join(rootfs, 'etc/motd'), 'owned\n');
  const stopped = await events.wait(of('container.stopped', 'guard', (d) => d.reason === 'tamper'), 30_000);
  t.regex(stopped.data.detail, /etc\/motd/);
  const refused = await events.wait(of('container.refused', 'guard'), 30_000);
  t.is(refused.data.file, '/etc/motd');
  t.is(refused.data.code, 'SEALKIT_DIGEST_MISMATCH');
  const tamper = await events.wait((e) => e.type === 'audit.tamper' && e.data.file === 'etc/motd');
  t.is(tamper.data.container, guardStarted.data.rootfs.split('/').at(-2));

  const after = await tasks();
  t.false(after.has('guard'), 'no guard task in containerd');
  t.false((await containerIds()).includes('guard'));
  t.deepEqual(after.get('web'), before.get('web'), 'web (onTamper: report) keeps running');
  const rows = await ps();
  t.is(rows.find((r) => r.name === 'guard')?.state, 'refused');
  t.is(events.of('container.started').filter((e) => e.data.name === 'guard').at(-1), guardStarted, 'guard was not started again');

  // a policy change of guard lifts the block, but not the check before its start
  guard.env = ['TRY=2'];
  await push(v1, [web, guard]);
  const again = await events.wait((e) => e.type === 'container.refused' && e.data.name === 'guard' && e !== refused, 30_000);
  t.is(again.data.file, '/etc/motd');
  t.regex(again.data.reason, /modified against its label manifest.*not started/);
  const own = await events.wait((e) => e.type === 'audit.tamper' && e.source.startsWith('sealkit/runner/'));
  t.like(own.data, { file: 'etc/motd', kind: 'modified', action: 'blocked', container: tamper.data.container, policySerial: serial });
  t.false((await tasks()).has('guard'));
  t.is(events.of('container.started').filter((e) => e.data.name === 'guard').at(-1), guardStarted);
});

test.serial('a new digest for the image replaces its running container and starts the refused one from the new rootfs', async (t) => {
  const webBefore = (await tasks()).get('web')!;
  const s = await push(v2, [web, guard]);
  const stopped = await events.wait(of('container.stopped', 'web', (d) => d.reason === 'replaced'), 120_000);
  t.is(stopped.data.image.digest, v1.sha256);
  const started = await events.wait(of('container.started', 'web', (d) => d.image.digest === v2.sha256), 60_000);
  t.is(started.data.policySerial, s);
  t.not(started.data.pid, webBefore.pid);
  const g = await events.wait(of('container.started', 'guard', (d) => d.image.digest === v2.sha256), 60_000);
  t.is(g.data.rootfs, started.data.rootfs);
  t.is(await readFile(`/proc/${started.data.pid}/root/etc/motd`, 'utf8'), 'v2\n');
  const listed = await tasks();
  t.is(listed.get('web')?.pid, started.data.pid);
  t.false(webBefore.pid === listed.get('web')?.pid);
});

test.serial('a container removed from the policy is stopped, and no task or container of it remains in containerd', async (t) => {
  await push(v2, [guard]);
  const stopped = await events.wait(of('container.stopped', 'web', (d) => d.reason === 'removed'), 60_000);
  t.is(stopped.data.image.digest, v2.sha256);
  t.false((await tasks()).has('web'));
  t.false((await containerIds()).includes('web'));
  t.deepEqual((await ps()).map((r) => r.name), ['guard']);
});

test.serial('a start the runtime refuses leaves no container behind in containerd', async (t) => {
  await push(v2, [guard, { name: 'broken', command: ['/bin/nope'], restart: 'never' }]);
  const refused = await events.wait(of('container.refused', 'broken'), 60_000);
  t.is(refused.data.code, 'SEALKIT_START_FAILED');
  t.regex(refused.data.reason, /\/bin\/nope/);
  t.false((await containerIds()).includes('broken'), 'what the failed start created was deleted');
  t.false((await tasks()).has('broken'));
  t.is((await ps()).find((r) => r.name === 'broken')?.state, 'refused');
  t.is(events.of('container.started').filter((e) => e.data.name === 'broken').length, 0);
});

test.serial('a runner stopped (SIGTERM) or killed (SIGKILL) and started again adopts the running task: same pid, no second container.started', async (t) => {
  const g = (await tasks()).get('guard')!;
  t.is(g.status, 'RUNNING');
  const startedBefore = events.of('container.started').length;
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    const code = await runner.stop(signal);
    if (signal === 'SIGTERM') t.is(code, 0, 'a clean stop');
    t.deepEqual((await tasks()).get('guard'), g, `the workload outlives the runner's ${signal}`);
    runner = await startService('runner', env);
    await runner.waitForLog((r) => r.msg === 'adopted a running container' && r.container === 'guard');
    await runner.waitForLog((r) => r.msg === 'reconciled');
    const row = (await ps()).find((r) => r.name === 'guard');
    t.is(row?.state, 'running');
    t.is(row?.pid, g.pid);
    t.deepEqual((await tasks()).get('guard'), g);
  }
  t.is(events.of('container.started').length, startedBefore, 'no second container.started');
  t.false(events.of('container.stopped').some((e) => e.data.name === 'guard' && e.data.reason === 'shutdown'));
  t.deepEqual(await containerIds(), ['guard']);
});

test.serial('IPE switched off while the node runs (audit.tamper of scope node) stops the containers whose policy says stop until the reboot, others keep running, and a restarted runner keeps them stopped', async (t) => {
  const s = await push(v2, [guard, web]);
  const w = await events.wait(of('container.started', 'web', (d) => d.policySerial === s), 60_000);
  t.is((await tasks()).get('guard')?.status, 'RUNNING');
  // the ima service of a 6.12 node the owner gave an IPE policy finds IPE
  // switched to permissive: what root's echo 0 > /sys/kernel/security/ipe/enforce
  // leaves, as a securityfs tree (this kernel has no IPE)
  const sfs = join(work, 'securityfs');
  await mkdir(join(sfs, 'ipe', 'policies'), { recursive: true });
  await writeFile(join(sfs, 'ipe', 'enforce'), '0\n');
  await mkdir(join(nats.stateDir, 'ima', 'ipe'), { recursive: true });
  await writeFile(join(nats.stateDir, 'ima', 'ipe', 'policy.p7b'), 'the owner-signed policy');
  const i = 3; // policy, fetcher, importer, ima (before)
  await services[i].stop();
  services[i] = await startService('ima', { ...env, SEALKIT_SECURITYFS: sfs, SEALKIT_IPE_CHECK_MS: '200' });

  const tamper = await events.wait((e) => e.type === 'audit.tamper' && e.data.kind === 'ipe-enforce-off', 30_000);
  t.like(tamper.data, { scope: 'node', mechanism: 'ipe-verity' });
  const stopped = await events.wait(of('container.stopped', 'guard', (d) => d.reason === 'tamper' && /stopped enforcing/.test(d.detail)), 60_000);
  t.regex(stopped.data.detail, /ipe-(enforce-off|policy-inactive)/);
  const refused = await events.wait(of('container.refused', 'guard', (d) => d.code === 'SEALKIT_NODE_TAMPER'), 30_000);
  t.regex(refused.data.reason, /not started again until the node reboots/);
  t.false((await tasks()).has('guard'), 'no guard task in containerd');
  t.is((await tasks()).get('web')?.pid, w.data.pid, 'web (onTamper: report) keeps running');

  // the runner's record of this boot outlives the runner
  await runner.stop('SIGTERM');
  runner = await startService('runner', env);
  await runner.waitForLog((r) => r.msg === 'reconciled');
  t.is((await ps()).find((r) => r.name === 'guard')?.state, 'refused');
  t.false((await tasks()).has('guard'));
  t.false(events.of('container.started').some((e) => e.data.name === 'guard' && Date.parse(e.time) > Date.parse(refused.time)), 'guard was not started again');
  t.is((await ps()).find((r) => r.name === 'web')?.state, 'running');
});
