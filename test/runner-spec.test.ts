import test from 'ava';
import { validatePolicy, type ContainerPolicy } from '../services/lib/policy.ts';
import { runSpecFor, workloadSpec } from '../services/runner/process.ts';
import { isSealkitError } from '../services/lib/errors.ts';

// What a policy container runs, from its image's recorded process: command
// and args as Kubernetes reads them, env added with the last value winning,
// the policy's mounts, limits and (no) capabilities in the OCI spec.

const sha = 'a'.repeat(64);
function container(c: Record<string, unknown>): ContainerPolicy {
  return validatePolicy({ apiVersion: 'sealkit/v1', kind: 'NodePolicy', serial: 1, images: [{ name: 'app', tag: 'v1', source: 'file:///x', sha256: sha }], containers: [{ name: 'web', image: 'app', ...c }] }).containers[0];
}
const image = { entrypoint: ['/bin/app'], cmd: ['--serve'], env: ['PATH=/opt/bin:/bin', 'MODE=image'], workingDir: '/srv', user: '100:101' };
const rootfs = '/store/app-v1/rootfs';

test('command replaces the entrypoint and drops the cmd; args replaces the cmd', (t) => {
  t.deepEqual(runSpecFor(container({}), image, rootfs).args, ['/bin/app', '--serve']);
  t.deepEqual(runSpecFor(container({ args: ['--check'] }), image, rootfs).args, ['/bin/app', '--check']);
  t.deepEqual(runSpecFor(container({ command: ['/bin/sh'] }), image, rootfs).args, ['/bin/sh']);
  t.deepEqual(runSpecFor(container({ command: ['/bin/sh'], args: ['-c', 'x'] }), image, rootfs).args, ['/bin/sh', '-c', 'x']);
});

test('env adds to the image\'s with one entry per name, the last value winning over the image and the default PATH', (t) => {
  const spec = workloadSpec(runSpecFor(container({ env: ['MODE=policy', 'EXTRA=1'] }), image, rootfs)) as { process: { env: string[]; cwd: string; user: { uid: number; gid: number } } };
  t.deepEqual(spec.process.env, ['PATH=/opt/bin:/bin', 'MODE=policy', 'EXTRA=1']);
  t.is(spec.process.cwd, '/srv');
  t.like(spec.process.user, { uid: 100, gid: 101 });
});

test('the spec has the rootfs read-only, no capabilities by default, the policy\'s mounts read-only or tmpfs, and its limits', (t) => {
  const c = container({ mounts: [{ type: 'tmpfs', destination: '/tmp', size: '8Mi' }, { type: 'bind', destination: '/etc/conf', source: '/var/conf' }], resources: { memory: '64Mi', cpus: 0.5, pids: 20 } });
  const spec = workloadSpec(runSpecFor(c, image, rootfs)) as any;
  t.deepEqual(spec.root, { path: rootfs, readonly: true });
  t.deepEqual(spec.process.capabilities.bounding, []);
  t.deepEqual(spec.process.capabilities.effective, []);
  const byDest = Object.fromEntries(spec.mounts.map((m: { destination: string }) => [m.destination, m]));
  t.like(byDest['/tmp'], { type: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', `size=${8 * 1024 ** 2}`] });
  t.true(byDest['/etc/conf'].options.includes('ro'));
  t.deepEqual(spec.linux.resources.memory, { limit: 64 * 1024 ** 2, swap: 64 * 1024 ** 2 });
  t.deepEqual(spec.linux.resources.cpu, { quota: 50_000, period: 100_000 });
  t.deepEqual(spec.linux.resources.pids, { limit: 20 });
  t.is(spec.linux.cgroupsPath, '/sealkit/web');
  t.true(spec.linux.namespaces.some((n: { type: string }) => n.type === 'network'), 'network: none is a new, empty network namespace');
  t.false((workloadSpec(runSpecFor(container({ network: 'host' }), image, rootfs)) as any).linux.namespaces.some((n: { type: string }) => n.type === 'network'));
});

test('nothing to run, or an image user by name, is refused naming the container and what to give', (t) => {
  const none = t.throws(() => runSpecFor(container({}), {}, rootfs));
  t.true(isSealkitError(none, 'SEALKIT_CONFIG'));
  t.regex(none!.message, /"web".*command:/);
  const named = t.throws(() => runSpecFor(container({}), { ...image, user: 'www-data' }, rootfs));
  t.regex(named!.message, /"www-data".*user: <uid>/);
  t.like(runSpecFor(container({ user: '7:8' }), { ...image, user: 'www-data' }, rootfs).user, { uid: 7, gid: 8 });
});
