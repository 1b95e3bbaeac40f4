import type { Descriptor, VerifiedManifest } from './registry.ts';

// An OCI image layout tar, planned before any blob is fetched: descriptors
// carry every size, so each entry's offset is known in advance and each blob
// can be downloaded straight into its place, beside the others. The tar is
// deterministic (fixed order, mtime 0, root owner): the same image gives the
// same archive digest.

export interface LayoutParts {
  manifest: VerifiedManifest;
  index?: VerifiedManifest; // the index the manifest was picked from
  blobs: Descriptor[]; // config and layers, as the manifest names them
  refName: string;
  tag: string;
}

export interface LayoutPlan {
  size: number;
  fixed: Array<{ at: number; bytes: Buffer }>; // headers and small bodies
  blobs: Array<{ at: number; d: Descriptor }>; // where each blob's bytes go
  entries: PlannedEntry[]; // in archive order
}

export interface PlannedEntry {
  name: string;
  type: 'file' | 'directory';
  size: number;
  at: number; // where its body starts
  body?: Buffer; // the small ones, written from memory
}

const BLOCK = 512;
const padded = (n: number) => Math.ceil(n / BLOCK) * BLOCK;

export function planLayout(parts: LayoutParts): LayoutPlan {
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
  const plan: LayoutPlan = { size: 0, fixed: [], blobs: [], entries: [] };
  const entry = (name: string, size: number, type: 'file' | 'directory' = 'file', body?: Buffer) => {
    plan.fixed.push({ at: plan.size, bytes: ustarHeader(name, size, type) });
    const at = plan.size + BLOCK;
    plan.size = at + padded(size);
    plan.entries.push({ name, type, size, at, body });
    return at;
  };
  const small = (name: string, body: Buffer) => plan.fixed.push({ at: entry(name, body.length, 'file', body), bytes: body });
  small('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  small('index.json', Buffer.from(JSON.stringify(index)));
  entry('blobs/', 0, 'directory');
  entry('blobs/sha256/', 0, 'directory');
  const seen = new Set<string>();
  for (const m of [parts.index, parts.manifest]) {
    if (!m || seen.has(m.digest)) continue;
    seen.add(m.digest);
    small(`blobs/sha256/${m.digest.slice(7)}`, m.bytes);
  }
  for (const d of parts.blobs) {
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    plan.blobs.push({ at: entry(`blobs/sha256/${d.digest.slice(7)}`, d.size), d });
  }
  plan.size += 2 * BLOCK; // end of archive: two zero blocks
  return plan;
}

// POSIX ustar header (IEEE 1003.1-2001, pax "ustar Interchange Format");
// names here are ASCII and under 100 bytes. Sizes of 8 GiB and more take
// the base-256 form GNU tar and tar-stream read.
function ustarHeader(name: string, size: number, type: 'file' | 'directory'): Buffer {
  const h = Buffer.alloc(BLOCK);
  const octal = (at: number, width: number, n: number) => h.write(n.toString(8).padStart(width - 1, '0') + '\0', at, 'ascii');
  h.write(name, 0, 100, 'ascii');
  octal(100, 8, type === 'file' ? 0o644 : 0o755);
  octal(108, 8, 0); // uid
  octal(116, 8, 0); // gid
  if (size < 8 ** 11) octal(124, 12, size);
  else {
    h[124] = 0x80;
    for (let i = 135, n = size; i > 124; i--, n = Math.floor(n / 256)) h[i] = n % 256;
  }
  octal(136, 12, 0); // mtime
  h[156] = type === 'file' ? 0x30 : 0x35;
  h.write('ustar\u000000', 257, 'ascii');
  h.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}
