import test from 'ava';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startImportRig, outcomeOf, NS, type ImportRig } from './helpers/importer.ts';

// The importer against a real containerd: verified images land under
// name:tag in the policy's namespace, labelled with source and digest, with
// the manifest containerd reports equal to the one that was verified.

let rig: ImportRig;
let oci: BuiltImage;
let dockerGz: BuiltImage;
let ociZstd: BuiltImage;
let unlisted: BuiltImage;
let repinned: BuiltImage;
let movingV1: BuiltImage;
let movingV2: BuiltImage;

test.before(async () => {
  [oci, dockerGz, ociZstd, unlisted, repinned] = await Promise.all([
    buildImage({ name: 'sealkit/plain', tag: 'v1', format: 'oci' }),
    buildImage({ name: 'sealkit/legacy', tag: '2015', format: 'docker', compression: 'gzip', layers: [{ 'etc/motd': 'legacy\n' }, { 'bin/run': '#!/bin/sh\n' }] }),
    buildImage({ name: 'library/tiny', tag: 'zst', format: 'oci', compression: 'zstd' }),
    buildImage({ name: 'sealkit/stranger', tag: 'v1' }),
    buildImage({ name: 'sealkit/repinned', tag: 'v1', layers: [{ 'a': 'one' }] }),
  ]);
  [movingV1, movingV2] = await Promise.all([
    buildImage({ name: 'sealkit/moving', tag: 'stable', layers: [{ 'etc/version': '1\n' }] }),
    buildImage({ name: 'sealkit/moving', tag: 'stable', layers: [{ 'etc/version': '2\n' }] }),
  ]);
  rig = await startImportRig();
  for (const img of [oci, dockerGz, ociZstd, unlisted, repinned, movingV1, movingV2]) await rig.cache(img);
  await rig.setPolicy([{ img: oci }, { img: dockerGz }, { img: ociZstd }, { img: repinned, sha256: 'ab'.repeat(32) }, { img: movingV1 }]);
  await rig.startImporter();
});

test.after.always(async () => {
  await rig?.cleanup();
});

test.serial('an OCI archive is imported under name:tag with the verified manifest, labelled with source and digest', async (t) => {
  await rig.verified(oci);
  const ev = await outcomeOf(rig, oci, 'image.imported');
  t.is(ev.source.startsWith('sealkit/importer/'), true);
  t.deepEqual(ev.data.targets, [{ runtime: 'containerd', namespace: NS, ref: 'docker.io/sealkit/plain:v1', digest: oci.manifestDigest }]);
  t.is(ev.data.manifestDigest, oci.manifestDigest);
  t.is(ev.data.skipped, undefined);
  t.deepEqual(ev.data.archive, { path: rig.cachePath(oci), sha256: oci.sha256, format: 'oci-archive', compression: 'none' });

  const images = await rig.ctrImages();
  const img = images.find((i) => i.ref === 'docker.io/sealkit/plain:v1');
  t.truthy(img, JSON.stringify(images));
  t.is(img!.digest, oci.manifestDigest);
  t.regex(img!.labels, new RegExp(`sealkit\\.sha256=${oci.sha256}`));
  t.regex(img!.labels, /sealkit\.source=https:\/\/images\.example\/sealkit\/plain-v1\.tar/);
  // neither the staging name nor the name the archive carries inside itself
  t.deepEqual(images.map((i) => i.ref).filter((r) => r.includes('plain')), ['docker.io/sealkit/plain:v1']);
});

test.serial('a gzip-compressed docker-archive is imported with the config its manifest.json names', async (t) => {
  await rig.verified(dockerGz);
  const ev = await outcomeOf(rig, dockerGz, 'image.imported');
  const target = ev.data.targets[0];
  t.is(target.ref, 'docker.io/sealkit/legacy:2015');
  const manifest = JSON.parse(await rig.containerd.ctr(['content', 'get', target.digest], NS)) as { config: { digest: string }; layers: unknown[] };
  t.is(manifest.config.digest, dockerGz.configDigest);
  t.is(manifest.layers.length, 2);
  const refs = (await rig.ctrImages()).map((i) => i.ref);
  t.true(refs.includes('docker.io/sealkit/legacy:2015'));
  t.false(refs.some((r) => r.startsWith('sealkit-staging/')), refs.join(' '));
});

