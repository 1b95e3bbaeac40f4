import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';

// A pool of worker threads that hash files — and, when asked, write the
// security.ima digest label right after — so reading, SHA-256 and setxattr
// run off the main thread on every core. Work goes out in small batches so
// one big file does not hold up a queue of small ones; results come back as
// one transferred buffer of raw digests per batch, not an object per file.

export type HashResult = { sha256: string; size: number } | { error: string; code?: string };

// Plain JS evaluated in each worker: no loader needed, works from source and
// from a compiled build alike. fs-xattr is a Node-API addon, safe in workers.
// A file that fits the read buffer is hashed in one call (most files of a
// rootfs do): a Hash object per file costs more than hashing a small file.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { openSync, readSync, closeSync, constants: { O_RDONLY } } = require('node:fs');
const { createHash, hash: oneShot } = require('node:crypto');
const hash = oneShot ?? ((alg, data) => createHash(alg).update(data).digest()); // crypto.hash is Node >= 20.12
const buf = Buffer.allocUnsafe(workerData.readSize);
const value = Buffer.from([0x04, 0x04, ...Buffer.alloc(32)]); // IMA_XATTR_DIGEST_NG, HASH_ALGO_SHA256, digest
const xattr = import(workerData.xattr);
function hashFile(path) {
  const fd = openSync(path, O_RDONLY);
  try {
    let size = 0, n;
    while (size < buf.length && (n = readSync(fd, buf, size, buf.length - size, null)) > 0) size += n;
    if (size < buf.length) return { digest: hash('sha256', buf.subarray(0, size), 'buffer'), size };
    const h = createHash('sha256').update(buf);
    while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) { h.update(buf.subarray(0, n)); size += n; }
    return { digest: h.digest(), size };
  } finally {
    closeSync(fd);
  }
}
parentPort.on('message', async ({ id, paths, label }) => {
  const { setAttributeSync } = label ? await xattr : {};
  const digests = new Uint8Array(32 * paths.length); // its own ArrayBuffer (not the Buffer pool), transferred back
  const sizes = new Float64Array(paths.length);
  const errors = [];
  for (let i = 0; i < paths.length; i++) {
    const p = paths[i];
    try {
      const { digest, size } = hashFile(p);
      if (label) {
        digest.copy(value, 2);
        setAttributeSync(p, 'security.ima', value);
      }
      digest.copy(digests, 32 * i);
      sizes[i] = size;
    } catch (err) {
      errors.push({ i, error: err.message, code: err.code });
    }
  }
  parentPort.postMessage({ id, digests, sizes, errors }, [digests.buffer, sizes.buffer]);
});
`;

export const BATCH = 64;
const IN_FLIGHT = 2; // batches posted per worker, so none waits for the main thread
export const READ_SIZE = 1 << 20; // one read buffer per worker; a file up to this size is hashed in one call
// An idle worker is a whole V8 isolate (several MB resident): the workers
// start with the first job and stop once the pool has had nothing to do for this long.
const IDLE_MS = 10_000;

interface Job {
  id: number;
  paths: string[];
  label: boolean;
  done: (r: HashResult[]) => void;
  fail: (e: Error) => void;
}

interface Slot {
  w: Worker;
  busy: number;
}

interface Reply {
  id: number;
  digests: Uint8Array;
  sizes: Float64Array;
  errors: Array<{ i: number; error: string; code?: string }>;
}

function results({ digests, sizes, errors }: Reply): HashResult[] {
  const hex = Buffer.from(digests.buffer, digests.byteOffset, digests.byteLength);
  const out: HashResult[] = Array.from(sizes, (size, i) => ({ sha256: hex.toString('hex', 32 * i, 32 * i + 32), size }));
  for (const { i, error, code } of errors) out[i] = { error, code };
  return out;
}

export class HashPool {
  private workers: Slot[] = [];
  private readonly jobs = new Map<number, Job>();
  private readonly queue: Job[] = [];
  private readonly waiting: Array<() => void> = [];
  private nextId = 0;
  private closed = false;
  private idle?: NodeJS.Timeout;
  private readonly xattr = import.meta.resolve('fs-xattr');

  constructor(readonly size = Math.max(1, availableParallelism())) {}

  private spawn(): Slot {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { xattr: this.xattr, readSize: READ_SIZE } });
    w.unref(); // held only while it has work, so an idle pool never keeps a process alive
    const slot = { w, busy: 0 };
    w.on('message', (reply: Reply) => {
      if (--slot.busy === 0) w.unref();
      const job = this.jobs.get(reply.id);
      this.jobs.delete(reply.id);
      job?.done(results(reply));
      this.pump();
    });
    w.on('error', (err) => {
      for (const job of this.jobs.values()) job.fail(err);
      this.jobs.clear();
    });
    return slot;
  }

  // Hash files; with label, also write security.ima = 0x04 0x04 + digest.
  async hashFiles(paths: string[], opts: { label?: boolean } = {}): Promise<HashResult[]> {
    if (this.closed) throw new Error('hash pool is closed');
    const parts: Array<Promise<HashResult[]>> = [];
    for (let i = 0; i < paths.length; i += BATCH) {
      const slice = paths.slice(i, i + BATCH);
      parts.push(new Promise((done, fail) => this.queue.push({ id: this.nextId++, paths: slice, label: opts.label ?? false, done, fail })));
    }
    this.pump();
    return (await Promise.all(parts)).flat();
  }

  // Resolves once the batches waiting for a worker are few enough to add
  // more: a producer that awaits it between batches (a tree walk) stays just
  // ahead of the workers instead of queueing the whole tree.
  room(): Promise<void> {
    if (this.queue.length < this.size * IN_FLIGHT) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idle);
    await this.stopWorkers();
  }

  private async stopWorkers(): Promise<void> {
    const workers = this.workers;
    this.workers = [];
    await Promise.all(workers.map((s) => s.w.terminate()));
  }

  private pump(): void {
    clearTimeout(this.idle);
    if (this.queue.length && !this.workers.length) for (let i = 0; i < this.size; i++) this.workers.push(this.spawn());
    while (this.queue.length) {
      const slot = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
      if (slot.busy >= IN_FLIGHT) break;
      const job = this.queue.shift()!;
      this.jobs.set(job.id, job);
      if (slot.busy++ === 0) slot.w.ref();
      slot.w.postMessage({ id: job.id, paths: job.paths, label: job.label });
    }
    if (!this.jobs.size && this.workers.length) {
      this.idle = setTimeout(() => void this.stopWorkers(), IDLE_MS);
      this.idle.unref();
    }
    if (this.queue.length < this.size * IN_FLIGHT) for (const resolve of this.waiting.splice(0)) resolve();
  }
}
