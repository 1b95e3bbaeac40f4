import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Fetcher } from '../services/fetcher/fetcher.ts';
import { silentLogger } from '../services/lib/log.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { startFetcherRig } from '../test/helpers/fetcher.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { imageArchive } from './fixtures.ts';
import { fmt, interleave, median, MiB, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// Pull of a multi-layer image from a loopback registry (Debian's
// docker-registry, which holds the layers gzipped as skopeo pushed them):
// the fetcher's oci:// path — manifest verified, then the blobs at once, each
// straight into its place in a quarantined OCI layout tar and verified
// against its descriptor, then the tar hashed and parsed (layers gunzipped,
// walked, diffIds checked) — against `skopeo copy docker://…@sha256:…
// oci:DIR`, which checks digests and parses nothing. A fresh destination
// each round for both. The CPU each spends per pull (this process, worker
// threads included; skopeo's rusage) is what bounds the ratio on two cores.

const G = 'registry';

export async function registry(ctx: BenchContext): Promise<Row[]> {
  const reg = await startRegistry();
  ctx.defer(() => reg.stop());
  const rig = await startFetcherRig();
  ctx.defer(() => rig.cleanup());
  const events = new EventPublisher({ nc: rig.nc, service: 'fetcher', node: 'bench', log: silentLogger });
  ctx.defer(() => events.close());
  const rows: Row[] = [];
  const sizes = ctx.quick ? [{ layers: 4, mib: 8, reps: 3 }] : [{ layers: 4, mib: 32, reps: 5 }, { layers: 8, mib: 128, reps: 3 }];
  for (const { layers, mib, reps } of sizes) rows.push(...(await pull(ctx, reg, rig, events, layers, mib * MiB, reps)));
  await events.flush(5000);
  return rows;
}

async function pull(ctx: BenchContext, reg: Awaited<ReturnType<typeof startRegistry>>, rig: Awaited<ReturnType<typeof startFetcherRig>>, events: EventPublisher, layers: number, layerBytes: number, reps: number): Promise<Row[]> {
  const repo = `bench/multi${layers}x${layerBytes / MiB}`;
  ctx.log(`registry: ${layers} × ${fmt.mib(layerBytes)} OCI image into docker-registry`);
  const built = await imageArchive(ctx, `${repo.replace('/', '_')}.tar`, { layers, layerBytes, name: 'bench/registry', format: 'oci' });
  const digest = await reg.push(built.full, repo);
  await rm(built.path, { force: true });
  const hex = digest.slice(7);
  const policy = rig.policy({ images: [{ name: repo, tag: 'v1', source: `oci://${reg.host}/${repo}@${digest}`, sha256: hex, allowHttp: true }] });

  let dir = '';
  const cpu = { sealkit: [] as number[], skopeo: [] as number[] }; // ms
  const sealkit = async () => {
    dir = await mkdtemp(join(ctx.tmp, 'fetcher-'));
    const fetcher = new Fetcher({ dir, nc: rig.nc, events, log: silentLogger });
    await fetcher.init();
    const before = process.cpuUsage();
    const v = await fetcher.fetch(policy.images[0], policy);
    const used = process.cpuUsage(before);
    cpu.sealkit.push((used.user + used.system) / 1000);
    if (v.manifestDigest !== digest) throw new Error(`fetched manifest ${v.manifestDigest}, the registry holds ${digest}`);
  };
  const skopeo = async () => {
    dir = await mkdtemp(join(ctx.tmp, 'skopeo-'));
    const times = join(ctx.tmp, 'skopeo.time');
    await sh('/usr/bin/time', ['-o', times, '-f', '%U %S', 'skopeo', 'copy', '--quiet', '--src-tls-verify=false', `docker://${reg.host}/${repo}@${digest}`, `oci:${dir}/layout:v1`]);
    const [u, s] = (await readFile(times, 'utf8')).trim().split(/\s+/).slice(-2).map(Number);
    cpu.skopeo.push((u + s) * 1000);
  };
  ctx.log(`registry: ${reps} interleaved rounds of Fetcher.fetch(oci://…) and skopeo copy`);
  // each run takes page cache freed just before it (warmPageCache): as much
  // as the layers, with room for the rest
  const t = await interleave(reps, { sealkit, skopeo }, async () => rm(dir, { recursive: true, force: true }), { warm: { dir: ctx.tmp, bytes: layers * layerBytes * 1.25 } });
  const a = median(t.sealkit);
  const b = median(t.skopeo);
  const ca = median(cpu.sealkit);
  const cb = median(cpu.skopeo);
  ctx.log(`registry: ${layers}×${layerBytes / MiB} MiB sealkit ${t.sealkit.map((x) => x.toFixed(0)).join(' ')} ms (CPU ${cpu.sealkit.map((x) => x.toFixed(0)).join(' ')}), skopeo ${t.skopeo.map((x) => x.toFixed(0)).join(' ')} ms (CPU ${cpu.skopeo.map((x) => x.toFixed(0)).join(' ')})`);
  const what = `pull ${layers}×${(layerBytes / MiB).toFixed(0)} MiB layers`;
  return [
    row(G, {
      row: `${what}, blobs at once, each verified (+ OCI tar, parse) vs skopeo copy → oci:`,
      sealkit: fmt.ms(a),
      peer: fmt.ms(b),
      ratio: `${fmt.x(b / a)} faster`,
      target: '≥ 1.2× faster',
      status: verdict(b / a >= 1.2),
      note: b / a >= 1.2 ? undefined : `CPU per pull: sealkit ${fmt.ms(ca)}, skopeo ${fmt.ms(cb)} (same run)`,
    }),
    row(G, { row: `  ${what}: CPU time per pull (user + system; sealkit's process with its threads, skopeo's rusage)`, sealkit: fmt.ms(ca), peer: fmt.ms(cb), ratio: fmt.x(ca / cb), target: '—', status: 'info' }),
  ];
}
