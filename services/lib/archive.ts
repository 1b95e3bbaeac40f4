import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { posix } from 'node:path';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import tar, { type Header as TarHeaders } from 'tar-stream';
import { SealkitError } from './errors.ts';

// Reading image archives safely, AFTER their digest was verified. Nothing in
// here may be pointed at unverified bytes: decompressors and tar parsers are
// exactly what an attacker wants to reach with a crafted stream.
//
// Every tar this module walks — the outer archive and each layer — goes
// through the same guard: no absolute names or `..`, no symlink or hardlink
// that leaves the root, nothing written through a symlink, no device nodes or
// fifos, and limits on the number of entries and on the unpacked bytes, which
// also stops decompression bombs before they fill a disk.

export type Compression = 'none' | 'gzip' | 'xz' | 'zstd';
export type ArchiveFormat = 'oci-archive' | 'docker-archive';

export interface ArchiveLimits {
  maxArchiveEntries: number;
  maxUnpackedBytes: number;
}

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

/** A tar header after the guard: `name` is normalized, relative, without `./`. */
export type SafeHeader = TarHeaders & { name: string };

// How often a decompressor was started: tests use it to show that bytes
// which failed verification never reached one.
export const decompressorStarts: Record<Exclude<Compression, 'none'>, number> = { gzip: 0, xz: 0, zstd: 0 };

const MAGIC: Array<[Compression, number[]]> = [
  ['gzip', [0x1f, 0x8b]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
];

/** Compression by magic bytes; anything else is 'none'. */
export function sniffCompression(head: Uint8Array): Compression {
  for (const [how, magic] of MAGIC) if (magic.every((b, i) => head[i] === b)) return how;
  return 'none';
}

export async function detectCompression(path: string): Promise<Compression> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(6);
    const { bytesRead } = await fh.read(head, 0, 6, 0);
    return sniffCompression(head.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

const mediaTypes: Record<Compression, string> = {
  none: 'application/x-tar',
  gzip: 'application/gzip',
  xz: 'application/x-xz',
  zstd: 'application/zstd',
};

/** The media type of a whole archive file with this compression. */
export function archiveMediaType(c: Compression): string {
  return mediaTypes[c];
}

/** Decompress a stream: zlib in-process for gzip, `xz -dc` / `zstd -dc` children otherwise. */
export function decompress(src: Readable, how: Compression, what: string): Readable {
  if (how === 'none') return src;
  decompressorStarts[how]++;
  if (how === 'gzip') {
    const gunzip = createGunzip({ chunkSize: 1 << 20 });
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    src.on('error', (e) => out.destroy(e));
    gunzip.on('error', (e) => out.destroy(new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} is not valid gzip data: ${e.message}`)));
    out.on('close', () => {
      gunzip.destroy();
      src.destroy();
    });
    src.pipe(gunzip).pipe(out);
    return out;
  }
  const child = spawn(how, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  child.stdin.on('error', () => {}); // EPIPE when the reader stopped early
  child.on('error', (e) => out.destroy(new SealkitError('SEALKIT_ARCHIVE_INVALID', `cannot run ${how} to read ${what}: ${e.message}; install ${how}`)));
  src.on('error', (e) => out.destroy(e));
  src.pipe(child.stdin);
  child.stdout.pipe(out, { end: false });
  child.on('close', (code) => {
    if (out.destroyed) return;
    if (code === 0) out.end();
    else out.destroy(new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} is not valid ${how} data: ${stderr.trim() || `exit ${code}`}`));
  });
  out.on('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    src.destroy();
  });
  return out;
}

// Counts (and optionally hashes) the bytes flowing through; past `max` the
// stream fails: that is where a decompression bomb stops.
function meter(max: number, what: string, hash?: ReturnType<typeof createHash>): Transform & { bytes: number } {
  const t = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb) {
      t.bytes += chunk.length;
      if (t.bytes > max) {
        cb(new SealkitError('SEALKIT_ARCHIVE_UNSAFE', `${what} unpacks to more than ${max} bytes; refusing it as a possible decompression bomb (raise limits.maxUnpackedBytes if it is genuine)`, { limit: max }));
        return;
      }
      hash?.update(chunk);
      cb(null, chunk);
    },
  }) as Transform & { bytes: number };
  t.bytes = 0;
  return t;
}

