import test from 'ava';
import { buildImage, type BuiltImage } from './helpers/images.ts';
import { startHttp, type TestServer, type Behaviour } from './helpers/http.ts';
import { startFetcherRig, type FetcherRig } from './helpers/fetcher.ts';

let rig: FetcherRig;
let web: TestServer;
let img: BuiltImage;
test.before(async () => {
  rig = await startFetcherRig();
  web = await startHttp();
  img = await buildImage({ name: 'test/limits', layers: [{ 'data/blob': Buffer.alloc(64 * 1024, 7) }] });
});
test.after.always(async () => {
  await web?.close();
  await rig?.cleanup();
});

async function refused(t: any, path: string, b: Behaviour, code: string, extra: Record<string, unknown> = {}, limits: Record<string, unknown> = {}) {
  const url = web.route(path, b);
  const policy = rig.policy({ images: [{ name: img.name, tag: 'v1', source: url, sha256: img.sha256, allowHttp: true, ...extra }], limits });
  const audit = rig.audit.next((e) => e.data.source === url);
  const err = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is(err.code, code, err.message);
  t.like((await audit).data, { code, name: img.name, expectedSha256: img.sha256 });
  t.falsy(rig.images.events.find((e) => e.type === 'image.verified' && e.data.source === url));
  t.deepEqual(await rig.quarantined(), []);
  t.deepEqual(await rig.cached(), []);
  return err;
}

test.serial('a stream truncated without a length is rejected by its digest', async (t) => {
  await refused(t, '/truncated', { body: img.archive, truncateAt: 1000 }, 'SEALKIT_DIGEST_MISMATCH');
});

test.serial('a connection dropped mid-body is a failed fetch', async (t) => {
  await refused(t, '/dropped', { body: img.archive, dropAt: 2000 }, 'SEALKIT_FETCH_FAILED');
});

test.serial('a server that stalls is given up after the stall timeout', async (t) => {
  const started = Date.now();
  await refused(t, '/stalled', { body: img.archive, stallAt: 1000 }, 'SEALKIT_FETCH_TIMEOUT', {}, { stallTimeout: '300ms' });
  t.true(Date.now() - started < 5000);
});

test.serial('a download that exceeds the total time is given up', async (t) => {
  await refused(t, '/slow', { body: img.archive, stallAt: 1000 }, 'SEALKIT_FETCH_TIMEOUT', {}, { fetchTimeout: '300ms', stallTimeout: '10s' });
});

test.serial('a body larger than limits.maxImageBytes is refused from its announced length', async (t) => {
  await refused(t, '/big', { body: img.archive }, 'SEALKIT_SIZE_LIMIT', {}, { maxImageBytes: 4096 });
});

test.serial('a body without a length stops being read past the pinned size', async (t) => {
  const err = await refused(t, '/big-chunked', { body: img.archive, chunked: true }, 'SEALKIT_SIZE_LIMIT', { size: 4096 });
  t.regex(err.message, /pinned size of 4096/);
});
