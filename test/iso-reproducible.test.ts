import test from 'ava';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from '../iso/build.ts';
import { ensureIso, testStateDir } from './helpers/qemu.ts';
import { withIsoBuildLock } from '../iso/run.ts';

// Same inputs, same bytes: a second build of the ISO from the same tree,
// state and SOURCE_DATE_EPOCH, into another directory, is identical.

test('building the ISO twice from the same inputs gives the same bytes', async (t) => {
  t.timeout(20 * 60_000);
  const first = await ensureIso((l) => t.log(l));
  // the first build's epoch, in case a commit landed in between
  const { sourceDateEpoch } = JSON.parse(await readFile(first.manifest, 'utf8')) as { sourceDateEpoch: number };
  const out = await mkdtemp(join(tmpdir(), 'sealkit-iso-'));
  try {
    // locked: another test's build would rewrite dist/ while this one copies it
    const second = await withIsoBuildLock(() => build({ out, state: testStateDir, epoch: sourceDateEpoch, compile: false, log: () => {} }));
    t.log(`second build: ${second.seconds.toFixed(1)} s, ${(second.bytes / 1e6).toFixed(1)} MB`);
    t.is(second.sha256, first.sha256);
    t.is(second.bytes, first.bytes);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
