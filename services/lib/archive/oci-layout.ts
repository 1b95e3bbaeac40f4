import { SealkitError } from '../errors.ts';
import { checkLayer, invalid, layerList, type Catalog, type Found } from './catalog.ts';
import type { ArchiveOptions, OpenedImage } from './image.ts';

// An OCI image layout (oci-layout + index.json + blobs/sha256/…): every blob
// is named by its digest, descriptors carry sizes, and an index picks the
// manifest, by digest, by tag, or this machine's platform in a nested index.

export function isOciLayout(c: Catalog): boolean {
  return c.has('oci-layout') && c.has('index.json');
}

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

function blob(c: Catalog, d: Descriptor, purpose: string): Found {
  const r = c.find(`blobs/sha256/${d.digest.slice(7)}`, purpose);
  if (r.sha256 !== d.digest.slice(7) || r.size !== d.size) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${c.what}: ${purpose} blob does not match its descriptor (${d.digest}, ${d.size} bytes): got sha256:${r.sha256}, ${r.size} bytes`, { expected: d.digest, actual: `sha256:${r.sha256}` });
  }
  return r;
}

const goArch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' };

export function openOci(c: Catalog, opts: ArchiveOptions): Omit<OpenedImage, 'compression' | 'stats'> {
  const what = c.what;
  // every blob in an OCI layout is named by its digest: check them all
  for (const [name, r] of c.recorded) {
    const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
    if (m && m[1] !== r.sha256) {
      throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: blob "${name}" hashes to ${r.sha256}; the archive is corrupt`, { entry: name, expected: m[1], actual: r.sha256 });
    }
  }
  const index = c.json(c.find('index.json', 'the OCI index'), 'the OCI index');
  const list = Array.isArray(index.manifests) ? index.manifests.map((m, i) => descriptor(m, what, `index.json manifests[${i}]`)) : [];
  if (list.length === 0) throw invalid(what, 'has an index.json without manifests');
  let chosen = opts.manifestDigest ? list.find((d) => d.digest === opts.manifestDigest) : undefined;
  if (opts.manifestDigest && !chosen) throw invalid(what, `does not contain the manifest ${opts.manifestDigest}`);
  chosen ??= list.find((d) => opts.ref && (d.annotations?.['org.opencontainers.image.ref.name'] === opts.ref.tag || d.annotations?.['io.containerd.image.name'] === `${opts.ref.name}:${opts.ref.tag}`)) ?? list[0];
  let manifest = c.json(blob(c, chosen, 'manifest'), 'a manifest');
  let manifestDigest = chosen.digest;
  for (let depth = 0; Array.isArray(manifest.manifests) && depth < 2; depth++) {
    // a nested index (multi-platform): take this machine's platform
    const subs = manifest.manifests.map((m, i) => descriptor(m, what, `nested index manifests[${i}]`));
    const arch = goArch[process.arch] ?? process.arch;
    const sub = subs.find((d) => d.platform?.os === 'linux' && d.platform?.architecture === arch) ?? subs[0];
    if (!sub) throw invalid(what, 'has an empty nested index');
    manifest = c.json(blob(c, sub, 'manifest'), 'a manifest');
    manifestDigest = sub.digest;
  }
  const cd = descriptor(manifest.config, what, 'the manifest config');
  const config = c.json(blob(c, cd, 'config'), 'the image config');
  const ls = Array.isArray(manifest.layers) ? manifest.layers.map((l, i) => descriptor(l, what, `manifest layers[${i}]`)) : [];
  const diffIds = layerList(what, config, ls.length);
  const layers = ls.map((d, i) => {
    const r = blob(c, d, `layer ${i}`);
    const compression = checkLayer(what, r, diffIds[i], i);
    return { index: i, digest: d.digest, diffId: diffIds[i], mediaType: d.mediaType, size: d.size, compression, entry: r.name };
  });
  const repoTags = list.map((d) => d.annotations?.['io.containerd.image.name']).filter((t): t is string => typeof t === 'string');
  return { format: 'oci-archive', manifestDigest, manifest, configDigest: cd.digest, config, layers, repoTags };
}
