import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { forEachLayerEntry, openImage, type ArchiveOptions } from '../../services/lib/archive/index.ts';
import { buildImage, compress, type Compression } from '../helpers/images.ts';
import { check, mutated, type Target } from './harness.ts';
import { entryList, rawEntry, tarBytes, type RawEntry } from './tar-gen.ts';
import { TreeModel } from './tree.ts';

// Whole image archives through openImage, then every layer of an accepted
// image through forEachLayerEntry. Properties: a result or a SEALKIT_*
// refusal; every admitted layer entry passes the TreeModel oracle; an image
// that openImage accepted unpacks without error (the verification pass and
// the unpack pass read the same bytes the same way); no decompressor child
// outlives the call.

export const LIMITS = { maxArchiveEntries: 64, maxUnpackedBytes: 1024 * 1024 };
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export function optionsOf(input: Uint8Array): ArchiveOptions {
  const h = createHash('sha256').update(input).digest();
  return { limits: LIMITS, what: 'fuzz image', allowAbsoluteSymlinks: (h[0] & 1) === 1, ref: h[1] & 1 ? { name: 'sealkit/test', tag: 'v1' } : undefined };
}

// ---------- seeds: real images from the test helpers ----------
const seeds: Buffer[] = [];
for (const format of ['oci', 'docker'] as const) {
  for (const compression of ['none', 'gzip', 'xz', 'zstd'] as const) {
    seeds.push((await buildImage({ format, compression })).archive);
  }
  seeds.push((await buildImage({ format, layerCompression: format === 'oci' ? 'none' : 'gzip', layers: [{ 'a/b': 'x', 'a/c': 'y' }, { 'a/b': null, 'bin/sh': '#!' }] })).archive);
}

// ---------- structured: hostile layers in a consistent image ----------
const ok = (name: string, content: string | Buffer): RawEntry => ({ name, type: '0', linkname: '', content: Buffer.isBuffer(content) ? content : Buffer.from(content) });
const dir = (name: string): RawEntry => ({ name, type: '5', linkname: '', content: Buffer.alloc(0) });

interface Tweak {
  path: string[];
  value: unknown;
}
const hostileValue = fc.constantFrom<unknown>(null, 0, -1, 1.5, 2 ** 53, '', 'x', 'sha256:' + '0'.repeat(64), 'sha256:ZZ', [], {}, [null], [{}], { digest: 'sha256:' + 'a'.repeat(64), size: 1 }, true, '../../etc/passwd', '/abs', 'manifest.json');
const tweak = fc.record({
  path: fc.array(fc.constantFrom('manifests', '0', '1', 'config', 'layers', 'digest', 'size', 'mediaType', 'rootfs', 'diff_ids', 'Config', 'Layers', 'RepoTags', 'annotations', 'platform', 'os', 'architecture', '__proto__'), { minLength: 1, maxLength: 4 }),
  value: hostileValue,
});
function applyTweak(doc: unknown, t: Tweak): unknown {
  const root = structuredClone(doc) as Record<string, unknown>;
  let o: Record<string, unknown> = root;
  // own properties only: a path through "__proto__" polluted Object.prototype (of the harness)
  for (const k of t.path.slice(0, -1)) {
    if (!Object.hasOwn(o, k) || o[k] === null || typeof o[k] !== 'object') return root;
    o = o[k] as Record<string, unknown>;
  }
  const last = t.path[t.path.length - 1];
  if (last === '__proto__') return root;
  o[last] = structuredClone(t.value); // the constants are shared across inputs: never hand one out to be mutated
  return root;
}

interface Spec {
  format: 'oci' | 'docker';
  layers: Array<{ entries: RawEntry[]; gzip: boolean; bomb: number; duplicate: boolean }>;
  outer: RawEntry[]; // hostile outer entries, mixed in
  tweaks: { index: Tweak[]; manifest: Tweak[]; config: Tweak[] };
  fixDigests: boolean;
  nested: boolean; // OCI: put the manifest behind a nested index
  compression: Compression;
}

