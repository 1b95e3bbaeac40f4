import { readFile } from 'node:fs/promises';
import type { Collected } from '../lib/contract.ts';
import type { Policy } from '../lib/policy.ts';
import type { Cache, HeldImage } from './cache.ts';

// Cache entries no image of the policy in force reaches: mark what each
// named image reaches (its archive; for a registry image its manifests and
// the archive assembled from its blobs), then sweep the rest.
// An image's record is released last, after its files: a run cut short
// leaves the record, so the next run finds the image again, removes what is
// left and reports it. What its record no longer covers (a record lost, a
// refused verification's blobs) is swept all the same.

const MAX_MANIFEST = 4 * 1024 * 1024;

export type CacheRemoved = Omit<Collected, 'kind' | 'policySerial'>;

// report: called for each image once its files are gone and before its
// record is released, so a run cut short reports it again (same event id)
// rather than never.
export async function collectCache(cache: Cache, policy: Policy, forget: (h: HeldImage) => Promise<void>, report: (r: CacheRemoved) => Promise<void>): Promise<{ files: number; bytes: number }> {
  const keep = new Set<string>();
  for (const img of policy.images) for (const hex of await reaches(cache, img)) keep.add(hex);
  const named = new Set(policy.images.map((i) => key(i)));
  const keepRefs = new Set(policy.images.filter((i) => i.source.startsWith('oci://')).map((i) => i.sha256));

  const unnamed = { files: 0, bytes: 0 }; // entries no record named
  const removed = new Set<string>();
  const drop = async (hex: string): Promise<number> => {
    if (keep.has(hex) || removed.has(hex)) return 0;
    removed.add(hex);
    const bytes = await cache.size(hex);
    await cache.remove(hex);
    return bytes;
  };
  for (const h of await cache.held()) {
    if (named.has(key(h))) continue;
    // what it reaches is read before its ref goes
    const hexes = [...(await reaches(cache, h))];
    await forget(h); // the fetcher's own memory of having verified it, first
    if (!keepRefs.has(h.sha256)) await cache.removeRef(h.sha256);
    let bytes = 0;
    const where: string[] = [];
    for (const hex of hexes) {
      const n = await drop(hex);
      if (n) where.push(cache.path(hex));
      bytes += n;
    }
    await report({ image: { name: h.name, tag: h.tag, digest: h.sha256 }, where, bytes });
    await cache.release(h);
  }
  for (const ref of await cache.refs()) if (!keepRefs.has(ref)) await cache.removeRef(ref);
  for (const hex of await cache.entries()) {
    const n = await drop(hex);
    if (removed.has(hex)) {
      unnamed.files++;
      unnamed.bytes += n;
    }
  }
  return unnamed;
}

function key(i: { name: string; tag: string; sha256: string }): string {
  return JSON.stringify([i.name, i.tag, i.sha256]);
}

// The cache files an image needs. URL sources: the archive, named by the pin.
// oci://: the pinned manifest (an index names one manifest per platform, the
// one picked is cached) and the archive assembled from the blobs; the blobs
// themselves are only inside the archive.
async function reaches(cache: Cache, img: { sha256: string; source: string }): Promise<Set<string>> {
  const out = new Set<string>([img.sha256]);
  if (!img.source.startsWith('oci://')) return out;
  const archive = await cache.getRef(img.sha256);
  if (archive) out.add(archive);
  for (const d of (await readManifest(cache, img.sha256))?.manifests ?? []) {
    const hex = hexOf(d?.digest);
    if (hex) out.add(hex);
  }
  return out;
}

type Descriptors = { manifests?: Array<{ digest?: unknown }> };

async function readManifest(cache: Cache, hex: string): Promise<Descriptors | undefined> {
  if ((await cache.size(hex)) > MAX_MANIFEST) return undefined;
  try {
    const doc = JSON.parse(await readFile(cache.path(hex), 'utf8')) as unknown;
    return doc && typeof doc === 'object' ? (doc as Descriptors) : undefined;
  } catch {
    return undefined; // gone or not JSON: nothing more is reached through it
  }
}

function hexOf(digest: unknown): string | undefined {
  return typeof digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(digest) ? digest.slice(7) : undefined;
}
