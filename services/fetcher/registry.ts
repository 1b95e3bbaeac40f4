import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import tar from 'tar-stream';
import { SealkitError } from '../lib/errors.ts';
import { sha256Hex } from '../lib/digest.ts';
import { download, memorySink, type Rules } from './download.ts';
import type { Cache } from './cache.ts';

// oci://host[:port]/repo@sha256:… through the distribution API, anonymous.
// Order matters: the manifest bytes are verified against the pinned digest
// before they are parsed; each blob is fetched into quarantine with its
// descriptor size as a hard cap and verified before anything reads it; the
// verified blobs are then assembled into an OCI layout tar for the importer.

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface OciRef {
  base: string; // https://host[:port] (http:// with allowHttp)
  host: string;
  repo: string;
  digest: string; // sha256:…
}

export function parseOciSource(source: string, allowHttp: boolean): OciRef {
  const m = /^oci:\/\/([^/]+)\/(.+)@(sha256:[0-9a-f]{64})$/.exec(source);
  if (!m) throw new SealkitError('SEALKIT_SOURCE_INVALID', `${source} is not oci://host[:port]/repository@sha256:<64 hex>`);
  return { base: `${allowHttp ? 'http' : 'https'}://${m[1]}`, host: m[1], repo: m[2], digest: m[3] };
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string };
  annotations?: Record<string, string>;
}

export interface VerifiedManifest {
  digest: string;
  bytes: Buffer;
  mediaType: string;
  json: { mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
}

/** GET a manifest by digest; the bytes must hash to the digest before they are parsed. */
export async function fetchManifest(ref: OciRef, digest: string, rules: Rules): Promise<VerifiedManifest> {
  const sink = memorySink();
  const url = `${ref.base}/v2/${ref.repo}/manifests/${digest}`;
  const got = await download(url, sink, { ...rules, maxBytes: Math.min(rules.maxBytes, MAX_MANIFEST_BYTES), expectedSize: undefined, accept: MANIFEST_ACCEPT });
  if (`sha256:${got.sha256}` !== digest) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${rules.what}: manifest from ${url}: expected ${digest}, got sha256:${got.sha256}; it was discarded unread`, { expected: digest, actual: `sha256:${got.sha256}`, url });
  }
  return parseManifest(sink.bytes(), digest, got.contentType, rules.what);
}

/** Verified manifest bytes as JSON, with the lists the fetcher walks checked to be lists. */
export function parseManifest(bytes: Buffer, digest: string, contentType: string | undefined, what: string): VerifiedManifest {
  let json: VerifiedManifest['json'];
  try {
    json = JSON.parse(bytes.toString('utf8')) as VerifiedManifest['json'];
  } catch {
    throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what}: manifest ${digest} is not JSON`);
  }
  const isObject = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!isObject(json) || (json.manifests !== undefined && !(Array.isArray(json.manifests) && json.manifests.every(isObject))) || (json.layers !== undefined && !Array.isArray(json.layers))) {
    throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what}: manifest ${digest} is not an image manifest or index (an object with "manifests" or "config" and "layers" lists)`);
  }
  const mediaType = typeof json.mediaType === 'string' ? json.mediaType : ((contentType ?? '').split(';')[0] ?? '');
  return { digest, bytes, mediaType, json };
}

const goArch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' };

/** From an index, the manifest for linux on this machine's architecture. */
export function pickPlatform(index: VerifiedManifest, what: string): Descriptor {
  const arch = goArch[process.arch] ?? process.arch;
  const list = index.json.manifests ?? [];
  const d = list.find((m) => m.platform?.os === 'linux' && m.platform?.architecture === arch);
  if (!d) throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what}: index ${index.digest} has no linux/${arch} manifest`);
  checkDescriptor(d, what);
  return d;
}

