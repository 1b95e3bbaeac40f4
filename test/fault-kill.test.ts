import test from 'ava';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startImportRig, stored, NS, type ImportRig } from './helpers/importer.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { EventLog } from './helpers/events.ts';
import { policyYaml, putPolicy } from './helpers/policy.ts';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { streams } from '../services/lib/subjects.ts';

// kill -9 of the fetcher, the importer or the ima service at a random point
// of fetch → import → label, then the restart a supervisor would do: the run
// completes, and JetStream holds exactly one image.verified, one
// image.imported and one ima.labeled for the image. The kill points come
// from a seeded generator; replay a failure with SEALKIT_FAULT_SEED=<seed>.

const seed = Number(process.env.SEALKIT_FAULT_SEED ?? Date.now() % 1_000_000);
const PER_SERVICE = Number(process.env.SEALKIT_FAULT_ITERATIONS ?? 5);
const VICTIMS = ['fetcher', 'importer', 'ima'] as const;
type Victim = (typeof VICTIMS)[number];

function mulberry32(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(seed);
const bytes = (n: number) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) b.writeUInt32LE(Math.floor(rand() * 2 ** 32), i);
  return b;
};

let rig: ImportRig;
let work: string;
let env: Record<string, string>;
let events: EventLog;
const svcs = new Map<Victim, RunningService>();

test.before(async () => {
  rig = await startImportRig();
  work = await mkdtemp(join(tmpdir(), 'sealkit-fault-kill-'));
  env = {
    ...rig.env,
    SEALKIT_TRUST: rig.admin.trustPath,
    SEALKIT_CONTAINER_STORE: join(work, 'containers'),
    SEALKIT_NODE: 'node-kill',
    // a message held by a killed instance comes back after this, not after a minute
    SEALKIT_IMPORTER_ACK_WAIT_MS: '4000',
    SEALKIT_IMA_ACK_WAIT_MS: '4000',
  };
  events = new EventLog(rig.adminNc, ['image.*', 'ima.*']);
  await rig.adminNc.flush();
  for (const v of VICTIMS) svcs.set(v, await startService(v, env));
});

