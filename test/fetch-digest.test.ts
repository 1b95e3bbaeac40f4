import test from 'ava';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { readFile } from 'node:fs/promises';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DECOMPRESSOR_START } from '../services/lib/archive/index.ts';
import { sha256Hex } from '../services/lib/digest.ts';
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

const image = (name: string, source: string, sha256: string, extra: Record<string, unknown> = {}) => ({ name, tag: 'v1', source, sha256, allowHttp: true, ...extra });

for (const compression of ['none', 'gzip', 'xz', 'zstd'] as const) {
  test.serial(`a ${compression} archive served over http with the pinned digest is verified and cached`, async (t) => {
    const img = await buildImage({ name: `test/${compression}`, compression });
    const url = web.route(`/${compression}.tar`, { body: img.archive });
    const policy = rig.policy({ images: [image(img.name, url, img.sha256, { size: img.size })] });
    const verified = rig.images.next((e) => e.type === 'image.verified' && e.data.name === img.name);
    const got = await rig.fetcher.fetch(policy.images[0], policy);
    const ev = await verified;
    t.is(ev.data.sha256, img.sha256);
    t.is(ev.data.compression, compression);
    t.is(ev.data.format, 'oci-archive');
    t.is(ev.data.manifestDigest, img.manifestDigest);
    t.is(ev.data.policySerial, policy.serial);
    t.deepEqual(ev.data.archive, { path: got.archive.path, sha256: img.sha256, size: img.size });
    t.is(sha256Hex(await readFile(got.archive.path)), img.sha256);
    t.deepEqual(await rig.quarantined(), []);
  });
}

test.serial('a docker-archive from a file:// source is verified', async (t) => {
  const img = await buildImage({ name: 'test/docker-file', format: 'docker' });
  const path = join(rig.dir, 'docker.tar');
  await writeFile(path, img.archive);
  const policy = rig.policy({ images: [image(img.name, pathToFileURL(path).href, img.sha256, { allowHttp: false })] });
  const got = await rig.fetcher.fetch(policy.images[0], policy);
  t.is(got.format, 'docker-archive');
  t.is(got.manifestDigest, null);
});

test.serial('a wrong digest is rejected, reported on audit.rejected, and nothing is cached', async (t) => {
  const img = await buildImage({ name: 'test/wrong' });
  const other = await buildImage({ name: 'test/other', layers: [{ 'x': 'other' }] });
  const url = web.route('/wrong.tar', { body: other.archive });
  const policy = rig.policy({ images: [image(img.name, url, img.sha256)] });
  const audit = rig.audit.next((e) => e.data.name === img.name);
  const err = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is((err as any).code, 'SEALKIT_DIGEST_MISMATCH');
  t.regex(err!.message, new RegExp(`expected ${img.sha256}, got ${other.sha256}`));
  const ev = await audit;
  t.is(ev.type, 'audit.rejected');
  t.like(ev.data, { name: img.name, tag: 'v1', source: url, expectedSha256: img.sha256, actualSha256: other.sha256, code: 'SEALKIT_DIGEST_MISMATCH', policySerial: policy.serial });
  // image.rejected is published first, but it reaches the test on another
  // subscription, read by its own loop: wait for it by the image it names
  t.like((await rig.images.wait((e) => e.type === 'image.rejected' && e.data.name === img.name)).data, { name: img.name, code: 'SEALKIT_DIGEST_MISMATCH' });
  t.falsy(rig.images.events.find((e) => e.type === 'image.verified' && e.data.name === img.name));
  t.false((await rig.cached()).includes(img.sha256) || (await rig.cached()).includes(other.sha256));
  t.deepEqual(await rig.quarantined(), []);
});

test.serial('a malformed compressed stream with the wrong digest never reaches a decompressor', async (t) => {
  // every decompressor the fetcher starts, by the image it reads
  const started: Array<{ compression: string; what: string }> = [];
  const watch = (m: unknown) => started.push(m as { compression: string; what: string });
  subscribe(DECOMPRESSOR_START, watch);
  t.teardown(() => unsubscribe(DECOMPRESSOR_START, watch));
  // gzip magic, then garbage a zlib bug would love; and xz and zstd look-alikes
  for (const magic of ['1f8b0800', 'fd377a585a00', '28b52ffd']) {
    const evil = Buffer.concat([Buffer.from(magic, 'hex'), Buffer.alloc(4096, 0xee)]);
    const url = web.route(`/evil-${magic}`, { body: evil });
    const policy = rig.policy({ images: [image('test/evil-stream', url, 'a'.repeat(64))] });
    const err = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
    t.is((err as any).code, 'SEALKIT_DIGEST_MISMATCH');
    t.deepEqual(started, []);
  }
  // the watch is live: the same bytes pinned correctly do reach gzip, and fail there
  const evil = Buffer.concat([Buffer.from('1f8b0800', 'hex'), Buffer.alloc(4096, 0xee)]);
  const url = web.route('/evil-pinned', { body: evil });
  const policy = rig.policy({ images: [image('test/evil-pinned', url, sha256Hex(evil))] });
  const err = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is((err as any).code, 'SEALKIT_ARCHIVE_INVALID');
  t.deepEqual(started.map((s) => `${s.compression} ${s.what.split(':')[0]}`), ['gzip test/evil-pinned']);
});
