import type { Hash } from 'node:crypto';
import { posix } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import tar, { type Header as TarHeaders } from 'tar-stream';
import { SealkitError } from '../errors.ts';
import { decompress, type Compression } from './compression.ts';

// Every tar sealkit walks — an outer archive and each layer — goes through
// the same guard: no absolute names or `..`, no symlink or hardlink that
// leaves the root, nothing written through a symlink, no device nodes or
// fifos, and limits on the number of entries and on the unpacked bytes, which
// also stops decompression bombs before they fill a disk.

export interface ArchiveLimits {
  maxArchiveEntries: number;
  maxUnpackedBytes: number;
}

/** Shared budget: one per archive, so many layers cannot add up past the limits. */
export interface Budget {
  entries: number;
  bytes: number;
}

/** A tar header after the guard: `name` is normalized, relative, without `./`. */
export type SafeHeader = TarHeaders & { name: string };

/**
 * Checks every tar header of one tar stream. One guard per tar (the names it
 * remembers are per tree); the budget may be shared across tars.
 */
export class EntryGuard {
  private readonly symlinks = new Set<string>();
  private readonly files = new Set<string>();

  constructor(
    private readonly limits: ArchiveLimits,
    private readonly what: string,
    private readonly budget: Budget = { entries: 0, bytes: 0 },
    private readonly allowAbsoluteSymlinks = false,
  ) {}

  private unsafe(name: string, why: string, data: Record<string, unknown> = {}): never {
    throw new SealkitError('SEALKIT_ARCHIVE_UNSAFE', `${this.what}: entry "${name}" ${why}; the image was refused`, { entry: name, ...data });
  }

  // Relative, normalized, no `..`: returns the parts.
  private parts(raw: string, entry: string, label: string): string[] {
    if (raw.includes('\0')) this.unsafe(entry, `has a NUL byte in its ${label}`);
    if (raw.startsWith('/')) this.unsafe(entry, `has an absolute ${label} "${raw}"`);
    const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
    if (parts.includes('..')) this.unsafe(entry, `has a ${label} "${raw}" that climbs out with ".."`);
    return parts;
  }

  check(h: TarHeaders): SafeHeader {
    const raw = h.name;
    if (++this.budget.entries > this.limits.maxArchiveEntries) {
      this.unsafe(raw, `is beyond the limit of ${this.limits.maxArchiveEntries} entries (limits.maxArchiveEntries)`, { limit: this.limits.maxArchiveEntries });
    }
    const parts = this.parts(raw, raw, 'name');
    const name = parts.join('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (this.symlinks.has(prefix)) this.unsafe(raw, `would be written through the symlink "${prefix}"`);
    }
    const size = h.size ?? 0;
    if (size < 0 || !Number.isSafeInteger(size)) this.unsafe(raw, `has an invalid size ${size}`);
    const type = h.type ?? 'file';
    // only regular files carry a body: tar-stream never ends a directory's
    // body stream (a hang) and skips a link's, where Go's archive/tar (containerd,
    // Docker) reads the next header there — an entry the guard would never see
    if (size !== 0 && type !== 'file' && type !== 'contiguous-file') this.unsafe(raw, `is a ${type} entry with a ${size}-byte body; only regular files may have one`, { type, size });
    if (name === '' && type !== 'directory') this.unsafe(raw, `is a ${type} entry that names the archive root itself`);
    this.budget.bytes += size;
    if (this.budget.bytes > this.limits.maxUnpackedBytes) {
      this.unsafe(raw, `brings the unpacked size past ${this.limits.maxUnpackedBytes} bytes (limits.maxUnpackedBytes); refusing a possible decompression bomb`, { limit: this.limits.maxUnpackedBytes });
    }
    switch (type) {
      case 'file':
      case 'contiguous-file':
        this.symlinks.delete(name);
        this.files.add(name);
        break;
      case 'directory':
        this.symlinks.delete(name);
        break;
      case 'symlink': {
        const target = h.linkname ?? '';
        if (target === '') this.unsafe(raw, 'is a symlink without a target');
        if (target.startsWith('/')) {
          if (!this.allowAbsoluteSymlinks) this.unsafe(raw, `is a symlink to the absolute path "${target}"`, { linkname: target });
        } else {
          const resolved = posix.normalize(posix.join(posix.dirname(name), target));
          if (resolved === '..' || resolved.startsWith('../')) this.unsafe(raw, `is a symlink to "${target}", which leaves the archive root`, { linkname: target });
        }
        this.symlinks.add(name);
        this.files.delete(name);
        break;
      }
      case 'link': {
        const target = this.parts(h.linkname ?? '', raw, 'hardlink target').join('/');
        for (const s of this.symlinks) if (target === s || target.startsWith(`${s}/`)) this.unsafe(raw, `is a hardlink through the symlink "${s}"`);
        if (!this.files.has(target)) this.unsafe(raw, `is a hardlink to "${h.linkname}", which is not a file earlier in the archive`, { linkname: h.linkname });
        this.files.add(name);
        break;
      }
      default:
        this.unsafe(raw, `is a ${h.type} entry; device nodes, fifos and other special files are not allowed in images`, { type: h.type });
    }
    return { ...h, name };
  }
}

export async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream) {
    // discard
  }
}

/**
 * Walk one tar stream through the guard. `fn` sees each safe entry and may
 * consume its body; an unconsumed body is drained. Parse errors become
 * SEALKIT_ARCHIVE_INVALID, guard refusals SEALKIT_ARCHIVE_UNSAFE.
 */
export async function walkTar(source: Readable, guard: EntryGuard, what: string, fn: (header: SafeHeader, body: Readable) => Promise<void> | void): Promise<void> {
  const extract = tar.extract();
  source.on('error', (e) => extract.destroy(e));
  source.pipe(extract as unknown as NodeJS.WritableStream);
  try {
    for await (const entry of extract) {
      const header = guard.check(entry.header);
      await fn(header, entry as unknown as Readable);
      await drain(entry);
    }
  } catch (err) {
    source.destroy();
    if (err instanceof SealkitError) throw err;
    throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} is not a valid tar: ${(err as Error).message}`, undefined, { cause: err });
  }
}

/** A POSIX (ustar) tar header at the start of `head`. */
export function looksLikeTar(head: Buffer): boolean {
  return head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar';
}

/**
 * The plain tar of a (possibly compressed) stream, optionally hashed, that
 * fails past the byte limit: where a decompression bomb stops even before the
 * guard sees its headers. Destroying it tears down the decompressor.
 */
export function unpackedTar(src: Readable, compression: Compression, limits: ArchiveLimits, what: string, hash?: Hash): Readable {
  const plain = decompress(src, compression, what);
  const metered = meter(streamLimit(limits), what, hash);
  plain.on('error', (e) => metered.destroy(e));
  metered.on('close', () => plain.destroy());
  plain.pipe(metered);
  return metered;
}

function streamLimit(l: ArchiveLimits): number {
  // tar headers and padding on top of the content the guard counts
  return l.maxUnpackedBytes + Math.min(l.maxArchiveEntries, 1_000_000) * 1536 + 10240;
}

// Counts (and optionally hashes) the bytes flowing through; past `max` the
// stream fails.
function meter(max: number, what: string, hash?: Hash): Transform {
  let bytes = 0;
  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      if (bytes > max) {
        cb(new SealkitError('SEALKIT_ARCHIVE_UNSAFE', `${what} unpacks to more than ${max} bytes; refusing it as a possible decompression bomb (raise limits.maxUnpackedBytes if it is genuine)`, { limit: max }));
        return;
      }
      hash?.update(chunk);
      cb(null, chunk);
    },
  });
}
