import test from 'ava';
import { appendFile } from 'node:fs/promises';
import { buildImage } from './helpers/images.ts';
import { startHttp, type TestServer } from './helpers/http.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';

let rig: FetcherRig;
let web: TestServer;
test.before(async () => {
  rig = await startFetcherRig();
  web = await startHttp();
});
test.after.always(async () => {
  await web?.close();
  await rig?.cleanup();
});

test('a cache hit is re-hashed: a file modified on disk is reported, discarded and fetched again', async (t) => {
  const img = await buildImage({ name: 'test/cached' });
  const source = web.route('/cached.tar', { body: img.archive });
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source, sha256: img.sha256, allowHttp: true }] });
  const first = await rig.fetcher.fetch(policy.images[0], policy);
  await rig.fetcher.fetch(policy.images[0], policy);
  t.is(web.hits('/cached.tar'), 1, 'an intact cache hit is not downloaded again');

  await appendFile(first.archive.path, 'tampered');
  const audit = rig.audit.next((e) => e.data.code === 'SEALKIT_CACHE_CORRUPT');
  const again = await rig.fetcher.fetch(policy.images[0], policy);
  const ev = await audit;
  t.like(ev.data, { name: img.name, expectedSha256: img.sha256, code: 'SEALKIT_CACHE_CORRUPT' });
  t.not(ev.data.actualSha256, img.sha256);
  t.is(web.hits('/cached.tar'), 2);
  t.is(again.archive.sha256, img.sha256);
});
