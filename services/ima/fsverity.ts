import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SealkitError } from '../lib/errors.ts';

// fs-verity is enabled by sealkit-verity-enable (verity-enable.c, built
// beside this module by make build and the ISO build: Node has no ioctl),
// all of a lane's files in one process; without it, by the fsverity tool
// (fsverity-utils), one process per file, in batches to one shell each.
// Measuring uses the tool, many files per process.

const run = promisify(execFile);
const BATCH = 256;
// the kernel builds each file's Merkle tree in the enabling process: two
// at a time keep both cores of a small node busy
const LANES = 2;

// dist/services/ima/ holds the helper; run from the sources (tsx), the
// built one in dist/ is used
const HELPERS = [new URL('./sealkit-verity-enable', import.meta.url), new URL('../../dist/services/ima/sealkit-verity-enable', import.meta.url)].map((u) => fileURLToPath(u));
export const verityHelper = (): string | undefined => HELPERS.find((h) => existsSync(h));

const failed = (first: string, detail: string) =>
  new SealkitError('SEALKIT_VERITY_FAILED', `cannot enable fs-verity on files of ${first}…: ${detail.trim()}; the store must be ext4 made with -O verity and 4096-byte blocks (mkfs.ext4 -b 4096 -O verity), and fsverity must be installed`);

// Enable fs-verity (SHA-256, 4 KiB blocks, no salt: the digest verity.ts
// computes) on each file that has none yet; the kernel makes it read-only.
// A file with several names (hard links) is enabled once.
export async function enableVerity(files: string[], helper: string | null = verityHelper() ?? null): Promise<void> {
  const todo: string[] = [];
  const inodes = new Set<string>();
  for (let i = 0; i < files.length; i += BATCH) {
    const batch = files.slice(i, i + BATCH);
    // the helper takes a file that has fs-verity already; the tool is asked first
    const [measured, stats] = await Promise.all([helper ? null : measureVerity(batch), Promise.all(batch.map((f) => stat(f).catch(() => null)))]);
    batch.forEach((f, j) => {
      const st = stats[j];
      const inode = st ? `${st.dev}:${st.ino}` : f; // a missing file is left to the enabler to name
      if ((measured && measured.get(f) !== null) || inodes.has(inode)) return;
      inodes.add(inode);
      todo.push(f);
    });
  }
  const lanes = Array.from({ length: LANES }, (_, k) => todo.filter((_, j) => j % LANES === k)).filter((l) => l.length);
  await Promise.all(lanes.map(async (lane) => {
    if (helper) {
      await new Promise<void>((resolve, reject) => {
        const child = spawn(helper, [], { stdio: ['pipe', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
        child.on('error', (err) => reject(failed(lane[0], `${helper}: ${err.message}`)));
        child.stdin.on('error', () => {}); // it exits at its first failure; stderr says which
        child.on('close', (code) => (code === 0 ? resolve() : reject(failed(lane[0], stderr || `${helper} exited with ${code}`))));
        child.stdin.end(lane.map((f) => `${f}\0`).join(''));
      });
      return;
    }
    for (let i = 0; i < lane.length; i += BATCH) {
      const batch = lane.slice(i, i + BATCH);
      // a file given verity meanwhile (by another name, another process) is not an error
      await run('sh', ['-c', 'for f do fsverity enable --hash-alg=sha256 --block-size=4096 "$f" || fsverity measure "$f" >/dev/null || exit 1; done', 'sh', ...batch]).catch((err: Error & { stderr?: string }) => {
        throw failed(batch[0], err.stderr ?? err.message);
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
