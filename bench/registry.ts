import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Fetcher } from '../services/fetcher/fetcher.ts';
import { silentLogger } from '../services/lib/log.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { startFetcherRig } from '../test/helpers/fetcher.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import { imageArchive } from './fixtures.ts';
import { fmt, interleave, median, MiB, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// Pull of a multi-layer image from a loopback registry (Debian's
// docker-registry): the fetcher's oci:// path — manifest verified, then each
// blob into quarantine, verified against its descriptor, admitted, then an
// OCI layout tar assembled (blobs re-hashed) and parsed — against
// `skopeo copy docker://…@sha256:… oci:DIR`, which also checks digests.

const G = 'registry';

export async function registry(ctx: BenchContext): Promise<Row[]> {
  const layers = 4;
  const layerBytes = (ctx.quick ? 8 : 32) * MiB;
  const reps = ctx.quick ? 3 : 5;
  ctx.log(`registry: ${layers} × ${fmt.mib(layerBytes)} OCI image into docker-registry`);
  const { full } = await imageArchive(ctx, 'registry.tar', { layers, layerBytes, name: 'bench/registry', format: 'oci' });
  const reg = await startRegistry();
  ctx.defer(() => reg.stop());
  const digest = await reg.push(full, 'bench/multi');
  const hex = digest.slice(7);

  const rig = await startFetcherRig();
  ctx.defer(() => rig.cleanup());
  const events = new EventPublisher({ nc: rig.nc, service: 'fetcher', node: 'bench', log: silentLogger });
  ctx.defer(() => events.close());
  const policy = rig.policy({ images: [{ name: 'bench/multi', tag: 'v1', source: `oci://${reg.host}/bench/multi@${digest}`, sha256: hex, allowHttp: true }] });

  let dir = '';
  const sealkit = async () => {
    dir = await mkdtemp(join(ctx.tmp, 'fetcher-'));
    const fetcher = new Fetcher({ dir, nc: rig.nc, events, log: silentLogger });
    await fetcher.init();
    const v = await fetcher.fetch(policy.images[0], policy);
    if (v.manifestDigest !== digest) throw new Error(`fetched manifest ${v.manifestDigest}, the registry holds ${digest}`);
  };
  const skopeo = async () => {
    dir = await mkdtemp(join(ctx.tmp, 'skopeo-'));
    await sh('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${reg.host}/bench/multi@${digest}`, `oci:${dir}/layout:v1`]);
  };
  ctx.log(`registry: ${reps} interleaved rounds of Fetcher.fetch(oci://…) and skopeo copy`);
  const t = await interleave(reps, { sealkit, skopeo }, async () => rm(dir, { recursive: true, force: true }));
  await events.flush(5000);
  const a = median(t.sealkit);
  const b = median(t.skopeo);
  return [
    row(G, {
      row: `pull ${layers}×${(layerBytes / MiB).toFixed(0)} MiB layers, per-blob verify (+ OCI tar, parse) vs skopeo copy → oci:`,
      sealkit: fmt.ms(a),
      peer: fmt.ms(b),
      ratio: `${fmt.x(b / a)} faster`,
      target: '≥ 2× faster',
      status: verdict(b / a >= 2),
    }),
  ];
}
