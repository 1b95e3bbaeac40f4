import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImage } from '../services/lib/archive/index.ts';
import { openArchive, recheck } from '../services/importer/archive.ts';
import { buildImage, sha256, type Compression } from './helpers/images.ts';

// The fetcher's check of an archive and the importer's read of the cache go
// through the same decompressor, so the same condition gets the same code
// from both: bytes that do not decompress are SEALKIT_ARCHIVE_INVALID; a
// node without xz or zstd is SEALKIT_CONFIG, whatever the archive holds.

const LIMITS = { maxArchiveEntries: 100, maxUnpackedBytes: 1 << 20 };

async function scratch(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-decompressor-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const code = (err: unknown) => (err as { code?: string }).code;

async function bothCodes(t: ExecutionContext, bytes: Buffer, compression: Compression, name: string): Promise<{ fetcher?: string; importer?: string }> {
  const path = join(await scratch(t), name);
  await writeFile(path, bytes);
  const fetcher = await openImage(path, { limits: LIMITS, what: name }).then(() => undefined, code);
  const checked = await recheck({ path, sha256: sha256(bytes), size: bytes.length, format: 'oci-archive', compression }, name);
  try {
    const s = openArchive(checked);
    s.stream.resume();
    s.stream.on('error', () => {}); // the outcome is read from finished, as the importer does
    return { fetcher, importer: await s.finished.then(() => undefined, code) };
  } finally {
    await checked.close();
  }
}

const MAGIC = { gzip: '1f8b0800', xz: 'fd377a585a00', zstd: '28b52ffd' } as const;

for (const [how, magic] of Object.entries(MAGIC) as Array<[keyof typeof MAGIC, string]>) {
  test(`${how} magic followed by garbage is SEALKIT_ARCHIVE_INVALID for the fetcher and the importer`, async (t) => {
    const bytes = Buffer.concat([Buffer.from(magic, 'hex'), Buffer.alloc(4096, 0xee)]);
    t.deepEqual(await bothCodes(t, bytes, how, `garbage.${how}`), { fetcher: 'SEALKIT_ARCHIVE_INVALID', importer: 'SEALKIT_ARCHIVE_INVALID' });
  });
}

for (const how of ['none', 'gzip', 'xz', 'zstd'] as const) {
  test(`a ${how} archive reads through the fetcher's check and the importer's read, and the importer can still stat its descriptor`, async (t) => {
    const img = await buildImage({ name: `test/${how}`, compression: how });
    t.deepEqual(await bothCodes(t, img.archive, how, `good.${how}`), { fetcher: undefined, importer: undefined });
  });
}

// ava runs serial tests before the others: PATH is back before they start
test.serial('a node without xz or zstd gets SEALKIT_CONFIG from the fetcher and the importer', async (t) => {
  const images = await Promise.all((['xz', 'zstd'] as const).map(async (how) => ({ how, img: await buildImage({ name: `test/${how}`, compression: how }) })));
  const path = process.env.PATH;
  process.env.PATH = await scratch(t);
  t.teardown(() => {
    process.env.PATH = path;
  });
  for (const { how, img } of images) {
    t.deepEqual(await bothCodes(t, img.archive, how, `tool-missing.${how}`), { fetcher: 'SEALKIT_CONFIG', importer: 'SEALKIT_CONFIG' }, how);
  }
});
