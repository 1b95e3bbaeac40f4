import { appendFile, cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { NatsConnection } from 'nats';
import { parseEvent } from '../services/lib/envelope.ts';
import { generateKey, writeKeyFiles } from '../services/lib/sign.ts';
import { startNats, type NatsServer } from '../test/helpers/nats.ts';
import { startService, type RunningService } from '../test/helpers/service.ts';
import { fmt, median, percentile, rssPeak, row, sleep, verdict, type BenchContext, type Row } from './measure.ts';

// Kernel denial → audit.denial at an anonymous subscriber: the auditor as a
// real process following a kmsg-format file, a real nats-server. Latency is
// write → receive of one record at a time, written at random moments (a
// denial does not wait for the auditor). The storm writes many
// distinct records at once with the rate limit raised and counts
// audit.denial + audit.lost against what was written.

const G = 'audit';

interface Node {
  svc: RunningService;
  kmsg: string;
  name: string;
  seq: number;
}

async function startNode(ctx: BenchContext, nats: NatsServer, name: string, env: Record<string, string>): Promise<Node> {
  const state = join(ctx.tmp, name, 'state');
  await cp(join(nats.stateDir, 'bus'), join(state, 'bus'), { recursive: true });
  await mkdir(join(state, 'ima'), { recursive: true });
  await writeKeyFiles(generateKey('node-manifest'), join(state, 'ima', 'manifest-key'));
  const kmsg = join(ctx.tmp, name, 'kmsg');
  await writeFile(kmsg, '');
  const svc = await startService('auditor', { SEALKIT_STATE: state, SEALKIT_NATS_URL: nats.url, SEALKIT_NODE: name, SEALKIT_KMSG: kmsg, SEALKIT_LOG_LEVEL: 'info', ...env });
  ctx.defer(() => void svc.stop());
  return { svc, kmsg, name, seq: 0 };
}

function record(seq: number): string {
  const usec = seq * 1000;
  return `3,${seq},${usec},-;audit: type=1800 audit(1700000000.${String(seq % 1000).padStart(3, '0')}:${seq}): pid=${1000 + (seq % 30000)} uid=0 auid=4294967295 ses=4294967295 subj=kernel op="appraise_data" cause="invalid-hash" comm="cat" name="/var/lib/bench/f${seq}" dev="vda" ino=${seq} res=0 errno=0\n`;
}

// audit.* of one node, by kernel seq
function watch(anon: NatsConnection, node: string) {
  const denials = new Map<number, number>(); // seq → performance.now() at receipt
  let lost = 0;
  let last = 0;
  let waiter: { seq: number; resolve: () => void } | undefined;
  const sub = anon.subscribe('audit.*', {
    callback: (_e, msg) => {
      if (msg.headers?.get('Sealkit-Node') !== node) return;
      const ev = parseEvent(msg.data) as { type: string; data: { kernel?: { seq: number }; dropped?: number } };
      last = performance.now();
      if (ev.type === 'audit.denial' && ev.data.kernel) {
        denials.set(ev.data.kernel.seq, last);
        if (waiter && waiter.seq === ev.data.kernel.seq) waiter.resolve();
      } else if (ev.type === 'audit.lost') lost += ev.data.dropped ?? 0;
    },
  });
  return {
    denials,
    get lost() {
      return lost;
    },
    get last() {
      return last;
    },
    next(seq: number, timeoutMs = 10_000): Promise<void> {
      if (denials.has(seq)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`audit.denial for kmsg seq ${seq} did not arrive in ${timeoutMs} ms`)), timeoutMs);
        waiter = { seq, resolve: () => (clearTimeout(t), resolve()) };
      });
    },
    close: () => sub.unsubscribe(),
  };
}

async function latency(ctx: BenchContext, nats: NatsServer, anon: NatsConnection, name: string, samples: number): Promise<number[]> {
  const node = await startNode(ctx, nats, name, {});
  const w = watch(anon, name);
  await anon.flush();
  const out: number[] = [];
  for (let i = 0; i < samples + 5; i++) {
    await sleep(5 + Math.random() * 100);
    const seq = ++node.seq;
    const t0 = performance.now();
    await appendFile(node.kmsg, record(seq));
    await w.next(seq);
    if (i >= 5) out.push(w.denials.get(seq)! - t0); // the first few warm the path up
  }
  w.close();
  await node.svc.stop();
  return out;
}

export async function audit(ctx: BenchContext): Promise<Row[]> {
  const samples = ctx.quick ? 200 : 500;
  const stormN = ctx.quick ? 5_000 : 20_000;
  const nats = await startNats();
  ctx.defer(() => nats.cleanup());
  const anon = await nats.connectAs(null);
  ctx.defer(() => anon.close());
  const rows: Row[] = [];

  ctx.log(`audit: ${samples} denials one at a time, auditor with its default settings`);
  const xs = await latency(ctx, nats, anon, 'lat-default', samples);
  const p99 = percentile(xs, 99);
  rows.push(row(G, {
    row: `kernel denial → audit.denial at a subscriber, ${xs.length} samples, default settings (woken by inotify): p50 / p99`,
    sealkit: `${fmt.ms(median(xs))} / ${fmt.ms(p99)}`,
    peer: '—',
    ratio: '—',
    target: 'p99 ≤ 10 ms',
    status: verdict(p99 <= 10),
  }));

  ctx.log(`audit: storm of ${fmt.n(stormN)} distinct denials, SEALKIT_AUDIT_MAX_PER_SEC raised`);
  const node = await startNode(ctx, nats, 'storm', { SEALKIT_AUDIT_MAX_PER_SEC: '1000000' });
  const w = watch(anon, 'storm');
  await anon.flush();
  let text = '';
  for (let i = 1; i <= stormN; i++) text += record(i);
  const peak = rssPeak(node.svc.proc.pid!);
  const t0 = performance.now();
  await appendFile(node.kmsg, text);
  let seen = -1;
  let idleSince = performance.now();
  while (w.denials.size + w.lost < stormN) {
    await sleep(100);
    const now = w.denials.size + w.lost;
    if (now !== seen) {
      seen = now;
      idleSince = performance.now();
    } else if (performance.now() - idleSince > 15_000) break;
  }
  const ms = w.last - t0;
  const rssBytes = peak.stop();
  w.close();
  const got = w.denials.size;
  const accounted = got + w.lost === stormN;
  const rate = stormN / (ms / 1000);
  rows.push(row(G, {
    row: `storm: ${fmt.n(stormN)} distinct denials written at once, rate limit raised: sustained rate, received + audit.lost = written`,
    sealkit: `${fmt.n(rate)} ev/s`,
    peer: '—',
    ratio: '—',
    target: '≥ 10,000 ev/s, nothing lost',
    status: verdict(accounted && rate >= 10_000),
    note: `${fmt.n(got)} audit.denial + ${fmt.n(w.lost)} in audit.lost of ${fmt.n(stormN)} written, last event ${fmt.ms(ms)} after the write`,
  }));
  rows.push(row(G, { row: 'RSS auditor peak during the storm', sealkit: `${(rssBytes / 1e6).toFixed(1)} MB`, peer: '—', ratio: '—', target: '—', status: 'info' }));
  await node.svc.stop();
  return rows;
}
