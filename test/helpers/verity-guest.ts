// Run by Node inside test/verity-kernel-vm's guest (6.12, a store made with
// -O verity), from dist/: the ima service's enableVerity on a tree with hard
// links and a file that already has fs-verity, twice, then what the kernel
// measures for every file against the digest sealkit computes for it; once
// through sealkit-verity-enable (tree a) and once through the fsverity tool,
// its fallback (tree b).
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { enableVerity, measureVerity, verityHelper } from '../../services/ima/fsverity.ts';
import { verityDigestOfFile } from '../../services/ima/verity.ts';

const say = (k: string, v: string) => console.log(`RESULT ${k} ${v}`);
const helper = verityHelper() ?? null;
say('helper', helper ?? 'missing');
for (const [tree, how] of [['a', helper], ['b', null]] as const) {
  const root = join(process.argv[2], tree);
  const files = (await readdir(root)).map((f) => join(root, f));
  try {
    await enableVerity(files, how);
    say(`first-${tree}`, 'ok');
    await enableVerity(files, how);
    say(`second-${tree}`, 'ok');
  } catch (err) {
    say(`failed-${tree}`, `${(err as { code?: string }).code} ${(err as Error).message.split('\n')[0]}`);
  }
  const measured = await measureVerity(files);
  let same = 0;
  const wrong: string[] = [];
  for (const f of files) {
    const d = measured.get(f);
    if (d && d === (await verityDigestOfFile(f))) same++;
    else wrong.push(`${f}=${d}`);
  }
  say(`measured-${tree}`, `${same}/${files.length} ${wrong.slice(0, 5).join(' ')}`);
  // the kernel refuses writes to a file with fs-verity
  await writeFile(files[0], 'x', { flag: 'a' }).then(() => say(`write-${tree}`, 'ok'), (err: NodeJS.ErrnoException) => say(`write-${tree}`, `refused ${err.code}`));
  // a store without the feature (tmpfs) is refused with the error that says what to do
  await writeFile('/tmp/plain', 'plain');
  await enableVerity(['/tmp/plain'], how).then(() => say(`tmpfs-${tree}`, 'ok'), (err: { code?: string; message: string }) => say(`tmpfs-${tree}`, `${err.code} ${err.message.includes('mkfs.ext4 -b 4096 -O verity')}`));
}
