import { join } from 'node:path';
import { exists, securityfsOf, type Enforcement } from './enforcement.ts';
import { userspace } from './userspace.ts';

// Kernel IMA namespaces (patched kernels expose securityfs ima/namespaces).
// Detected and reported only: no mainline kernel has them (the series is
// unmerged and audit-only) and none runs here, so no per-container policy is
// written yet; labels and userspace appraisal are as on every other kernel.

export const imaNamespace: Enforcement = {
  mode: 'namespace',
  probe: async (p) => ({ namespaces: await exists(join(securityfsOf(p), 'ima', 'namespaces')) }),
  prepareBoot: async (ctx) => (ctx.kernel.namespaces
    ? { exitCode: 0, line: { written: false, mode: 'namespace', why: 'IMA namespaces are available; sealkit writes no per-container policy yet: nothing is written at boot', kernel: ctx.kernel } }
    : { declined: 'securityfs has no ima/namespaces' }),
  label: userspace.label,
  appraise: userspace.appraise,
  report: ({ kernel }) => (kernel.namespaces
    ? { inForce: true, why: 'securityfs exposes ima/namespaces (no kernel in the tests has them): sealkit does not write per-container IMA policies yet, so labels are appraised in userspace as well' }
    : { inForce: false, why: 'securityfs has no ima/namespaces' }),
};
