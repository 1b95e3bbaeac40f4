import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LayoutCheck, openImage } from '../services/lib/archive/index.ts';
import { hashFileThread } from '../services/fetcher/hash-thread.ts';
import { buildImage, sha256 } from './helpers/images.ts';

// The registry pull records each entry of the OCI layout tar it lays out as
// soon as that entry is in the file (LayoutCheck); what it learns must be
// exactly what openImage learns from the finished file, and it must refuse
// what openImage refuses.

const limits = { maxArchiveEntries: 1000, maxUnpackedBytes: 1 << 24 };

// the entries of a plain tar, with where each body starts
function entries(tar: Buffer): Array<{ name: string; size: number; type: 'file' | 'directory'; at: number }> {
  const out = [];
  for (let pos = 0; pos + 512 <= tar.length && tar[pos] !== 0; ) {
    const name = tar.toString('latin1', pos, pos + 100).replace(/\0.*$/s, '');
    const size = parseInt(tar.toString('latin1', pos + 124, pos + 136).replace(/\0.*$/s, '').trim() || '0', 8);
    out.push({ name, size, type: tar[pos + 156] === 0x35 ? ('directory' as const) : ('file' as const), at: pos + 512 });
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

async function withArchive(archive: Buffer, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-layout-check-'));
  try {
    const path = join(dir, 'image.tar');
    await writeFile(path, archive);
    await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function check(path: string, archive: Buffer, order: 'forward' | 'backward', known = false): Promise<unknown> {
  const c = new LayoutCheck(path, { limits, what: 'test image' });
  const list = entries(archive);
  for (const e of list) c.add(e.name, e.size, e.type);
  const files = list.filter((e) => e.type === 'file');
  for (const e of order === 'forward' ? files : [...files].reverse()) {
    const sha = known && e.name.startsWith('blobs/sha256/') ? e.name.slice(13) : undefined;
    c.record(e.name, e.size, { at: e.at }, sha);
  }
  return c.finish();
}

test('entries recorded in any order as they complete give what openImage gives for the whole file', async (t) => {
  const img = await buildImage({ name: 'test/lc', format: 'oci', layerCompression: 'gzip', layers: [{ a: 'one', 'd/b': 'two' }, { c: 'three' }] });
  await withArchive(img.archive, async (path) => {
    const whole = await openImage(path, { limits, what: 'test image' });
    t.deepEqual(await check(path, img.archive, 'backward'), whole);
    t.deepEqual(await check(path, img.archive, 'forward', true), whole);
  });
});

test('a blob whose bytes in the file no longer match its name is refused as openImage refuses it, or caught by the read-back hash when its digest is vouched for', async (t) => {
  const img = await buildImage({ name: 'test/lc', format: 'oci', layerCompression: 'none', layers: [{ a: 'one' }] });
  const blob = entries(img.archive).find((e) => e.name === `blobs/sha256/${img.layers[0].digest.slice(7)}`)!;
  const bad = Buffer.from(img.archive);
  const at = bad.indexOf('one', blob.at);
  bad[at] ^= 0x20; // 'One': still a valid tar, another digest
  await withArchive(bad, async (path) => {
    const e1 = await t.throwsAsync(openImage(path, { limits, what: 'test image' }));
    const e2 = await t.throwsAsync(check(path, bad, 'forward'));
    t.is((e1 as { code?: string }).code, 'SEALKIT_DIGEST_MISMATCH');
    t.is((e2 as { code?: string }).code, 'SEALKIT_DIGEST_MISMATCH');
    // vouched for, it is not hashed here: the pull's read-back hash is what sees the change
    await t.notThrowsAsync(check(path, bad, 'forward', true));
    const got = await hashFileThread(path, [{ at: blob.at, size: blob.size }]).finish(bad.length);
    t.not(got.ranges[0], blob.name.slice(13));
  });
});

test('the archive digest taken while the file fills equals the whole file digest, with each range read back', async (t) => {
  const img = await buildImage({ name: 'test/lc', format: 'oci', layers: [{ a: 'one' }, { b: 'two' }] });
  await withArchive(img.archive, async (path) => {
    const files = entries(img.archive).filter((e) => e.type === 'file');
    const h = hashFileThread(path, files.map((e) => ({ at: e.at, size: e.size })));
    h.advance(files[1].at);
    h.advance(512); // going back is ignored
    const got = await h.finish(img.archive.length);
    t.is(got.sha256, sha256(img.archive));
    t.is(got.size, img.archive.length);
    t.deepEqual(got.ranges, files.map((e) => sha256(img.archive.subarray(e.at, e.at + e.size))));
  });
});
