import test from 'ava';
import { randomBytes } from 'node:crypto';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startImportRig, outcomeOf, stored, type ImportRig } from './helpers/importer.ts';

// Crash safety: an import interrupted by a dead containerd or a killed
// importer leaves nothing under the final name, and completes exactly once
// when the runtime or the service is back.

let rig: ImportRig;
let early: BuiltImage;
let whileDown: BuiltImage;
let bigA: BuiltImage;
let bigB: BuiltImage;

const big = (name: string) =>
  buildImage({ name, tag: 'v1', layerCompression: 'none', layers: [{ 'data/blob': randomBytes(48 << 20) }, { 'etc/motd': name }] });

test.before(async () => {
  [early, whileDown, bigA, bigB] = [
    await buildImage({ name: 'sealkit/early', tag: 'v1' }),
    await buildImage({ name: 'sealkit/while-down', tag: 'v1', format: 'docker' }),
    await big('sealkit/big-a'),
    await big('sealkit/big-b'),
  ];
  // a short ack_wait, so a message held by a killed importer comes back within the test
  rig = await startImportRig({ env: { SEALKIT_IMPORTER_ACK_WAIT_MS: '4000' } });
  for (const img of [early, whileDown, bigA, bigB]) await rig.cache(img);
  await rig.setPolicy([{ img: early }, { img: whileDown }, { img: bigA }, { img: bigB }]);
  await rig.startImporter();
});

test.after.always(async () => {
  await rig?.cleanup();
});

const refsOf = async () => (await rig.ctrImages()).map((i) => i.ref);

test.serial('with containerd stopped the import waits, and completes when containerd is back', async (t) => {
  await rig.containerd.stop();
  await rig.verified(early);
  await rig.importer!.waitForLog((r) => r.msg === 'runtime unavailable; retrying the import' && r.code === 'SEALKIT_UNAVAILABLE');
  t.is(rig.events.of('image.imported').length, 0);
  t.is(rig.events.of('image.import_failed').length, 0);
  await rig.containerd.start();
  const ev = await outcomeOf(rig, early, 'image.imported', 30_000);
  t.is(ev.data.targets[0].digest, early.manifestDigest);
  t.true((await refsOf()).includes('docker.io/sealkit/early:v1'));
});

test.serial('an image verified while the importer is down is imported when it starts', async (t) => {
  await rig.importer!.stop();
  await rig.verified(whileDown);
  t.is(rig.events.of('image.imported').filter((e) => e.data.name === whileDown.name).length, 0);
  await rig.startImporter();
  const ev = await outcomeOf(rig, whileDown, 'image.imported');
  t.is(ev.data.targets[0].ref, 'docker.io/sealkit/while-down:v1');
});

test.serial('containerd killed in the middle of an import leaves nothing under the tag; the import completes after restart', async (t) => {
  const seen = rig.importer!.logs().length;
  await rig.verified(bigA);
  await rig.importer!.waitForLog((r) => r.msg === 'importing into containerd' && r.image === 'sealkit/big-a:v1');
  await rig.containerd.stop('SIGKILL');
  await rig.importer!.waitForLog((r) => rig.importer!.logs().indexOf(r) > seen && r.msg === 'runtime unavailable; retrying the import');
  // the importer goes down too, so the state containerd comes back with can be inspected
  await rig.importer!.stop();
  await rig.containerd.start();
  t.false((await refsOf()).includes('docker.io/sealkit/big-a:v1'));

  await rig.startImporter();
  const ev = await outcomeOf(rig, bigA, 'image.imported', 60_000);
  t.is(ev.data.targets[0].digest, bigA.manifestDigest);
  const refs = await refsOf();
  t.true(refs.includes('docker.io/sealkit/big-a:v1'));
  t.false(refs.some((r) => r.startsWith('sealkit-staging/')), refs.join(' '));
});

test.serial('the importer killed in the middle of an import completes it once after a restart', async (t) => {
  await rig.verified(bigB);
  await rig.importer!.waitForLog((r) => r.msg === 'importing into containerd' && r.image === 'sealkit/big-b:v1');
  await rig.importer!.stop('SIGKILL');
  t.false((await refsOf()).includes('docker.io/sealkit/big-b:v1'));

  const restarted = await rig.startImporter();
  await restarted.waitForLog((r) => r.msg === 'resuming an interrupted import');
  const ev = await outcomeOf(rig, bigB, 'image.imported', 60_000);
  t.is(ev.data.targets[0].digest, bigB.manifestDigest);
  // the message the killed importer never acked comes back after ack_wait:
  // recognised from the journal, acked, and not published again
  await restarted.waitForLog((r) => r.msg === 'image.verified already handled; acknowledging it again' && r.image === 'sealkit/big-b:v1', 20_000);
  const refs = await refsOf();
  t.true(refs.includes('docker.io/sealkit/big-b:v1'));
  t.false(refs.some((r) => r.startsWith('sealkit-staging/')), refs.join(' '));
  const kept = (await stored(rig.adminNc, 'image.imported')).filter((e) => e.data.name === bigB.name);
  t.is(kept.length, 1);
});
