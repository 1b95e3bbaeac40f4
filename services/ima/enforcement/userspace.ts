import { lstat } from 'node:fs/promises';
import { publicDecrypt, constants, type KeyObject } from 'node:crypto';
import { sha256Of, type LabelManifest } from '../../lib/manifest.ts';
import { abs, listFiles } from '../../lib/rootfs/tree.ts';
import { HashPool } from '../hashpool.ts';
import { labelDigest, readLabel, EVM_IMA_XATTR_DIGSIG } from '../label.ts';
import { labelTree } from '../labeltree.ts';
import type { Enforcement, Finding, LabelCheck } from './enforcement.ts';

// Userspace appraisal: the files of a rootfs against its (verified) label
// manifest. Content is re-hashed on the pool; labels are read back too, so a
// file swapped for an unlabelled copy with the same bytes is still caught.
// In force when the kernel appraises nothing; run alongside the kernel by
// the other mechanisms, so a change is reported wherever it is made.

export const userspace: Enforcement = {
  mode: 'userspace',
  probe: async () => ({}),
  prepareBoot: async (ctx, declined) => ({ exitCode: 0, line: { written: false, mode: 'userspace', why: declined ?? 'nothing to prepare at boot', kernel: ctx.kernel } }),
  // the labels are written even though no kernel reads them here: appraisal
  // reads them back, and the next boot may appraise with them
  label: labelTree,
  appraise,
  report: (_facts, declined) => ({ inForce: true, why: declined ?? 'files are re-hashed against the label manifests' }),
};

// Appraise the whole tree, or only `paths` (changed files or directories).
export async function appraise(m: LabelManifest, pool: HashPool, opts: LabelCheck & { paths?: string[] } = {}): Promise<Finding[]> {
  const root = m.rootfs;
  const expectedOf = (f: string): string | null => (Object.hasOwn(m.files, f) ? sha256Of(m.files[f]) : null);
  const candidates = new Set<string>();
  const missing = new Set<string>();
  if (!opts.paths) {
    for (const f of await listFiles(root)) candidates.add(f);
    for (const f of Object.keys(m.files)) if (!candidates.has(f)) missing.add(f);
  } else {
    for (const p of opts.paths) {
      const st = await lstat(abs(root, p)).catch(() => null);
      if (!st) {
        for (const f of Object.keys(m.files)) if (f === p || f.startsWith(`${p}/`)) missing.add(f);
      } else if (st.isDirectory()) {
        const under = new Set((await listFiles(abs(root, p))).map((f) => `${p}/${f}`));
        for (const f of under) candidates.add(f);
        for (const f of Object.keys(m.files)) if (f.startsWith(`${p}/`) && !under.has(f)) missing.add(f);
      } else if (st.isFile()) {
        candidates.add(p);
      } else if (expectedOf(p) !== null) {
        // a regular file replaced by a symlink, fifo, ...
        return [{ file: p, kind: 'modified', expectedSha256: expectedOf(p), actualSha256: null }];
      }
    }
  }
  const findings: Finding[] = [...missing].sort().map((f) => ({ file: f, kind: 'removed' as const, expectedSha256: expectedOf(f), actualSha256: null }));
  const list = [...candidates].sort();
  const hashed = await pool.hashFiles(list.map((f) => abs(root, f)));
  for (let i = 0; i < list.length; i++) {
    const file = list[i];
    const res = hashed[i];
    const expected = expectedOf(file);
    if ('error' in res) {
      // vanished between listing and hashing
      if (expected) findings.push({ file, kind: 'removed', expectedSha256: expected, actualSha256: null });
      continue;
    }
    if (expected === null) findings.push({ file, kind: 'added', expectedSha256: null, actualSha256: res.sha256 });
    else if (res.sha256 !== expected) findings.push({ file, kind: 'modified', expectedSha256: expected, actualSha256: res.sha256 });
    else if (!(await labelMatches(abs(root, file), expected, opts))) findings.push({ file, kind: 'label-mismatch', expectedSha256: expected, actualSha256: res.sha256 });
  }
  return findings;
}

async function labelMatches(path: string, sha256: string, opts: LabelCheck): Promise<boolean> {
  const label = await readLabel(path).catch(() => null);
  if (!label) return false;
  if (label[0] === EVM_IMA_XATTR_DIGSIG) return opts.signer ? signatureVouches(label, sha256, opts.signer) : false;
  return labelDigest(label) === sha256;
}

// A v2 signature label vouches for sha256 when it decrypts, under the node's
// public key, to the DigestInfo of exactly that digest.
function signatureVouches(label: Buffer, sha256: string, pub: KeyObject): boolean {
  if (label.length < 9 || label[1] !== 2 || label[2] !== 4) return false;
  const size = label.readUInt16BE(7);
  if (label.length !== 9 + size) return false;
  try {
    const info = publicDecrypt({ key: pub, padding: constants.RSA_PKCS1_PADDING }, label.subarray(9));
    return info.subarray(-32).toString('hex') === sha256 && info.length === 51;
  } catch {
    return false;
  }
}
