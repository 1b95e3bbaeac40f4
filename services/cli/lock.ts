// One holder at a time for a lock file, with the kernel's flock(2) through
// util-linux flock(1). The kernel releases it when the holder dies, however
// it dies, so a lock left by a killed process is simply taken over, and a
// recycled pid can never keep it. The holder's pid goes into the file for the
// message a refused caller prints. The file is never removed: unlinking a
// flock file lets two processes lock two different inodes.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SealkitError } from '../lib/errors.ts';

export interface HeldLock {
  file: string;
  release(): Promise<void>;
}

const CONFLICT = 75; // flock's exit code when --nonblock finds the lock taken

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// The holder writes its pid just after it gets the lock: a reader can come
// in between, so it looks again for a moment before saying it does not know.
async function holderPid(file: string): Promise<number | undefined> {
  for (let i = 0; i < 20; i++) {
    const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) return pid;
    await new Promise((r) => setTimeout(r, 100));
  }
  return undefined;
}

// wait: block until the lock is free; otherwise refuse at once with
// {heldBy}. The flock process runs in its own session (a Ctrl-C meant for us
// must not release the lock before we have stopped) and holds the lock until
// its stdin, a pipe from this process, closes: on release or on our death.
export async function lockFile(file: string, o: { wait?: boolean } = {}): Promise<HeldLock | { heldBy: number | undefined }> {
  await mkdir(dirname(file), { recursive: true });
  const args = [o.wait ? '--exclusive' : '--nonblock', '--conflict-exit-code', String(CONFLICT), file, 'sh', '-c', 'echo locked; exec cat > /dev/null'];
  const holder = spawn('flock', args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  let stderr = '';
  holder.stderr!.on('data', (d) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => holder.once('close', (code) => resolve(code)));
  const locked = await new Promise<boolean>((resolve, reject) => {
    holder.once('error', (err) => reject(new SealkitError('SEALKIT_UNAVAILABLE', `cannot lock ${file}: flock (util-linux) did not start: ${err.message}`)));
    createInterface({ input: holder.stdout! }).once('line', () => resolve(true));
    void exited.then((code) => {
      if (code === CONFLICT) resolve(false);
      else reject(new SealkitError('SEALKIT_UNAVAILABLE', `cannot lock ${file}: flock exited ${code}: ${stderr.trim()}`));
    });
  });
  if (!locked) return { heldBy: await holderPid(file) };
  await writeFile(file, `${process.pid}\n`);
  // held, the lock alone must not keep this process alive; released, its
  // exit is awaited, which needs the handles counted again
  const handles = [holder, holder.stdin, holder.stdout, holder.stderr] as Array<{ ref?: () => void; unref?: () => void } | null>;
  for (const h of handles) h?.unref?.();
  return {
    file,
    async release() {
      for (const h of handles) h?.ref?.();
      holder.stdin!.end();
      await exited;
    },
  };
}

export function isHeld(l: HeldLock | { heldBy: number | undefined }): l is HeldLock {
  return 'release' in l;
}

// One node per state directory: make dev and make run take this lock before
// they touch anything in it.
export async function lockState(state: string): Promise<HeldLock> {
  const file = `${state}/node.lock`;
  const l = await lockFile(file);
  if (isHeld(l)) return l;
  const who = l.heldBy ? `pid ${l.heldBy}` : 'another process';
  throw new SealkitError(
    'SEALKIT_STATE_LOCKED',
    `the state directory ${state} is in use by ${who} (a "make dev" or "make run" on it; see ${file}); stop that node first, or set SEALKIT_STATE to another directory`,
    { state, pid: l.heldBy },
  );
}
