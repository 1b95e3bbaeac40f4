import { link, open, readdir, readFile, rename, mkdir, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

// Write a file so that readers see either the old content or the new, never
// a half-written one: temp file in the same directory, fsync, rename, fsync
// the directory.
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = await writeTemp(path, data, mode);
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(dirname(path));
}

// Several files that change together, at the cost of two sync latencies
// where one writeFileAtomic after another costs two each: every temp file is
// written and synced at once, then renamed into place in the order given,
// then each directory is synced once. A reader sees each file old or new.
// A crash between the renames keeps a prefix of them: the journal of ext4
// (the node's state disk) commits metadata in the order it happened, so a
// later rename is not on disk without the earlier ones; order the files so
// that any prefix is a state the reader accepts.
export async function writeFilesAtomic(files: Array<{ path: string; data: string | Uint8Array; mode?: number }>): Promise<void> {
  const temps = await Promise.allSettled(files.map((f) => writeTemp(f.path, f.data, f.mode ?? 0o644)));
  const made = temps.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = temps.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  let i = 0;
  try {
    if (failed) throw failed.reason;
    for (; i < files.length; i++) await rename(made[i], files[i].path);
  } catch (err) {
    await Promise.all(made.slice(i).map((tmp) => rm(tmp, { force: true })));
    throw err;
  }
  await Promise.all([...new Set(files.map((f) => dirname(f.path)))].map(syncDir));
}

// The whole content, synced, under a temporary name next to path.
async function writeTemp(path: string, data: string | Uint8Array, mode: number): Promise<string> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return tmp;
}

// Create path with data unless it exists: the first of racing writers wins
// (a hard link fails on an existing name, where a rename would replace it),
// and no reader sees a half-written file. True when this call created it.
export async function createFileOnce(path: string, data: string | Uint8Array, mode = 0o644): Promise<boolean> {
  const tmp = await writeTemp(path, data, mode);
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
  await syncDir(dirname(path));
  return true;
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

// The records of a directory written one per file with writeFileAtomic: only
// whole ones (a temp file of a write cut short never becomes a .json).
export async function readRecords<T>(dir: string): Promise<T[]> {
  const out: T[] = [];
  for (const name of await readdir(dir)) {
    if (!name.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(await readFile(join(dir, name), 'utf8')) as T);
    } catch {
      // gone meanwhile, or not ours
    }
  }
  return out;
}