function build(s: Spec): Buffer {
  const layers = s.layers.map((l) => {
    let tar = tarBytes(l.entries);
    if (l.bomb) tar = Buffer.concat([tarBytes([{ name: 'zeros', type: '0', linkname: '', content: Buffer.alloc(l.bomb) }], { trailer: false }), tar]);
    const blob = l.gzip ? gzipSync(tar) : tar;
    return { tar, blob, digest: sha(blob), diffId: `sha256:${sha(tar)}` };
  });
  let config: unknown = { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) } };
  for (const t of s.tweaks.config) config = applyTweak(config, t);
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = sha(configBytes);
  const out: RawEntry[] = [];
  if (s.format === 'oci') {
    let manifest: unknown = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configDigest}`, size: configBytes.length },
      layers: layers.map((l, i) => ({ mediaType: s.layers[i].gzip ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${l.digest}`, size: l.blob.length })),
    };
    for (const t of s.tweaks.manifest) manifest = applyTweak(manifest, t);
    const mBytes = Buffer.from(JSON.stringify(manifest));
    let top = { bytes: mBytes, digest: sha(mBytes) };
    const blobs: Array<[string, Buffer]> = [[top.digest, mBytes]];
    if (s.nested) {
      const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${top.digest}`, size: mBytes.length, platform: { os: 'linux', architecture: 'amd64' } }] }));
      top = { bytes: idx, digest: sha(idx) };
      blobs.push([top.digest, idx]);
    }
    let index: unknown = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${top.digest}`, size: top.bytes.length, annotations: { 'org.opencontainers.image.ref.name': 'v1', 'io.containerd.image.name': 'sealkit/test:v1' } }] };
    for (const t of s.tweaks.index) index = applyTweak(index, t);
    out.push(ok('oci-layout', '{"imageLayoutVersion":"1.0.0"}'), ok('index.json', JSON.stringify(index)), dir('blobs/'), dir('blobs/sha256/'));
    for (const [d, b] of blobs) out.push(ok(`blobs/sha256/${s.fixDigests ? d : sha(Buffer.from(d))}`, b));
    out.push(ok(`blobs/sha256/${configDigest}`, configBytes));
    layers.forEach((l, i) => {
      if (s.layers[i].duplicate) out.push(ok(`blobs/sha256/${l.digest}`, gzipSync(tarBytes([ok('unverified', 'x')]))));
      out.push(ok(`blobs/sha256/${l.digest}`, l.blob));
    });
  } else {
    let manifest: unknown = [{ Config: `${configDigest}.json`, RepoTags: ['sealkit/test:v1'], Layers: layers.map((l) => `${l.digest}/layer.tar`) }];
    for (const t of s.tweaks.manifest) manifest = applyTweak(manifest, t);
    out.push(ok('manifest.json', JSON.stringify(manifest)), ok(`${configDigest}.json`, configBytes));
    layers.forEach((l, i) => {
      out.push(dir(`${l.digest}/`));
      if (s.layers[i].duplicate) out.push(ok(`${l.digest}/layer.tar`, tarBytes([ok('unverified', 'x')])));
      out.push(ok(`${l.digest}/layer.tar`, l.blob));
    });
  }
  // hostile outer entries at random places
  for (const [i, e] of s.outer.entries()) out.splice((i * 7919) % (out.length + 1), 0, e);
  return compress(tarBytes(out), s.compression);
}

