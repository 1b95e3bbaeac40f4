import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Cache } from '../services/fetcher/cache.ts';
import { download, type Rules } from '../services/fetcher/download.ts';
import { openImage } from '../services/lib/archive/index.ts';
import { startFetcherRig } from '../test/helpers/fetcher.ts';
import { imageArchive, serveFiles } from './fixtures.ts';
import { fmt, GiB, interleave, median, MiB, row, sh, verdict, type BenchContext, type Row } from './measure.ts';

// Fetch + verify of one large image archive from a loopback HTTP server.
// The target rows time the whole Fetcher.fetch (quarantine file written while
// hashing, digest check, archive parse, fsync + atomic admit into the cache,
// image.verified on JetStream) against `curl | sha256sum` and against the
// rate at which this disk takes the same number of bytes durably (`dd …
// conv=fsync`), its limit: a verified download must be on disk before it is
// announced. The fetcher core without the parse, a download that only hashes
// (no disk) and openssl's single-core SHA-256 are shown for reference, and
// the parse alone (openImage of the same verified bytes): it may only start
// once the whole download is hashed, so download-only then parse, back to
// back, is what the checks allow on one core whatever the disk.

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
  const parse = async () => {
    const o = await openImage(path, { limits: { maxArchiveEntries: 1000, maxUnpackedBytes: 4 * GiB }, what: 'bench/verify:v1' });
    if (o.format !== 'docker-archive') throw new Error(`opened as ${o.format}`);
  };
  const hashOnly = async () => {
    const got = await download(url, { copies: true, write: () => {} }, rules()); // keeps nothing: no copy, never waits
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

  const dd = async () => {
    await sh('dd', ['if=/dev/zero', `of=${join(ctx.tmp, 'dd.bin')}`, 'bs=1M', `count=${Math.round(size / MiB)}`, 'conv=fsync']);
  };

  ctx.log(`verify: ${reps} interleaved rounds of core, Fetcher.fetch, download-only, parse, curl|sha256sum, openssl speed, dd conv=fsync`);
  // each run takes page cache freed just before it (warmPageCache): as much
  // as the fetch writes, with room for the rest
  const t = await interleave(reps, { core, fetcher, hashOnly, parse, curl, openssl, dd }, async (k) => {
    if (k === 'core') await cache.remove(hex);
    if (k === 'fetcher') await rig.fetcher.cache.remove(hex);
    if (k === 'dd') await rm(join(ctx.tmp, 'dd.bin'), { force: true });
  }, { warm: { dir: ctx.tmp, bytes: size * 1.25 } });

  ctx.log(`verify: ms per round: ${Object.entries(t).map(([k, v]) => `${k} ${(v as number[]).map((x) => x.toFixed(0)).join(' ')}`).join(', ')}`);
  const bps = (ms: number) => size / (ms / 1000);
  const sk = bps(median(t.core));
  const ossl = median(opensslRates);
  const cu = bps(median(t.curl));
  const full = bps(median(t.fetcher));
  const nodisk = bps(median(t.hashOnly));
  const parsed = bps(median(t.parse));
  const serial = 1 / (1 / nodisk + 1 / parsed); // download+hash, then the parse
  const disk = (Math.round(size / MiB) * MiB) / (median(t.dd) / 1000);
  const r = (b: number) => `${(b / MiB).toFixed(0)} MiB/s`;
  const what = ctx.quick ? '256 MiB' : '1 GiB';
  const vsCurl = full / cu;
  const vsDisk = full / disk;
  return [
    row(G, {
      row: `Fetcher.fetch ${what} (verified, parsed, fsync+admit, image.verified) vs curl -s URL | sha256sum`,
      sealkit: r(full),
      peer: r(cu),
      ratio: fmt.x(vsCurl),
      target: '≥ 2× curl|sha256sum',
      status: verdict(vsCurl >= 2),
      note:
        vsCurl >= 2
          ? undefined
          : disk < 2 * cu
            ? `out of reach on this disk: it takes ${r(disk)} durably (dd conv=fsync, same run), ${fmt.x(disk / cu)} curl|sha256sum, and every verified byte is written and fsync'd before image.verified`
            : `the disk would allow ${fmt.x(disk / cu)} curl|sha256sum (dd conv=fsync ${r(disk)}, same run)`,
    }),
    row(G, { row: `same, vs dd if=/dev/zero bs=1M count=${Math.round(size / MiB)} conv=fsync (this disk's durable write rate, the limit)`, sealkit: r(full), peer: r(disk), ratio: fmt.pct(vsDisk), target: '≥ 80 %', status: verdict(vsDisk >= 0.8) }),
    row(G, { row: `  fetcher core ${what} (quarantine, SHA-256, digest, fsync+admit; no parse) vs openssl 1-core SHA-256`, sealkit: r(sk), peer: r(ossl), ratio: fmt.pct(sk / ossl), target: '—', status: 'info' }),
    row(G, { row: `  download+SHA-256 only (no quarantine file) vs curl -s URL | sha256sum`, sealkit: r(nodisk), peer: r(cu), ratio: fmt.x(nodisk / cu), target: '—', status: 'info' }),
    row(G, { row: `  parse alone (openImage of the verified archive: tar walk + the layer's SHA-256 against the config's diff_id), page cache`, sealkit: r(parsed), peer: '—', ratio: '—', target: '—', status: 'info' }),
    row(G, { row: `  download+SHA-256 then parse, back to back (the order the checks impose; no disk): the CPU limit vs curl|sha256sum`, sealkit: r(serial), peer: r(cu), ratio: fmt.x(serial / cu), target: '—', status: 'info' }),
  ];
}
