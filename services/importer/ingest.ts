import { createHash } from 'node:crypto';
import { SealkitError } from '../lib/errors.ts';
import type { ArchiveMeta } from './names.ts';
import type { CheckedArchive } from './archive.ts';
import type { Containerd, CtrImage } from './ctr.ts';
import { indexTar, type TarEntry, type TarIndex } from './tarindex.ts';

// An uncompressed archive written straight into containerd's content store,
// what `ctr images import --no-unpack` stores for it, without ctr: each blob
// the image reaches streamed from its offset in the checked file and
// committed with its digest (containerd refuses other bytes), manifests
// labelled with their children so the garbage collector keeps them. A
// docker-archive has no manifest: it gets the one containerd's importer
// writes, byte for byte, so the image has the digest `ctr` would give it.
// Everything is written under the caller's lease.

const MAX_META = 4 * 1024 * 1024;
const MANIFESTS = new Set(['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json']);
const INDEXES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const OCI_NAME = 'io.containerd.image.name';
const OCI_REF = 'org.opencontainers.image.ref.name';

interface Descriptor {
  mediaType?: string;
  digest?: string;
  size?: number;
  annotations?: Record<string, string>;
}

export interface Ingested {
  target: CtrImage; // the manifest the final name gets (ref and labels empty)
  meta: ArchiveMeta;
}

