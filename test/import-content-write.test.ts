import test from 'ava';
import { buildImage, sha256, type BuiltImage } from './helpers/images.ts';
import { startImportRig, outcomeOf, NS, type ImportRig } from './helpers/importer.ts';

// An uncompressed archive is written into containerd's content store by the
// importer itself (Content.Write under a lease), not by `ctr images import`:
// the image must be the one ctr would have made, and a refused import must
// leave no content behind once containerd collects garbage.

let rig: ImportRig;
let plain: BuiltImage;
let lying: BuiltImage;
let big = '';

test.before(async () => {
  big = 'z'.repeat(3 * 1024 * 1024 + 123); // more than one write message
  plain = await buildImage({ name: 'sealkit/written', tag: 'v1', format: 'docker', layers: [{ 'opt/big': big }, { 'etc/motd': 'hi\n' }] });
  // manifest.json names the config by a digest its bytes do not have; the
  // archive itself is what was verified (its own sha256 is pinned)
  const built = await buildImage({ name: 'sealkit/lying', tag: 'v1', format: 'docker', layers: [{ 'opt/other': 'q'.repeat(2 * 1024 * 1024) }] });
  const bytes = Buffer.from(built.archive);
  const at = bytes.indexOf('sealkit test');
  bytes[at] = 'S'.charCodeAt(0);
  lying = { ...built, archive: bytes, sha256: sha256(bytes), size: bytes.length };
  rig = await startImportRig();
  await rig.cache(plain);
  await rig.cache(lying);
  await rig.setPolicy([{ img: plain }, { img: lying }]);
  await rig.startImporter();
});

test.after.always(async () => {
  await rig?.cleanup();
});

// a synchronous garbage collection: containerd runs one when a lease is removed with --sync
async function collectGarbage(ns: string): Promise<void> {
  const id = (await rig.containerd.ctr(['leases', 'create'], ns)).trim();
  await rig.containerd.ctr(['leases', 'rm', '--sync', id], ns);
}

const contentDigests = async (ns: string) =>
  (await rig.containerd.ctr(['content', 'ls', '-q'], ns)).split('\n').filter(Boolean);

test.serial('an uncompressed docker-archive gets the manifest ctr images import gives it, complete after garbage collection', async (t) => {
  await rig.verified(plain);
  const ev = await outcomeOf(rig, plain, 'image.imported');
  const ours = ev.data.targets[0].digest;
  // the same file through containerd's own importer, in another namespace
  await rig.containerd.ctr(['images', 'import', '--no-unpack', rig.cachePath(plain)], 'reference');
  const theirs = (await rig.containerd.ctr(['images', 'ls'], 'reference')).split('\n')[1].split(/\s+/)[2];
  t.is(ours, theirs);
  await collectGarbage(NS);
  const check = await rig.containerd.ctr(['images', 'check'], NS);
  t.regex(check, /docker\.io\/sealkit\/written:v1\s+\S+\s+\S+\s+complete \(3\/3\)/);
  const manifest = JSON.parse(await rig.containerd.ctr(['content', 'get', ours], NS)) as { config: { digest: string }; layers: Array<{ digest: string; size: number }> };
  t.is(manifest.config.digest, plain.configDigest);
  t.deepEqual(manifest.layers.map((l) => l.digest), plain.layers.map((l) => l.digest));
  t.false((await rig.containerd.ctr(['leases', 'ls', '-q'], NS)).includes('sealkit-import-'), 'the import lease is gone');
});

test.serial('a blob that does not hash to the digest it is named by is refused by containerd, and nothing written stays', async (t) => {
  await rig.verified(lying);
  const ev = await outcomeOf(rig, lying, 'image.import_failed');
  t.is(ev.data.code, 'SEALKIT_DIGEST_MISMATCH');
  t.is(ev.data.runtime, 'containerd');
  t.false((await rig.ctrImages()).some((i) => i.ref.includes('lying')));
  await collectGarbage(NS);
  const left = await contentDigests(NS);
  // its layer was written before the config was refused: collected with the lease
  t.false(left.includes(lying.layers[0].digest), left.join(' '));
  t.false((await rig.containerd.ctr(['leases', 'ls', '-q'], NS)).includes('sealkit-import-'), 'the import lease is gone');
});
