import test from 'ava';
import { existsSync } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage, sha256 } from './helpers/images.ts';
import { startRegistry, type Registry } from './helpers/registry.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';
import { startTogether } from './helpers/together.ts';

// The fetcher's cache collection, through the fetcher's core on a real bus
// with a real registry: a registry image is several cache files (manifest,
// the archive assembled from its blobs, the ref between them); only what no
// named image reaches goes, and a collection cut short leaves nothing the
// next one cannot finish.

let rig: FetcherRig;
let reg: Registry;
test.before(async () => {
  [rig, reg] = await startTogether(startFetcherRig(), startRegistry());
});
test.after.always(() => Promise.all([reg?.stop(), rig?.cleanup()]));

test.serial('a registry image no longer named loses its manifest, archive and ref; an image still named keeps them, its shared layer inside its own archive', async (t) => {
  const shared = { 'lib/shared.so': 'shared bytes\n' };
  const keep = await buildImage({ name: 'gc/reg-keep', layers: [shared, { 'bin/keep': 'keep\n' }] });
  const drop = await buildImage({ name: 'gc/reg-drop', layers: [shared, { 'bin/drop': 'drop\n' }] });
  t.is(keep.layers[0].digest, drop.layers[0].digest, 'the first layer is one blob for both');
  const entry = async (img: typeof keep) => {
    const digest = await reg.push(img, img.name);
    return { name: img.name, tag: 'v1', source: `oci://${reg.host}/${img.name}@${digest}`, sha256: digest.slice(7), allowHttp: true };
  };
  const [k, d] = [await entry(keep), await entry(drop)];
  const both = rig.policy({ images: [k, d] });
  const kept = await rig.fetcher.fetch(both.images[0], both);
  const dropped = await rig.fetcher.fetch(both.images[1], both);
  const before = new Set(await rig.cached());

  const only = rig.policy({ images: [k] });
  const event = rig.images.next((e) => e.type === 'image.collected' && e.data.image.name === drop.name);
  await rig.fetcher.alone(() => rig.fetcher.collect(only));
  const after = new Set(await rig.cached());
  const gone = [...before].filter((h) => !after.has(h)).sort();
  // drop's manifest and its assembled archive; blobs are cache files only inside an archive
  t.deepEqual(gone, [d.sha256, dropped.archive.sha256].sort());
  t.deepEqual([...after].sort(), [k.sha256, kept.archive.sha256].sort());
  t.false(existsSync(join(rig.fetcher.cache.refDir, d.sha256)));
  t.true(existsSync(join(rig.fetcher.cache.refDir, k.sha256)));
  const e = await event;
  t.like(e.data, { kind: 'cache', image: { name: drop.name, tag: 'v1', digest: d.sha256 }, policySerial: only.serial });
  t.deepEqual([...e.data.where].sort(), gone.map((h) => rig.fetcher.cache.path(h)).sort());

  // what is still named is used from the cache as it is: the same archive, no new file
  await reg.stop();
  const again = await rig.fetcher.fetch(only.images[0], only);
  t.is(again.archive.sha256, kept.archive.sha256);
  t.deepEqual(new Set(await rig.cached()), after);
  reg = await startRegistry();
});

test.serial('a collection cut short is finished by the next: the record outlives the files, a file no record names is swept', async (t) => {
  const img = await buildImage({ name: 'gc/url-drop', format: 'docker' });
  const file = join(rig.dir, 'url-drop.tar');
  await writeFile(file, img.archive);
  const named = rig.policy({ images: [{ name: img.name, tag: 'v1', source: `file://${file}`, sha256: img.sha256 }] });
  await rig.fetcher.fetch(named.images[0], named);
  // as a run killed between removing the archive and releasing its record leaves it
  await rm(rig.fetcher.cache.path(img.sha256));
  const stray = Buffer.from('left by nobody\n');
  await writeFile(rig.fetcher.cache.path(sha256(stray)), stray);

  const none = rig.policy({ images: [] });
  const event = rig.images.next((e) => e.type === 'image.collected' && e.data.image.name === img.name);
  await rig.fetcher.alone(() => rig.fetcher.collect(none));
  t.like((await event).data, { kind: 'cache', where: [], bytes: 0 });
  t.false(existsSync(rig.fetcher.cache.path(sha256(stray))));
  t.deepEqual(await readdir(rig.fetcher.cache.heldDir), []);

  // named again, it is verified again (not skipped as verified before) and announced
  const back = rig.policy({ images: [{ name: img.name, tag: 'v1', source: `file://${file}`, sha256: img.sha256 }] });
  const verified = rig.images.next((e) => e.type === 'image.verified' && e.data.name === img.name && e.data.policySerial === back.serial);
  await rig.fetcher.onPolicy(back);
  await verified;
  t.true(existsSync(rig.fetcher.cache.path(img.sha256)));
});
