import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { posix } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { Header as TarHeaders } from 'tar-stream';
import { SealkitError } from '../errors.ts';
import { Catalog, invalid, type Recorded } from './catalog.ts';
import { detectCompression, sniffCompression, type Compression } from './compression.ts';
import { isDockerArchive, openDocker } from './docker-archive.ts';
import { scanLayer } from './layers.ts';
import { isOciLayout, openOci } from './oci-layout.ts';
import { EntryGuard, looksLikeTar, unpackedTar, walkTar, type ArchiveLimits, type Budget, type SafeHeader } from './tar-guard.ts';

// Opening an image archive, AFTER its digest was verified: nothing here may
// be pointed at unverified bytes.

export type ArchiveFormat = 'oci-archive' | 'docker-archive';

export interface ArchiveOptions {
  limits: ArchiveLimits;
  /** names the archive in error messages, e.g. "centos6 (sha256 88cc…)" */
  what?: string;
  /** pick this manifest ("sha256:…") from an OCI index; default: tag match, else the only/first one */
  manifestDigest?: string;
  /** docker-archive RepoTags / OCI ref.name to prefer when the archive holds several images */
  ref?: { name: string; tag: string };
  /**
   * Layer symlinks with absolute targets (`/bin/sh -> /bin/busybox`) are
   * refused by default. With true they are accepted as *rooted* (resolved
   * inside the rootfs, as a container runtime does); the unpacker must then
   * never follow a symlink on the host (O_NOFOLLOW / lstat).
   */
  allowAbsoluteSymlinks?: boolean;
}

export interface ImageLayer {
  index: number;
  digest: string; // sha256:… of the blob as stored in the archive
  diffId: string; // sha256:… of the uncompressed layer tar (from the config)
  mediaType: string;
  size: number; // stored size
  compression: Compression;
  entry: string; // entry name inside the archive
}

export interface OpenedImage {
  format: ArchiveFormat;
  compression: Compression; // of the archive as a whole
  manifestDigest: string | null; // sha256:… of the OCI manifest; null for a plain docker-archive
  manifest: Record<string, unknown> | null;
  configDigest: string;
  config: Record<string, unknown>;
  layers: ImageLayer[];
  repoTags: string[];
  stats: { entries: number; layerEntries: number; unpackedBytes: number };
}

const KEEP_MAX = 4 * 1024 * 1024;
const KEEP_TOTAL = 64 * 1024 * 1024;

/**
 * Open a verified image archive (docker-archive or OCI layout tar, plain or
 * gzip/xz/zstd as a whole) in one streaming pass: every entry is guarded,
 * every blob hashed and checked against its digest (OCI blobs by name and
 * descriptor size; docker-archive layers against the config's diff_ids) and
 * every layer tar is walked through the same guard. Throws SEALKIT_ARCHIVE_*.
 */
export async function openImage(path: string, opts: ArchiveOptions): Promise<OpenedImage> {
  const what = opts.what ?? path;
  const compression = await detectCompression(path);
  const outerBudget: Budget = { entries: 0, bytes: 0 };
  const layerBudget: Budget = { entries: 0, bytes: 0 };
  const guard = new EntryGuard(opts.limits, what, outerBudget);
  const catalog = new Catalog(what);
  let kept = 0;
  const stream = unpackedTar(createReadStream(path, { highWaterMark: 1 << 20 }), compression, opts.limits, what);

  const named = new Set<string>();
  await walkTar(stream, guard, what, async (h, body) => {
    if (h.type !== 'directory') {
      // one entry per name: this pass would verify the last copy, the unpack
      // pass and other readers may take the first
      if (named.has(h.name)) throw new SealkitError('SEALKIT_ARCHIVE_UNSAFE', `${what}: entry "${h.name}" appears more than once; the image was refused`, { entry: h.name });
      named.add(h.name);
    }
    if (h.type === 'symlink') {
      catalog.links.set(h.name, posix.normalize(posix.join(posix.dirname(h.name), h.linkname ?? '')));
      return;
    }
    if (h.type !== 'file' && h.type !== 'contiguous-file' && h.type !== 'link') return;
    if (h.type === 'link') {
      const target = catalog.recorded.get(posix.normalize(h.linkname ?? ''));
      if (target) catalog.recorded.set(h.name, target);
      return;
    }
    const r = await recordEntry(h, body, opts, what, layerBudget, kept < KEEP_TOTAL);
    catalog.recorded.set(h.name, r);
    kept += r.body?.length ?? 0;
  });

  const stats = { entries: outerBudget.entries, layerEntries: layerBudget.entries, unpackedBytes: layerBudget.bytes };
  if (isOciLayout(catalog)) return { ...openOci(catalog, opts), compression, stats };
  if (isDockerArchive(catalog)) return { ...openDocker(catalog, opts), compression, stats };
  throw invalid(what, 'is neither an OCI image layout (oci-layout + index.json) nor a docker-archive (manifest.json)');
}

