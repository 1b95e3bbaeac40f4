import { posix } from 'node:path';
import { SealkitError } from '../errors.ts';
import type { Compression } from './compression.ts';

// What the one pass over an outer archive learned about its entries, for the
// format readers (OCI layout, docker-archive) to look things up in: every
// file's digest and size, small files' bodies, and how each tar-looking
// entry fared when it was walked as a layer.

export interface Recorded {
  sha256: string;
  size: number;
  body?: Buffer; // kept for small files (manifests, configs, index)
  layer?: { compression: Compression; diffId?: string; entries?: number; error?: SealkitError };
}

export type Found = Recorded & { name: string };

export class Catalog {
  readonly recorded = new Map<string, Recorded>();
  readonly links = new Map<string, string>(); // symlink entry → resolved target

  constructor(readonly what: string) {}

  has(name: string): boolean {
    return this.recorded.has(name);
  }

  /** The entry `name` names, through symlinks in the archive; `purpose` says what it should be. */
  find(name: string, purpose: string): Found {
    let n = posix.normalize(name).replace(/^\.\//, '');
    for (let hops = 0; this.links.has(n) && hops < 8; hops++) n = this.links.get(n)!;
    const r = this.recorded.get(n);
    if (!r) throw invalid(this.what, `has no entry "${name}" (${purpose})`);
    return { ...r, name: n };
  }

  json(r: Found, purpose: string): Record<string, unknown> {
    if (!r.body) throw invalid(this.what, `entry "${r.name}" (${purpose}) is too large to be ${purpose}`);
    try {
      const v = JSON.parse(r.body.toString('utf8')) as unknown;
      if (v === null || typeof v !== 'object') throw new Error('not an object');
      return v as Record<string, unknown>;
    } catch (err) {
      throw invalid(this.what, `entry "${r.name}" (${purpose}) is not valid JSON: ${(err as Error).message}`);
    }
  }
}

export function invalid(what: string, msg: string, data?: Record<string, unknown>): SealkitError {
  return new SealkitError('SEALKIT_ARCHIVE_INVALID', `${what} ${msg}; the image was refused`, data);
}

/** The config's rootfs.diff_ids, one per layer. */
export function layerList(what: string, config: Record<string, unknown>, count: number): string[] {
  const diffIds = (config.rootfs as { diff_ids?: unknown } | undefined)?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== count || !diffIds.every((d) => typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d))) {
    throw invalid(what, `has a config whose rootfs.diff_ids do not list one sha256 per layer (${count} layers)`);
  }
  return diffIds as string[];
}

/** A layer the manifest names must have been walked as a tar, cleanly, to the config's diffId. */
export function checkLayer(what: string, r: Found, diffId: string, index: number): Compression {
  if (!r.layer) throw invalid(what, `layer ${index} ("${r.name}") is not a tar`);
  if (r.layer.error) throw r.layer.error;
  if (r.layer.diffId !== diffId) {
    throw new SealkitError('SEALKIT_DIGEST_MISMATCH', `${what}: layer ${index} ("${r.name}") unpacks to ${r.layer.diffId}, but the config says ${diffId}`, { entry: r.name, expected: diffId, actual: r.layer.diffId });
  }
  return r.layer.compression;
}
