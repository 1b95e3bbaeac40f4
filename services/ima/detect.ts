import { access, readFile, constants } from 'node:fs/promises';
import { join } from 'node:path';
import type { ImaMode } from '../lib/policy.ts';

// Which enforcement the running kernel offers, best first: IMA namespaces
// (patched kernels expose securityfs ima/namespaces), a host policy under
// ima_appraise=enforce, else userspace appraisal.

export type EnforcementMode = 'namespace' | 'host-policy' | 'userspace' | 'off';

export interface KernelIma {
  ima: boolean; // securityfs has ima/
  appraise: string | null; // ima_appraise= from the kernel command line
  namespaces: boolean;
  policyWritable: boolean; // the one policy write of this boot is still possible
}

export interface Enforcement {
  mode: EnforcementMode;
  why: string;
  kernel: KernelIma;
}

export interface KernelPaths {
  securityfs?: string;
  cmdline?: string;
}

export async function probeKernel(p: KernelPaths = {}): Promise<KernelIma> {
  const sfs = p.securityfs ?? '/sys/kernel/security';
  const exists = (f: string, mode = constants.F_OK) => access(f, mode).then(() => true, () => false);
  const cmdline = await readFile(p.cmdline ?? '/proc/cmdline', 'utf8').catch(() => '');
  return {
    ima: await exists(join(sfs, 'ima')),
    appraise: /(?:^|\s)ima_appraise=(\S+)/.exec(cmdline)?.[1] ?? null,
    namespaces: await exists(join(sfs, 'ima', 'namespaces')),
    policyWritable: await exists(join(sfs, 'ima', 'policy'), constants.W_OK),
  };
}

// hostPolicy: what boot.ts recorded for this boot, if it wrote one.
export function chooseEnforcement(kernel: KernelIma, policyMode: ImaMode, hostPolicy: { lines: string[] } | null): Enforcement {
  if (policyMode === 'off') return { mode: 'off', why: 'the node policy sets ima.mode: off', kernel };
  if (kernel.namespaces) return { mode: 'namespace', why: 'securityfs exposes ima/namespaces: each container gets its own appraisal policy', kernel };
  if (!kernel.ima) return { mode: 'userspace', why: 'the kernel exposes no IMA in securityfs; files are re-hashed against the label manifests', kernel };
  if (kernel.appraise !== 'enforce') {
    return { mode: 'userspace', why: `the kernel was booted with ${kernel.appraise ? `ima_appraise=${kernel.appraise}` : 'no ima_appraise=enforce'}; files are re-hashed against the label manifests (boot with ima_appraise=enforce for kernel enforcement)`, kernel };
  }
  if (hostPolicy) return { mode: 'host-policy', why: `the kernel appraises the container store under ima_appraise=enforce with the policy written at boot: ${hostPolicy.lines.join('; ')}`, kernel };
  return {
    mode: 'userspace',
    why: kernel.policyWritable
      ? 'ima_appraise=enforce is on but no host policy was written this boot; run services/ima/boot.ts before containers start'
      : 'ima_appraise=enforce is on but the one policy write of this boot was used by something other than sealkit; files are re-hashed against the label manifests',
    kernel,
  };
}
