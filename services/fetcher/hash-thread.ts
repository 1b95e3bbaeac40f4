import { Worker } from 'node:worker_threads';

// SHA-256 of a file on a thread of its own, taken while the file is still
// being written: the caller says how far the file is complete (a registry
// pull fills a planned tar blob by blob, each at its place) and the thread
// hashes up to there, so only the last blob's bytes are left when the pull
// ends. In the same read it hashes the given ranges (the blobs, read back
// from the file after they were verified in memory), so that the main
// thread, which walks the layers, does not hash them a second time. Plain
// JavaScript evaluated in the worker: it needs no loader and reads with one
// reused buffer (no garbage, no stream).
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const hash = createHash('sha256');
const buf = Buffer.allocUnsafe(1 << 20);
const fd = openSync(workerData.path, 'r');
const ranges = workerData.ranges.map((r) => ({ ...r, hash: createHash('sha256'), done: 0 }));
let pos = 0;
parentPort.on('message', ({ upTo, last }) => {
  try {
    while (pos < upTo) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, upTo - pos), pos);
      if (n <= 0) throw new Error('the file ends at ' + pos + ', before ' + upTo);
      hash.update(buf.subarray(0, n));
      for (const r of ranges) {
        const from = Math.max(r.at, pos), to = Math.min(r.at + r.size, pos + n);
        if (from < to) r.hash.update(buf.subarray(from - pos, to - pos));
      }
      pos += n;
    }
    if (last) {
      closeSync(fd);
      parentPort.postMessage({ sha256: hash.digest('hex'), size: pos, ranges: ranges.map((r) => r.hash.digest('hex')) });
      parentPort.close();
    }
  } catch (err) {
    parentPort.postMessage({ error: err.message });
    parentPort.close();
  }
});
`;

export interface Hashed {
  sha256: string;
  size: number;
  ranges: string[]; // the digest of each range, in the order given
}

export interface FileHasher {
  /** The first `upTo` bytes of the file are written: hash them. */
  advance(upTo: number): void;
  /** The file is `size` bytes, all written: its digest and the ranges'. */
  finish(size: number): Promise<Hashed>;
  stop(): Promise<void>;
}

export function hashFileThread(path: string, ranges: Array<{ at: number; size: number }> = []): FileHasher {
  const w = new Worker(SOURCE, { eval: true, workerData: { path, ranges: ranges.map(({ at, size }) => ({ at, size })) }, execArgv: [] });
  let sent = 0;
  const result = new Promise<Hashed>((resolve, reject) => {
    let got: Hashed | undefined;
    w.once('message', (m: Hashed & { error?: string }) => (m.error ? reject(new Error(`hashing ${path}: ${m.error}`)) : (got = m)));
    w.once('error', reject);
    w.once('exit', (code) => (got ? resolve(got) : reject(new Error(`hashing ${path} stopped (exit ${code})`))));
  });
  result.catch(() => {});
  return {
    advance(upTo) {
      if (upTo <= sent) return;
      sent = upTo;
      w.postMessage({ upTo });
    },
    finish(size) {
      w.postMessage({ upTo: size, last: true });
      return result;
    },
    async stop() {
      await w.terminate();
    },
  };
}
