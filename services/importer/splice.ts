import { assertUnchanged, type CheckedArchive } from './archive.ts';
import { StripNames } from './names.ts';
import { indexTar } from './tarindex.ts';

// An uncompressed archive sent as it lies in the checked file, from reused
// buffers, with only its index.json / manifest.json entries rewritten (the
// names it carries about itself removed, by the same filter as the
// streaming path): no stream machinery and no fresh buffer per megabyte.

const CHUNK = 1 << 20;
const BLOCK = 512;

export async function sendStripped(c: CheckedArchive, write: (b: Buffer) => Promise<void>): Promise<void> {
  const what = `archive ${c.archive.path}`;
  const tar = await indexTar(c.fh, c.archive.size, `cached archive ${c.archive.path} for ${c.image}`);
  const metas = ['manifest.json', 'index.json'].flatMap((n) => tar.files.get(n) ?? []).sort((a, b) => a.start - b.start);
  const bufs = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
  const pending: Array<Promise<void>> = [Promise.resolve(), Promise.resolve()];
  let i = 0;
  const copy = async (from: number, to: number) => {
    for (let off = from; off < to; off += CHUNK, i++) {
      const n = Math.min(CHUNK, to - off);
      await pending[i % 2];
      const buf = bufs[i % 2];
      await c.fh.read(buf, 0, n, off);
      pending[i % 2] = write(buf.subarray(0, n));
    }
    await Promise.all(pending);
  };
  let pos = 0;
  for (const m of metas) {
    const end = m.offset + Math.ceil(m.size / BLOCK) * BLOCK;
    await copy(pos, m.start);
    const region = Buffer.alloc(end - m.start);
    await c.fh.read(region, 0, region.length, m.start);
    const strip = new StripNames(what);
    const rewritten = await new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      strip.on('data', (d: Buffer) => parts.push(d));
      strip.once('end', () => resolve(Buffer.concat(parts)));
      strip.once('error', reject);
      strip.end(region);
    });
    await write(rewritten);
    pos = end;
  }
  await copy(pos, c.archive.size);
  await assertUnchanged(c);
}
