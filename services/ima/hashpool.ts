import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';

// A pool of worker threads that hash files — and, when asked, write the
// security.ima digest label right after — so reading, SHA-256 and setxattr
// run off the main thread on every core. Work goes out in small batches so
// one big file does not hold up a queue of small ones.

export type HashResult = { sha256: string; size: number } | { error: string; code?: string };

// Plain JS evaluated in each worker: no loader needed, works from source and
// from a compiled build alike. fs-xattr is a Node-API addon, safe in workers.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { openSync, readSync, closeSync } = require('node:fs');
const { createHash } = require('node:crypto');
const buf = Buffer.allocUnsafe(1 << 20);
const header = Buffer.from([0x04, 0x04]);
const xattr = import(workerData.xattr);
parentPort.on('message', async ({ id, paths, label }) => {
  const { setAttributeSync } = label ? await xattr : {};
  const results = paths.map((p) => {
    let fd = -1;
    try {
      fd = openSync(p, 'r');
      const h = createHash('sha256');
      let size = 0, n;
      while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) { h.update(buf.subarray(0, n)); size += n; }
      const digest = h.digest();
      if (label) setAttributeSync(p, 'security.ima', Buffer.concat([header, digest]));
      return { sha256: digest.toString('hex'), size };
    } catch (err) {
      return { error: err.message, code: err.code };
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  });
  parentPort.postMessage({ id, results });
});
`;

export const BATCH = 32;
const IN_FLIGHT = 2; // batches queued per worker, so none waits for the main thread
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

export class HashPool {
  private workers: Slot[] = [];
  private readonly jobs = new Map<number, Job>();
  private readonly queue: Job[] = [];
  private nextId = 0;
  private closed = false;
  private idle?: NodeJS.Timeout;
  private readonly xattr = import.meta.resolve('fs-xattr');

  constructor(readonly size = Math.max(1, availableParallelism())) {}

  private spawn(): Slot {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { xattr: this.xattr } });
    w.unref(); // held only while it has work, so an idle pool never keeps a process alive
    const slot = { w, busy: 0 };
    w.on('message', ({ id, results }: { id: number; results: HashResult[] }) => {
      if (--slot.busy === 0) w.unref();
      const job = this.jobs.get(id);
      this.jobs.delete(id);
      job?.done(results);
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
      if (slot.busy >= IN_FLIGHT) return;
      const job = this.queue.shift()!;
      this.jobs.set(job.id, job);
      if (slot.busy++ === 0) slot.w.ref();
      slot.w.postMessage({ id: job.id, paths: job.paths, label: job.label });
    }
    if (!this.jobs.size && this.workers.length) {
      this.idle = setTimeout(() => void this.stopWorkers(), IDLE_MS);
      this.idle.unref();
    }
  }
}
