import type { Target } from './harness.ts';

// Every fuzz target by name; each module is loaded only in its own process.
export const targets: Record<string, () => Promise<Target>> = {
  kmsg: async () => (await import('./target-kmsg.ts')).target,
  'audit-source': async () => (await import('./target-source.ts')).target,
  policy: async () => (await import('./target-policy.ts')).target,
  registry: async () => (await import('./target-registry.ts')).target,
  signatures: async () => (await import('./target-signatures.ts')).target,
  'tar-guard': async () => (await import('./target-guard.ts')).target,
  archive: async () => (await import('./target-archive.ts')).target,
  'importer-archive': async () => (await import('./target-importer.ts')).target,
};
