import { spawnSync } from 'node:child_process';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';

// A small real filesystem for disk-full tests: a tmpfs mounted (as root) on
// a directory a service writes to, filled to the last byte by a filler file
// and freed by removing it, unmounted in teardown.

export interface SmallDisk {
  dir: string;
  fill(): Promise<void>; // until the kernel says ENOSPC
  free(): Promise<void>;
  unmount(): Promise<void>;
}

export const canMount = process.getuid?.() === 0 && spawnSync('mount', ['--version']).status === 0;

export async function smallDisk(dir: string, sizeMb = 8): Promise<SmallDisk> {
  await mkdir(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMb}m,mode=0755`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount tmpfs on ${dir}: ${r.stderr}`);
  const filler = join(dir, '.filler');
  let mounted = true;
  return {
    dir,
    async fill() {
      const fh = await open(filler, 'a');
      const block = Buffer.alloc(64 * 1024);
      try {
        for (;;) await fh.write(block);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        await fh.close();
      }
      // the last partial pages too
      const small = await open(filler, 'a');
      try {
        for (;;) await small.write(Buffer.alloc(512));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        await small.close();
      }
    },
    async free() {
      await rm(filler, { force: true });
    },
    async unmount() {
      if (!mounted) return;
      mounted = false;
      // lazy: a service that failed to stop must not keep the mount
      spawnSync('umount', ['-l', dir]);
    },
  };
}