const outerHostile = fc.oneof(
  rawEntry,
  fc.constantFrom<RawEntry>(
    { name: 'manifest.json', type: '2', linkname: '../manifest.json', content: Buffer.alloc(0) },
    { name: 'index.json', type: '2', linkname: 'oci-layout', content: Buffer.alloc(0) },
    { name: 'index.json', type: '1', linkname: 'oci-layout', content: Buffer.alloc(0) },
    { name: 'blobs', type: '2', linkname: '.', content: Buffer.alloc(0) },
    { name: 'oci-layout', type: '0', linkname: '', content: Buffer.from('{}') },
  ).map((e) => Object.freeze({ ...e }) as RawEntry),
);
const spec: fc.Arbitrary<Spec> = fc.record({
  format: fc.constantFrom('oci', 'docker'),
  layers: fc.array(fc.record({ entries: entryList, gzip: fc.boolean(), bomb: fc.constantFrom(0, 0, 0, 0, 0, 0, 0, 2 * 1024 * 1024), duplicate: fc.constantFrom(false, false, false, false, false, false, true) }), { minLength: 0, maxLength: 3 }),
  outer: fc.oneof({ weight: 3, arbitrary: fc.constant([] as RawEntry[]) }, { weight: 1, arbitrary: fc.array(outerHostile, { maxLength: 3 }) }),
  tweaks: fc.oneof(
    { weight: 3, arbitrary: fc.constant({ index: [] as Tweak[], manifest: [] as Tweak[], config: [] as Tweak[] }) },
    { weight: 1, arbitrary: fc.record({ index: fc.array(tweak, { maxLength: 2 }), manifest: fc.array(tweak, { maxLength: 2 }), config: fc.array(tweak, { maxLength: 2 }) }) },
  ),
  fixDigests: fc.constantFrom(true, true, true, true, false),
  nested: fc.constantFrom(false, false, false, true),
  compression: fc.constantFrom<Compression>('none', 'none', 'none', 'gzip', 'gzip', 'xz', 'zstd'),
});

const seedArb = fc.constantFrom(...seeds.map((s) => new Uint8Array(s)));
const structured = spec.map((s) => new Uint8Array(build(s)));

// ---------- the run ----------
const dirTmp = mkdtempSync(join(tmpdir(), 'sealkit-fuzz-archive-'));
process.on('exit', () => rmSync(dirTmp, { recursive: true, force: true }));
const file = join(dirTmp, 'image.tar');

function decompressorChildren(): number[] {
  const pids: number[] = [];
  for (const tid of readdirSync('/proc/self/task')) {
    for (const p of readFileSync(`/proc/self/task/${tid}/children`, 'utf8').split(' ').filter(Boolean)) {
      try {
        const comm = readFileSync(`/proc/${p}/comm`, 'utf8').trim();
        if (comm === 'xz' || comm === 'zstd') pids.push(Number(p));
      } catch {
        // already gone
      }
    }
  }
  return pids;
}

async function noChildrenLeft(): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (decompressorChildren().length === 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  check(false, `decompressor children left running: ${decompressorChildren().join(', ')}`);
}

export const target: Target = {
  name: 'archive',
  timeoutMs: 30_000,
  arbitrary: () => fc.oneof({ weight: 5, arbitrary: structured }, { weight: 2, arbitrary: mutated(seedArb, 6) }, { weight: 2, arbitrary: mutated(structured, 4) }, { weight: 1, arbitrary: seedArb }),
  async run(input) {
    writeFileSync(file, input);
    const opts = optionsOf(input);
    try {
      const image = await openImage(file, opts);
      check(image.format === 'oci-archive' || image.format === 'docker-archive', 'format');
      check(image.config && typeof image.config === 'object', 'config');
      for (const l of image.layers) {
        check(/^sha256:[0-9a-f]{64}$/.test(l.digest) && /^sha256:[0-9a-f]{64}$/.test(l.diffId), `layer ${l.index} digests ${l.digest} ${l.diffId}`);
      }
      for (const l of image.layers) {
        const model = new TreeModel(opts.allowAbsoluteSymlinks ?? false);
        try {
          await forEachLayerEntry(file, { ...opts, image }, l.index, async (h, body) => {
            model.admit(h);
            for await (const _ of body as AsyncIterable<Buffer>) {
              // read it all, as the unpacker does
            }
          });
        } catch (err) {
          check(false, `openImage accepted the image but layer ${l.index} fails to unpack: ${(err as Error).message}`);
        }
        check(model.entries <= LIMITS.maxArchiveEntries && model.bytes <= LIMITS.maxUnpackedBytes, `layer ${l.index}: ${model.entries} entries, ${model.bytes} bytes past the limits`);
      }
    } finally {
      await noChildrenLeft();
    }
  },
};
