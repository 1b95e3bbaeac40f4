import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { SealkitError } from '../lib/errors.ts';

// fs-verity through the fsverity tool (fsverity-utils): Node has no ioctl.
// Files go in batches to one shell each, not one process per file.

const run = promisify(execFile);
const BATCH = 256;
// the kernel builds each file's Merkle tree in the enabling process: two
// shells at a time keep both cores of a small node busy
const LANES = 2;

// Enable fs-verity (SHA-256, 4 KiB blocks, no salt: the digest verity.ts
// computes) on each file that has none yet; the kernel makes it read-only.
// Which files have it already is asked once per batch (one process), and a
// file with several names (hard links) is enabled once: the per-file cost is
// then one `fsverity enable`, the least the tool allows.
export async function enableVerity(files: string[]): Promise<void> {
  const todo: string[] = [];
  const inodes = new Set<string>();
  for (let i = 0; i < files.length; i += BATCH) {
    const batch = files.slice(i, i + BATCH);
    const [measured, stats] = await Promise.all([measureVerity(batch), Promise.all(batch.map((f) => stat(f).catch(() => null)))]);
    batch.forEach((f, j) => {
      const st = stats[j];
      const inode = st ? `${st.dev}:${st.ino}` : f; // a missing file is left to fsverity to name
      if (measured.get(f) !== null || inodes.has(inode)) return;
      inodes.add(inode);
      todo.push(f);
    });
  }
  const lanes = Array.from({ length: LANES }, (_, k) => todo.filter((_, j) => j % LANES === k));
  await Promise.all(lanes.map(async (lane) => {
    for (let i = 0; i < lane.length; i += BATCH) {
      const batch = lane.slice(i, i + BATCH);
      // a file given verity meanwhile (by another name, another process) is not an error
      await run('sh', ['-c', 'for f do fsverity enable --hash-alg=sha256 --block-size=4096 "$f" || fsverity measure "$f" >/dev/null || exit 1; done', 'sh', ...batch]).catch((err: Error & { stderr?: string }) => {
        throw new SealkitError('SEALKIT_VERITY_FAILED', `cannot enable fs-verity on files of ${batch[0]}…: ${(err.stderr ?? err.message).trim()}; the store must be ext4 made with -O verity and 4096-byte blocks (mkfs.ext4 -b 4096 -O verity), and fsverity must be installed`);
      });
    }
  }));
}

// What the kernel measures for each file: its fs-verity digest (hex), or
// null when the file has no fs-verity (or is gone).
export async function measureVerity(files: string[]): Promise<Map<string, string | null>> {
  const out = new Map<string, string | null>(files.map((f) => [f, null]));
  for (let i = 0; i < files.length; i += BATCH) {
    const batch = files.slice(i, i + BATCH);
    // a file without verity fails on its own line; the others are still printed
    const { stdout } = await run('fsverity', ['measure', ...batch]).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    for (const line of stdout.split('\n')) {
      const m = /^sha256:([0-9a-f]{64}) (.*)$/.exec(line);
      if (m && out.has(m[2])) out.set(m[2], m[1]);
    }
  }
  return out;
}
