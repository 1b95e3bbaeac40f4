import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync, lstatSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, makeTar, sha256 } from './helpers/images.ts';
import { Ima, type LabelInput } from '../services/ima/ima.ts';
import { HashPool } from '../services/ima/hashpool.ts';
import { loadOrCreateManifestKey, readManifestPublicKey } from '../services/ima/keys.ts';
import { loadOrCreateSigningKey } from '../services/ima/digsig.ts';
import { readManifest, manifestPath } from '../services/lib/manifest.ts';
import { defaultLimits } from '../services/lib/policy.ts';
import { silentLogger } from '../services/lib/log.ts';
import { isSealkitError } from '../services/lib/errors.ts';
import { containerName } from '../services/lib/rootfs/names.ts';

// A real multi-layer image archive (whiteouts, an opaque directory) is
// unpacked into the container store, every file labelled with the digest
// taken from the verified tar stream, and a signed manifest written.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-ima-unpack-'));
const pool = new HashPool(2);
test.after.always(async () => {
  await pool.close();
  rmSync(dir, { recursive: true, force: true });
});
const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

async function setup(name: string) {
  const imaDir = join(dir, name, 'ima');
  const store = join(dir, name, 'containers');
  const events: Array<{ subject: string; data: unknown }> = [];
  const key = await loadOrCreateManifestKey(imaDir, 'test-node');
  const ima = new Ima({
    imaDir,
    store,
    log: silentLogger,
    publish: async (subject, data) => void events.push({ subject, data }),
    manifestKey: key,
    pool,
    policy: () => null,
    signingKey: () => loadOrCreateSigningKey(imaDir, 'test-node'),
  });
  await ima.start();
  return { ima, imaDir, store, events };
}

function label(path: string): string {
  return spawnSync('getfattr', ['--absolute-names', '-h', '-n', 'security.ima', '-e', 'hex', path], { encoding: 'utf8' }).stdout.match(/security\.ima=(0x[0-9a-f]+)/)?.[1] ?? '';
}

let archives = 0;
async function imageOnDisk(format: 'oci' | 'docker', compression: 'none' | 'gzip' | 'zstd') {
  const img = await buildImage({
    name: 'sealkit/app',
    tag: 'v1',
    format,
    compression,
    layers: [
      { 'bin/app': '#!/bin/sh\necho v1\n', 'etc/conf': 'a=1\n', 'etc/old': 'gone soon\n', 'var/lib/x/one': '1\n', 'var/lib/x/two': '2\n' },
      { 'bin/app': '#!/bin/sh\necho v2\n', 'etc/old': null, 'var/lib/x/.wh..wh..opq': '', 'var/lib/x/three': '3\n', 'usr/share/big': Buffer.alloc(3 << 20, 7) },
    ],
  });
  const archive = join(dir, `archive-${format}-${compression}-${++archives}`);
  writeFileSync(archive, img.archive);
  const ev: LabelInput = {
    name: img.name,
    tag: img.tag,
    sha256: img.sha256,
    source: `file://${archive}`,
    manifestDigest: img.manifestDigest,
    policySerial: 3,
    archive: { path: archive, sha256: img.sha256, format: format === 'oci' ? 'oci-archive' : 'docker-archive', compression },
  };
  return { img, ev, archive };
}

const expected: Record<string, string | Buffer> = {
  'bin/app': '#!/bin/sh\necho v2\n',
  'etc/conf': 'a=1\n',
  'var/lib/x/three': '3\n',
  'usr/share/big': Buffer.alloc(3 << 20, 7),
};

for (const [format, compression] of [['oci', 'none'], ['docker', 'zstd']] as const) {
  test(`a ${format} archive (${compression}) unpacks with whiteouts applied, labels from the stream, and a signed manifest`, async (t) => {
    const { ima, imaDir, store, events } = await setup(`${format}-${compression}`);
    const { ev } = await imageOnDisk(format, compression);
    const done = await ima.label(ev, defaultLimits);
    t.truthy(done);
    const rootfs = done!.rootfs;
    t.is(rootfs, join(store, done!.container, 'rootfs'));
    t.regex(done!.container, /^sealkit-app-v1-[0-9a-f]{8}$/);

    // whiteout removed etc/old; the opaque dir hid one and two
    t.false(existsSync(join(rootfs, 'etc/old')));
    t.false(existsSync(join(rootfs, 'var/lib/x/one')));
    t.false(existsSync(join(rootfs, 'var/lib/x/two')));
    for (const [f, c] of Object.entries(expected)) {
      t.deepEqual(readFileSync(join(rootfs, f)), Buffer.from(c), f);
      t.is(label(join(rootfs, f)), `0x0404${sha(c)}`, `label of ${f}`);
    }
    t.is(lstatSync(join(rootfs, 'bin/app')).mode & 0o777, 0o755);
    // no staging directory left next to the rootfs
    t.deepEqual(readdirSync(join(store, done!.container)), ['rootfs']);

    const m = await readManifest(manifestPath(join(imaDir, 'manifests'), done!.container), await readManifestPublicKey(imaDir));
    t.deepEqual(m.files, Object.fromEntries(Object.entries(expected).map(([f, c]) => [f, `sha256:${sha(c)}`]).sort()));
    t.deepEqual(m.image, { name: 'sealkit/app', tag: 'v1', digest: ev.sha256 });
    t.is(m.policySerial, 3);

    const labeled = events.find((e) => e.subject === 'ima.labeled')!.data as Record<string, unknown>;
    t.like(labeled, { container: done!.container, rootfs, files: 4, policySerial: 3, image: { name: 'sealkit/app', tag: 'v1', digest: ev.sha256 } });
    t.is(labeled.bytes, Object.values(expected).reduce((n, c) => n + Buffer.from(c).length, 0));

    // a clean tree appraises clean
    t.deepEqual((await ima.verify(done!.container)).findings, []);
    await ima.stop();
  });
}

