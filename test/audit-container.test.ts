import test from 'ava';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFile, cp, mkdir, mkdtemp, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { EventLog } from './helpers/events.ts';
import { startContainerd } from './helpers/containerd.ts';
import { buildImage } from './helpers/images.ts';
import { makeAdmin, policyYaml, pushPolicy } from './helpers/policy.ts';
import { encode } from '../services/lib/bus.ts';
import { contract, type ContainerStarted, type PsEntry } from '../services/lib/contract.ts';
import { createLogger } from '../services/lib/log.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { generateKey, writeKeyFiles, type SecretKeyFile } from '../services/lib/sign.ts';
import { fileDigest, writeManifest, type LabelManifest } from '../services/lib/manifest.ts';
import { containerName } from '../services/lib/rootfs/names.ts';

// A denial inside a workload container: the kernel prints the path the
// process saw (/bin/app), and the auditor, a real process following a
// kmsg-format file, names the container from the record's pid. First with a
// container the real runner starts through containerd and runc; then, for
// what the runner does not vary (a record's own mount namespace, a cgroup, a
// nested namespace, an auditor started late or in its own pid namespace),
// with a real process tree in its own mount and pid namespaces and cgroup
// (unshare, as root), announced on the bus with the runner's credentials as
// the runner announces the tasks it starts.

const root = process.getuid?.() === 0;
const serial = root ? test.serial : test.serial.skip;

const SHA = (c: string) => c.repeat(64);
const NS = 'services.linuxkit';
const image = { name: 'example/app', tag: '1.0', digest: SHA('a') };
const rootfsName = containerName(image.name, image.tag);
const LABELLED_SERIAL = 7; // the rootfs was labelled under this policy
const STARTED_SERIAL = 9; // the container was started under this one

let s: NatsServer;
let monitor: NatsConnection;
let runnerNc: NatsConnection;
let runner: EventPublisher;
let dir: string;
let rootfs: string;
let appIno: number;
let appSha: string;
let box: Sandbox;
let node: Node;
let auditor: RunningService;
let denials: EventLog;
let seq = 0;
let started: ContainerStarted;

interface Node {
  name: string;
  state: string;
  kmsg: string;
  key: SecretKeyFile;
}

// A container as the kernel sees one: an init (pid 1 of its pid namespace)
// with a child, both in a mount namespace of their own, in a cgroup made for it.
interface Sandbox {
  proc: ChildProcess;
  init: number;
  app: number;
  mntNs: number;
  cgroup: string; // as /proc/<pid>/cgroup prints it
  cgroupDir: string;
}