test.after.always(async () => {
  await Promise.all([...svcs.values()].map((s) => s.stop()));
  events?.close();
  await rig?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

let serial = 100; // above anything the rig's own setPolicy uses

// Where each service's work starts: the fetcher's when the policy is in the
// KV bucket, the importer's at image.verified, the ima's at image.imported.
const TRIGGER: Record<Victim, string | null> = { fetcher: null, importer: 'image.verified', ima: 'image.imported' };

// One image through the whole pipeline; with a victim, that service is
// killed `delayMs` after its work on the image could start.
async function runOnce(i: number, victim?: { name: Victim; delayMs: number }) {
  const img: BuiltImage = await buildImage({
    name: `sealkit/kill-${i}`,
    tag: 'v1',
    format: i % 2 ? 'docker' : 'oci',
    layers: [{ 'opt/blob': bytes(1 << 20), 'etc/conf': `n=${i}\n`, 'bin/run': '#!/bin/sh\necho run\n' }, { 'etc/motd': `image ${i}\n` }],
  });
  const archive = join(work, `kill-${i}.tar`);
  await writeFile(archive, img.archive);
  const t0 = Date.now();
  await putPolicy(
    rig.adminNc,
    policyYaml({ serial: ++serial, images: [{ name: img.name, tag: img.tag, source: `file://${archive}`, sha256: img.sha256, import: { containerd: { namespace: NS }, docker: false } }] }),
    rig.admin.key,
  );
  const mine = (e: { type: string; data: any }) => (e.type === 'ima.labeled' ? e.data.image?.digest === img.sha256 : e.data?.name === img.name && e.data?.sha256 === img.sha256);
  let phase = 'none';
  const at: Record<string, number> = {};
  for (const type of ['image.verified', 'image.imported', 'ima.labeled']) void events.wait((e) => e.type === type && mine(e), 120_000).then(() => (at[type] = Date.now() - t0), () => {});
  if (victim) {
    const trigger = TRIGGER[victim.name];
    if (trigger) await events.wait((e) => e.type === trigger && mine(e), 120_000);
    // the kill point itself: a seeded delay, not a wait for anything
    await new Promise((r) => setTimeout(r, victim.delayMs));
    const done = events.events.filter(mine).map((e) => e.type);
    phase = done.length ? done.join('+') : 'before image.verified';
    const svc = svcs.get(victim.name)!;
    const exited = new Promise((r) => svc.proc.once('exit', r));
    svc.proc.kill('SIGKILL');
    await exited;
    svcs.set(victim.name, await startService(victim.name, env));
  }
  await events.wait((e) => e.type === 'ima.labeled' && mine(e), 120_000);
  const ms = Date.now() - t0;
  await quiet();
  // what the restarted instance did again for this image (the duplicates the ids and journal must absorb)
  const logs = victim ? svcs.get(victim.name)!.logs() : [];
  const label = `${img.name}:${img.tag}`;
  const redo = logs.filter((r) =>
    victim?.name === 'fetcher' ? r.msg === 'image verified' && r.image === img.name
    : victim?.name === 'importer' ? (r.msg === 'resuming an interrupted import' || r.msg === 'image.verified already handled; acknowledging it again' || r.msg === 'importing into containerd' || r.msg === 'already in containerd; not importing again') && r.image === label
    : r.msg === 'labelled' && (r.image as { name?: string } | undefined)?.name === img.name,
  ).map((r) => String(r.msg));
  const count = async (subject: string) => (await stored(rig.adminNc, subject)).filter(mine).length;
  return {
    img,
    ms,
    at,
    phase,
    redo,
    verified: await count('image.verified'),
    imported: await count('image.imported'),
    failed: await count('image.import_failed'),
    labeled: await count('ima.labeled'),
  };
}

// Nothing more can come: the fetcher (a restarted one too) has handled the
// policy in force, both durable consumers have nothing pending or
// unacknowledged, and every service's outbox is empty.
async function quiet(): Promise<void> {
  await svcs.get('fetcher')!.waitForLog((r) => r.msg === 'policy images handled' && r.serial === serial, 60_000);
  const jsm = await rig.adminNc.jetstreamManager();
  const outboxes = VICTIMS.map((v) => join(rig.nats.stateDir, v, 'outbox'));
  for (const deadline = Date.now() + 60_000; ; ) {
    const infos = await Promise.all(['importer', 'ima'].map((d) => jsm.consumers.info(streams.events.name, d)));
    const busy = infos.some((c) => c.num_pending > 0 || c.num_ack_pending > 0);
    const left = (await Promise.all(outboxes.map((d) => readdir(d).catch(() => [])))).flat().filter((n) => n.endsWith('.json'));
    if (!busy && left.length === 0) return;
    if (Date.now() > deadline) throw new Error(`still busy: ${JSON.stringify(infos.map((c) => [c.name, c.num_pending, c.num_ack_pending]))}, outbox ${left.join(' ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test.serial(`kill -9 of fetcher, importer and ima at seeded random points loses no event and stores none twice (seed ${seed})`, async (t) => {
  t.timeout(15 * 60_000); // bounds a hang; each run takes seconds
  const base = await runOnce(0);
  t.like(base, { verified: 1, imported: 1, failed: 0, labeled: 1 });
  // each service's kill points spread over its own part of the run, and
  // past it (between its publish and its ack)
  const phase: Record<Victim, number> = {
    fetcher: base.at['image.verified'],
    importer: base.at['image.imported'] - base.at['image.verified'],
    ima: base.at['ima.labeled'] - base.at['image.imported'],
  };
  const span = (v: Victim) => Math.max(Math.round(phase[v] * 1.5), 200);
  t.log(`seed ${seed}; an undisturbed run took ${base.ms} ms (${JSON.stringify(base.at)}); kill points: fetcher [0, ${span('fetcher')}) ms after the policy, importer [0, ${span('importer')}) ms after image.verified, ima [0, ${span('ima')}) ms after image.imported`);
  let i = 1;
  for (const name of VICTIMS) {
    for (let k = 0; k < PER_SERVICE; k++, i++) {
      const delayMs = Math.floor(rand() * span(name));
      const r = await runOnce(i, { name, delayMs });
      t.log(`#${i} kill -9 ${name} at +${delayMs} ms (done by then: ${r.phase}); completed in ${r.ms} ms; the restarted ${name} did: ${r.redo.join(', ') || 'nothing for it'}; stored verified=${r.verified} imported=${r.imported} labeled=${r.labeled} import_failed=${r.failed}`);
      t.like(r, { verified: 1, imported: 1, failed: 0, labeled: 1 }, `#${i} ${name} at ${delayMs} ms`);
      const refs = await rig.ctrImages();
      t.true(refs.some((x) => x.ref === `docker.io/${r.img.name}:v1`), `#${i}: ${refs.map((x) => x.ref).join(' ')}`);
      t.false(refs.some((x) => x.ref.startsWith('sealkit-staging/')), `#${i}: staging left`);
    }
  }
});

test.serial('the same image.imported delivered again leaves the labelled rootfs in place and stores ima.labeled once', async (t) => {
  const r = await runOnce(99);
  t.like(r, { verified: 1, imported: 1, labeled: 1 });
  const labeled = (await stored(rig.adminNc, 'ima.labeled')).find((e) => e.data.image.digest === r.img.sha256)!;
  const before = await stat(labeled.data.rootfs);
  // what JetStream redelivers after an ack was lost: the same event, here under a new message id so the stream keeps it
  const imported = (await stored(rig.adminNc, 'image.imported')).find((e) => e.data.sha256 === r.img.sha256)!;
  const importerNc = await rig.nats.connectAs('importer');
  t.teardown(() => importerNc.close());
  await importerNc.jetstream().publish('image.imported', Buffer.from(JSON.stringify(imported)), { msgID: `again-${imported.id}` });
  await svcs.get('ima')!.waitForLog((x) => x.msg === 'already labelled from this image and intact; not unpacking again' && (x.image as { digest?: string })?.digest === r.img.sha256, 60_000);
  await quiet();
  const after = await stat(labeled.data.rootfs);
  t.is(after.ino, before.ino, 'the rootfs was not replaced');
  t.is((await stored(rig.adminNc, 'ima.labeled')).filter((e) => e.data.image.digest === r.img.sha256).length, 1);
});
