import test from 'ava';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManifestIndex } from '../services/auditor/manifests.ts';
import { fileDigest, writeManifest, type LabelManifest } from '../services/lib/manifest.ts';
import { generateKey, writeKeyFiles } from '../services/lib/sign.ts';
import { silentLogger } from '../services/lib/log.ts';

// The auditor names container and image from the ima service's signed label
// manifests. In the VM a process opens a file of a rootfs the moment it is
// labelled, so the kernel's denial can arrive before ima.labeled or the
// directory watch has made the auditor read the new manifest.

const manifest = (dir: string, container: string): LabelManifest => ({
  version: 2,
  image: { name: 'sealkit/e2e', tag: '1.0', digest: 'a'.repeat(64) },
  container,
  rootfs: join(dir, 'containers', container, 'rootfs'),
  policySerial: 3,
  createdAt: new Date().toISOString(),
  files: { 'bin/app': fileDigest('b'.repeat(64)) },
});

test('a denial right after a manifest is written is mapped to its container, not reported without one', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-manifests-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const key = generateKey('node');
  const { publicPath } = await writeKeyFiles(key, join(dir, 'manifest-key'));
  const manifests = join(dir, 'manifests');
  await mkdir(manifests);
  const index = new ManifestIndex(manifests, publicPath, silentLogger);
  t.teardown(() => index.close());
  await index.reload();
  t.is(index.size, 0);

  for (const container of ['first-aaaa', 'second-bbbb']) {
    const m = manifest(dir, container);
    await writeManifest(manifests, m, key);
    // no reload, no waiting for the watch: the lookup itself must notice
    const owner = await index.lookup(join(m.rootfs, 'bin/app'), null);
    t.is(owner?.container, container);
    t.is(owner?.policySerial, 3);
    t.is(owner?.expectedSha256, 'b'.repeat(64));
  }

  // a file no manifest knows stays unmapped (and costs a stat, not a re-read)
  t.is(await index.lookup('/elsewhere/bin/sh', null), null);
});
