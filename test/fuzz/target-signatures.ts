import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import YAML from 'yaml';
import { parseSignatureFile } from '../../services/fetcher/signatures.ts';
import { readManifest, type LabelManifest } from '../../services/lib/manifest.ts';
import { b64, checkThreshold, imageStatement, parseTrust, readSecretKey, signDetached, unb64, type PublicKey, type SecretKeyFile } from '../../services/lib/sign.ts';
import { check, mutated, type Target } from './harness.ts';

// Signature files, trust files, key files and signed label manifests. The
// first input byte picks the reader, the rest is the file. Properties: a
// result or a SEALKIT_* refusal; a signature file counts only keys whose
// genuine signature it carries (a mutated signature never verifies); a label
// manifest is accepted only with exactly the content that was signed.

const keyOf = (seed: number, id: string): SecretKeyFile => {
  const pair = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(seed));
  return { id, ed25519: b64(pair.publicKey), secret: b64(pair.secretKey) };
};
const A = keyOf(1, 'release-2026');
const B = keyOf(2, 'second');
const pub = (k: SecretKeyFile): PublicKey => ({ id: k.id, ed25519: k.ed25519 });
const statement = imageStatement({ name: 'library/alpine', tag: 'v1', sha256: 'a'.repeat(64), size: 1234 });
const genuine = new Map([A, B].map((k) => [k.id, signDetached('sealkit-image-v1', statement, k)]));
const sigFile = JSON.stringify({ signatures: [...genuine].map(([keyid, sig]) => ({ keyid, sig })) });
const manifest: LabelManifest = { version: 2, image: { name: 'library/alpine', tag: 'v1', digest: 'a'.repeat(64) }, container: 'alpine', rootfs: '/containers/services/alpine/rootfs', policySerial: 3, createdAt: '2026-01-01T00:00:00.000Z', files: { 'bin/sh': `sha256:${'b'.repeat(64)}`, 'etc/x': `sha256:${'c'.repeat(64)}` } };
const signedManifest = JSON.stringify({ manifest, keyId: A.id, signature: signDetached('sealkit-manifest-v1', Buffer.from(JSON.stringify(manifest)), A) });
const trust = YAML.stringify({ keys: [pub(A), pub(B)] });
const secret = JSON.stringify(A, null, 2);

const junk = fc.constantFrom('null', '[]', '{}', '"x"', '1', 'true', '{"signatures":null}', '{"signatures":[null]}', '{"signatures":[{"keyid":1,"sig":"x"}]}', '{"manifest":null}', '{"manifest":{},"keyId":"release-2026","signature":null}', '{"keyId":"release-2026"}', 'keys: [{id: a, ed25519: *x}]', 'keys: &a [*a]', '{"id":"a","ed25519":"x","secret":"AAAA"}', '{"__proto__":{"signatures":[]}}');
const sigJunk = fc.record({ keyid: fc.constantFrom(A.id, B.id, 'other', '', '__proto__'), sig: fc.oneof(fc.constantFrom(genuine.get(A.id)!, genuine.get(B.id)!, '', '====', 'AAAA', 'not base64!'), fc.base64String({ maxLength: 100 })) });
const sigList = fc.array(sigJunk, { maxLength: 5 }).map((s) => JSON.stringify({ signatures: s }));
const doc = (seed: string) => fc.oneof({ weight: 3, arbitrary: fc.constant(seed) }, { weight: 1, arbitrary: junk });
const withKind = (kind: number, a: fc.Arbitrary<string>) => a.map((s) => new Uint8Array(Buffer.concat([Buffer.from([kind]), Buffer.from(s)])));
const byKind = [sigFile, signedManifest, trust, secret];
const structured = fc.oneof(
  withKind(0, fc.oneof(doc(sigFile), sigList)),
  withKind(1, doc(signedManifest)),
  withKind(2, doc(trust)),
  withKind(3, doc(secret)),
);

const dir = mkdtempSync(join(tmpdir(), 'sealkit-fuzz-sign-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, 'f');

export const target: Target = {
  name: 'signatures',
  timeoutMs: 5000,
  arbitrary: () => fc.oneof({ weight: 3, arbitrary: structured }, { weight: 3, arbitrary: mutated(fc.oneof(...byKind.map((s, k) => withKind(k, fc.constant(s)))), 4) }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 300 }) }),
  async run(input) {
    if (input.length === 0) return;
    const kind = input[0] % 4;
    const body = Buffer.from(input.subarray(1));
    switch (kind) {
      case 0: {
        const f = parseSignatureFile(body, 'fuzz.sig');
        const threshold = 1 + (input.length % 2);
        const ok = checkThreshold('sealkit-image-v1', statement, f.signatures, [pub(A), pub(B)], threshold, 'fuzz image');
        check(ok.length >= threshold, `threshold ${threshold} met by ${ok.length} keys`);
        for (const id of ok) {
          const want = Buffer.from(unb64(genuine.get(id)!, 'x'));
          check(
            f.signatures.some((s) => s.keyid === id && (() => { try { return Buffer.from(unb64(s.sig, 'x')).equals(want); } catch { return false; } })()),
            `key ${id} counted without its genuine signature in the file`,
          );
        }
        return;
      }
      case 1: {
        writeFileSync(file, body);
        const m = await readManifest(file, pub(A));
        check(JSON.stringify(m) === JSON.stringify(manifest), 'a label manifest was accepted with content other than what was signed');
        return;
      }
      case 2: {
        const keys = parseTrust(body.toString('utf8'), 'fuzz trust');
        for (const k of keys) check(typeof k.id === 'string' && unb64(k.ed25519, 'k').length === 32, 'trust key');
        return;
      }
      case 3: {
        writeFileSync(file, body);
        const k = await readSecretKey(file);
        check(unb64(k.secret, 's').length === 64 && typeof k.id === 'string', 'secret key');
        return;
      }
    }
  },
};
