import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import tar from 'tar-stream';
import { sniffCompression } from '../../services/lib/archive/compression.ts';
import { openArchive, recheck } from '../../services/importer/archive.ts';
import { StripNames } from '../../services/importer/names.ts';
import { SealkitError } from '../../services/lib/errors.ts';
import { buildImage, compress } from '../helpers/images.ts';
import { check, mutated, type Target } from './harness.ts';
import { rawEntry, tarBytes, type RawEntry } from './tar-gen.ts';

// The importer's read of a cached archive: decompression by the sniffed
// format and the StripNames tar filter. Properties: a stream or a SEALKIT_*
// error (never another kind, never a hang); the filter's output does not
// depend on how the input is chunked; when the input is a tar that
// tar-stream reads, the output is one too, with the same entries, and no
// embedded image name survives in index.json / manifest.json.

const seeds: Buffer[] = [];
for (const format of ['oci', 'docker'] as const) {
  for (const compression of ['none', 'gzip', 'xz', 'zstd'] as const) seeds.push((await buildImage({ format, compression })).archive);
}

const meta = (name: string, body: unknown): RawEntry => ({ name, type: '0', linkname: '', content: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)) });
const metaEntry = fc.oneof(
  fc.constant(meta('index.json', { manifests: [{ digest: 'sha256:' + 'a'.repeat(64), annotations: { 'io.containerd.image.name': 'evil/x:1', 'org.opencontainers.image.ref.name': '1', other: 'kept' } }] })),
  fc.constant(meta('manifest.json', [{ Config: 'c.json', RepoTags: ['evil/x:1'], Layers: [] }])),
  fc.constant(meta('./index.json', { manifests: [{ annotations: { 'io.containerd.image.name': 'evil/y:2' } }] })),
  fc.constantFrom('null', '[]', '{}', '"x"', '{"manifests":null}', '{"manifests":[null]}', '{"manifests":[{"annotations":null}]}', '[null]', '[1]', 'not json', '{"manifests":{"length":1}}').map((b) => meta('index.json', b)),
  fc.constantFrom('null', '{}', '[null]', '[1]', '"x"', '[[]]').map((b) => meta('manifest.json', b)),
);
const entries = fc.array(fc.oneof({ weight: 2, arbitrary: rawEntry }, { weight: 1, arbitrary: metaEntry }), { maxLength: 8 });
const structured = fc.tuple(entries, fc.boolean(), fc.constantFrom('none', 'none', 'none', 'gzip', 'xz', 'zstd') as fc.Arbitrary<'none' | 'gzip' | 'xz' | 'zstd'>).map(([e, trailer, c]) => new Uint8Array(compress(tarBytes(e, { trailer }), c)));
const seedArb = fc.constantFrom(...seeds.map((s) => new Uint8Array(s)));

const dir = mkdtempSync(join(tmpdir(), 'sealkit-fuzz-import-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'archive');

async function strip(buf: Buffer, chunk: number): Promise<{ out?: Buffer; code?: string }> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunk) chunks.push(buf.subarray(i, i + chunk));
  const s = new StripNames('fuzz');
  const out: Buffer[] = [];
  try {
    for await (const c of Readable.from(chunks).pipe(s) as AsyncIterable<Buffer>) out.push(c);
    return { out: Buffer.concat(out) };
  } catch (err) {
    if (err instanceof SealkitError) return { code: err.code };
    throw err;
  }
}

async function entriesOf(buf: Buffer): Promise<Array<{ name: string; type: string; size: number; body: Buffer }> | null> {
  const x = tar.extract();
  const list: Array<{ name: string; type: string; size: number; body: Buffer }> = [];
  try {
    Readable.from([buf]).pipe(x as unknown as NodeJS.WritableStream);
    for await (const e of x) {
      // only plain files: tar-stream never ends the body of a directory with a size
      if (e.header.type !== 'file' || e.header.size === undefined) return null;
      const parts: Buffer[] = [];
      for await (const c of e as AsyncIterable<Buffer>) parts.push(c);
      list.push({ name: e.header.name, type: e.header.type, size: e.header.size, body: Buffer.concat(parts) });
    }
    return list;
  } catch {
    return null;
  }
}

export const target: Target = {
  name: 'importer-archive',
  timeoutMs: 20_000,
  arbitrary: () => fc.oneof({ weight: 4, arbitrary: structured }, { weight: 2, arbitrary: mutated(seedArb, 6) }, { weight: 2, arbitrary: mutated(structured, 4) }, { weight: 1, arbitrary: seedArb }),
  async run(input) {
    const buf = Buffer.from(input);
    writeFileSync(file, buf);
    const compression = sniffCompression(buf.subarray(0, 6));
    const checked = await recheck({ path: file, sha256: createHash('sha256').update(buf).digest('hex'), size: buf.length, format: 'oci-archive', compression }, 'fuzz');
    try {
      const s = openArchive(checked);
      const drained = (async () => {
        for await (const _ of s.stream as AsyncIterable<Buffer>) {
          // read it all, as ctr import does
        }
      })();
      // as the importer does: the reading side's error names the cause
      const [a, b] = await Promise.allSettled([drained, s.finished]);
      if (b.status === 'rejected') throw b.reason;
      if (a.status === 'rejected') throw a.reason;
    } finally {
      await checked.close();
    }
    if (compression !== 'none') return;
    const h = createHash('sha256').update(buf).digest();
    const whole = await strip(buf, buf.length || 1);
    const pieces = await strip(buf, 1 + (h[0] % 4 === 0 ? 1 : h[1] * 5));
    check(whole.code === pieces.code && (whole.out === undefined) === (pieces.out === undefined) && (!whole.out || whole.out.equals(pieces.out!)), 'StripNames output depends on the input chunking');
    if (!whole.out) return;
    const before = await entriesOf(buf);
    if (!before) return;
    const after = await entriesOf(whole.out);
    check(after, 'StripNames turned a readable tar into an unreadable one');
    check(after.length === before.length, `StripNames changed the number of entries ${before.length} -> ${after.length}`);
    after.forEach((e, i) => {
      const b = before[i];
      const name = e.name.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
      check(name === b.name.replace(/^(\.\/)+/, '').replace(/^\/+/, ''), `entry ${i} renamed ${b.name} -> ${e.name}`);
      if (name === 'index.json' || name === 'manifest.json') {
        let doc: unknown;
        try {
          doc = JSON.parse(e.body.toString('utf8'));
        } catch {
          return;
        }
        const text = JSON.stringify(doc);
        check(!text.includes('"io.containerd.image.name"') && !text.includes('"org.opencontainers.image.ref.name"') && !/"RepoTags":\[/.test(text), `${name} still carries an image name: ${text.slice(0, 200)}`);
      } else check(e.body.equals(b.body), `entry ${i} (${name}) content changed`);
    });
  },
};
