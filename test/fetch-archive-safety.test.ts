import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { forEachLayerEntry, openImage } from '../services/lib/archive/index.ts';
import { compress, makeTar, sha256, buildImage, type TarEntry } from './helpers/images.ts';
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

// An OCI layout tar whose single layer is the given (hostile) tar.
async function ociWithLayer(layerTar: Buffer, layerGzip = true): Promise<Buffer> {
  const blob = layerGzip ? gzipSync(layerTar) : layerTar;
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerTar)}`] } }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${sha256(blob)}`, size: blob.length }],
  }));
  const index = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha256(manifest)}`, size: manifest.length }] };
  return makeTar([
    { name: 'oci-layout', content: '{"imageLayoutVersion":"1.0.0"}' },
    { name: 'index.json', content: JSON.stringify(index) },
    { name: `blobs/sha256/${sha256(manifest)}`, content: manifest },
    { name: `blobs/sha256/${sha256(config)}`, content: config },
    { name: `blobs/sha256/${sha256(blob)}`, content: blob },
  ]);
}

async function refusedAfterDigest(t: any, label: string, archive: Buffer, code: string, limits: Record<string, unknown> = {}) {
  const url = web.route(`/${label}.tar`, { body: archive });
  const hex = sha256(archive);
  const policy = rig.policy({ images: [{ name: `test/${label}`, tag: 'v1', source: url, sha256: hex, allowHttp: true }], limits });
  const audit = rig.audit.next((e) => e.data.source === url);
  const err: any = await t.throwsAsync(rig.fetcher.fetch(policy.images[0], policy));
  t.is(err.code, code, err.message);
  t.like((await audit).data, { code, expectedSha256: hex });
  t.falsy(rig.images.events.find((e) => e.type === 'image.verified' && e.data.source === url));
  t.false((await rig.cached()).includes(hex), 'a refused archive does not stay in the cache');
  return err;
}

const file = (name: string, content = 'x'): TarEntry => ({ name, content });

test.serial('an archive entry that climbs out with .. is refused after a valid digest', async (t) => {
  const err = await refusedAfterDigest(t, 'outer-traversal', await makeTar([file('oci-layout'), file('../../etc/cron.d/evil')]), 'SEALKIT_ARCHIVE_UNSAFE');
  t.regex(err.message, /"\.\.\/\.\.\/etc\/cron\.d\/evil"/);
});

test.serial('a layer entry with an absolute name is refused', async (t) => {
  await refusedAfterDigest(t, 'layer-absolute', await ociWithLayer(await makeTar([file('/etc/passwd')])), 'SEALKIT_ARCHIVE_UNSAFE');
});

test.serial('a layer symlink that escapes the root is refused', async (t) => {
  const err = await refusedAfterDigest(t, 'layer-symlink', await ociWithLayer(await makeTar([{ name: 'usr/lib/x', type: 'symlink', linkname: '../../../../host' }])), 'SEALKIT_ARCHIVE_UNSAFE');
  t.regex(err.message, /leaves the archive root/);
});

test.serial('a layer with a device node is refused', async (t) => {
  const err = await refusedAfterDigest(t, 'layer-device', await ociWithLayer(await makeTar([{ name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 }])), 'SEALKIT_ARCHIVE_UNSAFE');
  t.regex(err.message, /block-device/);
});

test.serial('a layer that decompresses past maxUnpackedBytes is refused as a bomb', async (t) => {
  const bomb = await ociWithLayer(await makeTar([{ name: 'zeros', content: Buffer.alloc(4 << 20) }]));
  t.true(bomb.length < 64 * 1024);
  await refusedAfterDigest(t, 'layer-bomb', bomb, 'SEALKIT_ARCHIVE_UNSAFE', { maxUnpackedBytes: 1 << 20 });
});

test.serial('a whole archive that decompresses past the limit is refused as a bomb', async (t) => {
  const bomb = compress(Buffer.alloc(8 << 20), 'zstd'); // all zeros: a tar parser sees no end
  await refusedAfterDigest(t, 'outer-bomb', bomb, 'SEALKIT_ARCHIVE_UNSAFE', { maxUnpackedBytes: 1 << 20, maxArchiveEntries: 10 });
});

test.serial('a layer that does not match its diff_id is refused', async (t) => {
  const layer = await makeTar([file('a')]);
  const archive = (await ociWithLayer(layer)).toString('latin1').replace(sha256(layer), sha256(Buffer.from('other')));
  // the config changed, so its own digest no longer matches: refused either way, never verified
  await refusedAfterDigest(t, 'diffid', Buffer.from(archive, 'latin1'), 'SEALKIT_DIGEST_MISMATCH');
});

const limits = { maxArchiveEntries: 100, maxUnpackedBytes: 1 << 20 };

test('the guard refuses writing through a symlink and hardlinks to unknown files', async (t) => {
  for (const [label, entries] of [
    ['through-symlink', [{ name: 'l', type: 'symlink', linkname: '.' }, { name: 'l/m', type: 'symlink', linkname: '..' }]],
    ['hardlink', [{ name: 'h', type: 'link', linkname: 'etc/shadow' }]],
    ['absolute-symlink', [{ name: 'bin/sh', type: 'symlink', linkname: '/bin/busybox' }]],
  ] as Array<[string, TarEntry[]]>) {
    const path = join(rig.dir, `${label}.tar`);
    await writeFile(path, await ociWithLayer(await makeTar(entries)));
    const err: any = await t.throwsAsync(openImage(path, { limits }), undefined, label);
    t.is(err.code, 'SEALKIT_ARCHIVE_UNSAFE', label);
  }
});

test('a rootfs is streamed layer by layer, with rooted absolute symlinks when asked', async (t) => {
  const path = join(rig.dir, 'rooted.tar');
  await writeFile(path, await ociWithLayer(await makeTar([{ name: 'bin/', type: 'directory' }, file('bin/busybox', 'bb'), { name: 'bin/sh', type: 'symlink', linkname: '/bin/busybox' }])));
  const image = await openImage(path, { limits, allowAbsoluteSymlinks: true });
  const seen: string[] = [];
  await forEachLayerEntry(path, { limits, image, allowAbsoluteSymlinks: true }, 0, async (h, body) => {
    let text = '';
    for await (const c of body) text += c;
    seen.push(`${h.type}:${h.name}${text ? `=${text}` : ''}`);
  });
  t.deepEqual(seen, ['directory:bin', 'file:bin/busybox=bb', 'symlink:bin/sh']);
  const docker = await buildImage({ format: 'docker', compression: 'xz' });
  await writeFile(path, docker.archive);
  const opened = await openImage(path, { limits });
  t.is(opened.format, 'docker-archive');
  t.is(opened.layers[0].diffId, docker.layers[0].diffId);
});
