import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SealkitError } from './errors.ts';
import { writeFileAtomic } from './atomic.ts';
import { SHA256_HEX } from './digest.ts';
import { signDetached, verifyDetached, type PublicKey, type SecretKeyFile } from './sign.ts';

// A label manifest records, for one image digest unpacked into one rootfs,
// the digest of every regular file as derived from the verified image
// content. The ima service writes it, signed with the node's manifest key;
// the auditor and userspace appraisal read it and check the signature first,
// so a manifest edited on disk is caught, not trusted.

// Version 2: each file's digest names its algorithm ("sha256:<hex>", as OCI
// descriptors write them), so a manifest says what it vouches for without
// the reader assuming it.
export const MANIFEST_VERSION = 2;

export type FileDigest = `sha256:${string}`;

export interface LabelManifest {
  version: typeof MANIFEST_VERSION;
  image: { name: string; tag: string; digest: string }; // digest: sha256 hex of the verified archive / manifest, as on the bus
  container: string; // container (rootfs) name
  rootfs: string; // absolute path of the rootfs on this node
  policySerial: number;
  createdAt: string;
  files: Record<string, FileDigest>; // path relative to rootfs → digest
  // the image config's process (entrypoint, cmd, env, working dir, user), so
  // that what runs from the rootfs is vouched for by the same signature;
  // absent in manifests written before it was recorded
  process?: ImageProcess;
}

export interface ImageProcess {
  entrypoint?: string[];
  cmd?: string[];
  env?: string[];
  workingDir?: string;
  user?: string;
}

// The process part of an OCI / Docker image config ({config: {Entrypoint, …}}).
export function imageProcess(config: Record<string, unknown>): ImageProcess {
  const c = (config.config ?? {}) as Record<string, unknown>;
  const strings = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? [...v] : undefined);
  const out: ImageProcess = {};
  const entrypoint = strings(c.Entrypoint);
  const cmd = strings(c.Cmd);
  const env = strings(c.Env);
  if (entrypoint) out.entrypoint = entrypoint;
  if (cmd) out.cmd = cmd;
  if (env) out.env = env;
  if (typeof c.WorkingDir === 'string' && c.WorkingDir) out.workingDir = c.WorkingDir;
  if (typeof c.User === 'string' && c.User) out.user = c.User;
  return out;
}

export interface SignedManifest {
  manifest: LabelManifest;
  keyId: string;
  signature: string;
}

export function fileDigest(sha256: string): FileDigest {
  return `sha256:${sha256}`;
}

// path → sha256 hex (as unpacking computes them) → path → file digest
export function manifestFiles(sha256s: Record<string, string>): Record<string, FileDigest> {
  return Object.fromEntries(Object.entries(sha256s).map(([f, hex]) => [f, fileDigest(hex)]));
}

// The SHA-256 hex a file digest names (labels and events carry bare hex).
export function sha256Of(d: FileDigest): string {
  return d.slice('sha256:'.length);
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
  return current(signed.manifest as unknown as { version: unknown; files: unknown }, path);
}

// A node upgraded in place keeps the version 1 manifests it wrote, whose
// files map to bare hex that was SHA-256 by definition: they are read as
// such (the signature above covers them as written); labelling the
// container again writes version 2.
function current(m: { version: unknown; files: unknown }, path: string): LabelManifest {
  const legacy = m.version === 1;
  if (!legacy && m.version !== MANIFEST_VERSION) {
    throw new SealkitError('SEALKIT_MANIFEST_CORRUPT', `label manifest ${path} has version ${JSON.stringify(m.version)}; this node reads versions 1 and ${MANIFEST_VERSION} — relabel the container`);
  }
  if (m.files === null || typeof m.files !== 'object' || Array.isArray(m.files)) {
    throw new SealkitError('SEALKIT_MANIFEST_CORRUPT', `label manifest ${path} has no files map; relabel the container`);
  }
  const hexOf = ([rel, d]: [string, unknown]): [string, string] => {
    const hex = typeof d !== 'string' ? null : legacy ? d : d.startsWith('sha256:') ? d.slice('sha256:'.length) : null;
    if (hex === null || !SHA256_HEX.test(hex)) {
      throw new SealkitError('SEALKIT_MANIFEST_CORRUPT', `label manifest ${path}: the digest of "${rel}" is ${JSON.stringify(d)}, not ${legacy ? '64 hex characters' : '"sha256:" and 64 hex characters'}; relabel the container`, { file: rel });
    }
    return [rel, hex];
  };
  const files = manifestFiles(Object.fromEntries(Object.entries(m.files).map(hexOf)));
  return { ...(m as unknown as LabelManifest), version: MANIFEST_VERSION, files };
}
