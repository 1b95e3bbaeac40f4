import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { codes, SealkitError } from '../../services/lib/errors.ts';

// The fuzz harness: one target per process (see run.ts). Inputs are bytes, so
// a failing case is a file that replays exactly; the generators build
// structured hostile inputs and serialize them. A watchdog thread sees the
// input being run in shared memory and, on a hang or a memory blow-up, saves
// it and kills the process (run.ts restarts it); a wrong exception type or a
// broken property is saved and the campaign goes on.

export interface Target {
  name: string;
  /** structured hostile inputs, serialized */
  arbitrary: () => fc.Arbitrary<Uint8Array>;
  /** parse the input and check the properties; a SealkitError is an accepted refusal */
  run: (input: Uint8Array) => Promise<void> | void;
  /** per-input watchdog */
  timeoutMs: number;
}

/** A broken semantic property (not a refusal). */
export class PropertyViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PropertyViolation';
  }
}

export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new PropertyViolation(message);
}

export const FUZZ_DIR = new URL('.', import.meta.url).pathname;
export const corpusDir = (target: string) => join(FUZZ_DIR, 'corpus', target);

/** Outcome of one input: ok, a refusal with a stable code, or a finding. */
export type Outcome = { kind: 'ok' } | { kind: 'refused'; code: string } | { kind: 'finding'; error: unknown };

export async function runOne(t: Target, input: Uint8Array): Promise<Outcome> {
  try {
    await t.run(input);
    return { kind: 'ok' };
  } catch (err) {
    if (err instanceof SealkitError && err.code in codes) return { kind: 'refused', code: err.code };
    return { kind: 'finding', error: err };
  }
}