// Pipe a into b; a's errors fail b, and when b is done or destroyed, a is
// torn down too (a decompressor child must never be left waiting).
function chain(a: Readable, b: Transform): void {
  a.on('error', (e) => b.destroy(e));
  b.on('close', () => a.destroy());
  a.pipe(b);
}

/** Shared budget: one per archive, so many layers cannot add up past the limits. */
export interface Budget {
  entries: number;
  bytes: number;
}

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

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
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

function looksLikeTar(head: Buffer): boolean {
  return head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar';
}

interface Recorded {
  sha256: string;
  size: number;
  body?: Buffer; // kept for small files (manifests, configs, index)
  layer?: { compression: Compression; diffId?: string; entries?: number; error?: SealkitError };
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
  const recorded = new Map<string, Recorded>();
  const links = new Map<string, string>(); // symlink entry → resolved target
  let kept = 0;
  const stream = decompress(createReadStream(path, { highWaterMark: 1 << 20 }), compression, what);
  const metered = meter(streamLimit(opts.limits), what);
  chain(stream, metered);

  const named = new Set<string>();
  await walkTar(metered, guard, what, async (h, body) => {
    if (h.type !== 'directory') {
      // one entry per name: this pass would verify the last copy, the unpack
      // pass and other readers may take the first
      if (named.has(h.name)) throw new SealkitError('SEALKIT_ARCHIVE_UNSAFE', `${what}: entry "${h.name}" appears more than once; the image was refused`, { entry: h.name });
      named.add(h.name);
    }
    if (h.type === 'symlink') {
      links.set(h.name, posix.normalize(posix.join(posix.dirname(h.name), h.linkname ?? '')));
      return;
    }
    if (h.type !== 'file' && h.type !== 'contiguous-file' && h.type !== 'link') return;
    if (h.type === 'link') {
      const target = recorded.get(posix.normalize(h.linkname ?? ''));
      if (target) recorded.set(h.name, target);
      return;
    }
    recorded.set(h.name, await recordEntry(h, body, opts, what, layerBudget, kept < KEEP_TOTAL));
    kept += recorded.get(h.name)!.body?.length ?? 0;
  });

