import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recheck, type CachedArchive } from '../services/importer/archive.ts';
import { sha256OfFile } from '../services/importer/sha256.ts';
import { isSealkitError } from '../services/lib/errors.ts';

// The re-hash before an import (through the descriptor the import then
// reads: `openssl dgst` when the node has it, Node's own hash when not)
// accepts the verified bytes, refuses a one-byte change, and hashes the file
// it opened, not whatever the path names later.

let dir: string;
let bytes: Buffer;
let good: CachedArchive;
let bad: CachedArchive;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sealkit-rehash-'));
  bytes = randomBytes(3 << 20);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  good = { path: join(dir, 'good'), sha256, size: bytes.length, format: 'docker-archive', compression: 'none' };
  await writeFile(good.path, bytes);
  const changed = Buffer.from(bytes);
  changed[changed.length >> 1] ^= 1;
  bad = { ...good, path: join(dir, 'bad') };
  await writeFile(bad.path, changed);
});

test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

const verdicts = async (t: import('ava').ExecutionContext) => {
  const ok = await recheck(good, 'x/y:1');
  await ok.close();
  const err = await t.throwsAsync(recheck(bad, 'x/y:1'));
  t.true(isSealkitError(err) && err.code === 'SEALKIT_CACHE_CORRUPT', String(err));
};

test.serial('the re-hash accepts the verified bytes and refuses a changed byte with SEALKIT_CACHE_CORRUPT, with openssl', verdicts);

test.serial('the re-hash accepts the verified bytes and refuses a changed byte, without openssl on PATH', async (t) => {
  const path = process.env.PATH;
  process.env.PATH = join(dir, 'no-such-bin');
  try {
    await verdicts(t);
  } finally {
    process.env.PATH = path;
  }
});

test.serial('the hash is of the open file, even after another file was renamed over its path', async (t) => {
  const path = join(dir, 'renamed');
  await writeFile(path, bytes);
  const fh = await open(path, 'r');
  try {
    await writeFile(join(dir, 'other'), 'other bytes');
    await rename(join(dir, 'other'), path);
    t.is(await sha256OfFile(fh), good.sha256);
  } finally {
    await fh.close();
  }
});

test.serial('an aborted re-hash rejects with the abort reason and hands back no checked archive', async (t) => {
  const stop = new AbortController();
  const checking = recheck(good, 'x/y:1', stop.signal);
  stop.abort(new Error('no longer wanted'));
  const err = await t.throwsAsync(checking);
  t.is(err?.message, 'no longer wanted');
});
