import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

// What every row group needs to measure fairly: time a run, interleave the
// contenders (A, B, A, B, …) so machine noise hits both, take medians, run a
// real tool and fail loudly when it fails, read a process's resident memory.

export interface Row {
  group: string;
  row: string;
  sealkit: string;
  peer: string;
  ratio: string;
  target: string;
  status: 'PASS' | 'MISS' | 'info' | 'n/a' | 'FAIL';
  note?: string;
}

export interface BenchContext {
  quick: boolean;
  tmp: string; // removed by the runner at exit
  log(line: string): void;
  defer(cleanup: () => Promise<void> | void): void; // run at the end of the group, last in first out
}

export type Group = (ctx: BenchContext) => Promise<Row[]>;

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/**
 * Runs each contender `reps` times, interleaved, and returns each one's times
 * in ms. `warm`: before each timed run, that many bytes of page cache are
 * written and freed in that directory (warmPageCache).
 */
export async function interleave<K extends string>(reps: number, contenders: Record<K, () => Promise<unknown>>, after?: (k: K) => Promise<void>, o: { warm?: { dir: string; bytes: number } } = {}): Promise<Record<K, number[]>> {
  const keys = Object.keys(contenders) as K[];
  const out = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<K, number[]>;
  for (let i = 0; i < reps; i++) {
    for (const k of keys) {
      if (o.warm) await warmPageCache(o.warm.dir, o.warm.bytes);
      out[k].push(await timed(contenders[k]));
      await after?.(k);
    }
  }
  return out;
}

// This machine is a Firecracker VM (free page reporting on): page cache the
// guest has not used lately is slow to take. Measured 2026-12-07, `dd` of
// 1 GiB, no fsync, nothing dirty being throttled: into new page cache
// 6.1-11.5 s (93-170 MB/s), right after 1 GiB of page cache was freed
// 0.20-0.33 s; touching and freeing anonymous memory first did not help
// (6.8-10.8 s). A run that writes a big file (a fetch's 1 GiB, a pull's
// layout, dd) then pays for the machine, more or less by the chance of what
// ran before it, and a real machine does not. Writing `bytes` to a file and
// deleting it before the run (its dirty pages are dropped, not written)
// leaves that much page cache freed, which the run takes first.
export async function warmPageCache(dir: string, bytes: number): Promise<void> {
  const file = join(dir, '.warm');
  await sh('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', `count=${Math.ceil(bytes / MiB)}`, 'status=none']);
  await rm(file, { force: true });
}

export function median(xs: number[]): number {
  return percentile(xs, 50);
}

// nearest-rank percentile
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length, Math.max(1, rank)) - 1];
}

export const fmt = {
  ms: (ms: number) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 100 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`),
  rate: (bytes: number, ms: number) => `${((bytes / MiB) / (ms / 1000)).toFixed(0)} MiB/s`,
  mib: (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`,
  x: (r: number) => `${r.toFixed(2)}×`,
  pct: (r: number) => `${(r * 100).toFixed(0)} %`,
  n: (n: number) => Math.round(n).toLocaleString('en-US'),
};

/** Runs a real tool; resolves with stdout, rejects with its stderr. */
export function sh(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    child.stderr!.on('data', (d: Buffer) => (err = (err + d).slice(-4000)));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code ?? signal}: ${err.trim()}`))));
  });
}

/** VmRSS of a live process, in bytes. */
export function rss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** A process's proportional set size: its private pages plus its share of
 * the pages it shares (a thousand nats-servers share one binary's text,
 * which RSS counts in full for each). */
export function pss(pid: number): number {
  const m = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  if (!m) throw new Error(`no Pss for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Samples a process's RSS every `everyMs` until stopped; returns the peak. */
export function rssPeak(pid: number, everyMs = 50): { stop(): number } {
  let peak = 0;
  const sample = () => {
    try {
      peak = Math.max(peak, rss(pid));
    } catch {
      // exited
    }
  };
  sample();
  const t = setInterval(sample, everyMs);
  return {
    stop() {
      clearInterval(t);
      sample();
      return peak;
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function row(group: string, r: Omit<Row, 'group'>): Row {
  return { group, ...r };
}

export function verdict(ok: boolean): 'PASS' | 'MISS' {
  return ok ? 'PASS' : 'MISS';
}
