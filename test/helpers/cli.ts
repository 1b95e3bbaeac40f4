import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../../services/lib/config.ts';

export const sealkitBin = join(repoRoot, 'bin', 'sealkit');
// written by every compile (iso/build.ts compiledStamp): an output whose
// content did not change keeps its old time, so no output says when dist/
// was last made
const built = join(repoRoot, 'dist', '.compiled');

// bin/sealkit runs the compiled CLI: a test of it is a test of dist/, which
// must then be at least as new as the sources (make test builds first).
function newestSource(dir: string): { path: string; mtime: number } {
  let best = { path: dir, mtime: 0 };
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    const c = e.isDirectory() ? newestSource(p) : e.name.endsWith('.ts') ? { path: p, mtime: statSync(p).mtimeMs } : best;
    if (c.mtime > best.mtime) best = c;
  }
  return best;
}

let checked = false;
export function assertBuilt(): void {
  if (checked) return;
  let at: number;
  try {
    at = statSync(built).mtimeMs;
  } catch {
    throw new Error(`${built} is missing: run "make build" (make test does) before tests that run bin/sealkit`);
  }
  const src = newestSource(join(repoRoot, 'services'));
  if (src.mtime > at) throw new Error(`dist/ is older than ${src.path}: run "make build" (make test does) so bin/sealkit runs the code under test`);
  checked = true;
}

// Runs bin/sealkit as a person would, returning exit code and output.
export function sealkit(args: string[], env: Record<string, string> = {}, opts: { cwd?: string; bin?: string; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!opts.bin) assertBuilt();
  return new Promise((resolve) => {
    execFile(opts.bin ?? sealkitBin, args, { env: { ...process.env, ...env }, cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

// A long-running sealkit (watch): output so far, and a way to stop it as Ctrl-C does.
export interface Spawned {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  waitFor(pred: (stdout: string) => boolean, timeoutMs?: number): Promise<void>;
  interrupt(): Promise<number | null>;
}

export function spawnSealkit(args: string[], env: Record<string, string> = {}): Spawned {
  assertBuilt();
  const proc = spawn(sealkitBin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters = new Set<() => void>();
  proc.stdout!.on('data', (d) => {
    out += d;
    for (const w of [...waiters]) w();
  });
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    waitFor(pred, timeoutMs = 30_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!pred(out)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`sealkit ${args.join(' ')}: expected output did not come in ${timeoutMs} ms; stdout: ${out}\nstderr: ${err}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async interrupt() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGINT');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