test.serial('a zstd-compressed OCI archive of a single-component name lands under docker.io/library', async (t) => {
  await rig.verified(ociZstd);
  const ev = await outcomeOf(rig, ociZstd, 'image.imported');
  t.is(ev.data.targets[0].ref, 'docker.io/library/tiny:zst');
  t.is(ev.data.targets[0].digest, ociZstd.manifestDigest);
});

test.serial('a second image.verified for an image already present is answered with skipped, not a second import', async (t) => {
  const before = (await rig.ctrImages()).find((i) => i.ref === 'docker.io/sealkit/plain:v1');
  const again = await rig.verified(oci);
  const ev = await rig.events.wait((e) => e.type === 'image.imported' && e.id === `${again.id}.imported`);
  t.true(ev.data.skipped);
  t.deepEqual(ev.data.targets, [{ runtime: 'containerd', namespace: NS, ref: 'docker.io/sealkit/plain:v1', digest: oci.manifestDigest }]);
  const imports = rig.importer!.logs().filter((r) => r.msg === 'importing into containerd' && r.sha256 === oci.sha256.slice(0, 12));
  t.is(imports.length, 1);
  t.deepEqual((await rig.ctrImages()).find((i) => i.ref === 'docker.io/sealkit/plain:v1'), before);
});

test.serial('an image the policy does not list is refused and nothing is imported', async (t) => {
  await rig.verified(unlisted);
  const ev = await outcomeOf(rig, unlisted, 'image.import_failed');
  t.is(ev.data.code, 'SEALKIT_IMAGE_UNKNOWN');
  t.regex(ev.data.reason, /sealkit\/stranger:v1/);
  t.false((await rig.ctrImages()).some((i) => i.ref.includes('stranger')));
});

test.serial('an image whose sha256 differs from the policy pin is refused and nothing is imported', async (t) => {
  await rig.verified(repinned);
  const ev = await outcomeOf(rig, repinned, 'image.import_failed');
  t.is(ev.data.code, 'SEALKIT_DIGEST_MISMATCH');
  t.false((await rig.ctrImages()).some((i) => i.ref.includes('repinned')));
});

test.serial('an event pointing outside the fetcher cache is refused', async (t) => {
  const ev = await rig.verified(oci, { archive: { path: '/etc/passwd', sha256: oci.sha256, size: oci.size } });
  const failed = await rig.events.wait((e) => e.type === 'image.import_failed' && e.id === `${ev.id}.import_failed.none`);
  t.is(failed.data.code, 'SEALKIT_BAD_REQUEST');
});

test.serial('a malformed image.verified is refused on image.import_failed naming the field, not imported', async (t) => {
  const ev = await rig.verified(oci, { archive: { path: rig.cachePath(oci), sha256: 'not-a-digest', size: oci.size } });
  const failed = await rig.events.wait((e) => e.type === 'image.import_failed' && e.id === `${ev.id}.import_failed.none`);
  t.is(failed.data.code, 'SEALKIT_BAD_REQUEST');
  t.regex(failed.data.reason, /image\.verified .*data\.archive\.sha256/);
  t.is(failed.data.name, oci.name);
});

test.serial('an event that hands over another archive than the pinned one is refused', async (t) => {
  const ev = await rig.verified(oci, { archive: { path: rig.cachePath(unlisted), sha256: unlisted.sha256, size: unlisted.size } });
  const failed = await rig.events.wait((e) => e.type === 'image.import_failed' && e.id === `${ev.id}.import_failed.none`);
  t.is(failed.data.code, 'SEALKIT_DIGEST_MISMATCH');
});

test.serial('a policy that pins a new digest for the same tag moves the tag to the new image', async (t) => {
  await rig.verified(movingV1);
  await outcomeOf(rig, movingV1, 'image.imported');
  await rig.setPolicy([{ img: movingV2 }]);
  await rig.verified(movingV2);
  const ev = await outcomeOf(rig, movingV2, 'image.imported');
  t.is(ev.data.skipped, undefined);
  const now = (await rig.ctrImages()).filter((i) => i.ref.includes('moving'));
  t.is(now.length, 1);
  t.is(now[0].digest, movingV2.manifestDigest);
  t.regex(now[0].labels, new RegExp(`sealkit\\.sha256=${movingV2.sha256}`));
});