  const find = (name: string, purpose: string): Recorded & { name: string } => {
    let n = posix.normalize(name).replace(/^\.\//, '');
    for (let hops = 0; links.has(n) && hops < 8; hops++) n = links.get(n)!;
    const r = recorded.get(n);
    if (!r) throw invalid(what, `has no entry "${name}" (${purpose})`);
    return { ...r, name: n };
  };
  const json = (r: Recorded & { name: string }, purpose: string): Record<string, unknown> => {
    if (!r.body) throw invalid(what, `entry "${r.name}" (${purpose}) is too large to be ${purpose}`);
    try {
      const v = JSON.parse(r.body.toString('utf8')) as unknown;
      if (v === null || typeof v !== 'object') throw new Error('not an object');
      return v as Record<string, unknown>;
    } catch (err) {
      throw invalid(what, `entry "${r.name}" (${purpose}) is not valid JSON: ${(err as Error).message}`);
    }
  };

  const stats = { entries: outerBudget.entries, layerEntries: layerBudget.entries, unpackedBytes: layerBudget.bytes };
  if (recorded.has('oci-layout') && recorded.has('index.json')) {
    // every blob in an OCI layout is named by its digest: check them all
    for (const [name, r] of recorded) {
      const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
      if (m && m[1] !== r.sha256) {
        throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: blob "${name}" hashes to ${r.sha256}; the archive is corrupt`, { entry: name, expected: m[1], actual: r.sha256 });
      }
    }
    return { ...openOci(what, opts, find, json), compression, stats };
  }
  if (recorded.has('manifest.json')) return { ...openDocker(what, opts, find, json), compression, stats };
  throw invalid(what, 'is neither an OCI image layout (oci-layout + index.json) nor a docker-archive (manifest.json)');
}

function streamLimit(l: ArchiveLimits): number {
  // tar headers and padding on top of the content the guard counts
  return l.maxUnpackedBytes + Math.min(l.maxArchiveEntries, 1_000_000) * 1536 + 10240;
}

function invalid(what: string, msg: string, data?: Record<string, unknown>): SealkitError {
  return new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} ${msg}; the image was refused`, data);
}

// Hash one outer entry; keep it when small; when it looks like a (compressed)
// tar, walk it as a layer in the same pass and remember the outcome — it only
// matters if the manifest turns out to name it as a layer.
async function recordEntry(h: SafeHeader, body: Readable, opts: ArchiveOptions, what: string, budget: Budget, mayKeep: boolean): Promise<Recorded> {
  const hash = createHash('sha256');
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
    hash.update(chunk);
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
  return { sha256: hash.digest('hex'), size, body: keep ? Buffer.concat(chunks) : undefined, layer };
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

async function scanLayer(src: PassThrough, compression: Compression, opts: ArchiveOptions, what: string, budget: Budget): Promise<Recorded['layer']> {
  const diff = createHash('sha256');
  const guard = new EntryGuard(opts.limits, what, budget, opts.allowAbsoluteSymlinks ?? false);
  let entries = 0;
  try {
    const plain = decompress(src, compression, what);
    const metered = meter(streamLimit(opts.limits), what, diff);
    chain(plain, metered);
    await walkTar(metered, guard, what, () => {
      entries++;
    });
    // the tar parser may stop at the end-of-archive blocks: hash the rest too
    await drain(metered);
    return { compression, diffId: `sha256:${diff.digest('hex')}`, entries };
  } catch (err) {
    src.resume(); // keep the outer pass flowing
    return { compression, error: err instanceof SealkitError ? err : invalid(what, (err as Error).message) };
  }
}

type Finder = (name: string, purpose: string) => Recorded & { name: string };
type Json = (r: Recorded & { name: string }, purpose: string) => Record<string, unknown>;

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string };
}

function descriptor(v: unknown, what: string, where: string): Descriptor {
  const d = v as Partial<Descriptor> | null;
  if (!d || typeof d.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(d.digest) || typeof d.size !== 'number') {
    throw invalid(what, `has a malformed descriptor in ${where}`);
  }
  return { mediaType: String(d.mediaType ?? ''), digest: d.digest, size: d.size, annotations: d.annotations, platform: d.platform };
}

function blob(find: Finder, what: string, d: Descriptor, purpose: string): Recorded & { name: string } {
  const r = find(`blobs/sha256/${d.digest.slice(7)}`, purpose);
  if (r.sha256 !== d.digest.slice(7) || r.size !== d.size) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: ${purpose} blob does not match its descriptor (${d.digest}, ${d.size} bytes): got sha256:${r.sha256}, ${r.size} bytes`, { expected: d.digest, actual: `sha256:${r.sha256}` });
  }
  return r;
}

const goArch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' };

function layerList(what: string, config: Record<string, unknown>, count: number): string[] {
  const diffIds = (config.rootfs as { diff_ids?: unknown } | undefined)?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== count || !diffIds.every((d) => typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d))) {
    throw invalid(what, `has a config whose rootfs.diff_ids do not list one sha256 per layer (${count} layers)`);
  }
  return diffIds as string[];
}

function checkLayer(what: string, r: Recorded & { name: string }, diffId: string, index: number): Compression {
  if (!r.layer) throw invalid(what, `layer ${index} ("${r.name}") is not a tar`);
  if (r.layer.error) throw r.layer.error;
  if (r.layer.diffId !== diffId) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: layer ${index} ("${r.name}") unpacks to ${r.layer.diffId}, but the config says ${diffId}`, { entry: r.name, expected: diffId, actual: r.layer.diffId });
  }
  return r.layer.compression;
}

