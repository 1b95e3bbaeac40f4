import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startHttp, type TestServer, type Behaviour } from './helpers/http.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';

// A body of many MiB crosses many reads, blocks and waits on the disk: it
// must arrive whole however the server frames it.

let rig: FetcherRig;
let web: TestServer;
let img: BuiltImage;
test.before(async () => {
  rig = await startFetcherRig();
  web = await startHttp();
  img = await buildImage({ name: 'test/framing', format: 'docker', layers: [{ 'data/blob': randomBytes(24 * 1024 * 1024) }] });
});
test.after.always(async () => {
  await web?.close();
  await rig?.cleanup();
});

async function verified(t: any, path: string, b: Behaviour) {
  const url = web.route(path, b);
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source: url, sha256: img.sha256, allowHttp: true }] });
  const v = await rig.fetcher.fetch(policy.images[0], policy);
  t.is(v.sha256, img.sha256);
  t.is(v.size, img.archive.length);
  t.is(createHash('sha256').update(await readFile(v.archive.path)).digest('hex'), img.sha256);
  t.deepEqual(await rig.quarantined(), []);
  await rig.fetcher.cache.remove(img.sha256);
}

test.serial('a 24 MiB body framed by Content-Length is verified whole', async (t) => {
  await verified(t, '/length', { body: img.archive });
});

test.serial('a 24 MiB body in chunks is verified whole', async (t) => {
  await verified(t, '/chunked', { body: img.archive, chunked: true });
});
