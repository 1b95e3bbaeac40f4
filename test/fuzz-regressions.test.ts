import test from 'ava';
import { createHash } from 'node:crypto';
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { KERNEL_FACILITY, parseKmsgRecord } from '../services/auditor/kmsg.ts';
import { parseAuditMessage } from '../services/auditor/integrity.ts';
import { openSource } from '../services/auditor/source.ts';
import { parseManifest } from '../services/fetcher/registry.ts';
import { openArchive, recheck } from '../services/importer/archive.ts';
import { StripNames } from '../services/importer/names.ts';
import { openImage } from '../services/lib/archive/index.ts';
import { EntryGuard, walkTar } from '../services/lib/archive/tar-guard.ts';
import { readManifest } from '../services/lib/manifest.ts';
import { parsePolicyYaml } from '../services/lib/policy.ts';
import { generateKey, readSecretKey } from '../services/lib/sign.ts';
import { makeTar, sha256 } from './helpers/images.ts';
import { corpusDir, runOne, describe } from './fuzz/harness.ts';
import { targets } from './fuzz/targets.ts';
import { tarBytes, type RawEntry } from './fuzz/tar-gen.ts';

// One test per defect the fuzz campaign (test/fuzz, `make fuzz`) found, with
// the smallest input that shows it; then every target replays its kept
// corpus and a short seeded run of generated inputs.

let dir: string;
test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sealkit-fuzz-reg-'));
});
test.after.always(async () => {
  await rm(dir, { recursive: true, force: true });
});

