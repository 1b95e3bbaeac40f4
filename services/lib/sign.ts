import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import nacl from 'tweetnacl';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { SealkitError } from './errors.ts';
import { writeFileAtomic } from './atomic.ts';

// yaml (72 CommonJS modules) on first use: the ISO's onboot ima-policy step
// reaches this module through the label manifests and never parses YAML, and
// under TCG loading it costs seconds of boot
let yaml: typeof import('yaml') | undefined;
const YAML = () => (yaml ??= createRequire(import.meta.url)('yaml') as typeof import('yaml'));

// ed25519 keys and detached signatures (tweetnacl). Every signed thing is a
// domain-separated message, so a signature over a policy can never be
// replayed as a signature over an image statement.

export interface PublicKey {
  id: string;
  ed25519: string; // base64, 32 bytes
}

export interface SecretKeyFile {
  id: string;
  ed25519: string; // public, base64
  secret: string; // base64, 64 bytes (tweetnacl secret key)
}

export const KEY_ID = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function generateKey(id: string): SecretKeyFile {
  if (!KEY_ID.test(id)) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `key id "${id}" is not allowed; use 1-64 characters of a-z, 0-9, '.', '_' or '-'`);
  }
  const pair = nacl.sign.keyPair();
  return { id, ed25519: b64(pair.publicKey), secret: b64(pair.secretKey) };
}

export async function writeKeyFiles(key: SecretKeyFile, base: string): Promise<{ secretPath: string; publicPath: string }> {
  const secretPath = `${base}.key`;
  const publicPath = `${base}.pub`;
  await writeFileAtomic(secretPath, JSON.stringify(key, null, 2) + '\n', 0o600);
  await writeFileAtomic(publicPath, YAML().stringify({ id: key.id, ed25519: key.ed25519 }));
  return { secretPath, publicPath };
}

export async function readSecretKey(path: string): Promise<SecretKeyFile> {
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (err) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `cannot read key file ${path}: ${(err as Error).message}; create one with "sealkit keygen"`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new SealkitError('SEALKIT_KEY_INVALID', `key file ${path} is not JSON; create one with "sealkit keygen"`);
  }
  const k = parsed as Partial<SecretKeyFile> | null;
  if (!k || typeof k.id !== 'string' || typeof k.secret !== 'string' || typeof k.ed25519 !== 'string') {
    throw new SealkitError('SEALKIT_KEY_INVALID', `key file ${path} lacks id, ed25519 or secret; create one with "sealkit keygen"`);
  }
  const secret = unb64(k.secret, `secret key in ${path}`);
  if (secret.length !== nacl.sign.secretKeyLength) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `secret key in ${path} has ${secret.length} bytes, expected ${nacl.sign.secretKeyLength}`);
  }
  return { id: k.id, ed25519: k.ed25519, secret: k.secret };
}

// A trust file lists public keys: YAML `keys: [{id, ed25519}]`.
export async function readTrust(path: string): Promise<PublicKey[]> {
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (err) {
    throw new SealkitError('SEALKIT_CONFIG', `cannot read trust file ${path}: ${(err as Error).message}; add the admin public key printed by "sealkit keygen"`);
  }
  return parseTrust(raw, path);
}

export function parseTrust(raw: string, where: string): PublicKey[] {
  let doc: unknown;
  try {
    doc = YAML().parse(raw, { maxAliasCount: 0 });
  } catch (err) {
    throw new SealkitError('SEALKIT_CONFIG', `trust file ${where} is not valid YAML: ${(err as Error).message}`);
  }
  const keys = (doc as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new SealkitError('SEALKIT_CONFIG', `trust file ${where} has no "keys:" list; add at least one {id, ed25519} entry`);
  }
  return keys.map((k, i) => checkPublicKey(k, `${where}: keys[${i}]`));
}

export function checkPublicKey(k: unknown, where: string): PublicKey {
  const key = k as Partial<PublicKey> | null;
  if (!key || typeof key.id !== 'string' || !KEY_ID.test(key.id)) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `${where}.id must be a key id (a-z, 0-9, '.', '_', '-')`);
  }
  if (typeof key.ed25519 !== 'string' || unb64(key.ed25519, `${where}.ed25519`).length !== nacl.sign.publicKeyLength) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `${where}.ed25519 must be a base64 ed25519 public key of 32 bytes`);
  }
  return { id: key.id, ed25519: key.ed25519 };
}

export type Domain = 'sealkit-policy-v1' | 'sealkit-image-v1' | 'sealkit-manifest-v1' | 'sealkit-event-v1';

export function framed(domain: Domain, message: Uint8Array): Uint8Array {
  const prefix = Buffer.from(`${domain}\n`, 'utf8');
  return Buffer.concat([prefix, message]);
}

// Signed through OpenSSL (node:crypto) too: the same deterministic ed25519
// signature tweetnacl makes from the same key file (a test holds them equal),
// 0.2 ms against 7–28 ms here, and a policy push is signed on the operator's
// round trip. The key object is kept with the key file it came from.
const privateKeys = new WeakMap<SecretKeyFile, KeyObject>();
export function signDetached(domain: Domain, message: Uint8Array, key: SecretKeyFile): string {
  let k = privateKeys.get(key);
  if (!k) {
    const secret = unb64(key.secret, 'secret key');
    if (secret.length !== nacl.sign.secretKeyLength) throw new SealkitError('SEALKIT_KEY_INVALID', `secret key ${key.id} has ${secret.length} bytes, expected ${nacl.sign.secretKeyLength}`);
    k = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: b64url(secret.subarray(0, 32)), x: b64url(secret.subarray(32)) }, format: 'jwk' });
    privateKeys.set(key, k);
  }
  return b64(sign(null, framed(domain, message), k));
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