export function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}\n${err.stack ?? ''}`;
  return `non-Error thrown: ${String(err)}`;
}

// Same bug, same signature: error name, message without numbers, first frame.
function signature(err: unknown): string {
  if (!(err instanceof Error)) return `throw:${typeof err}`;
  const frame = (err.stack ?? '').split('\n').find((l) => l.trim().startsWith('at ')) ?? '';
  return `${err.name}:${err.message.replace(/\d+/g, 'N').slice(0, 80)}:${frame.trim().replace(/:\d+:\d+\)?$/, '')}`;
}

const SLOT = 8 * 1024 * 1024;

export interface Stats {
  target: string;
  inputs: number;
  ok: number;
  refused: Record<string, number>;
  findings: Array<{ signature: string; file: string; count: number }>;
  slowest: { ms: number; file?: string };
  heap: { baselineMB: number; lastMB: number; maxGrowthMB: number };
  seconds: number;
}

/**
 * Replay the corpus, then fuzz until `seconds` pass. Findings go to
 * `outDir/<target>/`; stats are written to `statsFile` every few seconds.
 */
export async function campaign(t: Target, opts: { seconds: number; outDir: string; statsFile?: string; seed?: number; rssLimitMB?: number }): Promise<Stats> {
  const out = join(opts.outDir, t.name);
  mkdirSync(out, { recursive: true });
  const shared = new SharedArrayBuffer(SLOT + 64);
  const meta = new Float64Array(shared, 0, 4); // [running, startedAt, length, timeoutMs]
  const bytes = new Uint8Array(shared, 64, SLOT);
  meta[3] = t.timeoutMs;
  const dog = new Worker(new URL('./watchdog.mjs', import.meta.url), { workerData: { shared, out, target: t.name, rssLimitMB: opts.rssLimitMB ?? 1536 } });
  dog.unref();

  const stats: Stats = { target: t.name, inputs: 0, ok: 0, refused: {}, findings: [], slowest: { ms: 0 }, heap: { baselineMB: 0, lastMB: 0, maxGrowthMB: 0 }, seconds: 0 };
  const seen = new Map<string, Stats['findings'][number]>();
  const started = Date.now();
  const gc = (globalThis as { gc?: () => void }).gc;
  let lastGc = 0;
  const flush = () => {
    stats.seconds = (Date.now() - started) / 1000;
    if (opts.statsFile) writeFileSync(opts.statsFile, JSON.stringify(stats, null, 1));
  };

  const one = async (input: Uint8Array) => {
    const n = Math.min(input.length, SLOT);
    bytes.set(input.subarray(0, n));
    meta[2] = n;
    meta[1] = Date.now();
    meta[0] = 1;
    const t0 = performance.now();
    const r = await runOne(t, input);
    const ms = performance.now() - t0;
    meta[0] = 0;
    stats.inputs++;
    const id = createHash('sha256').update(input).digest('hex').slice(0, 16);
    if (ms > stats.slowest.ms) {
      stats.slowest = { ms: Math.round(ms), file: ms > 1000 ? `slow-${id}.bin` : undefined };
      if (ms > 1000) writeFileSync(join(out, `slow-${id}.bin`), input);
    }
    if (r.kind === 'ok') stats.ok++;
    else if (r.kind === 'refused') stats.refused[r.code] = (stats.refused[r.code] ?? 0) + 1;
    else {
      const sig = signature(r.error);
      let f = seen.get(sig);
      if (!f) {
        f = { signature: sig, file: `crash-${id}.bin`, count: 0 };
        seen.set(sig, f);
        stats.findings.push(f);
        writeFileSync(join(out, f.file), input);
        writeFileSync(join(out, `crash-${id}.txt`), describe(r.error));
        console.error(`[${t.name}] finding ${f.file}: ${sig}`);
      }
      f.count++;
    }
    // heap after a full GC, every 2 s: growth that never comes back is a leak
    if (gc && Date.now() - lastGc > 2000) {
      lastGc = Date.now();
      gc();
      const mb = process.memoryUsage().heapUsed / 2 ** 20;
      if (stats.heap.baselineMB === 0 && stats.inputs > 50) stats.heap.baselineMB = mb;
      stats.heap.lastMB = mb;
      if (stats.heap.baselineMB) stats.heap.maxGrowthMB = Math.max(stats.heap.maxGrowthMB, mb - stats.heap.baselineMB);
      flush();
    }
  };

  // 1. the kept corpus, every file once
  for (const dir of [corpusDir(t.name)]) {
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) if (f.endsWith('.bin')) await one(readFileSync(join(dir, f)));
  }
  // 2. generated inputs until the time is up
  const left = opts.seconds * 1000 - (Date.now() - started);
  if (left > 0) {
    await fc.assert(
      fc.asyncProperty(t.arbitrary(), async (input) => {
        await one(input);
        return true;
      }),
      { numRuns: Number.MAX_SAFE_INTEGER, interruptAfterTimeLimit: left, markInterruptAsFailure: false, seed: opts.seed, endOnFailure: true },
    );
  }
  flush();
  return stats;
}

// ---------- mutation helpers shared by the targets ----------

/** Byte-level mutations of a seed: flips, inserts, deletes, overwrites with interesting values, splices. */
export function mutated(seeds: fc.Arbitrary<Uint8Array>, maxOps = 8): fc.Arbitrary<Uint8Array> {
  const op = fc.oneof(
    fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
    fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 0x2f, 0x2e, 0x20, 0x0a, 0x30, 0x37, 0x3d, 0x22) }),
    fc.record({ k: fc.constant('ins' as const), at: fc.nat(), b: fc.uint8Array({ maxLength: 16 }) }),
    fc.record({ k: fc.constant('del' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 600 }) }),
    fc.record({ k: fc.constant('dup' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 1024 }), to: fc.nat() }),
    fc.record({ k: fc.constant('cut' as const), at: fc.nat() }),
  );
  return fc.tuple(seeds, fc.array(op, { minLength: 1, maxLength: maxOps })).map(([seed, ops]) => {
    let b = Buffer.from(seed);
    for (const o of ops) {
      const at = b.length ? o.at % (b.length + 1) : 0;
      switch (o.k) {
        case 'flip':
          if (b.length) b[at % b.length] ^= 1 << o.bit;
          break;
        case 'set':
          if (b.length) b[at % b.length] = o.v;
          break;
        case 'ins':
          b = Buffer.concat([b.subarray(0, at), o.b, b.subarray(at)]);
          break;
        case 'del':
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + o.n)]);
          break;
        case 'dup': {
          const piece = b.subarray(at, at + o.n);
          const to = b.length ? o.to % (b.length + 1) : 0;
          b = Buffer.concat([b.subarray(0, to), piece, b.subarray(to)]);
          break;
        }
        case 'cut':
          b = b.subarray(0, at);
          break;
      }
    }
    return new Uint8Array(b);
  });
}

export const utf8 = (s: string) => new Uint8Array(Buffer.from(s, 'utf8'));