const code = (err: unknown) => (err as { code?: string }).code;
const LIMITS = { maxArchiveEntries: 100, maxUnpackedBytes: 1 << 20 };
// walkTar used to hang on some inputs: fail in seconds instead of at ava's timeout
function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const hung = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} never settled`)), 60_000)));
  return Promise.race([p, hung]).finally(() => clearTimeout(timer));
}
const walk = (tarball: Buffer) =>
  bounded(
    walkTar(Readable.from([tarball]), new EntryGuard(LIMITS, 'test tar'), 'test tar', async (_h, body) => {
      for await (const _ of body as AsyncIterable<Buffer>) {
        // read every body, as the unpacker does
      }
    }),
    'walkTar',
  );
const entry = (e: Partial<RawEntry> & { name: string }): RawEntry => ({ type: '0', linkname: '', content: Buffer.alloc(0), ...e });

// ---------- kmsg and audit records ----------

test('kmsg: a prio of 2^32+3 written by userspace is not read as the kernel facility', (t) => {
  // `prio >> 3` cut the number to 32 bits: 4294967299 >> 3 === 0, the kernel
  const k = parseKmsgRecord('4294967299,7,100,-;audit: type=1800 audit(1.000:1): pid=1 op=appraise_data cause=invalid-hash comm="cat" name="/x" res=0');
  t.truthy(k);
  t.not(k!.facility, KERNEL_FACILITY);
  t.is(k!.facility * 8 + k!.level, 4294967299);
  const neg = parseKmsgRecord('2147483654,1,1,-;x');
  t.true(neg!.facility > 0, 'never negative either');
});

test('integrity: an audit stamp past the largest Date gives time null instead of throwing', (t) => {
  const r = parseAuditMessage('audit: type=1800 audit(99999999999999.000:1): pid=1 op=appraise_data cause=invalid-hash comm="cat" name="/x" res=0');
  t.is(r.kind, 'integrity');
  if (r.kind === 'integrity') t.is(r.record.time, null);
});

test('file follower: a line far longer than any kernel record comes out cut at 64 KiB and is not held whole', async (t) => {
  const path = join(dir, 'audit.log');
  await writeFile(path, '');
  const src = await openSource(path);
  try {
    const long = `6,1,1,-;${'A'.repeat(3 * 1024 * 1024)}`;
    await appendFile(path, long);
    const first = await src.read(10);
    t.is(first.records.length, 1);
    t.is(first.records[0].text, long.slice(0, 64 * 1024));
    t.true((src as unknown as { pending: Buffer }).pending.length <= 64 * 1024, 'the rest of the line is not held');
    await appendFile(path, `${'B'.repeat(100_000)}\n6,2,2,-;after\n`);
    const next = await src.read(10);
    t.deepEqual(next.records.map((r) => r.text), ['6,2,2,-;after'], 'the tail of the long line is dropped, the next record is whole');
    t.is(next.records[0].end, long.length + 100_001 + '6,2,2,-;after\n'.length);
  } finally {
    await src.close();
  }
});

// ---------- policy ----------

test('policy: durations a Node.js timer cannot hold, or zero, are refused (they would fire after 1 ms)', (t) => {
  const policy = (extra: string) => `apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\n${extra}\n`;
  for (const bad of ['ima: {reverify: 597h}', 'ima: {reverify: 0s}', 'limits: {stallTimeout: 2147483648ms}', 'limits: {fetchTimeout: 99999999999999999999h}', 'limits: {fetchTimeout: 0}', 'limits: {stallTimeout: 2147484}']) {
    const err = t.throws(() => parsePolicyYaml(policy(bad)));
    t.is(code(err), 'SEALKIT_POLICY_SCHEMA', bad);
  }
  t.is(parsePolicyYaml(policy('ima: {reverify: 596h}')).ima.reverifyMs, 596 * 3_600_000);
  t.is(parsePolicyYaml(policy('limits: {stallTimeout: 2147483647ms}')).limits.stallTimeoutMs, 2 ** 31 - 1);
});

test('policy: collections nested past 64 levels are refused before YAML parsing (130k "[" took 80 s)', (t) => {
  const head = 'apiVersion: sealkit/v1\nkind: NodePolicy\nserial: 1\nimages: ';
  for (const [what, text] of [
    ['flow sequences', `${head}${'['.repeat(125_000)}${']'.repeat(125_000)}\n`],
    ['flow mappings', `${head}${'{a: '.repeat(50_000)}1${'}'.repeat(50_000)}\n`],
    ['compact block sequences', `${head}\n${'- '.repeat(120_000)}x\n`],
    ['65 levels', `${head}${'['.repeat(65)}${']'.repeat(65)}\n`],
  ]) {
    const err = t.throws(() => parsePolicyYaml(text));
    t.is(code(err), 'SEALKIT_POLICY_YAML', what);
  }
  const ok = parsePolicyYaml(`${head}[]\nverifiers: [{subject: verify.image.cosign}]\nlimits: {maxArchiveEntries: 10}\n`);
  t.is(ok.verifiers[0].subject, 'verify.image.cosign', 'ordinary flow collections still parse');
});

// ---------- the tar guard ----------

test('tar guard: a directory entry with a body is refused (tar-stream never ended its body: walkTar hung)', async (t) => {
  const tarball = tarBytes([entry({ name: 'lnk', type: '5', size: 4 }), entry({ name: 'f', content: Buffer.from('x') })]);
  const err = await t.throwsAsync(walk(tarball));
  t.is(code(err), 'SEALKIT_ARCHIVE_UNSAFE');
});

test('tar guard: a symlink or hardlink with a body is refused (Go reads a header where tar-stream skips a body)', async (t) => {
  // tar-stream skips 512 bytes after the link; containerd's archive/tar reads
  // them as the next header, which the guard would never have seen
  const hidden = tarBytes([entry({ name: '../../etc/cron.d/evil', content: Buffer.from('x') })], { trailer: false });
  for (const type of ['2', '1']) {
    const tarball = tarBytes([entry({ name: 'a', content: Buffer.from('x') }), entry({ name: 'l', type, linkname: 'a', size: 512 }), entry({ name: 'pad', size: 0 })]);
    const withHidden = Buffer.concat([tarball.subarray(0, 1536), hidden.subarray(0, 512), tarball.subarray(2048)]);
    const err = await t.throwsAsync(walk(withHidden));
    t.is(code(err), 'SEALKIT_ARCHIVE_UNSAFE', `type ${type}`);
  }
});

test('tar guard: a file entry that names the root itself is refused', async (t) => {
  for (const type of ['0', '2']) {
    const err = await t.throwsAsync(walk(tarBytes([entry({ name: './', type, linkname: 'x' })])));
    t.is(code(err), 'SEALKIT_ARCHIVE_UNSAFE', `type ${type}`);
  }
  await t.notThrowsAsync(walk(tarBytes([entry({ name: './', type: '5' })])), 'the root directory entry itself is fine');
});

// ---------- whole archives ----------

async function ociLayout(layer: Buffer, extra: Array<{ name: string; content: Buffer }> = []): Promise<Buffer> {
  const blob = gzipSync(layer);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layer)}`] } }));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${sha256(blob)}`, size: blob.length }] }));
  const index = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha256(manifest)}`, size: manifest.length }] };
  return makeTar([
    { name: 'oci-layout', content: '{"imageLayoutVersion":"1.0.0"}' },
    { name: 'index.json', content: JSON.stringify(index) },
    { name: `blobs/sha256/${sha256(manifest)}`, content: manifest },
    { name: `blobs/sha256/${sha256(config)}`, content: config },
    ...extra,
    { name: `blobs/sha256/${sha256(blob)}`, content: blob },
  ]);
}

