import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKey, readSecretKey, writeKeyFiles, type PublicKey, type SecretKeyFile } from '../lib/sign.ts';
import { readManifestKey } from '../lib/rootfs/verify.ts';

// The node's label-manifest key: <state>/ima/manifest-key.key (0600) and
// manifest-key.pub (YAML {id, ed25519}), which the auditor reads to check
// manifests before it trusts them. Created on first start.

export function manifestKeyBase(imaDir: string): string {
  return join(imaDir, 'manifest-key');
}

export async function loadOrCreateManifestKey(imaDir: string, node: string): Promise<SecretKeyFile> {
  const base = manifestKeyBase(imaDir);
  const present = await access(`${base}.key`).then(() => true, () => false);
  if (present) return readSecretKey(`${base}.key`);
  const id = `manifest.${node.toLowerCase().replace(/[^a-z0-9._-]/g, '-')}`.slice(0, 64);
  const key = generateKey(id);
  await writeKeyFiles(key, base);
  return key;
}

export function readManifestPublicKey(imaDir: string): Promise<PublicKey> {
  return readManifestKey(`${manifestKeyBase(imaDir)}.pub`);
}