function openOci(what: string, opts: ArchiveOptions, find: Finder, json: Json): Omit<OpenedImage, 'compression' | 'stats'> {
  const index = json(find('index.json', 'the OCI index'), 'the OCI index');
  const list = Array.isArray(index.manifests) ? index.manifests.map((m, i) => descriptor(m, what, `index.json manifests[${i}]`)) : [];
  if (list.length === 0) throw invalid(what, 'has an index.json without manifests');
  let chosen = opts.manifestDigest ? list.find((d) => d.digest === opts.manifestDigest) : undefined;
  if (opts.manifestDigest && !chosen) throw invalid(what, `does not contain the manifest ${opts.manifestDigest}`);
  chosen ??= list.find((d) => opts.ref && (d.annotations?.['org.opencontainers.image.ref.name'] === opts.ref.tag || d.annotations?.['io.containerd.image.name'] === `${opts.ref.name}:${opts.ref.tag}`)) ?? list[0];
  let manifest = json(blob(find, what, chosen, 'manifest'), 'a manifest');
  let manifestDigest = chosen.digest;
  for (let depth = 0; Array.isArray(manifest.manifests) && depth < 2; depth++) {
    // a nested index (multi-platform): take this machine's platform
    const subs = manifest.manifests.map((m, i) => descriptor(m, what, `nested index manifests[${i}]`));
    const arch = goArch[process.arch] ?? process.arch;
    const sub = subs.find((d) => d.platform?.os === 'linux' && d.platform?.architecture === arch) ?? subs[0];
    if (!sub) throw invalid(what, 'has an empty nested index');
    manifest = json(blob(find, what, sub, 'manifest'), 'a manifest');
    manifestDigest = sub.digest;
  }
  const cd = descriptor(manifest.config, what, 'the manifest config');
  const config = json(blob(find, what, cd, 'config'), 'the image config');
  const ls = Array.isArray(manifest.layers) ? manifest.layers.map((l, i) => descriptor(l, what, `manifest layers[${i}]`)) : [];
  const diffIds = layerList(what, config, ls.length);
  const layers = ls.map((d, i) => {
    const r = blob(find, what, d, `layer ${i}`);
    const compression = checkLayer(what, r, diffIds[i], i);
    return { index: i, digest: d.digest, diffId: diffIds[i], mediaType: d.mediaType, size: d.size, compression, entry: r.name };
  });
  const repoTags = list.map((d) => d.annotations?.['io.containerd.image.name']).filter((t): t is string => typeof t === 'string');
  return { format: 'oci-archive', manifestDigest, manifest, configDigest: cd.digest, config, layers, repoTags };
}