async function childOf(pid: number): Promise<number> {
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; ) {
    const kids = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim();
    if (kids) return Number(kids.split(' ')[0]);
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} started no child within 10 s`);
}

// script: what the namespace's init runs; its first child is the workload's process
async function startSandbox(name: string, script = 'sleep 600 & wait'): Promise<Sandbox> {
  const cgroup = `/sealkit-test-${process.pid}-${name}`;
  const cgroupDir = join('/sys/fs/cgroup/pids', cgroup);
  await mkdir(cgroupDir);
  // --kill-child: the namespace's init dies with unshare, and its child with it
  const proc = spawn('unshare', ['--mount', '--pid', '--kill-child', 'sh', '-c', script], { stdio: 'ignore' });
  const init = await childOf(proc.pid!);
  const app = await childOf(init);
  for (const pid of [init, app]) await writeFile(join(cgroupDir, 'cgroup.procs'), String(pid));
  // what the runner reports: the namespace of the task's init
  const mntNs = (await stat(`/proc/${init}/ns/mnt`)).ino;
  return { proc, init, app, mntNs, cgroup, cgroupDir };
}

async function stopSandbox(b: Sandbox | undefined): Promise<void> {
  if (!b) return;
  if (b.proc.exitCode === null && b.proc.signalCode === null) {
    const exited = new Promise((r) => b.proc.once('exit', r));
    b.proc.kill('SIGKILL');
    await exited;
  }
  // the cgroup empties once the namespace's processes are reaped
  for (const deadline = Date.now() + 10_000; ; ) {
    try {
      await rmdir(b.cgroupDir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || Date.now() > deadline) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function makeNode(name: string): Promise<Node> {
  const state = join(dir, name, 'state');
  await cp(join(s.stateDir, 'bus'), join(state, 'bus'), { recursive: true });
  const key = generateKey('node-manifest');
  await writeKeyFiles(key, join(state, 'ima', 'manifest-key'));
  const manifest: LabelManifest = {
    version: 2,
    image,
    container: rootfsName,
    rootfs,
    policySerial: LABELLED_SERIAL,
    createdAt: new Date().toISOString(),
    files: { 'bin/app': fileDigest(appSha), 'etc/app.conf': fileDigest(SHA('c')) },
  };
  await writeManifest(join(state, 'ima', 'manifests'), manifest, key);
  const kmsg = join(dir, name, 'kmsg');
  await writeFile(kmsg, '');
  return { name, state, kmsg, key };
}

function startAuditor(n: Node, env: Record<string, string> = {}, wrap?: string[]): Promise<RunningService> {
  return startService('auditor', { SEALKIT_STATE: n.state, SEALKIT_NATS_URL: s.url, SEALKIT_NODE: n.name, SEALKIT_KMSG: n.kmsg, SEALKIT_AUDIT_POLL_MS: '20', ...env }, { wrap });
}

// The record IMA prints when it refuses an exec: pid and path as the process
// has them. Each its own comm: the storm control holds a repeat of the same
// file, cause and comm for its window.
function denial(pid: number, name: string, extra = ''): { seq: number; line: string } {
  const n = ++seq;
  const line =
    `5,${n},${n * 1000},-;audit: type=1800 audit(1795431129.${String(n % 1000).padStart(3, '0')}:${n}): ` +
    `pid=${pid} uid=0 auid=4294967295 ses=4294967295 subj=unconfined op=appraise_data cause=invalid-hash ` +
    `comm="app-${n}" name="${name}" dev="overlay" ino=${appIno}${extra} res=0 errno=0\n`;
  return { seq: n, line };
}

async function denied(n: Pick<Node, 'name' | 'kmsg'>, log: EventLog, pid: number, name: string, extra = ''): Promise<Record<string, any>> {
  const d = denial(pid, name, extra);
  await appendFile(n.kmsg, d.line);
  return (await log.wait((e) => e.type === 'audit.denial' && e.source === `sealkit/auditor/${n.name}` && e.data.kernel.seq === d.seq)).data;
}

// a pid that was a process and is none any more
function exitedPid(): number {
  return spawnSync('true').pid;
}

test.before(async () => {
  if (!root) return;
  s = await startNats();
  monitor = await s.connectAs(null);
  runnerNc = await s.connectAs('runner');
  runner = new EventPublisher({ nc: runnerNc, service: 'runner', node: 'n-box', log: createLogger({ service: 'runner' }, { level: 'error' }) });
  await runner.init();
  dir = await mkdtemp(join(tmpdir(), 'sealkit-audit-box-'));
  rootfs = join(dir, 'store', rootfsName, 'rootfs');
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  const app = '#!/bin/sh\necho app\n';
  await writeFile(join(rootfs, 'bin', 'app'), app, { mode: 0o755 });
  appIno = (await stat(join(rootfs, 'bin', 'app'))).ino;
  appSha = createHash('sha256').update(app).digest('hex');
  denials = new EventLog(monitor, contract.audit.denial.subject);

  node = await makeNode('n-box');
  auditor = await startAuditor(node);
  box = await startSandbox('web');
  started = {
    name: 'web',
    image,
    rootfs,
    policySerial: STARTED_SERIAL,
    pid: box.init,
    mntNs: box.mntNs,
    cgroup: box.cgroup,
    restarts: 0,
    verifiedFiles: 2,
    startedAt: new Date().toISOString(),
  };
  await runner.publish(contract.container.started.subject, started);
  await heard(auditor, 'web');
});

// The auditor has the container in its table. A node whose runner it never
// heard from does not look for one (no /proc read, no bus round trip per
// denial): the runner's first event has to be in before its denials.
async function heard(a: RunningService, container: string): Promise<void> {
  if (!(await runner.flush(10_000))) throw new Error('container.started was not acknowledged by the stream');
  await a.waitForLog((r) => r.msg === 'container.started: its denials are tied to it' && r.container === container, 10_000);
}

test.after.always(async () => {
  denials?.close();
  await auditor?.stop();
  await stopSandbox(box);
  runner?.close();
  await s?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

serial('a denial inside a container the runner started names it, its image digest and policy serial', async (t) => {
  const ctd = await startContainerd();
  const work = await mkdtemp(join(tmpdir(), 'sealkit-audit-runner-'));
  const admin = await makeAdmin(s.stateDir);
  const busybox = await readFile('/bin/busybox');
  const img = await buildImage({ name: 'sealkit/app', tag: 'v1', layers: [{ 'bin/busybox': busybox }] });
  await writeFile(join(work, 'v1.tar'), img.archive);
  const kmsg = join(work, 'kmsg');
  await writeFile(kmsg, '');
  const env = {
    SEALKIT_STATE: s.stateDir,
    SEALKIT_NATS_URL: s.url,
    SEALKIT_NODE: 'n-runner',
    SEALKIT_TRUST: admin.trustPath,
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_CONTAINER_STORE: join(work, 'containers'),
    SEALKIT_RUNNER_STOP_GRACE_MS: '3000',
    SEALKIT_IMA_NAMESPACES: join(work, 'no-ima-namespaces'),
  };
  const services: RunningService[] = [];
  t.teardown(async () => {
    for (const svc of services.reverse()) await svc.stop();
    const tasks = await ctd.ctr(['tasks', 'ls', '-q'], NS).catch(() => '');
    for (const id of tasks.split('\n').filter(Boolean)) await ctd.ctr(['tasks', 'delete', '--force', id], NS).catch(() => {});
    const containers = await ctd.ctr(['containers', 'ls', '-q'], NS).catch(() => '');
    for (const id of containers.split('\n').filter(Boolean)) await ctd.ctr(['containers', 'delete', id], NS).catch(() => {});
    await ctd.cleanup();
    await rm(work, { recursive: true, force: true });
  });
  for (const name of ['policy', 'fetcher', 'importer', 'ima', 'runner']) services.push(await startService(name, env));
  services.push(await startService('auditor', { ...env, SEALKIT_KMSG: kmsg, SEALKIT_AUDIT_POLL_MS: '20' }));
  const admNc = await s.connectAs('admin');
  const events = new EventLog(monitor, ['container.started', 'ima.labeled']);
  t.teardown(() => events.close());
  const yaml = policyYaml({
    serial: 1,
    images: [{ name: img.name, tag: img.tag, source: `file://${join(work, 'v1.tar')}`, sha256: img.sha256 }],
    containers: [{ name: 'app', image: img.name, command: ['/bin/busybox', 'sh', '-c', 'trap "exit 0" TERM; /bin/busybox sleep 1000 & wait'] }],
  });
  await pushPolicy(admNc, yaml, admin.key);
  const run = (await events.wait((e) => e.type === 'container.started' && e.data.name === 'app', 120_000)).data;
  const labeled = (await events.wait('ima.labeled')).data;
  const n = { name: 'n-runner', kmsg };
  // the task's init is the shell; its child, busybox's sleep, execs and the
  // kernel refuses it: the record names the path the process saw
  const app = await childOf(run.pid);
  const d = await denied(n, denials, app, '/bin/busybox');
  t.like(d, {
    workload: 'app',
    container: labeled.container,
    image: { name: img.name, tag: img.tag, digest: img.sha256 },
    policySerial: 1,
    file: join(run.rootfs, 'bin/busybox'),
    path: '/bin/busybox',
    expectedSha256: createHash('sha256').update(busybox).digest('hex'),
    match: 'pid',
    process: { pid: app },
  });
  // a process of the container gone before its record is read: its path in the container's rootfs
  t.like(await denied(n, denials, exitedPid(), '/bin/busybox'), { workload: 'app', match: 'rootfs-path', file: join(run.rootfs, 'bin/busybox') });
  // a binary written into the rootfs after it was labelled, which no
  // manifest lists, refused by IPE in a process gone before its record is
  // read: the rootfs that holds that path with that inode
  const added = join(run.rootfs, 'bin/added');
  await writeFile(added, busybox);
  const k = ++seq;
  await appendFile(kmsg, `5,${k},${k * 1000},-;audit: type=1420 audit(1796621853.${String(k % 1000).padStart(3, '0')}:${k}): ` +
    `ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=${exitedPid()} comm="added-${k}" path="/bin/added" dev="loop0" ino=${(await stat(added)).ino} rule="DEFAULT op=EXECUTE action=DENY"\n`);
  const ipe = (await denials.wait((e) => e.type === 'audit.denial' && e.data.kernel.seq === k)).data;
  t.like(ipe, { mechanism: 'ipe', workload: 'app', container: labeled.container, match: 'rootfs-path', file: added, path: '/bin/added' });
  // and by a process of the container still there
  const k2 = ++seq;
  await appendFile(kmsg, `5,${k2},${k2 * 1000},-;audit: type=1420 audit(1796621853.${String(k2 % 1000).padStart(3, '0')}:${k2}): ` +
    `ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=${app} comm="added-${k2}" path="/bin/added" dev="loop0" ino=${(await stat(added)).ino} rule="DEFAULT op=EXECUTE action=DENY"\n`);
  const live = (await denials.wait((e) => e.type === 'audit.denial' && e.data.kernel.seq === k2)).data;
  t.like(live, { mechanism: 'ipe', workload: 'app', match: 'pid', file: added, path: '/bin/added' });
});

