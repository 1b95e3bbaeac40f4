import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateSigningKey } from '../services/ima/digsig.ts';
import { labelTree } from '../services/ima/labeltree.ts';
import { readLabel } from '../services/ima/label.ts';

// Signature mode: v2 signatures (0x03) that evmctl ima_verify accepts with
// the node certificate — the same certificate the kernel gets in _ima.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-ima-sig-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const sha = (b: string) => createHash('sha256').update(b).digest('hex');

test('v2 signature labels verify with evmctl ima_verify and the node certificate', async (t) => {
  const key = await loadOrCreateSigningKey(join(dir, 'keys'), 'node-a');
  t.is(statSync(join(dir, 'keys', 'ima-key.pem')).mode & 0o777, 0o600);
  // the keyid is the tail of the certificate's subject key identifier
  const skid = execFileSync('openssl', ['x509', '-in', key.certPem, '-noout', '-ext', 'subjectKeyIdentifier'], { encoding: 'utf8' });
  t.true(skid.replace(/[\s:]/g, '').toLowerCase().endsWith(key.keyid.toString('hex')), skid);

  const tree = join(dir, 'tree');
  mkdirSync(join(tree, 'bin'), { recursive: true });
  const contents: Record<string, string> = { 'bin/app': '#!/bin/sh\necho app\n', 'etc.conf': 'a=1\n', empty: '' };
  for (const [f, c] of Object.entries(contents)) writeFileSync(join(tree, f), c);
  await labelTree(tree, Object.fromEntries(Object.entries(contents).map(([f, c]) => [f, sha(c)])), { signer: key });

  for (const f of Object.keys(contents)) {
    const label = (await readLabel(join(tree, f)))!;
    t.is(label[0], 0x03, 'EVM_IMA_XATTR_DIGSIG');
    t.is(label[1], 2, 'signature v2');
    t.is(label[2], 4, 'sha256');
    t.deepEqual(label.subarray(3, 7), key.keyid);
    t.is(label.readUInt16BE(7), label.length - 9);
    const r = spawnSync('evmctl', ['-v', 'ima_verify', '--key', key.certDer, join(tree, f)], { encoding: 'utf8' });
    t.is(r.status, 0, `${f}: ${r.stdout}${r.stderr}`);
  }

  // a file changed after signing no longer verifies
  appendFileSync(join(tree, 'etc.conf'), 'b=2\n');
  t.not(spawnSync('evmctl', ['ima_verify', '--key', key.certDer, join(tree, 'etc.conf')]).status, 0);
});

test('the signing key is created once and reused', async (t) => {
  const a = await loadOrCreateSigningKey(join(dir, 'again'), 'node-b');
  const b = await loadOrCreateSigningKey(join(dir, 'again'), 'node-b');
  t.deepEqual(a.keyid, b.keyid);
});
