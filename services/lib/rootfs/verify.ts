import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import { sha256File, sha256Hex } from '../digest.ts';
import { SealkitError } from '../errors.ts';
import { readManifest, sha256Of, type LabelManifest } from '../manifest.ts';
import { checkPublicKey, type PublicKey } from '../sign.ts';
import type { Tamper } from '../contract.ts';
import type { ContainerPaths } from './store.ts';
import { abs, listFiles } from './tree.ts';

// The check before anything runs from a labelled rootfs (the cache lesson:
// checked on every use, not trusted after the first): the label manifest
// must carry the node key's signature and name this rootfs, and every
// regular file of the tree must hash to what it lists — a file it does not
// list is refused as well as one that changed or went missing.

export type FileFinding = Pick<Tamper, 'file' | 'kind' | 'expectedSha256' | 'actualSha256'>;

export interface RootfsCheck {
  manifest: LabelManifest;
  files: number; // regular files hashed
  findings: FileFinding[]; // empty: the rootfs is what the manifest vouches for
}

// files hashed at once: enough to keep the disk busy, few enough file descriptors
const HASH_CONCURRENCY = 8;

// The manifest bytes last found to carry a valid signature, per path: the
// same bytes under the same key verify the same way, and a start should not
// wait for tweetnacl's ed25519 (tens of ms on a loaded node) to say so again.
const verified = new Map<string, { sha256: string; key: string; manifest: LabelManifest }>();

export async function readVerifiedManifest(path: string, key: PublicKey): Promise<LabelManifest> {
  const bytes = await readFile(path).catch(() => null);
  const sha256 = bytes && sha256Hex(bytes);
  const hit = verified.get(path);
  if (hit && hit.sha256 === sha256 && hit.key === `${key.id}:${key.ed25519}`) return structuredClone(hit.manifest);
  const manifest = await readManifest(path, key);
  // kept only when what was verified is what was hashed (no write in between)
  const again = await readFile(path).catch(() => null);
  if (sha256 && again && sha256Hex(again) === sha256) verified.set(path, { sha256, key: `${key.id}:${key.ed25519}`, manifest: structuredClone(manifest) });
  return manifest;
}

export async function verifyRootfs(paths: ContainerPaths, key: PublicKey): Promise<RootfsCheck> {
  const manifest = await readVerifiedManifest(paths.manifest, key);
  if (manifest.rootfs !== paths.rootfs) {
    throw new SealkitError('SEALKIT_MANIFEST_CORRUPT', `label manifest ${paths.manifest} vouches for ${manifest.rootfs}, not ${paths.rootfs}; relabel the container`, { rootfs: paths.rootfs });
  }
  const present = await listFiles(paths.rootfs).catch((err: NodeJS.ErrnoException) => {
    throw new SealkitError('SEALKIT_MANIFEST_CORRUPT', `cannot read the rootfs ${paths.rootfs} its manifest vouches for: ${err.message}; relabel the container`, { rootfs: paths.rootfs });
  });
  const expected = (f: string) => (Object.hasOwn(manifest.files, f) ? sha256Of(manifest.files[f]) : null);
  const findings: FileFinding[] = [];
  const seen = new Set(present);
  for (const f of Object.keys(manifest.files)) if (!seen.has(f)) findings.push({ file: f, kind: 'removed', expectedSha256: expected(f), actualSha256: null });

  let next = 0;
  const worker = async () => {
    while (next < present.length) {
      const file = present[next++];
      const want = expected(file);
      let refused = false;
      const got = await sha256File(abs(paths.rootfs, file)).then(
        (r) => r.sha256,
        (err: NodeJS.ErrnoException) => ((refused = err.code === 'EACCES' || err.code === 'EPERM'), null),
      );
      // listed but not readable: with kernel appraisal, EACCES is the kernel
      // refusing a content that no longer matches its label
      if (refused) findings.push({ file, kind: want === null ? 'added' : 'modified', expectedSha256: want, actualSha256: null });
      else if (got === null) {
        if (want !== null) findings.push({ file, kind: 'removed', expectedSha256: want, actualSha256: null });
      } else if (want === null) findings.push({ file, kind: 'added', expectedSha256: null, actualSha256: got });
      else if (got !== want) findings.push({ file, kind: 'modified', expectedSha256: want, actualSha256: got });
    }
  };
  await Promise.all(Array.from({ length: HASH_CONCURRENCY }, worker));
  findings.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return { manifest, files: present.length, findings };
}

// The public half of the ima service's manifest key (storeLayout().manifestKey).
export async function readManifestKey(path: string): Promise<PublicKey> {
  return checkPublicKey(YAML.parse(await readFile(path, 'utf8')), path);
}