serial('a denial by a process inside the container names the container, its image digest and policy serial, and the file on the host', async (t) => {
  const d = await denied(node, denials, box.app, '/bin/app');
  t.like(d, {
    workload: 'web',
    container: rootfsName,
    image,
    policySerial: STARTED_SERIAL,
    file: join(rootfs, 'bin/app'),
    path: '/bin/app',
    expectedSha256: appSha,
    match: 'pid',
    process: { pid: box.app },
  });
  // the task's init itself
  t.like(await denied(node, denials, box.init, '/bin/app'), { workload: 'web', match: 'pid', file: join(rootfs, 'bin/app') });
});

serial('an IPE refusal inside the container is tied to it like an IMA one, with the mechanism and the rule', async (t) => {
  // the shape test/fixtures/kmsg/debian-6.12-ipe.kmsg has from the 6.12 kernel
  const n = ++seq;
  await appendFile(node.kmsg, `5,${n},${n * 1000},-;audit: type=1420 audit(1796621853.${String(n % 1000).padStart(3, '0')}:${n}): ` +
    `ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=${box.app} comm="ipe-${n}" path="/bin/app" dev="vda" ino=${appIno} rule="DEFAULT op=EXECUTE action=DENY"\n`);
  const d = (await denials.wait((e) => e.type === 'audit.denial' && e.source === `sealkit/auditor/${node.name}` && e.data.kernel.seq === n)).data;
  t.like(d, {
    mechanism: 'ipe',
    rule: 'DEFAULT op=EXECUTE action=DENY',
    cause: 'ipe-denied',
    errno: 13,
    type: 1420,
    workload: 'web',
    container: rootfsName,
    image,
    file: join(rootfs, 'bin/app'),
    path: '/bin/app',
    match: 'pid',
    process: { pid: box.app },
  });
  t.like(await denied(node, denials, box.app, '/bin/app'), { mechanism: 'ima', rule: null });
});