test('a manifest edited on disk is refused', async (t) => {
  const { ima, imaDir, events } = await setup('edited');
  const { ev } = await imageOnDisk('oci', 'none');
  const done = (await ima.label(ev, defaultLimits))!;
  const path = manifestPath(join(imaDir, 'manifests'), done.container);
  const signed = JSON.parse(readFileSync(path, 'utf8'));
  signed.manifest.files['bin/app'] = `sha256:${sha('#!/bin/sh\necho evil\n')}`;
  writeFileSync(path, JSON.stringify(signed));

  const err = await t.throwsAsync(readManifest(path, await readManifestPublicKey(imaDir)));
  t.true(isSealkitError(err, 'SEALKIT_MANIFEST_CORRUPT'));
  const viaVerify = await t.throwsAsync(ima.verify(done.container));
  t.true(isSealkitError(viaVerify, 'SEALKIT_MANIFEST_CORRUPT'), String(viaVerify));
  t.false(events.some((e) => e.subject === 'audit.tamper'), 'nothing is appraised against a forged manifest');
  await ima.stop();
});

test('an archive that changed in the cache since verification is not unpacked', async (t) => {
  const { ima, store } = await setup('changed');
  const { ev, archive } = await imageOnDisk('oci', 'none');
  const bytes = readFileSync(archive);
  bytes[bytes.length - 2000] ^= 0xff;
  writeFileSync(archive, bytes);
  const err = await t.throwsAsync(ima.label(ev, defaultLimits));
  t.true(isSealkitError(err, 'SEALKIT_DIGEST_MISMATCH'), String(err));
  for (const c of existsSync(store) ? readdirSync(store) : []) t.deepEqual(readdirSync(join(store, c)), [], 'no rootfs and no staging tree');
  await ima.stop();
});

test('a symlink left by a lower layer is never followed by a later layer', async (t) => {
  const { ima, store } = await setup('symlink');
  const outside = join(dir, 'outside');
  mkdirSync(outside);
  // a docker-archive by hand: layer 0 plants escape -> <host dir>, layer 1 writes escape/pwned
  const l0 = await makeTar([{ name: 'escape', type: 'symlink', linkname: outside }]);
  const l1 = await makeTar([{ name: 'escape/pwned', content: 'owned\n' }]);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(l0)}`, `sha256:${sha256(l1)}`] } }));
  const archive = await makeTar([
    { name: 'manifest.json', content: JSON.stringify([{ Config: `${sha256(config)}.json`, RepoTags: ['sealkit/evil:v1'], Layers: ['l0/layer.tar', 'l1/layer.tar'] }]) },
    { name: `${sha256(config)}.json`, content: config },
    { name: 'l0/layer.tar', content: l0 },
    { name: 'l1/layer.tar', content: l1 },
  ]);
  const path = join(dir, 'evil.tar');
  writeFileSync(path, archive);
  const digest = sha256(archive);
  const err = await t.throwsAsync(ima.label({ name: 'sealkit/evil', tag: 'v1', sha256: digest, policySerial: 1, archive: { path, sha256: digest } }, defaultLimits));
  t.true(isSealkitError(err, 'SEALKIT_ARCHIVE_UNSAFE'), String(err));
  t.deepEqual(readdirSync(outside), [], 'nothing was written outside the rootfs');
  for (const c of readdirSync(store)) t.deepEqual(readdirSync(join(store, c)), [], 'the staging tree was removed');
  await ima.stop();
});

test('what a run killed mid-unpack left next to the rootfs is removed by the next labelling', async (t) => {
  const { ima, store } = await setup('killed');
  const { ev } = await imageOnDisk('oci', 'none');
  const container = containerName(ev.name, ev.tag);
  for (const left of ['.rootfs.unpack-0badf00d', '.rootfs.unpack-0badf00d.old']) mkdirSync(join(store, container, left, 'bin'), { recursive: true });
  const done = (await ima.label(ev, defaultLimits))!;
  t.deepEqual(readdirSync(join(store, done.container)), ['rootfs']);
  await ima.stop();
});