export async function ingest(ctr: Containerd, ns: string, lease: string, c: CheckedArchive, manifestDigest: string | null): Promise<Ingested> {
  const what = `cached archive ${c.archive.path} for ${c.image}`;
  const tar = await indexTar(c.fh, c.archive.size, what);
  const bad = (why: string) => new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what}: ${why}`);
  const entry = (name: string): TarEntry | undefined => tar.files.get(tar.links.get(name) ?? name);
  const json = async (name: string, e: TarEntry | undefined = entry(name)): Promise<unknown> => {
    if (!e) throw bad(`${name} is missing`);
    if (e.size > MAX_META) throw bad(`${name} is ${e.size} bytes; refusing more than ${MAX_META}`);
    const b = Buffer.alloc(e.size);
    await c.fh.read(b, 0, e.size, e.offset);
    try {
      return JSON.parse(b.toString('utf8'));
    } catch {
      throw bad(`${name} is not JSON`);
    }
  };
  const write = (e: TarEntry, expected?: string, labels?: Record<string, string>) => ctr.writeBlob(ns, lease, { fh: c.fh, offset: e.offset, size: e.size, expected, labels });
  const writeBytes = (bytes: Buffer, expected: string, labels: Record<string, string>) => ctr.writeBlob(ns, lease, { bytes, offset: 0, size: bytes.length, expected, labels });
  if (tar.files.has('oci-layout')) return oci(tar, json, write, bad, manifestDigest, c);
  if (tar.files.has('manifest.json')) return docker(tar, entry, json, write, writeBytes, bad, c);
  throw bad('it has neither oci-layout nor manifest.json; not an OCI or docker image archive');
}

type Json = (name: string, e?: TarEntry) => Promise<unknown>;
type Write = (e: TarEntry, expected?: string, labels?: Record<string, string>) => Promise<string>;
type WriteBytes = (bytes: Buffer, expected: string, labels: Record<string, string>) => Promise<string>;
type Bad = (why: string) => SealkitError;

async function oci(tar: TarIndex, json: Json, write: Write, bad: Bad, manifestDigest: string | null, c: CheckedArchive): Promise<Ingested> {
  const index = (await json('index.json')) as ArchiveMeta['index'];
  if (!index || typeof index !== 'object' || (index.manifests !== undefined && !Array.isArray(index.manifests))) throw bad('index.json is not an OCI index');
  const listed = (index.manifests ?? []) as Descriptor[];
  const top = listed.find((m) => m && m.digest === manifestDigest);
  if (!top) {
    const seen = listed.map((m) => m?.digest).join(', ') || 'none';
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `the archive for ${c.image} lists manifest(s) ${seen}, but the verified manifest is ${manifestDigest}; nothing was imported`);
  }
  const blobEntry = (d: Descriptor): TarEntry | undefined => {
    const hex = /^sha256:([0-9a-f]{64})$/.exec(d.digest ?? '')?.[1];
    return hex ? tar.files.get(`blobs/sha256/${hex}`) : undefined;
  };
  // every blob the target reaches, manifests labelled with their children
  const blobs = new Map<string, { e: TarEntry; labels?: Record<string, string> }>();
  const visit = async (d: Descriptor): Promise<void> => {
    if (!d || typeof d.digest !== 'string' || blobs.has(d.digest)) return;
    const e = blobEntry(d);
    if (!e) {
      if (/nondistributable|foreign/.test(d.mediaType ?? '')) return; // never in an archive
      throw bad(`blob ${d.digest} that the image names is not in the archive`);
    }
    blobs.set(d.digest, { e });
    if (!MANIFESTS.has(d.mediaType ?? '') && !INDEXES.has(d.mediaType ?? '')) return;
    const doc = (await json(d.digest, e)) as { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
    const labels: Record<string, string> = {};
    const children: Descriptor[] = [];
    if (INDEXES.has(d.mediaType!)) {
      (doc.manifests ?? []).forEach((m, i) => (labels[`containerd.io/gc.ref.content.m.${i}`] = String(m?.digest), children.push(m)));
    } else {
      if (doc.config) (labels['containerd.io/gc.ref.content.config'] = String(doc.config.digest), children.push(doc.config));
      (doc.layers ?? []).forEach((l, i) => (labels[`containerd.io/gc.ref.content.l.${i}`] = String(l?.digest), children.push(l)));
    }
    blobs.get(d.digest)!.labels = labels;
    for (const child of children) await visit(child);
  };
  await visit(top);
  // children first: a manifest is committed only once what it names is in
  const order = [...blobs].reverse();
  await all(order.filter(([, b]) => !b.labels).map(([d, b]) => write(b.e, d)));
  for (const [d, b] of order.filter(([, b]) => b.labels)) await write(b.e, d, b.labels);
  const annotations = { ...(top.annotations ?? {}) };
  delete annotations[OCI_NAME];
  delete annotations[OCI_REF];
  return {
    target: { ref: '', labels: {}, mediaType: top.mediaType ?? '', digest: top.digest!, size: Number(top.size ?? 0), annotations },
    meta: { index: structuredClone(index) },
  };
}

async function docker(tar: TarIndex, entry: (n: string) => TarEntry | undefined, json: Json, write: Write, writeBytes: WriteBytes, bad: Bad, c: CheckedArchive): Promise<Ingested> {
  const list = (await json('manifest.json')) as ArchiveMeta['manifest'];
  if (!Array.isArray(list) || !list.every((m) => m && typeof m === 'object')) throw bad('manifest.json is not a list of objects');
  if (list.length !== 1) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `the archive for ${c.image} holds ${list.length} images in manifest.json; one was verified, so nothing was imported`);
  }
  const m = list[0];
  const named = /([0-9a-f]{64})(\.json)?$/.exec(m.Config ?? '')?.[1];
  if (!named) throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `the archive for ${c.image} names config ${m.Config ?? 'none'} in manifest.json, which is not a digest; nothing was imported`);
  const cfg = entry(clean(m.Config!));
  if (!cfg) throw bad(`the config ${m.Config} that manifest.json names is not in the archive`);
  const layerNames = (m.Layers ?? []).map((l) => clean(String(l)));
  const entries = layerNames.map((n) => {
    const e = entry(n);
    if (!e) throw bad(`layer ${n} that manifest.json names is not in the archive`);
    return e;
  });
  const nameOf = new Map([...tar.files].map(([n, e]) => [e, n]));
  // as containerd's importer: the digest from the bytes, the media type from the first bytes
  const unique = new Map<TarEntry, Promise<string>>();
  const digestOf = (e: TarEntry) => {
    const hex = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(nameOf.get(e) ?? '')?.[1];
    let p = unique.get(e);
    if (!p) unique.set(e, (p = write(e, hex ? `sha256:${hex}` : undefined)));
    return p;
  };
  const layerTypes = await Promise.all(entries.map((e) => layerType(c, e)));
  const written = entries.map(digestOf);
  const [configDigest, layerDigests] = await Promise.all([write(cfg, `sha256:${named}`), all(written)]).catch(async (err) => {
    await all(written).catch(() => {});
    throw err;
  });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: configDigest, size: cfg.size },
      layers: entries.map((e, i) => ({ mediaType: layerTypes[i], digest: layerDigests[i], size: e.size })),
    }),
  );
  const labels: Record<string, string> = { 'containerd.io/gc.ref.content.config': configDigest };
  layerDigests.forEach((d, i) => (labels[`containerd.io/gc.ref.content.l.${i}`] = d));
  const digest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
  await writeBytes(manifest, digest, labels);
  return {
    target: { ref: '', labels: {}, mediaType: DOCKER_MANIFEST, digest, size: manifest.length, annotations: {} },
    meta: { manifest: structuredClone(list) },
  };
}

// every write ended (none still running when the caller drops the lease), the first failure thrown
async function all<T>(writes: Array<Promise<T>>): Promise<T[]> {
  const done = await Promise.allSettled(writes);
  const failed = done.find((d) => d.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return done.map((d) => (d as PromiseFulfilledResult<T>).value);
}

const clean = (n: string) => n.replace(/^(\.\/)+/, '').replace(/^\/+/, '');

// containerd's compression.DetectCompression on the layer's first bytes
async function layerType(c: CheckedArchive, e: TarEntry): Promise<string> {
  const b = Buffer.alloc(Math.min(4, e.size));
  await c.fh.read(b, 0, b.length, e.offset);
  if (b.length >= 3 && b[0] === 0x1f && b[1] === 0x8b && b[2] === 0x08) return 'application/vnd.docker.image.rootfs.diff.tar.gzip';
  if (b.length >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return 'application/vnd.oci.image.layer.v1.tar+zstd';
  return 'application/vnd.docker.image.rootfs.diff.tar';
}
