import { open, type FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SealkitError } from '../lib/errors.ts';
import { short } from '../lib/digest.ts';
import { decompress, type ArchiveFormat, type Compression } from '../lib/archive/index.ts';
import { StripNames, type ArchiveMeta } from './names.ts';
import { sha256OfFile } from './sha256.ts';

export type { ArchiveFormat, Compression };

// The cached archive is trusted only as far as its digest: it is opened once,
// re-hashed right before import through that descriptor, and read for the
// import through the same descriptor, so a rename over the path changes
// nothing. A write to the file between the check and the end of the import
// changes its size or ctime, compared after every read, so a changed file is
// never promoted. (Hashing a second time during the import would cost a full
// SHA-256 pass on the node's CPU for nothing the fingerprint misses.)

export interface CachedArchive {
  path: string;
  sha256: string;
  size: number;
  format: ArchiveFormat;
  compression: Compression;
}

export interface CheckedArchive {
  archive: CachedArchive;
  image: string;
  fh: FileHandle;
  stamp: string; // inode, size, mtime and ctime when the digest matched
  close(): Promise<void>;
}

const stampOf = (st: { ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint }) => `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;

export async function recheck(a: CachedArchive, image: string, signal?: AbortSignal): Promise<CheckedArchive> {
  let fh: FileHandle;
  try {
    fh = await open(a.path, 'r');
  } catch (err) {
    throw new SealkitError('SEALKIT_CACHE_CORRUPT', `cached archive ${a.path} for ${image} cannot be read (${(err as Error).message}); fetch the image again`, { path: a.path });
  }
  try {
    const st = await fh.stat({ bigint: true });
    const before = stampOf(st);
    // the size as fstat saw it: a file growing or shrinking meanwhile changes the stamp
    const sha256 = await sha256OfFile(fh, signal).catch((err: Error) => {
      if (signal?.aborted) throw err;
      throw new SealkitError('SEALKIT_CACHE_CORRUPT', `cached archive ${a.path} for ${image} cannot be read (${err.message}); fetch the image again`, { path: a.path });
    });
    const got = { sha256, size: Number(st.size) };
    if (got.sha256 !== a.sha256 || got.size !== a.size) throw corrupt(a, image, got);
    if (stampOf(await fh.stat({ bigint: true })) !== before) throw changed(a, image);
    return { archive: a, image, fh, stamp: before, close: () => fh.close() };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

// The file is still the one whose digest matched (after reading it by offsets).
export async function assertUnchanged(c: CheckedArchive): Promise<void> {
  if (stampOf(await c.fh.stat({ bigint: true })) !== c.stamp) throw changed(c.archive, c.image);
}

function corrupt(a: CachedArchive, image: string, got: { sha256: string; size: number }): SealkitError {
  return new SealkitError(
    'SEALKIT_CACHE_CORRUPT',
    `cached archive ${a.path} for ${image} changed after verification: expected sha256 ${short(a.sha256)}… (${a.size} bytes), got ${short(got.sha256)}… (${got.size} bytes); nothing was imported — fetch the image again`,
    { path: a.path, expected: a.sha256, got: got.sha256 },
  );
}

function changed(a: CachedArchive, image: string): SealkitError {
  return new SealkitError(
    'SEALKIT_CACHE_CORRUPT',
    `cached archive ${a.path} for ${image} was written to while it was checked or imported; nothing was promoted — fetch the image again`,
    { path: a.path },
  );
}

export interface ImportStream {
  stream: Readable; // the uncompressed tar with embedded names removed
  meta: ArchiveMeta; // index.json / manifest.json as the archive had them
  // resolves when every byte was read and decompressed from the unchanged file
  finished: Promise<void>;
}

// The uncompressed tar, read from the checked descriptor, names stripped.
export function openArchive(c: CheckedArchive): ImportStream {
  const { archive: a, image } = c;
  const strip = new StripNames(`archive ${a.path}`);
  const read = c.fh.createReadStream({ start: 0, autoClose: false, highWaterMark: 1 << 20 });
  const decoded = pipeline(decompress(read, a.compression, `cached archive ${a.path} for ${image}`), strip);
  const finished = decoded.then(async () => {
    if (stampOf(await c.fh.stat({ bigint: true })) !== c.stamp) throw changed(a, image);
  });
  finished.catch(() => strip.destroy());
  return { stream: strip, meta: strip.meta, finished };
}
