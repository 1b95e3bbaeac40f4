import test from 'ava';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startContainerd, type ContainerdServer } from './helpers/containerd.ts';
import { startDocker, type DockerServer } from './helpers/docker.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { EventLog } from './helpers/events.ts';
import { makeAdmin, policyYaml, putPolicy, type Admin } from './helpers/policy.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { containerName } from '../services/lib/rootfs/names.ts';
import { startTogether } from './helpers/together.ts';

// What the policy no longer names is collected, by each service, after the
// grace delay: the fetcher's cache entries, the importer's containerd and
// Docker images, the ima service's rootfs and manifest. Real nats-server,
// containerd, dockerd and services; what someone else put into containerd
// or Docker is never touched, and a rootfs a container runs from stays until
// the runner (the real one, running it through containerd and runc) no
// longer lists it, or while the runner does not answer.

const GRACE_MS = 1500;
const NS = 'services.linuxkit';

let nats: NatsServer;
let ctd: ContainerdServer;
let dockerd: DockerServer;
let admin: Admin;
let adminNc: NatsConnection;
let events: EventLog;
let work: string;
let store: string;
let serial = 0;
let runner: RunningService;
let env: Record<string, string>;
const services: Record<string, RunningService> = {};
const images: Record<string, BuiltImage> = {};

const archivePath = (img: BuiltImage) => join(work, `${img.name.replace('/', '_')}-${img.tag}.tar`);
const cacheFile = (img: BuiltImage) => join(nats.stateDir, 'fetcher', 'cache', 'sha256', img.sha256);
const rootfsOf = (img: BuiltImage) => join(store, containerName(img.name, img.tag), 'rootfs');
const manifestOf = (img: BuiltImage) => join(nats.stateDir, 'ima', 'manifests', `${containerName(img.name, img.tag)}.json`);
const ctrRefs = async () => (await ctd.ctr(['images', 'ls', '-q'], NS)).split('\n').filter(Boolean);
const dockerTags = async () => (await dockerd.docker.listImages()).flatMap((i) => i.RepoTags ?? []);

async function setPolicy(list: BuiltImage[], containers: Array<Record<string, unknown>> = []): Promise<number> {
  serial++;
  const yaml = policyYaml({
    serial,
    images: list.map((img) => ({ name: img.name, tag: img.tag, source: `file://${archivePath(img)}`, sha256: img.sha256, import: { containerd: { namespace: NS }, docker: true } })),
    containers,
  });
  await putPolicy(adminNc, yaml, admin.key);
  return serial;
}

const keptLog = (why: RegExp, after: number) =>
  services.ima.waitForLog((r) => r.msg === 'not collected yet: the rootfs of an image the policy no longer names' && r.image === 'gc/busy:1' && why.test(String(r.why)) && Number(r.time) > after, 30_000);
async function tasks(): Promise<Map<string, string>> {
  const out = await ctd.ctr(['tasks', 'ls'], NS);
  return new Map(out.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/)).map(([id, , status]) => [id, status]));
}
const labeled = (img: BuiltImage) => events.wait((e) => e.type === 'ima.labeled' && e.data.image.digest === img.sha256, 90_000);
const collected = (img: BuiltImage, kind: string, ms = 30_000) => events.wait((e) => e.type === 'image.collected' && e.data.image.name === img.name && e.data.kind === kind, ms);

test.before(async () => {
  [nats, ctd] = await startTogether(startNats(), startContainerd());
  dockerd = await startDocker({ containerd: ctd });
  work = await mkdtemp(join(tmpdir(), 'sealkit-gc-'));
  store = join(work, 'containers');
  admin = await makeAdmin(nats.stateDir);
  adminNc = await nats.connectAs('admin');
  events = new EventLog(adminNc, ['image.*', 'ima.*', 'container.*']);
  for (const [k, name] of [['keep', 'gc/keep'], ['drop', 'gc/drop'], ['other', 'someone/else']] as const) {
    images[k] = await buildImage({ name, tag: '1', format: 'docker', layers: [{ 'bin/app': `#!/bin/sh\necho ${k}\n`, 'etc/which': `${k}\n` }] });
  }
  images.busy = await buildImage({ name: 'gc/busy', tag: '1', format: 'docker', layers: [{ 'bin/busybox': readFileSync('/bin/busybox') }] });
  for (const img of Object.values(images)) await writeFile(archivePath(img), img.archive);
  env = {
    SEALKIT_STATE: nats.stateDir,
    SEALKIT_NATS_URL: nats.url,
    SEALKIT_TRUST: admin.trustPath,
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_DOCKER_SOCK: dockerd.sock,
    SEALKIT_CONTAINER_STORE: store,
    SEALKIT_COLLECT_GRACE_MS: String(GRACE_MS),
    SEALKIT_RUNNER_STOP_GRACE_MS: '20000',
    SEALKIT_IMA_NAMESPACES: join(work, 'no-ima-namespaces'),
  };
  for (const name of ['fetcher', 'importer', 'ima']) services[name] = await startService(name, env);
  runner = await startService('runner', env);
  await adminNc.flush();
});