function openDocker(what: string, opts: ArchiveOptions, find: Finder, json: Json): Omit<OpenedImage, 'compression' | 'stats'> {
  const raw = find('manifest.json', 'the docker-archive manifest');
  let list: unknown;
  try {
    list = JSON.parse((raw.body ?? Buffer.alloc(0)).toString('utf8'));
  } catch (err) {
    throw invalid(what, `has a manifest.json that is not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(list) || list.length === 0 || !list.every((i) => i !== null && typeof i === 'object')) throw invalid(what, 'has a manifest.json that is not a non-empty list of objects');
  type Item = { Config?: unknown; Layers?: unknown; RepoTags?: unknown };
  const items = list as Item[];
  const ref = opts.ref ? `${opts.ref.name}:${opts.ref.tag}` : undefined;
  const item = items.find((i) => ref && Array.isArray(i.RepoTags) && i.RepoTags.includes(ref)) ?? items[0];
  if (typeof item.Config !== 'string' || !Array.isArray(item.Layers) || !item.Layers.every((l) => typeof l === 'string')) {
    throw invalid(what, 'has a manifest.json entry without Config and Layers');
  }
  const cr = find(item.Config, 'the image config');
  const named = /(?:^|\/)([0-9a-f]{64})(?:\.json)?$/.exec(cr.name);
  if (named && named[1] !== cr.sha256) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: config "${cr.name}" hashes to ${cr.sha256}; the archive is corrupt`, { entry: cr.name, expected: named[1], actual: cr.sha256 });
  }
  const config = json(cr, 'the image config');
  const paths = item.Layers as string[];
  const diffIds = layerList(what, config, paths.length);
  const layers = paths.map((p, i) => {
    const r = find(p, `layer ${i}`);
    const compression = checkLayer(what, r, diffIds[i], i);
    const mediaType = compression === 'gzip' ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : compression === 'zstd' ? 'application/vnd.oci.image.layer.v1.tar+zstd' : 'application/vnd.docker.image.rootfs.diff.tar';
    return { index: i, digest: `sha256:${r.sha256}`, diffId: diffIds[i], mediaType, size: r.size, compression, entry: r.name };
  });
  const repoTags = Array.isArray(item.RepoTags) ? item.RepoTags.filter((t): t is string => typeof t === 'string') : [];
  return { format: 'docker-archive', manifestDigest: null, manifest: null, configDigest: `sha256:${cr.sha256}`, config, layers, repoTags };
}

/**
 * Stream the entries of one layer (by manifest order) through the guard, for
 * unpacking a rootfs. Pass the OpenedImage from openImage to skip a second
 * verification pass. The layer's stored digest and diffId are re-checked
 * while streaming; a mismatch throws at the end, so the caller must unpack
 * into a staging directory and discard it on any error. Whiteouts
 * (`.wh.name`, `.wh..wh..opq`) are passed through for the caller to apply.
 */
export async function forEachLayerEntry(
  path: string,
  opts: ArchiveOptions & { image?: OpenedImage },
  layerIndex: number,
  fn: (header: SafeHeader, body: Readable) => Promise<void> | void,
): Promise<void> {
  const what = opts.what ?? path;
  const image = opts.image ?? (await openImage(path, opts));
  const layer = image.layers[layerIndex];
  if (!layer) throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} has ${image.layers.length} layers; there is no layer ${layerIndex}`);
  const lwhat = `${what} layer ${layerIndex}`;
  const outer = decompress(createReadStream(path, { highWaterMark: 1 << 20 }), image.compression, what);
  const metered = meter(streamLimit(opts.limits), what);
  chain(outer, metered);
  const outerGuard = new EntryGuard(opts.limits, what);
  let found = false;
  await walkTar(metered, outerGuard, what, async (h, body) => {
    if (found || h.name !== layer.entry) return;
    found = true;
    const stored = createHash('sha256');
    const diff = createHash('sha256');
    const tap = new Transform({
      transform(chunk: Buffer, _e, cb) {
        stored.update(chunk);
        cb(null, chunk);
      },
    });
    (body as unknown as NodeJS.ReadableStream).pipe(tap);
    body.on('error', (e: Error) => tap.destroy(e));
    const plain = decompress(tap, layer.compression, lwhat);
    const m = meter(streamLimit(opts.limits), lwhat, diff);
    chain(plain, m);
    await walkTar(m, new EntryGuard(opts.limits, lwhat, { entries: 0, bytes: 0 }, opts.allowAbsoluteSymlinks ?? false), lwhat, fn);
    await drain(m);
    await drain(tap);
    const gotStored = `sha256:${stored.digest('hex')}`;
    const gotDiff = `sha256:${diff.digest('hex')}`;
    if (gotStored !== layer.digest || gotDiff !== layer.diffId) {
      throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${lwhat} changed since it was verified (blob ${gotStored}, diff ${gotDiff}; expected ${layer.digest}, ${layer.diffId}); discard what was unpacked`, { expected: layer.diffId, actual: gotDiff });
    }
  });
  if (!found) throw invalid(what, `no longer contains layer ${layerIndex} ("${layer.entry}")`);
}
