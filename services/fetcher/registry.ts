import { SealkitError } from '../lib/errors.ts';
import { download, memorySink, type Rules, type Sink } from './download.ts';
import type { QuarantineFile } from './cache.ts';
import type { LayoutPlan } from './layout.ts';

// oci://host[:port]/repo@sha256:… through the distribution API, anonymous.
// Order matters: the manifest bytes are verified against the pinned digest
// before they are parsed; the blobs are fetched at once, each straight into
// its place in an OCI layout tar in quarantine (layout.ts), with its
// descriptor size as a hard cap, and verified before anything reads the tar.

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

// Blobs fetched at once, each on its own connection (skopeo uses 6 too);
// more only adds seeks to a disk that is already busy.
export const BLOBS_AT_ONCE = 6;

export interface PullHooks {
  /** A blob is verified and all of it is in the file (not yet synced). */
  blob?(b: { d: Descriptor; at: number }): void;
  /** The first `upTo` bytes of the file are written, every blob among them verified. */
  prefix?(upTo: number): void;
}

/**
 * Fetch every blob of `plan` straight into its place in the quarantined
 * OCI layout tar `q`, up to BLOBS_AT_ONCE at a time, each never past its
 * descriptor size and checked against its digest as it arrives; `hooks`
 * hear of each blob once it is verified and written, so that it can be read
 * back while the others arrive. The first failure cancels the rest and
 * throws; the caller discards the file. On return every byte is written
 * (not yet synced).
 */
export async function pullLayout(q: QuarantineFile, plan: LayoutPlan, ref: OciRef, rules: Rules, hooks: PullHooks = {}): Promise<void> {
  const abort = new AbortController();
  const got = new Map<string, number>();
  const total = plan.blobs.reduce((n, b) => n + b.d.size, 0);
  let sum = 0;
  const onBytes = (digest: string, n: number) => {
    sum += n - (got.get(digest) ?? 0);
    got.set(digest, n);
    rules.onBytes?.(sum, total);
  };
  let failure: unknown;
  const fail = (err: unknown) => {
    failure ??= err;
    abort.abort();
  };
  // the written prefix: up to the first blob not yet verified and written
  const pending = new Set(plan.blobs.map((b) => b.at));
  const prefix = () => hooks.prefix?.(pending.size ? Math.min(...pending) : plan.size);
  await q.truncate(plan.size);
  for (const f of plan.fixed) {
    const r = q.region(f.at);
    await r.write(f.bytes);
    await r.done();
  }
  prefix();
  const queue = [...plan.blobs];
  const worker = async () => {
    for (let b = queue.shift(); b && !failure; b = queue.shift()) {
      const { d, at } = b;
      const region = q.region(at);
      try {
        await fetchBlob(region, ref, d, { ...rules, signal: abort.signal, onBytes: (n) => onBytes(d.digest, n) });
        await region.done();
      } catch (err) {
        fail(err);
        return;
      }
      pending.delete(at);
      hooks.blob?.(b);
      prefix();
    }
  };
  await Promise.all(Array.from({ length: Math.min(BLOBS_AT_ONCE, queue.length) }, worker));
  if (failure) throw failure;
  await q.written();
}

async function fetchBlob(sink: Sink, ref: OciRef, d: Descriptor, rules: Rules): Promise<void> {
  const url = `${ref.base}/v2/${ref.repo}/blobs/${d.digest}`;
  const got = await download(url, sink, { ...rules, maxBytes: d.size, expectedSize: d.size });
  if (`sha256:${got.sha256}` !== d.digest || got.size !== d.size) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${rules.what}: blob from ${url}: expected ${d.digest} (${d.size} bytes), got sha256:${got.sha256} (${got.size} bytes); the image was discarded unread`, { expected: d.digest, actual: `sha256:${got.sha256}`, url });
  }
}