test.after.always(async () => {
  if (runner?.proc.pid) process.kill(runner.proc.pid, 'SIGCONT');
  await runner?.stop();
  await Promise.all(Object.values(services).map((s) => s.stop()));
  events?.close();
  await dockerd?.cleanup();
  // nothing left in containerd: tasks and containers go before it does
  if (ctd) {
    for (const id of (await ctd.ctr(['tasks', 'ls', '-q'], NS).catch(() => '')).split('\n').filter(Boolean)) await ctd.ctr(['tasks', 'delete', '--force', id], NS).catch(() => {});
    for (const id of (await ctd.ctr(['containers', 'ls', '-q'], NS).catch(() => '')).split('\n').filter(Boolean)) await ctd.ctr(['containers', 'delete', id], NS).catch(() => {});
  }
  await ctd?.cleanup();
  await nats?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

test.serial('an image dropped from the policy loses its cache entry, containerd and Docker images, rootfs and manifest after the grace; the other keeps them, and what someone else put there stays', async (t) => {
  const { keep, drop, other } = images;
  await setPolicy([keep, drop]);
  await Promise.all([labeled(keep), labeled(drop)]);

  // someone else's images: an unrelated import, and copies of sealkit's
  // image under another name (ctr images tag copies its labels along)
  await writeFile(join(work, 'other.tar'), other.archive);
  await ctd.ctr(['images', 'import', '--no-unpack', join(work, 'other.tar')], NS);
  await ctd.ctr(['images', 'tag', 'docker.io/gc/drop:1', 'docker.io/someone/copy:1'], NS);
  await dockerd.docker.getImage('gc/drop:1').tag({ repo: 'someone/copy', tag: '1' });
  // as imported before the sealkit.image label existed: the importer's journal knows it
  await ctd.ctr(['images', 'label', 'docker.io/gc/drop:1', 'sealkit.image='], NS);
  t.notRegex(await ctd.ctr(['images', 'ls', 'name==docker.io/gc/drop:1'], NS), /sealkit\.image=/);
  const before = await ctrRefs();
  t.true(before.includes('docker.io/gc/drop:1') && before.includes('docker.io/someone/else:1') && before.includes('docker.io/someone/copy:1'), before.join(' '));

  const pushedAt = Date.now();
  const s = await setPolicy([keep]);
  const [cache, ctr, docker, rootfs] = await Promise.all([collected(drop, 'cache'), collected(drop, 'containerd'), collected(drop, 'docker'), collected(drop, 'rootfs')]);
  for (const e of [cache, ctr, docker, rootfs]) {
    t.true(Date.parse(e.time) - pushedAt >= GRACE_MS, `${e.data.kind} collected ${Date.parse(e.time) - pushedAt} ms after the push, before the grace`);
    t.is(e.data.policySerial, s);
    t.is(e.data.image.digest, drop.sha256);
  }
  t.deepEqual(cache.data.where, [cacheFile(drop)]);
  t.is(cache.data.bytes, drop.size);
  t.deepEqual(ctr.data.where, [`${NS}/docker.io/gc/drop:1`]);
  t.deepEqual(docker.data.where, ['gc/drop:1', `gc/drop:sha256-${drop.sha256}`]);
  t.deepEqual(rootfs.data.where, [rootfsOf(drop), manifestOf(drop)]);
  t.true(rootfs.data.bytes > 0);

  // gone
  t.false(existsSync(cacheFile(drop)));
  t.false(existsSync(rootfsOf(drop)));
  t.false(existsSync(join(store, containerName(drop.name, drop.tag))), 'no directory, no leftover staging tree');
  t.false(existsSync(manifestOf(drop)));
  const after = await ctrRefs();
  t.false(after.includes('docker.io/gc/drop:1'));
  const tags = await dockerTags();
  t.false(tags.includes('gc/drop:1') || tags.includes(`gc/drop:sha256-${drop.sha256}`), tags.join(' '));
  // kept: the image still named, and everything someone else put there
  t.true(existsSync(cacheFile(keep)) && existsSync(join(rootfsOf(keep), 'bin/app')) && existsSync(manifestOf(keep)));
  t.true(after.includes('docker.io/gc/keep:1') && after.includes('docker.io/someone/else:1') && after.includes('docker.io/someone/copy:1'), after.join(' '));
  t.true(tags.includes('gc/keep:1') && tags.includes('someone/copy:1'), tags.join(' '));
  t.false(events.of('image.collected').some((e) => e.data.image.name !== drop.name), 'only the dropped image was collected');
  // what an operator reads in each service's log
  await services.fetcher.waitForLog((r) => r.msg === 'collected: cache entries of an image the policy no longer names' && r.image === 'gc/drop:1', 5000);
  await services.importer.waitForLog((r) => r.msg === 'collected: an image the policy no longer names' && r.kind === 'containerd', 5000);
  await services.ima.waitForLog((r) => r.msg === 'collected: the rootfs of an image the policy no longer names' && r.image === 'gc/drop:1', 5000);

  // named again: fetched, imported and labelled again, not taken for a repeat of the first time
  const s3 = await setPolicy([keep, drop]);
  await events.wait((e) => e.type === 'ima.labeled' && e.data.image.digest === drop.sha256 && e.data.policySerial === s3, 90_000);
  t.true(existsSync(cacheFile(drop)) && existsSync(join(rootfsOf(drop), 'bin/app')) && (await ctrRefs()).includes('docker.io/gc/drop:1'));
});

test.serial('a rootfs a container still runs from is kept, through a runner that does not answer too, and collected once the container is gone', async (t) => {
  const { keep, busy } = images;
  // pid 1 of the container ignores SIGTERM: the runner waits out its stop grace, listing it as running
  const c = { name: 'busy-c', image: busy.name, command: ['/bin/busybox', 'sleep', '1000'] };
  await setPolicy([keep, busy], [c]);
  const started = await events.wait((e) => e.type === 'container.started' && e.data.name === c.name, 90_000);
  const rootfs = started.data.rootfs as string;
  t.is(rootfs, rootfsOf(busy));

  // a runner that does not answer runner.ps may be running anything
  process.kill(runner.proc.pid!, 'SIGSTOP');
  const t0 = Date.now();
  await setPolicy([keep]);
  await keptLog(/runner\.ps/, t0);
  t.true(existsSync(join(rootfs, 'bin/busybox')) && existsSync(manifestOf(busy)), 'kept while the runner does not answer');

  // the runner stops the container (SIGTERM ignored, SIGKILL after its grace) and lists it running meanwhile
  const t1 = Date.now();
  process.kill(runner.proc.pid!, 'SIGCONT');
  await keptLog(/a container still runs from it/, t1);
  t.is((await tasks()).get(c.name), 'RUNNING');
  t.true(existsSync(join(rootfs, 'bin/busybox')) && existsSync(manifestOf(busy)), 'kept while a container runs from it');
  t.false(events.of('image.collected').some((e) => e.data.image.name === busy.name && e.data.kind === 'rootfs'));
  // its cache entry and containerd image are not what the container runs from: gone after the grace
  await Promise.all([collected(busy, 'cache'), collected(busy, 'containerd')]);

  // the container ends: the next collection removes the rootfs, after the runner said it stopped
  await ctd.ctr(['tasks', 'kill', '--signal', 'SIGKILL', c.name], NS);
  const stopped = await events.wait((e) => e.type === 'container.stopped' && e.data.name === c.name, 30_000);
  const gone = await collected(busy, 'rootfs');
  t.true(Date.parse(gone.time) >= Date.parse(stopped.time));
  t.deepEqual(gone.data.where, [rootfs, manifestOf(busy)]);
  t.false(existsSync(rootfs));
  t.false(existsSync(manifestOf(busy)));
  t.false((await tasks()).has(c.name));
  t.true(existsSync(join(rootfsOf(keep), 'bin/app')));
});

test.serial('a rootfs removal cut short by a crash is finished at the next start: the staging tree cleared, the manifest and directory removed, and reported', async (t) => {
  const { keep } = images;
  const dir = join(store, containerName(keep.name, keep.tag));
  // the state a kill leaves right after the first step of a removal: the
  // tree under an unfinished staging name, its manifest still in place
  await services.ima.stop();
  await rename(rootfsOf(keep), join(dir, '.rootfs.unpack-0badc0de.gone'));
  await setPolicy([]);
  const t0 = Date.now();
  services.ima = await startService('ima', env);
  const e = await collected(keep, 'rootfs');
  t.true(Date.parse(e.time) - t0 >= GRACE_MS, 'at start-up, after the grace');
  t.deepEqual(e.data.where, [rootfsOf(keep), manifestOf(keep)]);
  t.false(existsSync(dir), 'no staging tree, no directory left');
  t.false(existsSync(manifestOf(keep)));
});
