import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Ima } from '../services/ima/ima.ts';
import { HashPool } from '../services/ima/hashpool.ts';
import { loadOrCreateManifestKey } from '../services/ima/keys.ts';
import { loadOrCreateSigningKey } from '../services/ima/digsig.ts';
import { Ctr } from '../services/runner/containerd.ts';
import { Runner } from '../services/runner/runner.ts';
import { silentLogger } from '../services/lib/log.ts';
import { defaultLimits, validatePolicy, type Policy } from '../services/lib/policy.ts';
import { subjects } from '../services/lib/subjects.ts';
import { startContainerd } from '../test/helpers/containerd.ts';
import { busyboxImage } from '../test/helpers/images.ts';
import { fmt, interleave, median, row, verdict, type BenchContext, type Row } from './measure.ts';

// Container start on the host, real containerd and runc: the runner's start
// (the label manifest's signature and every file of the labelled rootfs
// re-verified, the OCI spec, the container created and its task started, up
// to container.started) against a bare `ctr run -d` of the same image from
// containerd's own unpacked snapshot, with the same command. Every round ends
// with the container stopped and removed, untimed.

const G = 'runner';
const TARGET = 1.2;

export async function runner(ctx: BenchContext): Promise<Row[]> {
  const name = 'container start with re-verification vs bare ctr run -d of the same image';
  if (process.getuid?.() !== 0) return [row(G, { row: name, sealkit: '—', peer: '—', ratio: '—', target: `≤ ${TARGET}×`, status: 'n/a', note: 'needs root: containerd and runc' })];
  const reps = ctx.quick ? 5 : 11;
  // a static busybox and a script that stays up, as a small service image is
  const image = await busyboxImage('bench/runner', '1', { 'bin/serve': '#!/bin/busybox sh\nexec /bin/busybox sleep 3600\n' }, 'none');
  const archive = join(ctx.tmp, 'runner.tar');
  await writeFile(archive, image.archive);

  const containerd = await startContainerd();
  ctx.defer(() => containerd.cleanup());
  const ns = 'bench';
  await containerd.ctr(['images', 'import', archive], ns);
  const ref = (await containerd.ctr(['images', 'ls', '-q'], ns)).split('\n').find((r) => r.includes('bench/runner'));
  if (!ref) throw new Error(`ctr images import ${archive} left no image named bench/runner`);

  // the rootfs the runner starts from, labelled as the ima service does
  const state = join(ctx.tmp, 'state');
  const imaDir = join(state, 'ima');
  const store = join(state, 'containers');
  const pool = new HashPool(2);
  ctx.defer(() => pool.close());
  const ima = new Ima({
    imaDir,
    store,
    log: silentLogger,
    publish: async () => {},
    manifestKey: await loadOrCreateManifestKey(imaDir, 'bench'),
    pool,
    policy: () => null,
    signingKey: () => loadOrCreateSigningKey(imaDir, 'bench'),
  });
  await ima.start();
  ctx.defer(() => ima.stop());
  await ima.label({ name: image.name, tag: image.tag, sha256: image.sha256, policySerial: 1, manifestDigest: image.manifestDigest, archive: { path: archive, sha256: image.sha256 } }, defaultLimits);

  let policy: Policy | null = null;
  let started = 0;
  const specDir = join(state, 'runner', 'specs');
  const logDir = join(state, 'runner', 'logs');
  await mkdir(specDir, { recursive: true });
  await mkdir(logDir, { recursive: true });
  const r = new Runner({
    ctr: new Ctr(containerd.sock, ns),
    layout: { store, manifests: join(imaDir, 'manifests'), manifestKey: join(imaDir, 'manifest-key.pub') },
    specDir,
    logDir,
    log: silentLogger,
    publish: async (subject) => void (subject === subjects.container.started && started++),
    policy: () => policy,
    imaNamespace: 'absent',
    // sleep as pid 1 has no SIGTERM handler: straight to SIGKILL, untimed anyway
    stopGraceMs: 0,
  });
  ctx.defer(() => r.close());
  let serial = 0;
  const withContainer = (on: boolean) =>
    validatePolicy({
      apiVersion: 'sealkit/v1',
      kind: 'NodePolicy',
      serial: ++serial,
      images: [{ name: image.name, tag: image.tag, source: 'https://images.example/bench-runner.tar', sha256: image.sha256 }],
      containers: on ? [{ name: 'bench', image: image.name, command: ['/bin/serve'], restart: 'never' }] : [],
    });

  let round = 0;
  ctx.log(`runner: ${reps} interleaved rounds, runner start (re-verify + create + start) vs ctr run -d`);
  const t = await interleave(
    reps,
    {
      sealkit: async () => {
        const before = started;
        policy = withContainer(true);
        await r.reconcile('bench');
        if (started !== before + 1) throw new Error(`the runner did not start the container: ${JSON.stringify(r.ps())}`);
      },
      ctr: () => containerd.ctr(['run', '-d', ref, `bare-${round}`, '/bin/serve'], ns),
    },
    async (k) => {
      if (k === 'sealkit') {
        policy = withContainer(false);
        await r.reconcile('bench');
        return;
      }
      await containerd.ctr(['tasks', 'kill', '--signal', 'SIGKILL', `bare-${round}`], ns);
      await containerd.ctr(['tasks', 'delete', '--force', `bare-${round}`], ns);
      await containerd.ctr(['containers', 'delete', `bare-${round}`], ns);
      round++;
    },
  );
  const sk = median(t.sealkit);
  const peer = median(t.ctr);
  return [
    row(G, {
      row: `${name} (${fmt.n(Object.keys(image.files).length)} files, ${fmt.mib(image.files['bin/busybox'].length)})`,
      sealkit: fmt.ms(sk),
      peer: fmt.ms(peer),
      ratio: fmt.x(sk / peer),
      target: `≤ ${TARGET}×`,
      status: verdict(sk / peer <= TARGET),
      note: `medians of ${reps}; the runner re-hashes every file against the signed manifest, then starts with one "ctr run --detach --config" as the peer runs one "ctr run -d"`,
    }),
  ];
}
