import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage } from './helpers/images.ts';
import { Ima } from '../services/ima/ima.ts';
import { HashPool } from '../services/ima/hashpool.ts';
import { loadOrCreateManifestKey, readManifestPublicKey } from '../services/ima/keys.ts';
import { loadOrCreateSigningKey } from '../services/ima/digsig.ts';
import { ManifestIndex } from '../services/auditor/manifests.ts';
import { readManifest, manifestPath, type SignedManifest } from '../services/lib/manifest.ts';
import { signDetached, type SecretKeyFile } from '../services/lib/sign.ts';
import { defaultLimits } from '../services/lib/policy.ts';
import { silentLogger } from '../services/lib/log.ts';
import { isSealkitError } from '../services/lib/errors.ts';

// Label manifests name each file's digest algorithm ("sha256:<hex>",
// version 2). A node upgraded in place keeps the version 1 manifests it
// wrote before (bare hex, SHA-256 by definition): they stay trusted as
// SHA-256, by the ima service and the auditor, until the container is
// labelled again.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-manifest-legacy-'));
const pool = new HashPool(2);
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
test.after.always(async () => {
  await pool.close();
  rmSync(dir, { recursive: true, force: true });
});

// What writeManifest wrote before version 2: the same envelope and signature
// domain, bare hex per file.
function writeV1(path: string, key: SecretKeyFile): void {
  const signed = JSON.parse(readFileSync(path, 'utf8')) as SignedManifest;
  const files = Object.fromEntries(Object.entries(signed.manifest.files).map(([f, d]) => [f, d.replace(/^sha256:/, '')]));
  const v1 = { ...signed.manifest, version: 1, files };
  writeFileSync(path, JSON.stringify({ manifest: v1, keyId: key.id, signature: signDetached('sealkit-manifest-v1', Buffer.from(JSON.stringify(v1)), key) }));
}

async function node(name: string) {
  const imaDir = join(dir, name, 'ima');
  const key = await loadOrCreateManifestKey(imaDir, 'node-legacy');
  const make = () => new Ima({
    imaDir,
    store: join(dir, name, 'containers'),
    log: silentLogger,
    publish: async () => {},
    manifestKey: key,
    pool,
    policy: () => null,
    signingKey: () => loadOrCreateSigningKey(imaDir, 'node-legacy'),
  });
  return { imaDir, key, make };
}

// A node that labelled one image (policy serial `serial`) and stopped.
async function labelled(name: string, serial: number) {
  const n = await node(name);
  const ima = n.make();
  await ima.start();
  const done = (await ima.label(await image(serial), defaultLimits))!;
  await ima.stop();
  return { ...n, done, path: manifestPath(join(n.imaDir, 'manifests'), done.container) };
}

async function image(serial: number): Promise<Parameters<Ima['label']>[0]> {
  const img = await buildImage({ name: 'sealkit/legacy', tag: 'v1', layers: [{ 'bin/app': '#!/bin/sh\necho app\n', 'etc/conf': 'a=1\n' }] });
  const archive = join(dir, `legacy-${serial}.tar`);
  writeFileSync(archive, img.archive);
  return { name: img.name, tag: img.tag, sha256: img.sha256, manifestDigest: img.manifestDigest, policySerial: serial, archive: { path: archive, sha256: img.sha256, format: 'oci-archive', compression: 'none' } };
}

test('a version 1 manifest is read as SHA-256 and appraised after a restart; relabelling writes version 2', async (t) => {
  const n = await labelled('upgrade', 1);
  const { done, path } = n;
  writeV1(path, n.key);

  const m = await readManifest(path, await readManifestPublicKey(n.imaDir));
  t.is(m.version, 2);
  t.is(m.files['bin/app'], `sha256:${sha256('#!/bin/sh\necho app\n')}`);

  // the upgraded service: the old manifest is picked up and appraises clean
  const upgraded = n.make();
  await upgraded.start();
  t.deepEqual(upgraded.list().map((x) => x.container), [done.container]);
  t.deepEqual((await upgraded.verify(done.container)).findings, []);
  writeFileSync(join(done.rootfs, 'etc/conf'), 'a=2\n');
  const { findings } = await upgraded.verify(done.container);
  t.like(findings, [{ file: 'etc/conf', kind: 'modified', expectedSha256: sha256('a=1\n'), actualSha256: sha256('a=2\n') }]);

  await upgraded.label(await image(2), defaultLimits);
  await upgraded.stop();
  const raw = JSON.parse(readFileSync(path, 'utf8')) as SignedManifest;
  t.is(raw.manifest.version, 2);
  t.is(raw.manifest.files['etc/conf'], `sha256:${sha256('a=1\n')}`);
});

test('the auditor maps a denial through a version 1 manifest with the expected SHA-256', async (t) => {
  const n = await labelled('auditor', 3);
  const { done } = n;
  writeV1(n.path, n.key);

  const index = new ManifestIndex(join(n.imaDir, 'manifests'), join(n.imaDir, 'manifest-key.pub'), silentLogger);
  t.teardown(() => index.close());
  await index.reload();
  const owner = await index.lookup(join(done.rootfs, 'bin/app'), null);
  t.like(owner, { container: done.container, expectedSha256: sha256('#!/bin/sh\necho app\n'), match: 'rootfs-prefix' });
});

test('a signed manifest whose digests do not name sha256, or of an unknown version, is refused', async (t) => {
  const n = await labelled('refused', 4);
  const { path } = n;
  const good = JSON.parse(readFileSync(path, 'utf8')) as SignedManifest;
  const resign = (manifest: unknown) => writeFileSync(path, JSON.stringify({ manifest, keyId: n.key.id, signature: signDetached('sealkit-manifest-v1', Buffer.from(JSON.stringify(manifest)), n.key) }));
  const pub = await readManifestPublicKey(n.imaDir);
  const hex = sha256('a=1\n');
  for (const manifest of [
    { ...good.manifest, files: { ...good.manifest.files, 'etc/conf': hex } }, // version 2 with bare hex
    { ...good.manifest, files: { ...good.manifest.files, 'etc/conf': `sha512:${hex}${hex}` } },
    { ...good.manifest, files: { ...good.manifest.files, 'etc/conf': `sha256:${hex.toUpperCase()}` } },
    { ...good.manifest, version: 3 },
    { ...good.manifest, version: 1 }, // version 1 with prefixed digests
  ]) {
    resign(manifest);
    const err = await t.throwsAsync(readManifest(path, pub));
    t.true(isSealkitError(err, 'SEALKIT_MANIFEST_CORRUPT'), `${JSON.stringify(manifest.version)} ${JSON.stringify(manifest.files['etc/conf'])}: ${String(err)}`);
  }
});
