import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recheck, type CachedArchive } from '../services/importer/archive.ts';
import { isSealkitError } from '../services/lib/errors.ts';

// The re-hash before an import runs through `openssl dgst` when the node has
// openssl and through Node's own hash when it does not; both must accept the
// verified bytes and refuse a one-byte change.

let dir: string;
let good: CachedArchive;
let bad: CachedArchive;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sealkit-rehash-'));
  const bytes = randomBytes(3 << 20);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  good = { path: join(dir, 'good'), sha256, size: bytes.length, format: 'docker-archive', compression: 'none' };
  await writeFile(good.path, bytes);
  bytes[bytes.length >> 1] ^= 1;
  bad = { ...good, path: join(dir, 'bad') };
  await writeFile(bad.path, bytes);
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

test.serial('the re-hash accepts the verified bytes and refuses a changed byte, with openssl', verdicts);

test.serial('the re-hash accepts the verified bytes and refuses a changed byte, without openssl on PATH', async (t) => {
  const path = process.env.PATH;
  process.env.PATH = join(dir, 'no-such-bin');
  try {
    await verdicts(t);
  } finally {
    process.env.PATH = path;
  }
});
