import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, writeFile, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { StripNames } from '../services/importer/names.ts';

// The tar filter that keeps an archive's own names away from containerd must
// handle what real tools write: GNU tar in pax format with long names, and
// leave every other entry byte for byte as it was.

async function entries(buf: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const ex = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.set(h.name, Buffer.concat(chunks));
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.end(buf);
  await done;
  return out;
}

async function strip(buf: Buffer, chunk = 777): Promise<{ out: Buffer; filter: StripNames }> {
  const filter = new StripNames('test archive');
  const parts: Buffer[] = [];
  filter.on('data', (c: Buffer) => parts.push(c));
  const ended = new Promise((r) => filter.on('end', r));
  // odd chunk sizes: headers and bodies split across writes
  Readable.from((function* () {
    for (let i = 0; i < buf.length; i += chunk) yield buf.subarray(i, i + chunk);
  })()).pipe(filter);
  await ended;
  return { out: Buffer.concat(parts), filter };
}

test('names are removed from index.json and manifest.json written by GNU tar in pax format; other entries are unchanged', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-names-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const src = join(dir, 'src');
  const long = `blobs/sha256/${'d'.repeat(64)}/${'x'.repeat(120)}`;
  await mkdir(join(src, long, '..'), { recursive: true });
  await writeFile(join(src, long), Buffer.alloc(3000, 7));
  await writeFile(
    join(src, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ digest: 'sha256:' + 'a'.repeat(64), annotations: { 'io.containerd.image.name': 'victim/app:latest', 'org.opencontainers.image.ref.name': 'latest', keep: 'me' } }],
    }),
  );
  await writeFile(join(src, 'manifest.json'), JSON.stringify([{ Config: `${'c'.repeat(64)}.json`, RepoTags: ['victim/app:latest'], Layers: [] }]));
  execFileSync('tar', ['--format=pax', '-C', src, '-cf', join(dir, 'a.tar'), './index.json', 'manifest.json', long]);
  const original = await readFile(join(dir, 'a.tar'));

  const { out, filter } = await strip(original);
  const before = await entries(original);
  const after = await entries(out);
  const index = JSON.parse(after.get('index.json')!.toString());
  t.deepEqual(index.manifests[0].annotations, { keep: 'me' });
  t.deepEqual(JSON.parse(after.get('manifest.json')!.toString())[0].RepoTags, null);
  t.deepEqual(after.get(long), before.get(long));
  // what the archive said about itself stays available to the importer's checks
  t.is(filter.meta.manifest?.[0].Config, `${'c'.repeat(64)}.json`);
  t.is(filter.meta.index?.manifests?.[0].annotations?.['io.containerd.image.name'], 'victim/app:latest');
});

test('a truncated archive is an error, not a shorter import', async (t) => {
  const buf = await (async () => {
    const pack = tar.pack();
    pack.entry({ name: 'blob', size: 4096 }, Buffer.alloc(4096, 1));
    pack.finalize();
    const parts: Buffer[] = [];
    for await (const c of pack) parts.push(c as Buffer);
    return Buffer.concat(parts);
  })();
  const filter = new StripNames('truncated.tar');
  const failed = new Promise<Error>((resolve) => filter.on('error', resolve));
  filter.resume();
  filter.end(buf.subarray(0, 2048));
  const err = await failed;
  t.is((err as { code?: string }).code, 'SEALKIT_ARCHIVE_INVALID');
});
