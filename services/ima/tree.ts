import { readdir } from 'node:fs/promises';
import { sep } from 'node:path';
import { SealkitError } from '../lib/errors.ts';
import { BATCH, HashPool, type HashResult } from './hashpool.ts';
import { digestLabel, writeLabel } from './label.ts';
import { signatureLabel, type SigningKey } from './digsig.ts';

// Trees of regular files: list them, hash them on the pool, label them.
// Paths in maps are relative to the tree root with '/' separators.

export function abs(root: string, rel: string): string {
  return root + sep + rel;
}

// Walk with several directories read at once; hand out regular files in
// batches as they are found, so hashing starts before the walk ends.
export async function walkFiles(root: string, onBatch: (rels: string[]) => void, opts: { dirConcurrency?: number } = {}): Promise<void> {
  const pending: string[] = [''];
  let batch: string[] = [];
  let active = 0;
  let failure: unknown;
  await new Promise<void>((resolve) => {
    const next = () => {
      if (failure !== undefined) return active === 0 && resolve();
      while (pending.length && active < (opts.dirConcurrency ?? 8)) {
        const rel = pending.pop()!;
        active++;
        readdir(rel ? abs(root, rel) : root, { withFileTypes: true }).then(
          (entries) => {
            for (const e of entries) {
              const r = rel ? `${rel}/${e.name}` : e.name;
              if (e.isDirectory()) pending.push(r);
              else if (e.isFile()) {
                batch.push(r);
                if (batch.length >= BATCH) {
                  onBatch(batch);
                  batch = [];
                }
              }
            }
          },
          (err) => (failure ??= err),
        ).finally(() => {
          active--;
          next();
        });
      }
      if (active === 0) resolve();
    };
    next();
  });
  if (failure !== undefined) throw failure;
  if (batch.length) onBatch(batch);
}

export async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  await walkFiles(root, (rels) => out.push(...rels));
  return out.sort();
}

function collect(root: string, rels: string[], results: HashResult[], digests: Record<string, string>): number {
  let bytes = 0;
  results.forEach((res, i) => {
    if ('error' in res) {
      throw new SealkitError('SEALKIT_LABEL_FAILED', `cannot hash or label ${abs(root, rels[i])}: ${res.error}; the tree changed underneath, or the filesystem refuses security.* xattrs — check it and run again`, { path: rels[i], errno: res.code });
    }
    digests[rels[i]] = res.sha256;
    bytes += res.size;
  });
  return bytes;
}

// Hash (and with label: true, label) every regular file under root, walking
// and hashing at the same time: the counterpart of `evmctl ima_hash -r`.
export async function hashTree(root: string, pool: HashPool, opts: { label?: boolean; files?: string[] } = {}): Promise<{ digests: Record<string, string>; files: number; bytes: number }> {
  const digests: Record<string, string> = {};
  let bytes = 0;
  const work: Array<Promise<void>> = [];
  const submit = (rels: string[]) => {
    work.push(pool.hashFiles(rels.map((r) => abs(root, r)), { label: opts.label }).then((res) => {
      bytes += collect(root, rels, res, digests);
    }));
  };
  if (opts.files) for (let i = 0; i < opts.files.length; i += BATCH) submit(opts.files.slice(i, i + BATCH));
  else await walkFiles(root, submit);
  await Promise.all(work);
  return { digests, files: Object.keys(digests).length, bytes };
}

export async function hashAndLabelTree(root: string, pool: HashPool): Promise<{ digests: Record<string, string>; files: number; bytes: number }> {
  return hashTree(root, pool, { label: true });
}

export interface LabelOptions {
  signer?: Pick<SigningKey, 'key' | 'keyid'>; // signature mode when set
  concurrency?: number;
}

// Write security.ima on every file of a path → sha256 map (digests known in
// advance, e.g. from the verified image).
export async function labelTree(root: string, digests: Record<string, string>, opts: LabelOptions = {}): Promise<number> {
  const rels = Object.keys(digests);
  let next = 0;
  const worker = async () => {
    while (next < rels.length) {
      const rel = rels[next++];
      const value = opts.signer ? signatureLabel(digests[rel], opts.signer) : digestLabel(digests[rel]);
      await writeLabel(abs(root, rel), value);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 16 }, worker));
  return rels.length;
}
