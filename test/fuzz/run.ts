import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { campaign, type Stats } from './harness.ts';
import { targets } from './targets.ts';

// make fuzz / long campaigns:
//   node --import tsx test/fuzz/run.ts [--seconds 30] [--jobs 2] [--out DIR] [target ...]
// Each target runs in its own process (the watchdog kills a hung one; it is
// restarted for the time left). Prints one line per target and exits 1 when
// anything was found; the inputs are under DIR/<target>/.

const args = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  if (i === -1) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};

const child = opt('child', '');
const seconds = Number(opt('seconds', process.env.FUZZ_SECONDS ?? '30'));
const out = resolve(opt('out', process.env.FUZZ_OUT ?? 'build/fuzz'));
const jobs = Number(opt('jobs', '2'));
const statsFile = opt('stats', '');
const seed = opt('seed', '');

if (child) {
  const t = await targets[child]();
  await campaign(t, { seconds, outDir: out, statsFile, seed: seed ? Number(seed) : undefined });
  process.exit(0);
}

const names = args.length ? args : Object.keys(targets);
for (const n of names) if (!targets[n]) throw new Error(`unknown fuzz target ${n}; known: ${Object.keys(targets).join(', ')}`);
mkdirSync(out, { recursive: true });
const log = join(out, 'campaign.log');

interface Total {
  target: string;
  inputs: number;
  ok: number;
  refused: Record<string, number>;
  findings: string[];
  restarts: number;
  seconds: number;
  slowestMs: number;
  heapGrowthMB: number;
}

async function runTarget(name: string): Promise<Total> {
  const total: Total = { target: name, inputs: 0, ok: 0, refused: {}, findings: [], restarts: 0, seconds: 0, slowestMs: 0, heapGrowthMB: 0 };
  const start = Date.now();
  for (let attempt = 0; ; attempt++) {
    const left = Math.ceil(seconds - (Date.now() - start) / 1000);
    if (left <= 0 && attempt > 0) break;
    const sf = join(out, `${name}.stats.${attempt}.json`);
    const code = await new Promise<{ code: number | null; signal: string | null }>((res) => {
      const p = spawn(
        process.execPath,
        ['--import', 'tsx', '--expose-gc', '--no-warnings', '--max-old-space-size=2048', new URL('./run.ts', import.meta.url).pathname, '--child', name, '--seconds', String(Math.max(left, 1)), '--out', out, '--stats', sf, '--seed', String(Date.now() % 2 ** 31)],
        { stdio: ['ignore', 'inherit', 'inherit'] },
      );
      p.on('exit', (c, s) => res({ code: c, signal: s }));
    });
    if (existsSync(sf)) {
      const s = JSON.parse(readFileSync(sf, 'utf8')) as Stats;
      total.inputs += s.inputs;
      total.ok += s.ok;
      for (const [k, v] of Object.entries(s.refused)) total.refused[k] = (total.refused[k] ?? 0) + v;
      total.findings.push(...s.findings.map((f) => `${f.file} x${f.count} ${f.signature}`));
      total.slowestMs = Math.max(total.slowestMs, s.slowest.ms);
      total.heapGrowthMB = Math.max(total.heapGrowthMB, Math.round(s.heap.maxGrowthMB));
    }
    if (code.code === 0) break;
    if (code.signal !== 'SIGKILL') {
      total.findings.push(`harness failed (exit ${code.signal ?? code.code}); not restarted`);
      break;
    }
    total.restarts++;
    total.findings.push(`process ended (${code.signal ?? code.code}); see hang-*/oom-* in ${join(out, name)}`);
  }
  total.seconds = Math.round((Date.now() - start) / 1000);
  appendFileSync(log, JSON.stringify({ at: new Date().toISOString(), ...total }) + '\n');
  const refused = Object.values(total.refused).reduce((a, b) => a + b, 0);
  console.log(`fuzz ${name}: ${total.inputs} inputs in ${total.seconds}s (${total.ok} ok, ${refused} refused with a code), ${total.findings.length} findings, slowest ${total.slowestMs} ms, heap growth ${total.heapGrowthMB} MB`);
  for (const f of total.findings) console.log(`  ${f}`);
  return total;
}

const queue = [...names];
const results: Total[] = [];
await Promise.all(
  Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let n = queue.shift(); n; n = queue.shift()) results.push(await runTarget(n));
  }),
);
const bad = results.filter((r) => r.findings.length);
console.log(`fuzz: ${results.length} targets, ${results.reduce((a, r) => a + r.inputs, 0)} inputs, ${bad.length} with findings${bad.length ? ` (${bad.map((r) => r.target).join(', ')}; inputs under ${out})` : ''}`);
process.exit(bad.length ? 1 : 0);
