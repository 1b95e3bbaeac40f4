import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { Cache } from '../services/fetcher/cache.ts';
import { download, type Rules } from '../services/fetcher/download.ts';
import { startFetcherRig } from '../test/helpers/fetcher.ts';
import { imageArchive, serveFiles } from './fixtures.ts';
import { fmt, GiB, interleave, median, MiB, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// Fetch + verify of one large image archive from a loopback HTTP server:
// sealkit's fetcher core (quarantine file written while hashing, digest
// check, fsync + atomic admit into the cache; no archive parse) against
// `curl | sha256sum` and against openssl's single-core SHA-256 speed. The
// whole Fetcher.fetch (plus archive parse and image.verified on JetStream)
// and a download that only hashes (no disk) are shown for reference.

const G = 'verify';

export async function verify(ctx: BenchContext): Promise<Row[]> {
  const size = ctx.quick ? 256 * MiB : 1 * GiB;
  const reps = 3;
  ctx.log(`verify: building a ${fmt.mib(size)} docker-archive`);
  const { path, img } = await imageArchive(ctx, 'verify.tar', { layers: 1, layerBytes: size - 16 * 1024, name: 'bench/verify' });
  const web = await serveFiles({ '/verify.tar': path });
  ctx.defer(() => web.stop());
  const url = `${web.origin}/verify.tar`;
  const hex = img.sha256;
  const rules = (): Rules => ({ what: 'bench/verify:v1', allowHttp: true, redirects: { max: 0, hosts: [] }, maxBytes: 4 * GiB, deadline: Date.now() + 600_000, stallMs: 30_000 });

  const cache = new Cache(await mkdtemp(join(ctx.tmp, 'verify-cache-')));
  await cache.init();
  const core = async () => {
    const q = await cache.quarantine('bench-verify');
    try {
      const got = await download(url, q, rules());
      if (got.sha256 !== hex) throw new Error(`digest mismatch: ${got.sha256}`);
      await cache.admit(q, hex);
    } catch (err) {
      await q.discard();
      throw err;
    }
  };
  const hashOnly = async () => {
    const got = await download(url, { write: async () => {} }, rules());
    if (got.sha256 !== hex) throw new Error(`digest mismatch: ${got.sha256}`);
  };

  const rig = await startFetcherRig();
  ctx.defer(() => rig.cleanup());
  const policy = rig.policy({ images: [{ name: 'bench/verify', tag: 'v1', source: url, sha256: hex, allowHttp: true }] });
  const fetcher = async () => {
    const v = await rig.fetcher.fetch(policy.images[0], policy);
    if (v.sha256 !== hex || v.format !== 'docker-archive') throw new Error(`unexpected result ${JSON.stringify(v)}`);
  };

  const curl = async () => {
    const out = await sh('sh', ['-c', `curl -s --fail ${url} | sha256sum`]);
    if (!out.startsWith(hex)) throw new Error(`curl | sha256sum printed ${out.trim()}`);
  };
  const opensslRates: number[] = [];
  const openssl = async () => {
    const out = await sh('openssl', ['speed', '-bytes', '1048576', '-seconds', '3', 'sha256']);
    const m = /^sha256\s+([\d.]+)k\s*$/m.exec(out);
    if (!m) throw new Error(`cannot read openssl speed output: ${out}`);
    opensslRates.push(Number(m[1]) * 1000); // bytes/s
  };

  ctx.log(`verify: ${reps} interleaved rounds of core, Fetcher.fetch, download-only, curl|sha256sum, openssl speed`);
  const t = await interleave(reps, { core, fetcher, hashOnly, curl, openssl }, async (k) => {
    if (k === 'core') await cache.remove(hex);
    if (k === 'fetcher') await rig.fetcher.cache.remove(hex);
  });

  const bps = (ms: number) => size / (ms / 1000);
  const sk = bps(median(t.core));
  const ossl = median(opensslRates);
  const cu = bps(median(t.curl));
  const full = bps(median(t.fetcher));
  const nodisk = bps(median(t.hashOnly));
  const r = (b: number) => `${(b / MiB).toFixed(0)} MiB/s`;
  const what = ctx.quick ? '256 MiB' : '1 GiB';
  return [
    row(G, { row: `fetch+verify ${what} (quarantine, SHA-256, digest, fsync+admit; no parse) vs openssl 1-core SHA-256`, sealkit: r(sk), peer: r(ossl), ratio: fmt.pct(sk / ossl), target: '≥ 80 %', status: verdict(sk / ossl >= 0.8) }),
    row(G, { row: `fetch+verify ${what} vs curl -s URL | sha256sum`, sealkit: r(sk), peer: r(cu), ratio: fmt.x(sk / cu), target: '—', status: 'info' }),
    row(G, { row: `  same, whole Fetcher.fetch (+ archive parse, image.verified on JetStream)`, sealkit: r(full), peer: r(ossl), ratio: fmt.pct(full / ossl), target: '—', status: 'info' }),
    row(G, { row: `  same, download+SHA-256 only (no quarantine file)`, sealkit: r(nodisk), peer: r(ossl), ratio: fmt.pct(nodisk / ossl), target: '—', status: 'info' }),
  ];
}
