import type { ImaMode } from '../../lib/policy.ts';
import { NO_KERNEL_IMA, type BootContext, type Enforcement, type EnforcementReport, type Facts, type KernelIma, type KernelPaths } from './enforcement.ts';
import { imaNamespace } from './ima-namespace.ts';
import { ipeVerity } from './ipe-verity.ts';
import { hostPolicy } from './host-policy.ts';
import { userspace } from './userspace.ts';

// The mechanisms, best first. Each is asked whether it is in force (or, at
// boot, whether it prepares this kernel); the first that is, is. Userspace
// appraisal always is, and reports why the one before it was not.
export const MECHANISMS: readonly Enforcement[] = [ipeVerity, imaNamespace, hostPolicy, userspace];

export async function probeKernel(p: KernelPaths = {}, mechanisms = MECHANISMS): Promise<KernelIma> {
  const facts = await Promise.all(mechanisms.map((m) => m.probe(p)));
  return Object.assign({ ...NO_KERNEL_IMA }, ...facts);
}

export interface Selected {
  enforcement: Enforcement;
  report: EnforcementReport;
}

// policyMode off reports off; labelling and appraisal then stop in the ima
// core, and the mechanism the kernel offers is still the one selected.
export function select(facts: Facts, policyMode: ImaMode, mechanisms = MECHANISMS): Selected {
  let declined: string | undefined;
  let offered: string | undefined;
  for (const enforcement of mechanisms) {
    const j = enforcement.report(facts, declined);
    if (!j.inForce) {
      declined = j.why;
      if (j.offered) offered ??= j.why;
      continue;
    }
    const report: EnforcementReport = policyMode === 'off'
      ? { mode: 'off', why: 'the node policy sets ima.mode: off', kernel: facts.kernel }
      : { mode: enforcement.mode, why: offered ? `${offered}; ${j.why}` : j.why, kernel: facts.kernel };
    return { enforcement, report };
  }
  throw new Error(`no enforcement mechanism is in force among ${mechanisms.map((m) => m.mode).join(', ')}; the list must end with one that always is (userspace)`);
}

// hostPolicy: what the boot step recorded for this boot, if it wrote one.
export function chooseEnforcement(kernel: KernelIma, policyMode: ImaMode, hostPolicy: Facts['hostPolicy']): EnforcementReport {
  return select({ kernel, hostPolicy }, policyMode).report;
}

// The boot step: the first mechanism that is for this kernel prepares it.
export async function prepareAtBoot(ctx: BootContext, mechanisms = MECHANISMS): Promise<{ exitCode: 0 | 1; line: Record<string, unknown> }> {
  let declined: string | undefined;
  for (const m of mechanisms) {
    const step = await m.prepareBoot(ctx, declined);
    if (!('declined' in step)) return step;
    declined = step.declined;
  }
  throw new Error(`no enforcement mechanism prepares this kernel among ${mechanisms.map((m) => m.mode).join(', ')}; the list must end with userspace`);
}
