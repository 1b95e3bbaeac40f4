import test from 'ava';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFilesAtomic } from '../services/lib/atomic.ts';

test('files written together are all in place, with their modes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-atomic-'));
  await writeFilesAtomic([
    { path: join(dir, 'history', 'a.json'), data: 'A\n', mode: 0o600 },
    { path: join(dir, 'current.json'), data: 'B\n', mode: 0o600 },
    { path: join(dir, 'highwater'), data: '7\n' },
  ]);
  t.is(await readFile(join(dir, 'history', 'a.json'), 'utf8'), 'A\n');
  t.is(await readFile(join(dir, 'current.json'), 'utf8'), 'B\n');
  t.is(await readFile(join(dir, 'highwater'), 'utf8'), '7\n');
  t.deepEqual((await readdir(dir)).sort(), ['current.json', 'highwater', 'history']);
});

test('when one file cannot be written, none changes and no temp file stays', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-atomic-'));
  await writeFile(join(dir, 'current.json'), 'old\n');
  await writeFile(join(dir, 'blocker'), 'a file where a directory is needed\n');
  await t.throwsAsync(writeFilesAtomic([
    { path: join(dir, 'current.json'), data: 'new\n' },
    { path: join(dir, 'blocker', 'history.json'), data: 'new\n' },
  ]), { code: 'EEXIST' }); // mkdir of the blocked directory
  t.is(await readFile(join(dir, 'current.json'), 'utf8'), 'old\n');
  t.deepEqual((await readdir(dir)).sort(), ['blocker', 'current.json']);
});
