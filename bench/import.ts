import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Containerd } from '../services/importer/ctr.ts';
import { DockerTarget } from '../services/importer/docker.ts';
import { Importer } from '../services/importer/importer.ts';
import type { VerifiedImage } from '../services/lib/contract.ts';
import { silentLogger } from '../services/lib/log.ts';
import { validatePolicy, type Policy } from '../services/lib/policy.ts';
import { startContainerd } from '../test/helpers/containerd.ts';
import { startDocker } from '../test/helpers/docker.ts';
import { imageArchive } from './fixtures.ts';
import { fmt, interleave, median, MiB, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// Import of one verified docker-archive: the importer's core
// (Importer.importImage: policy check, re-hash of the cached file, blobs
// written by offset through containerd's Content.Write under a lease, each
// committed with its digest, the manifest ctr would write, labels, naming) against a bare `ctr images import` of the same
// file — both without unpacking, as the importer does — and, for Docker,
// against `docker load -i`. Every round starts from an empty store.

const G = 'import';

export async function imports(ctx: BenchContext): Promise<Row[]> {
  const layers = 4;
  const layerBytes = (ctx.quick ? 8 : 32) * MiB;
  const reps = ctx.quick ? 3 : 5;
  ctx.log(`import: ${layers} × ${fmt.mib(layerBytes)} docker-archive; containerd and dockerd on temp dirs`);
  // only the path and the digests are kept: the archive's buffers would
  // otherwise stay in this process, and every spawn (sealkit's and the
  // peer's) would fork a process holding them
  const { path: builtPath, img } = await imageArchive(ctx, 'import.tar', { layers, layerBytes, name: 'bench/import' });
  // the importer takes only files in the fetcher's cache, named by digest
  const cacheDir = join(ctx.tmp, 'cache');
  await mkdir(join(cacheDir, 'sha256'), { recursive: true });
  const archive = join(cacheDir, 'sha256', img.sha256);
  await rename(builtPath, archive);

  const containerd = await startContainerd();
  ctx.defer(() => containerd.cleanup());
  const docker = await startDocker({ containerd });
  ctx.defer(() => docker.cleanup());
  const importer = new Importer({ containerd: new Containerd(containerd.sock), docker: new DockerTarget(docker.sock), cacheDir, log: silentLogger });

  let serial = 0;
  const policy = (imp: { containerd: { namespace: string } | false; docker: boolean }): Policy =>
    validatePolicy({ apiVersion: 'sealkit/v1', kind: 'NodePolicy', serial: ++serial, images: [{ name: img.name, tag: img.tag, source: 'https://images.example/bench-import.tar', sha256: img.sha256, import: imp }] });
  const event = (p: Policy): VerifiedImage => ({
    name: img.name,
    tag: img.tag,
    source: 'https://images.example/bench-import.tar',
    sha256: img.sha256,
    size: img.size,
    policySerial: p.serial,
    manifestDigest: null, // what the fetcher reports for a docker-archive
    format: 'docker-archive',
    compression: 'none',
    archive: { path: archive, sha256: img.sha256, size: img.size },
    signedBy: [],
    verifiers: [],
  });
  const expectImported = async (p: Policy) => {
    const out = await importer.importImage(event(p), p);
    if (!out.imported || out.failures.length) throw new Error(`importer: ${JSON.stringify(out.failures)}`);
  };

  // each run takes page cache freed just before it (warmPageCache): the
  // archive is written twice over (containerd's content and its staging;
  // Docker's upload and its vfs layers)
  const warmed = { warm: { dir: ctx.tmp, bytes: 2.5 * layers * layerBytes } };
  // containerd: a fresh namespace per round, emptied (with a synchronous GC) after
  let round = 0;
  const ns = () => `bench-${round}`;
  const ctrEmpty = async () => {
    const refs = (await containerd.ctr(['images', 'ls', '-q'], ns())).split('\n').filter(Boolean);
    if (refs.length) await containerd.ctr(['images', 'rm', '--sync', ...refs], ns());
    round++;
  };
  ctx.log(`import: ${reps} interleaved rounds, importer vs ctr images import`);
  const c = await interleave(
    reps,
    {
      sealkit: () => expectImported(policy({ containerd: { namespace: ns() }, docker: false })),
      ctr: () => containerd.ctr(['images', 'import', '--no-unpack', archive], ns()),
    },
    ctrEmpty,
    warmed,
  );

  const dockerCli = (args: string[]) => sh('docker', ['-H', `unix://${docker.sock}`, ...args]);
  const dockerEmpty = async () => {
    const ids = (await dockerCli(['images', '-q'])).split('\n').filter(Boolean);
    if (ids.length) await dockerCli(['rmi', '-f', ...new Set(ids)]);
  };
  ctx.log(`import: ${reps} interleaved rounds, importer vs docker load`);
  const d = await interleave(
    reps,
    {
      sealkit: () => expectImported(policy({ containerd: false, docker: true })),
      docker: () => dockerCli(['load', '-q', '-i', archive]),
    },
    dockerEmpty,
    warmed,
  );

  const what = `${layers}×${(layerBytes / MiB).toFixed(0)} MiB`;
  const rows: Row[] = [];
  const add = (name: string, a: number, b: number) =>
    rows.push(row(G, { row: name, sealkit: fmt.ms(a), peer: fmt.ms(b), ratio: fmt.x(a / b), target: '≤ 1.0×', status: verdict(a / b <= 1.0) }));
  add(`import ${what} docker-archive into containerd (re-hash, staging, checks) vs ctr images import --no-unpack`, median(c.sealkit), median(c.ctr));
  add(`import ${what} docker-archive into Docker vs docker load -i`, median(d.sealkit), median(d.docker));
  return rows;
}
