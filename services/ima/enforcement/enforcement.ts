import type { KeyObject } from 'node:crypto';
import { access, constants } from 'node:fs/promises';
import type { LabelManifest } from '../../lib/manifest.ts';
import type { HashPool } from '../hashpool.ts';
import type { LabelOptions } from '../labeltree.ts';
import type { HostPolicyRecord } from '../hostpolicy.ts';

// One interface per enforcement mechanism: what it reads from the kernel,
// what it does at boot before any container starts, how it labels a rootfs
// and appraises it, and whether it is the one in force. select.ts asks the
// mechanisms best first; a new mechanism is a new module in that list.

export type EnforcementMode = 'ipe-verity' | 'namespace' | 'host-policy' | 'userspace' | 'off';

// What the running kernel offers, as reported on ima.enforcing.
export interface KernelIma {
  ima: boolean; // securityfs has ima/
  appraise: string | null; // ima_appraise= from the kernel command line
  namespaces: boolean;
  policyWritable: boolean; // the one policy write of this boot is still possible
  ipe: boolean; // securityfs has ipe/
  ipeEnforce: boolean | null; // ipe/enforce
  ipePolicy: string | null; // the version of the active sealkit IPE policy
}

// A kernel that offers nothing; each mechanism's probe fills in its facts.
export const NO_KERNEL_IMA: KernelIma = { ima: false, appraise: null, namespaces: false, policyWritable: false, ipe: false, ipeEnforce: null, ipePolicy: null };

export interface KernelPaths {
  securityfs?: string;
  cmdline?: string;
}

export interface Facts {
  kernel: KernelIma;
  hostPolicy: Pick<HostPolicyRecord, 'lines'> | null; // what the boot step wrote this boot, if anything
}

// verity-missing: a store file without fs-verity; verity-unlisted: its
// digest is not in the active IPE policy (the kernel refuses to run it)
export type TamperKind = 'modified' | 'added' | 'removed' | 'label-mismatch' | 'verity-missing' | 'verity-unlisted';

// What appraisal found about one file (sha256 hex, as audit.tamper carries it).
export interface Finding {
  file: string; // rootfs-relative
  kind: TamperKind;
  expectedSha256: string | null;
  actualSha256: string | null;
}

export interface LabelCheck {
  signer?: KeyObject; // signature mode: the public key labels must verify with
}

// The payload of ima.enforcing and of ima.status's `enforcement`.
export interface EnforcementReport {
  mode: EnforcementMode;
  why: string;
  kernel: KernelIma;
}

// Either way the why is said, so that the mechanism taking over can say why
// the better one is not in force.
export interface Judgement {
  inForce: boolean;
  why: string;
  // the kernel offers this mechanism but it is not in force (IPE switched
  // off): its why leads the report of the one that is
  offered?: boolean;
}

export interface BootContext extends Facts {
  imaDir: string; // <state>/ima
  store: string; // the container store
  node: string;
  securityfs: string;
  signatures: boolean;
  fsmagic: boolean;
  fsuuid?: string;
  overlay: boolean;
  dryRun: boolean;
}

// What the boot step prints (one JSON line) and exits with; or that this
// mechanism is not for this kernel, and why.
export type BootStep = { exitCode: 0 | 1; line: Record<string, unknown> } | { declined: string };

export interface Enforcement {
  readonly mode: Exclude<EnforcementMode, 'off'>;
  probe(p: KernelPaths): Promise<Partial<KernelIma>>;
  // declined: why the better mechanism before this one is not in force
  prepareBoot(ctx: BootContext, declined?: string): Promise<BootStep>;
  // Label a rootfs from the digests of the verified image (path → sha256 hex).
  label(root: string, digests: Record<string, string>, opts?: LabelOptions): Promise<number>;
  // Appraise a rootfs, or only `paths` of it, against its verified manifest.
  appraise(m: LabelManifest, pool: HashPool, opts?: LabelCheck & { paths?: string[] }): Promise<Finding[]>;
  report(facts: Facts, declined?: string): Judgement;
}

// SEALKIT_SECURITYFS: a tree standing in for the kernel's, for tests
export function securityfsOf(p: KernelPaths): string {
  return p.securityfs ?? process.env.SEALKIT_SECURITYFS ?? '/sys/kernel/security';
}

export async function exists(path: string, mode = constants.F_OK): Promise<boolean> {
  return access(path, mode).then(() => true, () => false);
}
