import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HashPool, READ_SIZE } from '../services/ima/hashpool.ts';
import { hashAndLabelTree, hashTree, labelTree } from '../services/ima/labeltree.ts';
import { listFiles } from '../services/lib/rootfs/tree.ts';

// Our security.ima labels are byte-identical to what evmctl writes: the same
// real tree is labelled by us and by `evmctl ima_hash -a sha256`, and
// getfattr's hex dumps must match for every file.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-ima-evmctl-'));
const pool = new HashPool(2);
test.after.always(async () => {
  await pool.close();
  rmSync(dir, { recursive: true, force: true });
});

// a few hundred real files: the first packages of /usr/share/doc
function copyDocs(to: string): void {
  for (const pkg of readdirSync('/usr/share/doc').sort().slice(0, 60)) {
    cpSync(join('/usr/share/doc', pkg), join(to, pkg), { recursive: true, dereference: false, verbatimSymlinks: true });
  }
}

function dump(root: string): Map<string, string> {
  // exits non-zero because directories carry no label; stdout is what counts
  const out = spawnSync('getfattr', ['-R', '-P', '-h', '--absolute-names', '-n', 'security.ima', '-e', 'hex', root], { encoding: 'utf8', maxBuffer: 1 << 26 }).stdout;
  const m = new Map<string, string>();
  let file = '';
  for (const line of out.split('\n')) {
    if (line.startsWith('# file: ')) file = line.slice(8).slice(root.length + 1);
    else if (line.startsWith('security.ima=')) m.set(file, line.slice('security.ima='.length));
  }
  return m;
}

test('labels written by the hash pool are byte-identical to evmctl ima_hash -a sha256', async (t) => {
  const ours = join(dir, 'ours');
  const theirs = join(dir, 'theirs');
  copyDocs(ours);
  copyDocs(theirs);
  const files = await listFiles(theirs);
  t.true(files.length >= 200, `only ${files.length} files copied`);
  for (const f of files) execFileSync('evmctl', ['ima_hash', '-a', 'sha256', join(theirs, f)], { stdio: 'ignore' });

  const r = await hashAndLabelTree(ours, pool);
  t.is(r.files, files.length);

  const a = dump(ours);
  const b = dump(theirs);
  t.is(a.size, files.length);
  t.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [f, hex] of b) t.is(a.get(f), hex, `label of ${f}`);
  // 0x04 IMA_XATTR_DIGEST_NG, 0x04 HASH_ALGO_SHA256, 32 digest bytes
  t.regex([...a.values()][0], /^0x0404[0-9a-f]{64}$/);
});

test('labelTree with a known path→digest map writes the same bytes as evmctl', async (t) => {
  const ours = join(dir, 'map');
  const theirs = join(dir, 'map-evmctl');
  copyDocs(ours);
  copyDocs(theirs);
  const { digests } = await hashTree(ours, pool);
  await labelTree(ours, digests);
  execFileSync('evmctl', ['ima_hash', '-r', '-a', 'sha256', theirs], { stdio: 'ignore' });
  const a = dump(ours);
  const b = dump(theirs);
  t.true(a.size >= 200);
  for (const [f, hex] of b) t.is(a.get(f), hex, `label of ${f}`);
});

test('files around the read buffer size, hashed in one call or streamed, get the labels evmctl writes', async (t) => {
  const ours = join(dir, 'sizes');
  const theirs = join(dir, 'sizes-evmctl');
  const sizes = [0, 1, READ_SIZE - 1, READ_SIZE, READ_SIZE + 1, 3 * READ_SIZE + 5];
  for (const d of [ours, theirs]) mkdirSync(d);
  for (const size of sizes) {
    const bytes = randomBytes(size);
    writeFileSync(join(ours, `f${size}`), bytes);
    writeFileSync(join(theirs, `f${size}`), bytes);
  }
  const r = await hashAndLabelTree(ours, pool);
  t.is(r.bytes, sizes.reduce((x, y) => x + y, 0));
  execFileSync('evmctl', ['ima_hash', '-r', '-a', 'sha256', theirs], { stdio: 'ignore' });
  const a = dump(ours);
  const b = dump(theirs);
  t.is(b.size, sizes.length);
  for (const [f, hex] of b) t.is(a.get(f), hex, `label of ${f}`);
});
