import test from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { openImage } from '../services/lib/archive/index.ts';
import { buildImage } from './helpers/images.ts';
import { startRegistry, type Registry } from './helpers/registry.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';

let rig: FetcherRig;
let reg: Registry;
test.before(async () => {
  rig = await startFetcherRig();
  reg = await startRegistry();
});
test.after.always(async () => {
  await reg?.stop();
  await rig?.cleanup();
});

const limits = { maxArchiveEntries: 1000, maxUnpackedBytes: 1 << 24 };

test.serial('an image pinned by digest in a registry is fetched blob by blob into an OCI archive', async (t) => {
  const img = await buildImage({ name: 'test/reg', layers: [{ 'a': 'one' }, { 'b': 'two' }] });
  const digest = await reg.push(img, 'test/reg');
  const source = `oci://${reg.host}/test/reg@${digest}`;
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source, sha256: digest.slice(7), allowHttp: true }] });
  const verified = rig.images.next((e) => e.type === 'image.verified' && e.data.source === source);
  const got = await rig.fetcher.fetch(policy.images[0], policy);
  t.like((await verified).data, { sha256: digest.slice(7), format: 'oci-archive', compression: 'none', manifestDigest: digest });
  const opened = await openImage(got.archive.path, { limits });
  t.deepEqual(opened.layers.map((l) => l.diffId), img.layers.map((l) => l.diffId));
  // assembled deterministically: the same archive digest a second time, from the cache
  const again = await rig.fetcher.fetch(policy.images[0], policy);
  t.is(again.archive.sha256, got.archive.sha256);
});

test.serial('a registry blob whose bytes do not match its descriptor is refused', async (t) => {
  const img = await buildImage({ name: 'test/corrupt', layers: [{ 'c': 'three' }] });
  const digest = await reg.push(img, 'test/corrupt');
  const layer = img.layers[0];
  await writeFile(reg.blobPath(layer.digest), Buffer.alloc(layer.size, 0x41)); // same size, other bytes
  const source = `oci://${reg.host}/test/corrupt@${digest}`;
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source, sha256: digest.slice(7), allowHttp: true }] });
  const audit = rig.audit.next((e) => e.data.source === source);
  const err: any = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is(err.code, 'SEALKIT_DIGEST_MISMATCH', err.message);
  t.regex(err.message, new RegExp(`blob .*expected ${layer.digest}`));
  t.is((await audit).data.code, 'SEALKIT_DIGEST_MISMATCH');
  t.false((await rig.cached()).includes(layer.digest.slice(7)));
  t.deepEqual(await rig.quarantined(), []);
});

test.serial('one bad blob among several fetched at once refuses the image and leaves no archive, ref or quarantine file', async (t) => {
  // big layers beside a small bad one: they are still arriving when it fails
  const layers = [0, 1, 2, 3, 4, 5, 6].map((i) => ({ [`data/${i}.bin`]: i === 3 ? 'bad' : randomBytes(2 << 20) }));
  const img = await buildImage({ name: 'test/many', layers });
  const digest = await reg.push(img, 'test/many');
  const bad = img.layers[3];
  await writeFile(reg.blobPath(bad.digest), Buffer.alloc(bad.size, 0x42));
  const before = await rig.cached();
  const source = `oci://${reg.host}/test/many@${digest}`;
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source, sha256: digest.slice(7), allowHttp: true }] });
  const err: any = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is(err.code, 'SEALKIT_DIGEST_MISMATCH', err.message);
  t.regex(err.message, new RegExp(`blob .*expected ${bad.digest}`));
  // only the verified manifest stays; no archive, no ref from manifest to archive
  t.deepEqual((await rig.cached()).filter((h) => !before.includes(h)), [digest.slice(7)]);
  t.is(await rig.fetcher.cache.getRef(digest.slice(7)), undefined);
  t.deepEqual(await rig.quarantined(), []);

  // the blob repaired, the same fetch gives an archive holding every layer
  await writeFile(reg.blobPath(bad.digest), bad.blob);
  const got = await rig.fetcher.fetch(policy.images[0], policy);
  const opened = await openImage(got.archive.path, { limits: { maxArchiveEntries: 1000, maxUnpackedBytes: 1 << 26 } });
  t.deepEqual(opened.layers.map((l) => l.diffId), img.layers.map((l) => l.diffId));
  t.deepEqual(await rig.quarantined(), []);
});

test.serial('a digest the repository does not hold is a failed fetch, with nothing downloaded', async (t) => {
  const img = await buildImage({ name: 'test/pin', layers: [{ 'd': 'four' }] });
  await reg.push(img, 'test/pin');
  const other = await buildImage({ name: 'test/pin2', layers: [{ 'e': 'five' }] });
  const otherDigest = await reg.push(other, 'test/pin2');
  // ask repo test/pin for a digest that only test/pin2 has: the registry answers 404 (unknown manifest)
  const source = `oci://${reg.host}/test/pin@${otherDigest}`;
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source, sha256: otherDigest.slice(7), allowHttp: true }] });
  const err: any = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is(err.code, 'SEALKIT_FETCH_FAILED', err.message);
});
