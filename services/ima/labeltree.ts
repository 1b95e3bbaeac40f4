import { SealkitError } from '../lib/errors.ts';
import { abs, fileBatches } from '../lib/rootfs/tree.ts';
import { BATCH, HashPool, type HashResult } from './hashpool.ts';
import { digestLabel, writeLabel } from './label.ts';
import { signatureLabel, type SigningKey } from './digsig.ts';

// Hash and label the regular files of a tree on the pool. Maps are keyed by
// rootfs-relative path; values are sha256 hex, as the labels need them.

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
  let failure: { err: unknown } | undefined;
  const submit = (rels: string[]) => {
    const labelled = pool.hashFiles(rels.map((r) => abs(root, r)), { label: opts.label }).then((res) => {
      bytes += collect(root, rels, res, digests);
    });
    work.push(labelled.catch((err: unknown) => void (failure ??= { err })));
  };
  if (opts.files) for (let i = 0; i < opts.files.length; i += BATCH) submit(opts.files.slice(i, i + BATCH));
  else {
    // the walk stays a few batches ahead of the pool, and stops at the first failure
    for (const rels of fileBatches(root, BATCH)) {
      submit(rels);
      await pool.room();
      if (failure) break;
    }
  }
  await Promise.all(work);
  if (failure) throw failure.err;
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
