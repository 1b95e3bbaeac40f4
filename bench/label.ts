import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getAttribute } from 'fs-xattr';
import { HashPool, READ_SIZE } from '../services/ima/hashpool.ts';
import { hashAndLabelTree } from '../services/ima/labeltree.ts';
import { listFiles } from '../services/lib/rootfs/tree.ts';
import { fmt, interleave, median, MiB, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// security.ima labels on a large tree of real files: the ima service's
// hashAndLabelTree (walk + SHA-256 + setxattr on a worker pool) against
// `evmctl ima_hash -r -a sha256` on an identical copy, and against the limit
// for hashing those bytes on this machine's 2 cores: hash-limit.c, 2 threads
// of open + read (the labeller's buffer size) + OpenSSL SHA-256 over the
// same files, given as a list (no walk, no xattr). Needs root (security.*).

const G = 'label';
const TARGET_VS_EVMCTL = 1.5;
const TARGET_OF_LIMIT = 0.7;

// CPU seconds of this process (all its threads) and of its waited-for children
function cpuSeconds(): { self: number; children: number } {
  const u = process.cpuUsage();
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return { self: (u.user + u.system) / 1e6, children: (Number(f[13]) + Number(f[14])) / 100 }; // cutime, cstime in clock ticks (USER_HZ 100)
}

async function buildLimit(ctx: BenchContext): Promise<string> {
  const bin = join(ctx.tmp, 'hash-limit');
  await sh('cc', ['-O2', '-o', bin, fileURLToPath(new URL('./hash-limit.c', import.meta.url)), '-lcrypto', '-lpthread']);
  return bin;
}

export async function label(ctx: BenchContext): Promise<Row[]> {
  if (process.getuid?.() !== 0) return [row(G, { row: 'label tree with security.ima', sealkit: '—', peer: '—', ratio: '—', target: `≥ ${TARGET_VS_EVMCTL}× faster`, status: 'n/a', note: 'needs root: security.* xattrs' })];
  const sources = ctx.quick ? ['/usr/lib/python3', '/usr/lib/python3.11', '/usr/lib/modules'] : ['/usr/lib'];
  const reps = 3;
  const a = join(ctx.tmp, 'sealkit');
  const b = join(ctx.tmp, 'evmctl');
  ctx.log(`label: copying ${sources.join(' ')} twice into ${ctx.tmp}`);
  await Promise.all([a, b].map(async (dir) => {
    await mkdir(dir);
    await sh('cp', ['-a', ...sources, dir]);
  }));
  await sh('sync', []);
  const limitBin = await buildLimit(ctx).catch((err: Error) => err);
  const list = join(ctx.tmp, 'limit-files');
  await writeFile(list, (await listFiles(a)).map((r) => `${a}/${r}\0`).join(''));

  const pool = new HashPool();
  ctx.defer(() => pool.close());
  let files = 0;
  let bytes = 0;
  let limitBytes = 0;
  const cpu: Record<'sealkit' | 'evmctl' | 'limit', number[]> = { sealkit: [], evmctl: [], limit: [] };
  const loads: number[] = [];
  const measured = async <T>(k: keyof typeof cpu, fn: () => Promise<T>): Promise<T> => {
    const before = cpuSeconds();
    const out = await fn();
    const after = cpuSeconds();
    cpu[k].push(after.self - before.self + after.children - before.children);
    return out;
  };
  ctx.log(`label: ${reps} interleaved rounds, hashAndLabelTree (${pool.size} workers) vs evmctl ima_hash -r vs hash-limit (2 threads)`);
  const t = await interleave(reps, {
    sealkit: () => measured('sealkit', async () => {
      loads.push(loadavg()[0]);
      const r = await hashAndLabelTree(a, pool);
      files = r.files;
      bytes = r.bytes;
    }),
    evmctl: () => measured('evmctl', () => sh('sh', ['-c', `evmctl ima_hash -r -a sha256 "$1" >/dev/null`, 'sh', b])),
    limit: () => measured('limit', async () => {
      if (limitBin instanceof Error) return;
      const out = await sh('sh', ['-c', `"$1" 2 ${READ_SIZE} < "$2"`, 'sh', limitBin, list]);
      limitBytes = Number(out.trim().split(' ')[1]);
    }),
  });

  // the two must have written the same labels
  const rels = await listFiles(a);
  const step = Math.max(1, Math.floor(rels.length / 200));
  for (let i = 0; i < rels.length; i += step) {
    const [x, y] = await Promise.all([getAttribute(join(a, rels[i]), 'security.ima'), getAttribute(join(b, rels[i]), 'security.ima')]);
    if (!Buffer.from(x).equals(Buffer.from(y))) throw new Error(`security.ima of ${rels[i]} differs: sealkit ${Buffer.from(x).toString('hex')}, evmctl ${Buffer.from(y).toString('hex')}`);
  }
  const sk = median(t.sealkit);
  const ev = median(t.evmctl);
  const lim = median(t.limit);
  const load = `load average ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}`;
  const cpuOf = (k: keyof typeof cpu) => `${median(cpu[k]).toFixed(1)} s`;
  const what = `${ctx.quick ? 'part of ' : ''}/usr/lib copy (${fmt.n(files)} files, ${fmt.mib(bytes)})`;
  const rows = [
    row(G, {
      row: `label ${what} with security.ima vs evmctl ima_hash -r`,
      sealkit: fmt.ms(sk),
      peer: fmt.ms(ev),
      ratio: `${fmt.x(ev / sk)} faster`,
      target: `≥ ${TARGET_VS_EVMCTL}× faster`,
      status: verdict(ev / sk >= TARGET_VS_EVMCTL),
      note: `medians of ${reps}; CPU time sealkit ${cpuOf('sealkit')}, evmctl ${cpuOf('evmctl')}; ${load}`,
    }),
  ];
  const limitRow = `  same, vs the 2-core SHA-256 limit: the same files hashed by 2 threads of open + read (${READ_SIZE / MiB} MiB) + OpenSSL SHA-256, no walk, no xattr`;
  if (limitBin instanceof Error) {
    rows.push(row(G, { row: limitRow, sealkit: fmt.rate(bytes, sk), peer: '—', ratio: '—', target: `≥ ${fmt.pct(TARGET_OF_LIMIT)}`, status: 'n/a', note: `bench/hash-limit.c did not build (needs cc and OpenSSL headers): ${limitBin.message}` }));
  } else {
    if (limitBytes !== bytes) throw new Error(`hash-limit read ${limitBytes} bytes, the labeller ${bytes}: not the same files`);
    rows.push(row(G, {
      row: limitRow,
      sealkit: fmt.rate(bytes, sk),
      peer: fmt.rate(bytes, lim),
      ratio: fmt.pct(lim / sk),
      target: `≥ ${fmt.pct(TARGET_OF_LIMIT)}`,
      status: verdict(lim / sk >= TARGET_OF_LIMIT),
      note: `medians of ${reps}, interleaved; CPU time sealkit ${cpuOf('sealkit')}, limit ${cpuOf('limit')} (limit/sealkit ${fmt.pct(median(cpu.limit) / median(cpu.sealkit))}); ${load}`,
    }));
  }
  return rows;
}