serial('the mount namespace a record carries names the container though its process is gone', async (t) => {
  const d = await denied(node, denials, exitedPid(), '/bin/app', ` mnt_ns=${box.mntNs}`);
  t.like(d, { workload: 'web', container: rootfsName, policySerial: STARTED_SERIAL, file: join(rootfs, 'bin/app'), match: 'mnt-ns' });
});

serial("a process in the container's cgroup but not its namespaces is tied by the cgroup", async (t) => {
  const joined = spawn('sleep', ['600'], { stdio: 'ignore' });
  t.teardown(() => joined.kill('SIGKILL'));
  await writeFile(join(box.cgroupDir, 'cgroup.procs'), String(joined.pid));
  t.like(await denied(node, denials, joined.pid!, '/bin/app'), { workload: 'web', match: 'cgroup', file: join(rootfs, 'bin/app') });
});

serial('a denial whose process has exited is tied by its path in the rootfs of the running container', async (t) => {
  const d = await denied(node, denials, exitedPid(), '/bin/app');
  t.like(d, { workload: 'web', container: rootfsName, image, policySerial: STARTED_SERIAL, file: join(rootfs, 'bin/app'), path: '/bin/app', expectedSha256: appSha, match: 'rootfs-path' });
  // a path none of the running containers' rootfs holds is no container's
  t.like(await denied(node, denials, exitedPid(), '/usr/bin/other'), { workload: null, container: null, file: '/usr/bin/other', match: null });
});

serial('a denial outside any container keeps the mapping by path alone', async (t) => {
  // the test process is on the host: its /bin/app is the host's
  t.like(await denied(node, denials, process.pid, '/bin/app'), {
    workload: null,
    container: rootfsName,
    file: '/bin/app',
    path: '/bin/app',
    policySerial: LABELLED_SERIAL,
    match: 'inode', // the record's inode is that of the rootfs's file
  });
  t.like(await denied(node, denials, process.pid, join(rootfs, 'bin/app')), { workload: null, container: rootfsName, file: join(rootfs, 'bin/app'), match: 'rootfs-prefix' });
  t.like(await denied(node, denials, process.pid, '/opt/unknown'), { workload: null, container: null, image: null, policySerial: null, match: null });
});

