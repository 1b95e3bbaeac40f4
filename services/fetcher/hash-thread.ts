import { Worker } from 'node:worker_threads';

// SHA-256 of a file on a thread of its own: the archive's digest is taken
// while the main thread opens the same archive (gunzip, tar walk, diffIds),
// so the two passes run on two cores instead of one after the other. Plain
// JavaScript evaluated in the worker: it needs no loader and reads with one
// reused buffer (no garbage, no stream).
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { openSync, readSync, closeSync } = require('node:fs');
const hash = createHash('sha256');
const buf = Buffer.allocUnsafe(1 << 20);
const fd = openSync(workerData, 'r');
let size = 0;
try {
  for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; size += n) hash.update(buf.subarray(0, n));
} finally {
  closeSync(fd);
}
parentPort.postMessage({ sha256: hash.digest('hex'), size });
`;

export function sha256FileThread(path: string): Promise<{ sha256: string; size: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(SOURCE, { eval: true, workerData: path, execArgv: [] });
    let result: { sha256: string; size: number } | undefined;
    w.once('message', (m: { sha256: string; size: number }) => (result = m));
    w.once('error', reject);
    w.once('exit', (code) => (result ? resolve(result) : reject(new Error(`hashing ${path} stopped (exit ${code})`))));
  });
}
