import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { getAttribute } from 'fs-xattr';
import { HashPool } from '../services/ima/hashpool.ts';
import { hashAndLabelTree } from '../services/ima/labeltree.ts';
import { listFiles } from '../services/lib/rootfs/tree.ts';
import { fmt, interleave, median, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// security.ima labels on a large tree of real files: the ima service's
// hashAndLabelTree (walk + SHA-256 + setxattr on a worker pool) against
// `evmctl ima_hash -r -a sha256` on an identical copy. Needs root (security.*).

const G = 'label';

export async function label(ctx: BenchContext): Promise<Row[]> {
  if (process.getuid?.() !== 0) return [row(G, { row: 'label tree with security.ima', sealkit: '—', peer: '—', ratio: '—', target: '≥ 1.5× faster', status: 'n/a', note: 'needs root: security.* xattrs' })];
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
  const pool = new HashPool();
  ctx.defer(() => pool.close());
  let files = 0;
  let bytes = 0;
  ctx.log(`label: ${reps} interleaved rounds, hashAndLabelTree (${pool.size} workers) vs evmctl ima_hash -r`);
  const t = await interleave(reps, {
    sealkit: async () => {
      const r = await hashAndLabelTree(a, pool);
      files = r.files;
      bytes = r.bytes;
    },
    evmctl: () => sh('sh', ['-c', `evmctl ima_hash -r -a sha256 "$1" >/dev/null`, 'sh', b]),
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
  return [
    row(G, {
      row: `label ${ctx.quick ? 'part of ' : ''}/usr/lib copy (${fmt.n(files)} files, ${fmt.mib(bytes)}) with security.ima vs evmctl ima_hash -r`,
      sealkit: fmt.ms(sk),
      peer: fmt.ms(ev),
      ratio: `${fmt.x(ev / sk)} faster`,
      target: '≥ 1.5× faster',
      status: verdict(ev / sk >= 1.5),
    }),
  ];
}