serial('an auditor started after the container learns of it from runner.ps', async (t) => {
  let answer!: () => void;
  const answered = new Promise<void>((r) => (answer = r));
  const line: PsEntry = { name: 'web', image, state: 'running', pid: box.init, restarts: 0, startedAt: new Date().toISOString(), reason: null };
  const sub = runnerNc.subscribe(contract.runner.ps.subject, {
    callback: (_e, msg) => {
      msg.respond(encode({ containers: [line] }));
      answer();
    },
  });
  t.teardown(() => sub.unsubscribe());
  await runnerNc.flush();
  const late = await makeNode('n-late');
  const second = await startAuditor(late);
  t.teardown(() => second.stop());
  await answered;
  // runner.ps names no serial: the one the rootfs was labelled under
  t.like(await denied(late, denials, box.app, '/bin/app'), { workload: 'web', container: rootfsName, policySerial: LABELLED_SERIAL, file: join(rootfs, 'bin/app'), match: 'pid' });
});

serial('an auditor in a pid namespace of its own reads the host pids through the host /proc bound into it', async (t) => {
  // as linuxkit.yml runs it: its own pid namespace, the host's procfs at /host/proc
  const hostProc = join(dir, 'host-proc');
  await mkdir(hostProc);
  const wrap = ['unshare', '--pid', '--mount', '--kill-child', 'sh', '-c', 'mount --rbind /proc "$0" && mount -t proc proc /proc && exec "$@"', hostProc];
  const n = await makeNode('n-pidns');
  const inNs = await startAuditor(n, { SEALKIT_HOST_PROC: hostProc }, wrap);
  // unshare ignores SIGTERM while it waits; its death kills the auditor (--kill-child)
  t.teardown(() => inNs.stop('SIGKILL'));
  // the runner's event for the container, as after a restart of it
  await runner.publish(contract.container.started.subject, started);
  await heard(inNs, 'web');
  // the container's process is alive, but not in the auditor's pid namespace: only the host /proc shows it
  t.like(await denied(n, denials, box.app, '/bin/app'), { workload: 'web', match: 'pid', file: join(rootfs, 'bin/app') });
});

serial('a process that made a mount namespace of its own inside the container is tied by its ancestry', async (t) => {
  // the cgroup the runner reports on a host whose unified hierarchy holds no containers (this one's)
  const worker = await startSandbox('worker', 'unshare --mount sleep 600 & wait');
  t.teardown(() => stopSandbox(worker));
  // unshare has made the namespace once it has become sleep
  while ((await readFile(`/proc/${worker.app}/comm`, 'utf8')).trim() !== 'sleep') await new Promise((r) => setTimeout(r, 10));
  t.not((await stat(`/proc/${worker.app}/ns/mnt`)).ino, worker.mntNs);
  await runner.publish(contract.container.started.subject, { ...started, name: 'worker', pid: worker.init, mntNs: worker.mntNs, cgroup: '/' });
  await heard(auditor, 'worker');
  t.like(await denied(node, denials, worker.app, '/bin/app'), { workload: 'worker', match: 'pid', file: join(rootfs, 'bin/app') });
});

serial('a container whose task died with no runner there to say so claims neither its namespace number nor its pid, both handed on since', async (t) => {
  // the task dies while the runner is down: no container.exited, and the
  // auditor's table still has it running
  const gone = await startSandbox('gone');
  await stopSandbox(gone);
  const next = await startSandbox('next');
  t.teardown(() => stopSandbox(next));
  // the kernel hands a freed namespace's inode number to the next namespace
  // made (the lowest free one), and a pid to the next process once pids wrap:
  // as if both had gone to the next container
  await runner.publish(contract.container.started.subject, { ...started, name: 'ns-reused', pid: gone.init, mntNs: next.mntNs, cgroup: '/' });
  await runner.publish(contract.container.started.subject, { ...started, name: 'next', pid: next.init, mntNs: next.mntNs, cgroup: '/' });
  await heard(auditor, 'next');
  t.like(await denied(node, denials, next.app, '/bin/app'), { workload: 'next', match: 'pid', file: join(rootfs, 'bin/app') });
  // its init's pid is a process of the next container's now, in a namespace not the one announced
  await runner.publish(contract.container.started.subject, { ...started, name: 'pid-reused', pid: next.app, mntNs: box.mntNs, cgroup: '/' });
  await heard(auditor, 'pid-reused');
  t.like(await denied(node, denials, next.app, '/bin/app'), { workload: 'next', match: 'pid', file: join(rootfs, 'bin/app') });
});
