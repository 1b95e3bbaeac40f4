// Runs inside the verity bench's VM (bench/verity.ts), from dist/ on the
// store disk: what the ima service does to a verified rootfs when the node's
// mechanism is IPE + fs-verity (security.ima labels, then fs-verity on every
// file), timed on one tree of the store. Prints one RESULT line for the host.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { enableVerity } from '../services/ima/fsverity.ts';
import { HashPool } from '../services/ima/hashpool.ts';
import { hashAndLabelTree } from '../services/ima/labeltree.ts';

const root = process.argv[2];
if (!root) throw new Error('usage: verity-guest ROOT');
const pool = new HashPool();
try {
  const t0 = performance.now();
  const labelled = await hashAndLabelTree(root, pool);
  const t1 = performance.now();
  await enableVerity(Object.keys(labelled.digests).map((f) => join(root, f)));
  const t2 = performance.now();
  console.log(`RESULT sealkit files=${labelled.files} bytes=${labelled.bytes} label_ms=${(t1 - t0).toFixed(0)} verity_ms=${(t2 - t1).toFixed(0)}`);
} finally {
  await pool.close();
}