test('openImage: an entry that appears twice is refused (verified was the last copy, unpacked the first)', async (t) => {
  const layer = await makeTar([{ name: 'etc/os-release', content: 'ID=verified\n' }]);
  const blobName = `blobs/sha256/${sha256(gzipSync(layer))}`;
  const unverified = gzipSync(await makeTar([{ name: 'etc/os-release', content: 'ID=unverified\n' }]));
  const path = join(dir, 'dup.tar');
  await writeFile(path, await ociLayout(layer, [{ name: blobName, content: unverified }]));
  const err = await t.throwsAsync(openImage(path, { limits: LIMITS }));
  t.is(code(err), 'SEALKIT_ARCHIVE_UNSAFE');
  await writeFile(path, await ociLayout(layer));
  await t.notThrowsAsync(openImage(path, { limits: LIMITS }), 'the same image without the second copy opens');
});

test('openImage: a docker-archive manifest.json holding null is SEALKIT_ARCHIVE_INVALID, not a TypeError', async (t) => {
  const path = join(dir, 'docker.tar');
  for (const body of ['[null]', '[1]', '["x"]']) {
    await writeFile(path, await makeTar([{ name: 'manifest.json', content: body }]));
    for (const ref of [undefined, { name: 'a/b', tag: 'v1' }]) {
      const err = await t.throwsAsync(openImage(path, { limits: LIMITS, ref }));
      t.is(code(err), 'SEALKIT_ARCHIVE_INVALID', body);
    }
  }
});

// ---------- the importer's read ----------

test('importer: an archive that is not valid gzip fails with SEALKIT_ARCHIVE_INVALID, not a zlib error', async (t) => {
  const good = gzipSync(await makeTar([{ name: 'index.json', content: '{"manifests":[]}' }]));
  const bad = Buffer.from(good);
  bad[bad.length - 5] ^= 0xff; // the CRC
  for (const bytes of [bad, good.subarray(0, good.length - 20)]) {
    const path = join(dir, 'bad.tar.gz');
    await writeFile(path, bytes);
    const c = await recheck({ path, sha256: sha256(bytes), size: bytes.length, format: 'oci-archive', compression: 'gzip' }, 'test');
    try {
      const s = openArchive(c);
      s.stream.resume();
      s.stream.on('error', () => {});
      const err = await t.throwsAsync(s.finished);
      t.is(code(err), 'SEALKIT_ARCHIVE_INVALID');
    } finally {
      await c.close();
    }
  }
});

async function strip(tarball: Buffer, chunk = tarball.length): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < tarball.length; i += chunk) pieces.push(tarball.subarray(i, i + chunk));
  const out: Buffer[] = [];
  for await (const c of Readable.from(pieces).pipe(new StripNames('test')) as AsyncIterable<Buffer>) out.push(c);
  return Buffer.concat(out);
}

test('StripNames: a pax size that is not decimal digits is refused (1e3 hid index.json from it; -512 looped)', async (t) => {
  const index = entry({ name: 'index.json', content: Buffer.from(JSON.stringify({ manifests: [{ annotations: { 'io.containerd.image.name': 'evil/x:1' } }] })) });
  for (const size of ['1e3', '-512', 'abc', '0x10', '']) {
    const tarball = tarBytes([entry({ name: 'a', content: Buffer.from('x'), pax: [['size', size]] }), index]);
    const err = await t.throwsAsync(strip(tarball, 7));
    t.is(code(err), 'SEALKIT_ARCHIVE_INVALID', `size=${size}`);
  }
});

