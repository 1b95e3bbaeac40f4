import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { audit } from './audit.ts';
import { bus } from './bus.ts';
import { imports } from './import.ts';
import { fleet } from './fleet.ts';
import { iso } from './iso.ts';
import { label } from './label.ts';
import { memory } from './memory.ts';
import { registry } from './registry.ts';
import { runner } from './runner.ts';
import { verify } from './verify.ts';
import { verity } from './verity.ts';
import { row, type BenchContext, type Group, type Row } from './measure.ts';

// make bench: every row group measured against its peer in the same run, on
// the same input, interleaved. BENCH_QUICK=1 for small inputs; ROWS=verify,label
// (or --rows=…) for some groups; --markdown for the README.

const groups: Record<string, Group> = { verify, registry, import: imports, label, audit, bus, memory, runner, fleet, iso, verity };

const args = process.argv.slice(2);
const markdown = args.includes('--markdown');
const quick = ['1', 'true', 'yes'].includes((process.env.BENCH_QUICK ?? '').toLowerCase());
const rowsAt = args.indexOf('--rows');
const rowsArg = args.find((a) => a.startsWith('--rows='))?.slice(7) ?? (rowsAt >= 0 ? args[rowsAt + 1] : undefined) ?? process.env.ROWS ?? '';
const wanted = rowsArg.split(',').map((s) => s.trim()).filter(Boolean);
const unknown = wanted.filter((w) => !(w in groups));
if (unknown.length) {
  process.stderr.write(`unknown row group(s) ${unknown.join(', ')}; known: ${Object.keys(groups).join(', ')}\n`);
  process.exit(2);
}
const selected = wanted.length ? Object.keys(groups).filter((g) => wanted.includes(g)) : Object.keys(groups);

const started = Date.now();
const log = (line: string) => process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
const tmp = await mkdtemp(join(tmpdir(), 'sealkit-bench-'));
let cleanups: Array<() => Promise<void> | void> = [];
const runCleanups = async () => {
  for (const c of cleanups.splice(0).reverse()) {
    try {
      await c();
    } catch (err) {
      log(`cleanup failed: ${(err as Error).message}`);
    }
  }
};
let interrupted = false;
const interrupt = (sig: string) => {
  if (interrupted) return;
  interrupted = true;
  log(`${sig}: stopping what was started and removing ${tmp}`);
  void runCleanups().finally(() => rm(tmp, { recursive: true, force: true }).finally(() => process.exit(130)));
};
process.on('SIGINT', () => interrupt('SIGINT'));
process.on('SIGTERM', () => interrupt('SIGTERM'));

const results: Row[] = [];
for (const name of selected) {
  const ctx: BenchContext = {
    quick,
    tmp: await mkdtemp(join(tmp, `${name}-`)),
    log,
    defer: (c) => void cleanups.push(c),
  };
  const t = Date.now();
  log(`${name}: start`);
  try {
    results.push(...(await groups[name](ctx)));
  } catch (err) {
    log(`${name}: failed: ${(err as Error).stack ?? err}`);
    results.push(row(name, { row: `${name}: the group did not complete`, sealkit: '—', peer: '—', ratio: '—', target: '—', status: 'FAIL', note: (err as Error).message.split('\n')[0].slice(0, 200) }));
  } finally {
    await runCleanups();
    await rm(ctx.tmp, { recursive: true, force: true });
    cleanups = [];
  }
  log(`${name}: done in ${((Date.now() - t) / 1000).toFixed(0)} s`);
}
await rm(tmp, { recursive: true, force: true });

const machine = describeMachine();
const header = ['row', 'sealkit', 'peer', 'ratio', 'target', 'result'];
const cells = results.map((r) => [r.row, r.sealkit, r.peer, r.ratio, r.target, r.status]);
const notes = results.filter((r) => r.note).map((r) => `${r.row.trim()}: ${r.note}`);
const mode = quick ? 'BENCH_QUICK' : 'full';
const took = `${((Date.now() - started) / 60000).toFixed(1)} min`;

if (markdown) {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  const lines = [
    `Benchmarks (\`make bench\`, ${mode}), ${new Date().toISOString().slice(0, 10)}: ${machine}; took ${took}.`,
    '',
    `| ${header.join(' | ')} |`,
    `|${header.map((_, i) => (i === 0 ? ':---' : '---:')).join('|')}|`,
    ...cells.map((c) => `| ${c.map(esc).join(' | ')} |`),
  ];
  if (notes.length) lines.push('', ...notes.map((n) => `- ${n}`));
  process.stdout.write(lines.join('\n') + '\n');
} else {
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join(' | ');
  const out = [`sealkit bench (${mode}) — ${new Date().toISOString()} — ${machine} — ${took}`, line(header), widths.map((w) => '-'.repeat(w)).join('-|-'), ...cells.map(line)];
  if (notes.length) out.push('', 'notes:', ...notes.map((n) => `  ${n}`));
  process.stdout.write(out.join('\n') + '\n');
}
process.exit(results.some((r) => r.status === 'FAIL') ? 1 : 0);

function describeMachine(): string {
  let cpu = 'unknown CPU';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1].trim() ?? cpu;
  } catch {
    // not Linux
  }
  let nproc = String(availableParallelism());
  try {
    nproc = execFileSync('nproc', { encoding: 'utf8' }).trim();
  } catch {
    // keep Node's count
  }
  let kernel = 'unknown kernel';
  try {
    kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  } catch {
    // keep
  }
  const mem = /^MemTotal:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
  return `nproc ${nproc}, ${cpu}, ${mem ? `${(Number(mem) / 1024 / 1024).toFixed(0)} GiB RAM, ` : ''}Linux ${kernel}, Node ${process.versions.node}`;
}
