import { execFile } from 'node:child_process';
import { constants, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { bootId, composeHostPolicy, storeFilesystem, writeHostPolicy, writeRecord } from '../hostpolicy.ts';
import { loadOrCreateSigningKey } from '../digsig.ts';
import { exists, securityfsOf, type BootContext, type BootStep, type Enforcement } from './enforcement.ts';
import { userspace } from './userspace.ts';

// A mainline kernel booted with ima_appraise=enforce: one host policy,
// written once at boot before any container starts (hostpolicy.ts), makes
// the kernel appraise every open of a file in the container store against
// its security.ima label. Userspace appraisal runs alongside: a file written
// through the running kernel is relabelled by it, not refused.

const run = promisify(execFile);

export const hostPolicy: Enforcement = {
  mode: 'host-policy',
  async probe(p) {
    const ima = join(securityfsOf(p), 'ima');
    const cmdline = await readFile(p.cmdline ?? '/proc/cmdline', 'utf8').catch(() => '');
    return {
      ima: await exists(ima),
      appraise: /(?:^|\s)ima_appraise=(\S+)/.exec(cmdline)?.[1] ?? null,
      policyWritable: await exists(join(ima, 'policy'), constants.W_OK),
    };
  },
  prepareBoot,
  label: userspace.label,
  appraise: userspace.appraise,
  report({ kernel, hostPolicy: written }) {
    if (!kernel.ima) return { inForce: false, why: 'the kernel exposes no IMA in securityfs; files are re-hashed against the label manifests' };
    if (kernel.appraise !== 'enforce') {
      return { inForce: false, why: `the kernel was booted with ${kernel.appraise ? `ima_appraise=${kernel.appraise}` : 'no ima_appraise=enforce'}; files are re-hashed against the label manifests (boot with ima_appraise=enforce for kernel enforcement)` };
    }
    if (written) return { inForce: true, why: `the kernel appraises the container store under ima_appraise=enforce with the policy written at boot: ${written.lines.join('; ')}` };
    return {
      inForce: false,
      why: kernel.policyWritable
        ? 'ima_appraise=enforce is on but no host policy was written this boot; run services/ima/boot.ts before containers start'
        : 'ima_appraise=enforce is on but the one policy write of this boot was used by something other than sealkit; files are re-hashed against the label manifests',
    };
  },
};

// Compose the policy for the store's filesystem and write it, once per boot.
async function prepareBoot(ctx: BootContext): Promise<BootStep> {
  const { kernel } = ctx;
  if (ctx.hostPolicy) return { exitCode: 0, line: { written: false, mode: 'host-policy', why: 'the host policy was already written this boot', policy: ctx.hostPolicy.lines, kernel } };
  if (!kernel.ima || kernel.appraise !== 'enforce') return { declined: kernel.ima ? `ima_appraise is ${kernel.appraise ?? 'not set'}, not enforce` : 'no IMA in securityfs' };
  const { store } = ctx;
  const fs = await storeFilesystem(store);
  if (ctx.fsuuid) fs.uuid = ctx.fsuuid.toLowerCase();
  const lines = composeHostPolicy(fs, { signatures: ctx.signatures, fsmagic: ctx.fsmagic, overlay: ctx.overlay });
  if (ctx.dryRun) return { exitCode: 0, line: { written: false, mode: 'host-policy', why: 'dry run', policy: lines, store, fs, kernel } };
  if (!kernel.policyWritable) {
    return { exitCode: 1, line: { written: false, mode: 'userspace', why: 'the policy of this boot was already written by something else; reboot to apply the sealkit policy', kernel } };
  }
  if (ctx.signatures) {
    // the kernel (no CONFIG_INTEGRITY_TRUSTED_KEYRING) finds _ima by name
    const key = await loadOrCreateSigningKey(ctx.imaDir, ctx.node);
    const ring = await run('keyctl', ['search', '@u', 'keyring', '_ima']).then((r) => r.stdout.trim(), async () => (await run('keyctl', ['newring', '_ima', '@u'])).stdout.trim());
    await run('sh', ['-c', `keyctl padd asymmetric '' ${ring} < '${key.certDer}'`]);
  }
  await writeHostPolicy(join(ctx.securityfs, 'ima', 'policy'), lines);
  await writeRecord(ctx.imaDir, { bootId: await bootId(), lines, writtenAt: new Date().toISOString(), store });
  return { exitCode: 0, line: { written: true, mode: 'host-policy', policy: lines, store, fs, kernel } };
}
