import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealkitError } from './errors.ts';
import { writeFileAtomic } from './atomic.ts';
import { signDetached, verifyDetached, type PublicKey, type SecretKeyFile } from './sign.ts';

// A label manifest records, for one image digest unpacked into one rootfs,
// the SHA-256 of every regular file as derived from the verified image
// content. The ima service writes it, signed with the node's manifest key;
// the auditor and userspace appraisal read it and check the signature first,
// so a manifest edited on disk is caught, not trusted.

export interface LabelManifest {
  version: 1;
  image: { name: string; tag: string; digest: string }; // digest: sha256 hex of the verified archive / manifest
  container: string; // container (rootfs) name
  rootfs: string; // absolute path of the rootfs on this node
  policySerial: number;
  createdAt: string;
  files: Record<string, string>; // path relative to rootfs → sha256 hex
}

export interface SignedManifest {
  manifest: LabelManifest;
  keyId: string;
  signature: string;
}

export function manifestPath(dir: string, container: string): string {
  return join(dir, `${container}.json`);
}

export async function writeManifest(dir: string, m: LabelManifest, key: SecretKeyFile): Promise<string> {
  const bytes = Buffer.from(JSON.stringify(m), 'utf8');
  const signed: SignedManifest = { manifest: m, keyId: key.id, signature: signDetached('sealkit-manifest-v1', bytes, key) };
  const path = manifestPath(dir, m.container);
  await writeFileAtomic(path, JSON.stringify(signed));
  return path;
}

export async function readManifest(path: string, key: PublicKey): Promise<LabelManifest> {
  let signed: SignedManifest;
  try {
    signed = JSON.parse(await readFile(path, 'utf8')) as SignedManifest;
  } catch (err) {
    throw new SealkitError('SEALKIT_MANIFEST_CORRUPT', `label manifest ${path} is unreadable: ${(err as Error).message}; relabel the container`);
  }
  const ok = signed !== null && typeof signed === 'object' && signed.manifest !== null && typeof signed.manifest === 'object' && typeof signed.signature === 'string';
  const bytes = ok ? Buffer.from(JSON.stringify(signed.manifest), 'utf8') : Buffer.alloc(0);
  if (!ok || signed.keyId !== key.id || !verifyDetached('sealkit-manifest-v1', bytes, signed.signature, key)) {
    throw new SealkitError('SEALKIT_MANIFEST_CORRUPT', `label manifest ${path} does not carry a valid signature by the node key "${key.id}"; it was modified on disk — relabel the container`);
  }
  return signed.manifest;
}
