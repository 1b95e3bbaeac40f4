import { SealkitError } from '../lib/errors.ts';
import type { ImageProcess } from '../lib/manifest.ts';
import type { ContainerMount, ContainerPolicy } from '../lib/policy.ts';
import { runtimeSpec, type Mount, type RunSpec } from '../lib/rootfs/spec.ts';

// What a policy container runs, from the image's own process (recorded in
// its signed label manifest) under the policy's overrides, as Kubernetes
// reads them: command replaces the entrypoint and drops the image's cmd,
// args replaces the cmd; env adds to the image's, a name given twice keeps
// the last value.

export function runSpecFor(c: ContainerPolicy, image: ImageProcess | undefined, rootfs: string): RunSpec {
  const args = c.command ? [...c.command, ...(c.args ?? [])] : [...(image?.entrypoint ?? []), ...(c.args ?? image?.cmd ?? [])];
  if (args.length === 0) {
    const why = image ? 'the image has neither entrypoint nor cmd' : 'its label manifest records no image config (labelled by an older node: relabel it)';
    throw new SealkitError('SEALKIT_CONFIG', `container "${c.name}": no command to run — ${why}; give command: in the policy`, { container: c.name });
  }
  return {
    name: c.name,
    rootfs,
    args,
    env: lastWins([...(image?.env ?? []), ...c.env]),
    cwd: c.workingDir ?? image?.workingDir ?? '/',
    user: c.user ?? imageUser(c.name, image?.user),
    mounts: c.mounts.map(mount),
    capabilities: c.capabilities,
    net: c.network === 'host' ? 'host' : undefined,
    resources: c.resources,
  };
}

// The OCI spec, with one entry per environment name: runtimeSpec puts its
// default PATH first, and getenv() takes the first of two.
export function workloadSpec(r: RunSpec): Record<string, unknown> {
  const spec = runtimeSpec(r);
  const proc = spec.process as { env: string[] };
  proc.env = lastWins(proc.env);
  return spec;
}

function lastWins(env: string[]): string[] {
  const byName = new Map<string, string>();
  for (const e of env) {
    const name = e.split('=', 1)[0];
    byName.delete(name);
    byName.set(name, e);
  }
  return [...byName.values()];
}

// The image's USER, when it is numeric: a name would need the rootfs's
// /etc/passwd, which the runner does not interpret.
function imageUser(container: string, user: string | undefined): { uid: number; gid: number } | undefined {
  if (!user) return undefined;
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m) throw new SealkitError('SEALKIT_CONFIG', `container "${container}": the image runs as user "${user}", which is not numeric; give user: <uid>[:<gid>] in the policy`, { container });
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
}

function mount(m: ContainerMount): Mount {
  if (m.type === 'tmpfs') return { destination: m.destination, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', `size=${m.sizeBytes}`] };
  // the policy's binds are read-only: the workload writes only to tmpfs
  return { destination: m.destination, type: 'bind', source: m.source, options: ['rbind', 'ro', 'nosuid', 'nodev', 'rprivate'] };
}
