import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
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
import { encode } from '../services/lib/bus.ts';
import { containerName } from '../services/lib/rootfs/names.ts';
import type { PsEntry } from '../services/lib/contract.ts';

// What the policy no longer names is collected, by each service, after the
// grace delay: the fetcher's cache entries, the importer's containerd and
// Docker images, the ima service's rootfs and manifest. Real nats-server,
// containerd, dockerd and services; what someone else put into containerd
// or Docker is never touched, and a rootfs a container runs from stays until
// the runner says it is gone (runner.ps answered here with the runner's own
// bus user: no runner service that starts containers exists on this branch).

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
const services: Record<string, RunningService> = {};
const images: Record<string, BuiltImage> = {};

const archivePath = (img: BuiltImage) => join(work, `${img.name.replace('/', '_')}-${img.tag}.tar`);
const cacheFile = (img: BuiltImage) => join(nats.stateDir, 'fetcher', 'cache', 'sha256', img.sha256);
const rootfsOf = (img: BuiltImage) => join(store, containerName(img.name, img.tag), 'rootfs');
const manifestOf = (img: BuiltImage) => join(nats.stateDir, 'ima', 'manifests', `${containerName(img.name, img.tag)}.json`);
const ctrRefs = async () => (await ctd.ctr(['images', 'ls', '-q'], NS)).split('\n').filter(Boolean);
const dockerTags = async () => (await dockerd.docker.listImages()).flatMap((i) => i.RepoTags ?? []);

async function setPolicy(list: BuiltImage[]): Promise<number> {
  serial++;
  const yaml = policyYaml({
    serial,
    images: list.map((img) => ({ name: img.name, tag: img.tag, source: `file://${archivePath(img)}`, sha256: img.sha256, import: { containerd: { namespace: NS }, docker: true } })),
  });
  await putPolicy(adminNc, yaml, admin.key);
  return serial;
}

const labeled = (img: BuiltImage) => events.wait((e) => e.type === 'ima.labeled' && e.data.image.digest === img.sha256, 90_000);
const collected = (img: BuiltImage, kind: string, ms = 30_000) => events.wait((e) => e.type === 'image.collected' && e.data.image.name === img.name && e.data.kind === kind, ms);

test.before(async () => {
  [nats, ctd] = await Promise.all([startNats(), startContainerd()]);
  dockerd = await startDocker({ containerd: ctd });
  work = await mkdtemp(join(tmpdir(), 'sealkit-gc-'));
  store = join(work, 'containers');
  admin = await makeAdmin(nats.stateDir);
  adminNc = await nats.connectAs('admin');
  events = new EventLog(adminNc, ['image.*', 'ima.*']);
  for (const [k, name] of [['keep', 'gc/keep'], ['drop', 'gc/drop'], ['busy', 'gc/busy'], ['other', 'someone/else']] as const) {
    images[k] = await buildImage({ name, tag: '1', format: 'docker', layers: [{ 'bin/app': `#!/bin/sh\necho ${k}\n`, 'etc/which': `${k}\n` }] });
    await writeFile(archivePath(images[k]), images[k].archive);
  }
  const env = {
    SEALKIT_STATE: nats.stateDir,
    SEALKIT_NATS_URL: nats.url,
    SEALKIT_TRUST: admin.trustPath,
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_DOCKER_SOCK: dockerd.sock,
    SEALKIT_CONTAINER_STORE: store,
    SEALKIT_COLLECT_GRACE_MS: String(GRACE_MS),
  };
  for (const name of ['fetcher', 'importer', 'ima']) services[name] = await startService(name, env);
  await adminNc.flush();
});

test.after.always(async () => {
  await Promise.all(Object.values(services).map((s) => s.stop()));
  events?.close();
  await dockerd?.cleanup();
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

test.serial('a rootfs a container still runs from is kept, through an unanswered runner.ps too, and collected once the runner no longer runs it', async (t) => {
  const { keep, busy } = images;
  await setPolicy([keep, busy]);
  const lab = await labeled(busy);
  // runner.ps answered with the runner's own bus user; silent at first (a runner too busy to answer)
  const runnerNc = await nats.connectAs('runner');
  t.teardown(() => runnerNc.close());
  let answer: PsEntry[] | 'silent' = 'silent';
  const asked: number[] = [];
  runnerNc.subscribe('runner.ps', {
    callback: (_err, msg) => {
      asked.push(Date.now());
      if (answer !== 'silent') msg.respond(encode({ containers: answer }));
    },
  });
  await runnerNc.flush();
  const entry = (state: PsEntry['state']): PsEntry => ({ name: 'web', image: { name: busy.name, tag: busy.tag, digest: busy.sha256 }, state, pid: state === 'running' ? 4242 : null, restarts: 0, startedAt: new Date().toISOString(), reason: null });

  const keptLog = (why: RegExp, after: number) => services.ima.waitForLog((r) => r.msg === 'not collected yet: the rootfs of an image the policy no longer names' && r.image === 'gc/busy:1' && why.test(String(r.why)) && Number(r.time) > after, 30_000);
  const t0 = Date.now();
  await setPolicy([keep]);
  await keptLog(/runner\.ps/, t0);
  t.true(existsSync(join(lab.data.rootfs, 'bin/app')), 'kept while the runner does not answer');

  answer = [entry('running')];
  const t1 = Date.now();
  await keptLog(/a container still runs from it/, t1);
  await keptLog(/a container still runs from it/, Date.now()); // asked again at the next run, kept again
  t.true(existsSync(join(lab.data.rootfs, 'bin/app')) && existsSync(manifestOf(busy)), 'kept while a container runs from it');
  t.false(events.of('image.collected').some((e) => e.data.image.name === busy.name && e.data.kind === 'rootfs'));
  // the runner's image and cache entries are not the ima's to keep: they went after the grace
  t.truthy(await collected(busy, 'cache'));

  // the container is gone (stopped, and then no longer listed)
  answer = [entry('stopped')];
  const gone = await collected(busy, 'rootfs');
  t.deepEqual(gone.data.where, [lab.data.rootfs, manifestOf(busy)]);
  t.false(existsSync(lab.data.rootfs));
  t.false(existsSync(manifestOf(busy)));
  t.true(asked.length >= 3);
  t.true(existsSync(join(rootfsOf(keep), 'bin/app')));
});