test('StripNames: index.json or manifest.json of the wrong shape is refused with a code, not a TypeError', async (t) => {
  for (const [name, body] of [['index.json', 'null'], ['index.json', '[]'], ['index.json', '{"manifests":[null]}'], ['index.json', '{"manifests":{"length":1}}'], ['index.json', '{"manifests":[{"annotations":null}]}'], ['manifest.json', '[1]'], ['manifest.json', '[null]'], ['manifest.json', '{}']]) {
    const err = await t.throwsAsync(strip(tarBytes([entry({ name, content: Buffer.from(body) })])));
    t.is(code(err), 'SEALKIT_ARCHIVE_INVALID', `${name}: ${body}`);
  }
});

test('StripNames: an index.json stored as a contiguous file (type 7, read as a file by tar-stream) loses its names too', async (t) => {
  const out = await strip(tarBytes([entry({ name: 'index.json', type: '7', content: Buffer.from(JSON.stringify({ manifests: [{ annotations: { 'io.containerd.image.name': 'evil/x:1', keep: 'y' } }] })) })]));
  t.false(out.includes('evil/x:1'));
  t.true(out.includes('"keep":"y"'));
});

// ---------- registry manifests, label manifests ----------

test('registry: a verified manifest that is not an object, or whose lists are not lists, is SEALKIT_ARCHIVE_INVALID', (t) => {
  for (const body of ['null', '1', '"x"', '[]', '{"manifests":{}}', '{"manifests":[null]}', '{"manifests":[1]}', '{"layers":{}}', '{"layers":"ab"}']) {
    const bytes = Buffer.from(body);
    const err = t.throws(() => parseManifest(bytes, `sha256:${sha256(bytes)}`, undefined, 'test'));
    t.is(code(err), 'SEALKIT_ARCHIVE_INVALID', body);
  }
  t.is(parseManifest(Buffer.from('{"layers":[]}'), 'sha256:x', 'application/vnd.oci.image.manifest.v1+json; charset=utf-8', 'test').mediaType, 'application/vnd.oci.image.manifest.v1+json');
});

test('label manifest: null, or a manifest or signature of the wrong type, is SEALKIT_MANIFEST_CORRUPT', async (t) => {
  const key = generateKey('node');
  const path = join(dir, 'm.json');
  for (const body of ['null', '1', '[]', '{"keyId":"node"}', '{"manifest":null,"keyId":"node","signature":"AAAA"}', '{"manifest":{},"keyId":"node","signature":null}', '{"manifest":{},"keyId":"node","signature":["x"]}']) {
    await writeFile(path, body);
    const err = await t.throwsAsync(readManifest(path, { id: key.id, ed25519: key.ed25519 }));
    t.is(code(err), 'SEALKIT_MANIFEST_CORRUPT', body);
  }
});

test('secret key file: JSON null or a non-object is SEALKIT_KEY_INVALID, not a TypeError', async (t) => {
  const path = join(dir, 'admin.key');
  for (const body of ['null', '1', '"x"', '[]']) {
    await writeFile(path, body);
    const err = await t.throwsAsync(readSecretKey(path));
    t.is(code(err), 'SEALKIT_KEY_INVALID', body);
  }
});

// ---------- the kept corpus and a short seeded run of every target ----------

for (const name of Object.keys(targets)) {
  test(`fuzz target ${name}: the kept corpus and 40 generated inputs end in a result or a SEALKIT_* code`, async (t) => {
    const target = await targets[name]();
    const files = await readdir(corpusDir(name)).catch(() => [] as string[]);
    for (const f of files.filter((f) => f.endsWith('.bin')).sort()) {
      const r = await runOne(target, await readFile(join(corpusDir(name), f)));
      t.not(r.kind, 'finding', `${f}: ${r.kind === 'finding' ? describe(r.error) : ''}`);
    }
    const seed = Number.parseInt(createHash('sha256').update(name).digest('hex').slice(0, 7), 16);
    await fc.assert(
      fc.asyncProperty(target.arbitrary(), async (input) => {
        const r = await runOne(target, input);
        if (r.kind === 'finding') throw new Error(describe(r.error));
      }),
      { numRuns: 40, seed },
    );
    t.pass();
  });
}
