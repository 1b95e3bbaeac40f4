import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256Of, type LabelManifest } from '../../lib/manifest.ts';
import { abs } from '../../lib/rootfs/tree.ts';
import { asSealkitError, SealkitError } from '../../lib/errors.ts';
import { labelTree } from '../labeltree.ts';
import { deployIpePolicy, parseIpePolicy, readIpeState } from '../ipe.ts';
import { enableVerity, measureVerity } from '../fsverity.ts';
import { checkRuntime } from '../runtime.ts';
import { securityfsOf, type BootContext, type BootStep, type Enforcement, type Finding } from './enforcement.ts';
import { appraise as appraiseUserspace } from './userspace.ts';

// IPE (Linux 6.12) with fs-verity: every file of a verified rootfs gets
// fs-verity on the store (ext4 -O verity), which makes it immutable, and the
// owner-signed IPE policy lets only files with a listed fs-verity digest,
// and the initramfs, execute. The node cannot authorise a new executable:
// the policy is signed by the owner's key in UEFI db (.platform), which the
// node does not hold. IMA labels and userspace appraisal still run, so a
// change is reported with the file it was made to.

// Where the boot step finds the owner-signed policy (sealkit ipe policy).
export const ipePolicyFile = (imaDir: string) => join(imaDir, 'ipe', 'policy.p7b');

export function makeIpeVerity(securityfs?: string): Enforcement {
  const sfs = () => securityfsOf({ securityfs });
  return {
    mode: 'ipe-verity',
    async probe(p) {
      const s = await readIpeState(securityfsOf(p));
      return { ipe: s.present, ipeEnforce: s.enforce, ipePolicy: s.active ? s.version : null };
    },
    prepareBoot,
    async label(root, digests, opts) {
      const n = await labelTree(root, digests, opts);
      await enableVerity(Object.keys(digests).map((f) => abs(root, f)));
      return n;
    },
    async appraise(m, pool, opts = {}) {
      const findings = await appraiseUserspace(m, pool, opts);
      return [...findings, ...(await verityFindings(m, sfs(), findings, opts.paths))];
    },
    report({ kernel }) {
      if (!kernel.ipe) return { inForce: false, why: 'securityfs has no ipe/ (IPE needs Linux 6.12 or later with CONFIG_SECURITY_IPE)' };
      if (kernel.ipeEnforce === false) return { inForce: false, offered: true, why: 'IPE is in permissive mode (ipe/enforce reads 0): it refuses nothing; reported as tamper' };
      if (!kernel.ipePolicy) return { inForce: false, offered: true, why: 'IPE is available but no sealkit policy is active this boot: the boot step deploys the owner-signed <state>/ima/ipe/policy.p7b (made with sealkit ipe policy)' };
      return { inForce: true, why: `IPE enforces the owner-signed policy "sealkit" version ${kernel.ipePolicy}: only files of the verified rootfs trees with a listed fs-verity digest, and the initramfs, may execute; fs-verity makes those files immutable` };
    },
  };
}

export const ipeVerity = makeIpeVerity();

// Files with no fs-verity, or whose measured digest the active policy does
// not list (the kernel would refuse to run them): both found after the
// content check, so a changed file is reported as changed first.
async function verityFindings(m: LabelManifest, securityfs: string, already: Finding[], paths?: string[]): Promise<Finding[]> {
  const seen = new Set(already.map((f) => f.file));
  const files = Object.keys(m.files).filter((f) => !seen.has(f) && (!paths || paths.some((p) => f === p || f.startsWith(`${p}/`))));
  const measured = await measureVerity(files.map((f) => abs(m.rootfs, f)));
  const text = (await readIpeState(securityfs)).text;
  const allowed = text ? parseIpePolicy(text).digests : null;
  const out: Finding[] = [];
  for (const f of files) {
    const d = measured.get(abs(m.rootfs, f));
    const expected = sha256Of(m.files[f]);
    if (d === null || d === undefined) out.push({ file: f, kind: 'verity-missing', expectedSha256: expected, actualSha256: null });
    else if (allowed && !allowed.has(d)) out.push({ file: f, kind: 'verity-unlisted', expectedSha256: expected, actualSha256: null });
  }
  return out;
}

async function prepareBoot(ctx: BootContext): Promise<BootStep> {
  const { kernel } = ctx;
  if (!kernel.ipe) return { declined: 'securityfs has no ipe/' };
  const file = ipePolicyFile(ctx.imaDir);
  const p7b = await readFile(file).catch(() => null);
  if (!p7b) return { declined: `IPE is available but no owner-signed policy is at ${file} (make it with sealkit ipe policy)` };
  if (ctx.dryRun) return { exitCode: 0, line: { written: false, mode: 'ipe-verity', why: 'dry run', policy: file, kernel } };
  try {
    const applied = await applyIpePolicy(ctx.securityfs, ctx.store, p7b);
    return { exitCode: 0, line: { written: true, mode: 'ipe-verity', ...applied, policy: file, store: ctx.store, kernel } };
  } catch (err) {
    const e = asSealkitError(err);
    return { exitCode: 1, line: { written: false, mode: 'ipe-verity', policy: file, error: e.toWire(), kernel } };
  }
}

// Deploy and activate a signed policy, at boot or pushed (ima.ipe): only
// where containers can still start under it and the store takes fs-verity.
// The kernel checks the signature and that the version is higher.
export async function applyIpePolicy(securityfs: string, store: string, p7b: Uint8Array): Promise<{ updated: boolean; version: string | null; enforce: boolean | null }> {
  // a policy that would stop every container start is not activated
  const rt = await checkRuntime();
  if (rt.selfClones) {
    throw new SealkitError('SEALKIT_IPE_RUNTIME', `${rt.why}; the IPE policy was not activated. Use runc 1.2 or later (SEALKIT_RUNC names the runc containerd uses), or crun on a read-only mount with _LIBCONTAINER_CLONED_BINARY=1, as the ISO's init sets it up`, { runtime: rt.runtime, version: rt.version });
  }
  await verityCapable(store);
  const { updated } = await deployIpePolicy(securityfs, p7b);
  const s = await readIpeState(securityfs);
  return { updated, version: s.version, enforce: s.enforce };
}

// A scratch file proves the store takes fs-verity before a policy that only
// allows verity files is made active.
async function verityCapable(store: string): Promise<void> {
  const probe = join(store, `.verity-probe-${randomBytes(4).toString('hex')}`);
  await writeFile(probe, 'sealkit\n');
  try {
    await enableVerity([probe]);
  } finally {
    await rm(probe, { force: true });
  }
}
