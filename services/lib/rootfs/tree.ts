import { readdirSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { sep } from 'node:path';

// Trees of regular files under a rootfs: the paths the label manifest keys
// by, relative to the root with '/' separators. Symlinks, devices and fifos
// are not files here: they are never followed and never labelled.

// Regular files handed out per batch: small, so that whoever consumes them
// (a hash pool) starts before the walk of a large tree ends.
export const WALK_BATCH = 32;

export function abs(root: string, rel: string): string {
  return root + sep + rel;
}

// Walk with several directories read at once; hand out regular files in
// batches as they are found.
export async function walkFiles(root: string, onBatch: (rels: string[]) => void, opts: { dirConcurrency?: number; batch?: number } = {}): Promise<void> {
  const size = opts.batch ?? WALK_BATCH;
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
                if (batch.length >= size) {
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

// The same walk, synchronous and lazy: one directory read at a time, as the
// consumer asks for the next batch. For a consumer that keeps its own threads
// busy (a hash pool): no thread-pool hop or promise per directory.
export function* fileBatches(root: string, size = WALK_BATCH): Generator<string[]> {
  const pending: string[] = [''];
  let batch: string[] = [];
  while (pending.length) {
    const rel = pending.pop()!;
    for (const e of readdirSync(rel ? abs(root, rel) : root, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) pending.push(r);
      else if (e.isFile()) {
        batch.push(r);
        if (batch.length >= size) {
          yield batch;
          batch = [];
        }
      }
    }
  }
  if (batch.length) yield batch;
}

export async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  await walkFiles(root, (rels) => out.push(...rels));
  return out.sort();
}