export function checkDescriptor(d: Descriptor | undefined, what: string): Descriptor {
  if (!d || typeof d.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(d.digest) || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what}: the manifest has a malformed descriptor ${JSON.stringify(d)}`);
  }
  return d;
}

/**
 * Make sure the cache holds a verified copy of a blob: a cached copy is
 * re-hashed; otherwise it is downloaded into quarantine, never past the
 * descriptor size, and admitted only when digest and size match.
 */
export async function fetchBlob(
  cache: Cache,
  ref: OciRef,
  d: Descriptor,
  rules: Rules,
  onCorrupt: (actual: string) => Promise<void>,
): Promise<string> {
  const hex = d.digest.slice(7);
  const cached = await cache.check(hex);
  if (cached.state === 'hit' && cached.size === d.size) return cache.path(hex);
  if (cached.state === 'corrupt') await onCorrupt(cached.actual);
  await cache.remove(hex);
  const url = `${ref.base}/v2/${ref.repo}/blobs/${d.digest}`;
  const q = await cache.quarantine(hex);
  try {
    const got = await download(url, q, { ...rules, maxBytes: d.size, expectedSize: d.size });
    if (got.sha256 !== hex || got.size !== d.size) {
      throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${rules.what}: blob from ${url}: expected ${d.digest} (${d.size} bytes), got sha256:${got.sha256} (${got.size} bytes); it was discarded unread`, { expected: d.digest, actual: `sha256:${got.sha256}`, url });
    }
    return await cache.admit(q, hex);
  } catch (err) {
    await q.discard();
    throw err;
  }
}

/**
 * Write an OCI image layout tar (deterministic: fixed order, mtime 0, root
 * owner) from verified cached blobs into quarantine; each blob is re-hashed
 * as it is copied. Returns the quarantine file and the tar's digest.
 */
export async function assembleOci(
  cache: Cache,
  parts: { manifest: VerifiedManifest; index?: VerifiedManifest; blobs: Descriptor[]; refName: string; tag: string },
  what: string,
): Promise<{ hex: string; size: number; path: string }> {
  const q = await cache.quarantine(`oci-${parts.manifest.digest.slice(7, 19)}`);
  const pack = tar.pack();
  const hash = createHash('sha256');
  let size = 0;
  const written = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
      await q.write(chunk);
    }
  })();
  const header = (name: string, n: number, type: 'file' | 'directory' = 'file') => ({ name, size: n, type, mode: type === 'file' ? 0o644 : 0o755, mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: '' });
  const small = (name: string, body: Buffer) => new Promise<void>((res, rej) => pack.entry(header(name, body.length), body, (e) => (e ? rej(e) : res())));
  try {
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: parts.manifest.mediaType || 'application/vnd.oci.image.manifest.v1+json',
          digest: parts.manifest.digest,
          size: parts.manifest.bytes.length,
          annotations: { 'org.opencontainers.image.ref.name': parts.tag, 'io.containerd.image.name': `${parts.refName}:${parts.tag}` },
        },
      ],
    };
    await small('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
    await small('index.json', Buffer.from(JSON.stringify(index)));
    await new Promise<void>((res, rej) => pack.entry(header('blobs/', 0, 'directory'), (e) => (e ? rej(e) : res())));
    await new Promise<void>((res, rej) => pack.entry(header('blobs/sha256/', 0, 'directory'), (e) => (e ? rej(e) : res())));
    const seen = new Set<string>();
    for (const m of [parts.index, parts.manifest]) {
      if (!m || seen.has(m.digest)) continue;
      seen.add(m.digest);
      if (sha256Hex(m.bytes) !== m.digest.slice(7)) throw new Error(`manifest ${m.digest} changed in memory`);
      await small(`blobs/sha256/${m.digest.slice(7)}`, m.bytes);
    }
    for (const d of parts.blobs) {
      if (seen.has(d.digest)) continue;
      seen.add(d.digest);
      await copyBlob(pack, cache, d, header(`blobs/sha256/${d.digest.slice(7)}`, d.size), what);
    }
    pack.finalize();
    await written;
    const hex = hash.digest('hex');
    return { hex, size, path: await cache.admit(q, hex) };
  } catch (err) {
    pack.destroy();
    await written.catch(() => {});
    await q.discard();
    throw err;
  }
}

async function copyBlob(pack: tar.Pack, cache: Cache, d: Descriptor, h: { name: string }, what: string): Promise<void> {
  const hash = createHash('sha256');
  let n = 0;
  let finished!: (err?: Error | null) => void;
  const done = new Promise<void>((res, rej) => (finished = (e) => (e ? rej(e) : res())));
  const sink = pack.entry(h, (e) => finished(e));
  for await (const chunk of createReadStream(cache.path(d.digest.slice(7)), { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > d.size) break;
    hash.update(chunk);
    if (!sink.write(chunk)) await new Promise<void>((r) => sink.once('drain', () => r()));
  }
  if (n !== d.size || hash.digest('hex') !== d.digest.slice(7)) {
    sink.destroy();
    throw new SealkitError('SEALKIT_CACHE_CORRUPT', `${what}: cached blob ${d.digest} changed on disk while the archive was assembled; fetch again`, { expected: d.digest });
  }
  sink.end(null as never);
  await done;
}
