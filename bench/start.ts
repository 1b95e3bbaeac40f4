import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ima } from '../services/ima/ima.ts';
import { HashPool } from '../services/ima/hashpool.ts';
import { loadOrCreateManifestKey } from '../services/ima/keys.ts';
import { loadOrCreateSigningKey } from '../services/ima/digsig.ts';
import { silentLogger } from '../services/lib/log.ts';
import { defaultLimits, validatePolicy, type Policy } from '../services/lib/policy.ts';
import { storeLayout } from '../services/lib/rootfs/store.ts';
import { Ctr } from '../services/runner/containerd.ts';
import { Runner } from '../services/runner/runner.ts';
import { startContainerd } from '../test/helpers/containerd.ts';
import { buildImage } from '../test/helpers/images.ts';
import { fmt, interleave, median, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// One container start: the runner's (a reconcile that finds the policy's
// container not running: manifest signature, every file of the labelled
// rootfs re-hashed, spec, `ctr run --config`, pid) against a bare
// `ctr run -d` of the same image from containerd's own snapshot, on the same
// containerd. Both run busybox sleep; each is stopped and removed between
// rounds, outside the timing.

const G = 'start';

export async function start(ctx: BenchContext): Promise<Row[]> {
  if (process.getuid?.() !== 0) return [row(G, { row: 'container start with re-verification vs bare ctr run', sealkit: '—', peer: '—', ratio: '—', target: '≤ 1.2×', status: 'n/a', note: 'needs root: containerd and runc' })];
  const reps = ctx.quick ? 5 : 15;
  const containerd = await startContainerd();
  ctx.defer(() => containerd.cleanup());

  // the rootfs as the ima service labels it
  const state = join(ctx.tmp, 'state');
  const layout = { ...storeLayout(state), store: join(state, 'containers') };
  const imaDir = join(state, 'ima');
  const pool = new HashPool(2);
  ctx.defer(() => pool.close());
  const ima = new Ima({ imaDir, store: layout.store, log: silentLogger, publish: async () => {}, manifestKey: await loadOrCreateManifestKey(imaDir, 'bench'), pool, policy: () => null, signingKey: () => loadOrCreateSigningKey(imaDir, 'bench') });
  await ima.start();
  ctx.defer(() => ima.stop());
  const img = await buildImage({ name: 'bench/start', tag: 'v1', layers: [{ 'bin/busybox': await readFile('/bin/busybox'), 'etc/motd': 'bench\n' }] });
  const archive = join(ctx.tmp, 'start.tar');
  await writeFile(archive, img.archive);
  await ima.label({ name: img.name, tag: img.tag, sha256: img.sha256, manifestDigest: img.manifestDigest, policySerial: 1, archive: { path: archive, sha256: img.sha256 } }, defaultLimits);

  const policyWith = (containers: unknown[]): Policy => validatePolicy({ apiVersion: 'sealkit/v1', kind: 'NodePolicy', serial: 1, images: [{ name: img.name, tag: img.tag, source: 'file:///unused', sha256: img.sha256 }], containers });
  let policy = policyWith([]);
  const dirs = { specDir: join(state, 'runner', 'specs'), logDir: join(state, 'runner', 'logs') };
  await Promise.all(Object.values(dirs).map((d) => mkdir(d, { recursive: true })));
  const runner = new Runner({ ctr: new Ctr(containerd.sock, 'bench-runner'), layout, ...dirs, log: silentLogger, publish: async () => {}, policy: () => policy, imaNamespace: 'absent', stopGraceMs: 1000 });
  await runner.adopt();
  const container = { name: 'bench', image: img.name, command: ['/bin/busybox', 'sleep', '1000'] };

  // the peer: the same archive imported and unpacked into the snapshotter
  const bare = (args: string[]) => containerd.ctr(args, 'bench-bare');
  await bare(['images', 'import', archive]);
  const ref = (await bare(['images', 'ls', '-q'])).trim().split('\n')[0];
  let n = 0;

  ctx.log(`start: ${reps} interleaved rounds, runner start (re-verify + ctr run --config) vs ctr run -d ${ref}`);
  const t = await interleave(reps, {
    sealkit: async () => {
      policy = policyWith([container]);
      await runner.reconcile('bench');
      if (runner.ps()[0]?.state !== 'running') throw new Error(`the runner did not start the container: ${JSON.stringify(runner.ps())}`);
    },
    ctr: () => bare(['run', '-d', '--null-io', ref, `bare-${++n}`, '/bin/busybox', 'sleep', '1000']),
  }, async (k) => {
    if (k === 'sealkit') {
      policy = policyWith([]);
      await runner.reconcile('bench stop');
      return;
    }
    await bare(['tasks', 'kill', '--signal', 'SIGKILL', `bare-${n}`]);
    for (let i = 0; i < 100 && !/STOPPED/.test(await bare(['tasks', 'ls'])); i++) await sh('sleep', ['0.05']);
    await bare(['tasks', 'delete', `bare-${n}`]).catch(() => '');
    await bare(['containers', 'delete', `bare-${n}`]);
  });
  runner.close();
  const sk = median(t.sealkit);
  const peer = median(t.ctr);
  return [
    row(G, {
      row: 'container start from the labelled rootfs, re-verified (2 files, 2 MiB), vs bare ctr run -d of the same image',
      sealkit: fmt.ms(sk),
      peer: fmt.ms(peer),
      ratio: fmt.x(sk / peer),
      target: '≤ 1.2×',
      status: verdict(sk / peer <= 1.2),
      note: `median of ${reps}`,
    }),
  ];
}
