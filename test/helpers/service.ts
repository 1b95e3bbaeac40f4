import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../../services/lib/config.ts';

// Runs a real service as its own process, the way make dev and the ISO do,
// and waits for its "started" log line.
export interface RunningService {
  proc: ChildProcess;
  logs: () => Array<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  waitForLog(pred: (rec: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

// wrap: a command the service is run under (unshare …), as a bundle's runtime would
export async function startService(name: string, env: Record<string, string>, opts: { args?: string[]; entry?: string; wrap?: string[] } = {}): Promise<RunningService> {
  const entry = opts.entry ?? join(repoRoot, 'services', name, 'main.ts');
  const argv = [process.execPath, '--import', 'tsx', entry, ...(opts.args ?? [])];
  const [cmd, ...args] = [...(opts.wrap ?? []), ...argv];
  const proc = spawn(cmd, args, {
    cwd: repoRoot,
    env: { ...process.env, SEALKIT_LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // a service a failed test never stopped must neither outlive the test
  // process nor keep its worker from exiting
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  proc.unref();
  const records: Array<Record<string, unknown>> = [];
  const waiters: Array<{ pred: (r: Record<string, unknown>) => boolean; resolve: (r: Record<string, unknown>) => void }> = [];
  let buf = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        records.push(rec);
        for (const w of [...waiters]) if (w.pred(rec)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(rec);
        }
      } catch {
        // not a log record
      }
    }
  });
  proc.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-8000);
  });
  for (const s of [proc.stdout, proc.stderr] as Array<{ unref?: () => void } | null>) s?.unref?.();
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));

  const waitForLog = (pred: (r: Record<string, unknown>) => boolean, timeoutMs = 60_000) => {
    const hit = records.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${name}: no matching log line in ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
      waiters.push({ pred, resolve: (r) => (clearTimeout(t), resolve(r)) });
      void exited.then((code) => {
        clearTimeout(t);
        reject(new Error(`${name} exited with ${code} before the expected log line; stderr: ${stderr}`));
      });
    });
  };

  await waitForLog((r) => r.msg === 'started');
  return {
    proc,
    logs: () => records,
    waitForLog,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