// Verification through OpenSSL (node:crypto): the same ed25519 as
// tweetnacl's, which makes and signs the keys, but 60 times faster here
// (0.34 against 21 ms a signature), and a policy, an image, a label manifest
// and every fleet event are verified on hot paths. Parsed keys are kept by
// their base64 form.
const keyObjects = new Map<string, KeyObject>();
export function publicKeyObject(ed25519: string, what = 'public key'): KeyObject {
  let k = keyObjects.get(ed25519);
  if (!k) {
    const raw = unb64(ed25519, what);
    if (raw.length !== nacl.sign.publicKeyLength) throw new SealkitError('SEALKIT_KEY_INVALID', `${what} has ${raw.length} bytes, expected ${nacl.sign.publicKeyLength}`);
    k = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
    if (keyObjects.size > 4096) keyObjects.clear();
    keyObjects.set(ed25519, k);
  }
  return k;
}

export function verifyWith(domain: Domain, message: Uint8Array, signature: string, key: KeyObject): boolean {
  let sig: Uint8Array;
  try {
    sig = unb64(signature, 'signature');
  } catch {
    return false;
  }
  return sig.length === nacl.sign.signatureLength && verify(null, framed(domain, message), key, sig);
}

export function verifyDetached(domain: Domain, message: Uint8Array, signature: string, key: PublicKey): boolean {
  return verifyWith(domain, message, signature, publicKeyObject(key.ed25519, `key ${key.id}`));
}

// The canonical statement an image signature covers: fixed key order, no
// whitespace, so every signer and verifier computes the same bytes.
export function imageStatement(img: { name: string; tag: string; sha256: string; size: number }): Uint8Array {
  return Buffer.from(JSON.stringify({ name: img.name, tag: img.tag, sha256: img.sha256, size: img.size }), 'utf8');
}

export interface DetachedSignature {
  keyid: string;
  sig: string;
}

// N-of-M: count distinct allowed keys whose signature verifies.
export function checkThreshold(
  domain: Domain,
  message: Uint8Array,
  signatures: DetachedSignature[],
  allowed: PublicKey[],
  threshold: number,
  what: string,
): string[] {
  const byId = new Map(allowed.map((k) => [k.id, k]));
  const good = new Set<string>();
  const untrusted: string[] = [];
  const invalid: string[] = [];
  for (const s of signatures) {
    const key = byId.get(s.keyid);
    if (!key) {
      untrusted.push(s.keyid);
      continue;
    }
    if (verifyDetached(domain, message, s.sig, key)) good.add(key.id);
    else invalid.push(s.keyid);
  }
  if (good.size >= threshold) return [...good];
  const detail = { valid: [...good], untrusted, invalid, threshold };
  if (signatures.length === 0) {
    throw new SealkitError('SEALKIT_SIGNATURE_MISSING', `${what} has no signatures; ${threshold} from [${allowed.map((k) => k.id).join(', ')}] are required`, detail);
  }
  if (good.size === 0 && invalid.length > 0) {
    throw new SealkitError('SEALKIT_SIGNATURE_INVALID', `${what}: signature by ${invalid.join(', ')} does not verify; re-sign the exact bytes`, detail);
  }
  if (good.size === 0 && untrusted.length > 0) {
    throw new SealkitError('SEALKIT_KEY_UNTRUSTED', `${what} is signed by ${untrusted.join(', ')}, which is not among the trusted keys [${allowed.map((k) => k.id).join(', ')}]`, detail);
  }
  throw new SealkitError('SEALKIT_THRESHOLD_NOT_MET', `${what} has ${good.size} valid signature(s) of the ${threshold} required`, detail);
}

// The detached signature file of an image; the fetcher reads it, the CLI
// (`sealkit sign-image`) writes it.
/**
 * The detached signature file of an image, served at
 * `images[].signatures.url` or, for URL sources, at `<source>.sig`:
 *
 *     {"signatures": [{"keyid": "release-2026", "sig": "<base64 ed25519>"}]}
 *
 * Each `sig` is ed25519 over "sealkit-image-v1\n" + imageStatement({name,
 * tag, sha256, size}) — the canonical JSON of the pinned image, where sha256
 * and size are those of the archive (URL sources) or of the registry
 * manifest (oci:// sources). Several keys sign into one file (N of M).
 */
export interface SignatureFile {
  signatures: DetachedSignature[];
}

export interface Statement {
  name: string;
  tag: string;
  sha256: string;
  size: number;
}

/** Sign an image statement with each key, adding to an existing file (replacing a key's old signature). */
export function signImage(statement: Statement, keys: SecretKeyFile[], existing: SignatureFile = { signatures: [] }): SignatureFile {
  const bytes = imageStatement(statement);
  const ids = new Set(keys.map((k) => k.id));
  return {
    signatures: [
      ...existing.signatures.filter((s) => !ids.has(s.keyid)),
      ...keys.map((k) => ({ keyid: k.id, sig: signDetached('sealkit-image-v1', bytes, k) })),
    ],
  };
}

export function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

export function unb64(s: string, what: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) {
    throw new SealkitError('SEALKIT_KEY_INVALID', `${what} is not base64`);
  }
  return new Uint8Array(Buffer.from(s, 'base64'));
}