/**
 * openImage's pass for a plain OCI layout tar that the caller lays out and
 * fills itself, entry by entry at known offsets (the registry pull): every
 * header goes through the guard in archive order, and each entry is hashed,
 * kept or walked as a layer as soon as it is complete in the file, while
 * the others are still arriving. finish() then reads the layout exactly as
 * openImage reads the finished file. Only for entries whose bytes were
 * verified before they are recorded: nothing here may see unverified bytes.
 */
export class LayoutCheck {
  private readonly guard: EntryGuard;
  private readonly outerBudget: Budget = { entries: 0, bytes: 0 };
  private readonly layerBudget: Budget = { entries: 0, bytes: 0 };
  private readonly catalog: Catalog;
  private readonly named = new Set<string>();
  private readonly running: Array<Promise<void>> = [];
  private readonly what: string;
  private kept = 0;

  constructor(
    private readonly path: string,
    private readonly opts: ArchiveOptions,
  ) {
    this.what = opts.what ?? path;
    this.guard = new EntryGuard(opts.limits, this.what, this.outerBudget);
    this.catalog = new Catalog(this.what);
  }

  /** The next header of the archive, in order; a file's body is recorded later. */
  add(name: string, size: number, type: 'file' | 'directory'): void {
    const h = this.guard.check({ name, size, type } as TarHeaders);
    if (type === 'directory') return;
    if (this.named.has(h.name)) throw new SealkitError('SEALKIT_ARCHIVE_UNSAFE', `${this.what}: entry "${h.name}" appears more than once; the image was refused`, { entry: h.name });
    this.named.add(h.name);
  }

  /**
   * A file entry added before, from the bytes at hand or read back from `at`
   * in the file. `sha256`: the entry's digest, when the caller checks the
   * bytes in the file against it itself (not hashed here a second time).
   */
  record(name: string, size: number, from: Buffer | { at: number }, sha256?: string): void {
    const body = Buffer.isBuffer(from) ? Readable.from([from]) : size === 0 ? Readable.from([]) : createReadStream(this.path, { start: from.at, end: from.at + size - 1, highWaterMark: 1 << 20 });
    const mayKeep = this.kept < KEEP_TOTAL;
    if (mayKeep && size <= KEEP_MAX) this.kept += size;
    const p = recordEntry({ name, size, type: 'file' } as SafeHeader, body, this.opts, this.what, this.layerBudget, mayKeep, sha256).then((r) => {
      if (r.size !== size) throw invalid(this.what, `entry "${name}" holds ${r.size} of its ${size} bytes`);
      this.catalog.recorded.set(name, r);
    });
    p.catch(() => {});
    this.running.push(p);
  }

  /** Every entry recorded: what openImage gives for the whole file. Throws the first failure, once all have ended. */
  async finish(): Promise<OpenedImage> {
    const out = await Promise.allSettled(this.running);
    const failed = out.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const missing = [...this.named].find((n) => !this.catalog.has(n));
    if (missing) throw invalid(this.what, `has no recorded body for entry "${missing}"`);
    const stats = { entries: this.outerBudget.entries, layerEntries: this.layerBudget.entries, unpackedBytes: this.layerBudget.bytes };
    return { ...openOci(this.catalog, this.opts), compression: 'none', stats };
  }

  /** Wait for what is still reading the file (before it is removed). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.running);
  }
}

// Hash one outer entry; keep it when small; when it looks like a (compressed)
// tar, walk it as a layer in the same pass.
async function recordEntry(h: SafeHeader, body: Readable, opts: ArchiveOptions, what: string, budget: Budget, mayKeep: boolean, known?: string): Promise<Recorded> {
  const hash = known === undefined ? createHash('sha256') : undefined;
  const total = h.size ?? 0;
  const keep = mayKeep && total <= KEEP_MAX;
  const chunks: Buffer[] = [];
  let size = 0;
  let pending: Buffer[] = [];
  let decided = false;
  let inner: PassThrough | undefined;
  let innerDone: Promise<Recorded['layer']> | undefined;
  const feed = async (chunk: Buffer) => {
    if (inner && !inner.destroyed && !inner.write(chunk)) await waitDrain(inner);
  };
  for await (const chunk of body as AsyncIterable<Buffer>) {
    hash?.update(chunk);
    size += chunk.length;
    if (keep) chunks.push(chunk);
    if (decided) {
      await feed(chunk);
      continue;
    }
    pending.push(chunk);
    if (size < 512 && size < total) continue;
    decided = true;
    const head = Buffer.concat(pending);
    pending = [];
    const compression = sniffCompression(head);
    if (compression !== 'none' || looksLikeTar(head)) {
      inner = new PassThrough({ highWaterMark: 1 << 20 });
      innerDone = scanLayer(inner, compression, opts, `${what} layer "${h.name}"`, budget);
      await feed(head);
    }
  }
  inner?.end();
  const layer = innerDone ? await innerDone : undefined;
  const sha256 = hash?.digest('hex') ?? known!;
  // an uncompressed layer unpacks to exactly the bytes just hashed
  if (layer && layer.compression === 'none' && !layer.error) layer.diffId = `sha256:${sha256}`;
  return { sha256, size, body: keep ? Buffer.concat(chunks) : undefined, layer };
}

function waitDrain(s: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}
