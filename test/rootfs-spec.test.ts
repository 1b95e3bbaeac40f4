import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage } from './helpers/images.ts';
import { Ima } from '../services/ima/ima.ts';
import { HashPool } from '../services/ima/hashpool.ts';
import { loadOrCreateManifestKey } from '../services/ima/keys.ts';
import { loadOrCreateSigningKey } from '../services/ima/digsig.ts';
import { containerName } from '../services/lib/rootfs/names.ts';
import { containerPaths, storeLayout } from '../services/lib/rootfs/store.ts';
import { runtimeSpec } from '../services/lib/rootfs/spec.ts';
import { defaultLimits } from '../services/lib/policy.ts';
import { silentLogger } from '../services/lib/log.ts';
import { isSealkitError } from '../services/lib/errors.ts';

// What a runner needs from the rootfs library: the store layout finds the
// rootfs and manifest the ima service wrote, and the runtime spec for it
// runs under runc with the rootfs read-only, the process, environment, user
// and mounts as given.

const dir = mkdtempSync(join(tmpdir(), 'sealkit-rootfs-spec-'));
const pool = new HashPool(2);
test.after.always(async () => {
  await pool.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a labelled rootfs found through the store layout runs read-only under runc with the spec the library writes', async (t) => {
  const state = join(dir, 'state');
  const layout = { ...storeLayout(state), store: join(state, 'containers') };
  const imaDir = join(state, 'ima');
  const ima = new Ima({
    imaDir,
    store: layout.store,
    log: silentLogger,
    publish: async () => {},
    manifestKey: await loadOrCreateManifestKey(imaDir, 'node-spec'),
    pool,
    policy: () => null,
    signingKey: () => loadOrCreateSigningKey(imaDir, 'node-spec'),
  });
  await ima.start();
  t.teardown(() => ima.stop());
  const img = await buildImage({ name: 'sealkit/busybox', tag: '1', layers: [{ 'bin/busybox': readFileSync('/usr/bin/busybox'), 'etc/motd': 'from the image\n' }] });
  const archive = join(dir, 'busybox.tar');
  writeFileSync(archive, img.archive);
  const labeled = (await ima.label({ name: img.name, tag: img.tag, sha256: img.sha256, manifestDigest: img.manifestDigest, policySerial: 1, archive: { path: archive, sha256: img.sha256 } }, defaultLimits))!;

  const paths = containerPaths(layout, containerName(img.name, img.tag));
  t.is(paths.rootfs, labeled.rootfs);
  t.true(existsSync(paths.manifest), 'the manifest is where the layout says');

  let runs = 0;
  const run = (spec: Record<string, unknown>) => {
    const bundle = join(dir, `bundle-${++runs}`);
    mkdirSync(bundle);
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    return spawnSync('runc', ['--root', join(dir, 'runc'), 'run', '--bundle', bundle, `sealkit-spec-${runs}`], { encoding: 'utf8', timeout: 60_000 });
  };

  // as root, with CAP_DAC_OVERRIDE: only the read-only mount stops the write
  const asRoot = runtimeSpec({ name: 'busybox-root', rootfs: paths.rootfs, args: ['/bin/busybox', 'sh', '-c', 'echo x > /etc/motd || echo refused; /bin/busybox cat /etc/motd'] });
  t.deepEqual(asRoot.root, { path: paths.rootfs, readonly: true });
  const root = run(asRoot);
  t.is(root.status, 0, root.stderr);
  t.deepEqual(root.stdout.split('\n'), ['refused', 'from the image', '']);
  t.regex(root.stderr, /Read-only file system/);

  const asUser = runtimeSpec({
    name: 'busybox-user',
    rootfs: paths.rootfs,
    args: ['/bin/busybox', 'sh', '-c', 'echo "$GREETING"; /bin/busybox id -u; /bin/busybox id -g; echo y > /scratch/y && /bin/busybox cat /scratch/y'],
    env: ['GREETING=hello'],
    user: { uid: 1000, gid: 1001 },
    mounts: [{ destination: '/scratch', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] }],
  });
  const user = run(asUser);
  t.is(user.status, 0, user.stderr);
  t.deepEqual(user.stdout.split('\n'), ['hello', '1000', '1001', 'y', '']);
  t.is(readFileSync(join(paths.rootfs, 'etc/motd'), 'utf8'), 'from the image\n', 'the labelled rootfs is unchanged');
  t.deepEqual((await ima.verify(labeled.container)).findings, []);
});

test('a container name that is not one path component is refused by the layout', (t) => {
  const err = t.throws(() => containerPaths(storeLayout(dir), '../etc'));
  t.true(isSealkitError(err, 'SEALKIT_BAD_REQUEST'));
});
