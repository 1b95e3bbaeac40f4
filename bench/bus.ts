import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { NatsConnection, PubAck } from 'nats';
import { encode, makeHeaders } from '../services/lib/bus.ts';
import { makeEvent } from '../services/lib/envelope.ts';
import { silentLogger } from '../services/lib/log.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { subjects } from '../services/lib/subjects.ts';
import { startNats } from '../test/helpers/nats.ts';
import { makeAdmin, policyYaml, pushPolicy } from '../test/helpers/policy.ts';
import { startService } from '../test/helpers/service.ts';
import { fmt, interleave, median, percentile, row, verdict, type BenchContext, type Row } from './measure.ts';

// The bus paths an operator and every service lean on, on a real
// nats-server: a signed policy push through the policy service (request →
// validate, verify, store on disk and KV → reply) next to a bare NATS
// request/reply of the same bytes; and event publishing through the outbox
// (JetStream acks, with and without the disk outbox) next to bare JetStream
// publishes with the same number in flight.

const G = 'bus';

const denial = (i: number) => ({
  file: `/var/lib/bench/f${i}`,
  cause: 'invalid-hash',
  op: 'appraise_data',
  type: 1800,
  process: { pid: 1000 + i, comm: 'cat', uid: 0 },
  dev: 'vda',
  ino: i,
  container: null,
  image: null,
});

export async function bus(ctx: BenchContext): Promise<Row[]> {
  const pushes = ctx.quick ? 100 : 200;
  const events = ctx.quick ? 5_000 : 20_000;
  const nats = await startNats();
  ctx.defer(() => nats.cleanup());
  const admin = await makeAdmin(nats.stateDir);
  const svc = await startService('policy', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath, SEALKIT_LOG_LEVEL: 'info' });
  ctx.defer(() => void svc.stop());
  const nc = await nats.connectAs('admin', 'bench-admin');
  ctx.defer(() => nc.close());
  const echo = nc.subscribe('bench.echo', { callback: (_e, m) => m.respond(m.data) });
  ctx.defer(() => echo.unsubscribe());

  ctx.log(`bus: ${pushes} policy pushes interleaved with bare request/reply`);
  const image = (i: number) => ({ name: `bench/img${i}`, tag: 'v1', source: `https://images.example/img${i}.tar`, sha256: 'ab'.repeat(32) });
  let serial = 0;
  let last = '';
  const t = await interleave(pushes, {
    push: async () => {
      serial++;
      last = policyYaml({ serial, images: [image(1), image(2), image(serial % 5 + 3)] });
      const reply = await pushPolicy(nc, last, admin.key);
      if (reply.serial !== serial) throw new Error(`push of serial ${serial} answered ${JSON.stringify(reply)}`);
    },
    echo: async () => {
      const m = await nc.request('bench.echo', Buffer.from(last), { timeout: 5000 });
      if (m.data.length !== Buffer.byteLength(last)) throw new Error('echo lost bytes');
    },
  });
  const rows: Row[] = [];
  rows.push(row(G, {
    row: `policy push round trip (sign, request → verify, store, KV, reply), ${pushes} pushes: p50 / p99`,
    sealkit: `${fmt.ms(median(t.push))} / ${fmt.ms(percentile(t.push, 99))}`,
    peer: `${fmt.ms(median(t.echo))} / ${fmt.ms(percentile(t.echo, 99))}`,
    ratio: fmt.x(median(t.push) / median(t.echo)),
    target: 'p99 ≤ 10 ms',
    status: verdict(percentile(t.push, 99) <= 10),
    note: 'peer: bare NATS request/reply of the same YAML bytes on the same server',
  }));

  const pub = await nats.connectAs('auditor', 'bench-publisher');
  ctx.defer(() => pub.close());
  const through = async (dir?: string) => {
    const ep = new EventPublisher({ nc: pub, service: 'auditor', node: 'bench', log: silentLogger, dir, maxPending: events * 2 });
    await ep.init();
    for (let i = 0; i < events; i++) await ep.publish(subjects.audit.denial, denial(i), { headers: { 'Sealkit-Image': 'bench/img:v1' } });
    const ok = await ep.flush(120_000);
    ep.close();
    if (!ok) throw new Error(`outbox did not drain ${events} events in 120 s`);
  };
  const bare = async () => {
    const js = pub.jetstream();
    const window = 64;
    const inflight = new Set<Promise<PubAck>>();
    for (let i = 0; i < events; i++) {
      const ev = makeEvent('auditor', subjects.audit.denial, denial(i), { node: 'bench' });
      const p: Promise<PubAck> = js.publish(subjects.audit.denial, encode(ev), { msgID: randomUUID(), headers: makeHeaders({ 'Sealkit-Node': 'bench', 'Sealkit-Service': 'auditor', 'Sealkit-Image': 'bench/img:v1' }) });
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
      if (inflight.size >= window) await Promise.race(inflight);
    }
    await Promise.all(inflight);
  };
  let round = 0;
  ctx.log(`bus: ${fmt.n(events)} events × 3 rounds: outbox in memory, outbox on disk, bare JetStream`);
  const e = await interleave(3, {
    memory: () => through(),
    disk: () => through(join(ctx.tmp, `outbox-${round++}`)),
    bare,
  });
  const rate = (ms: number) => events / (ms / 1000);
  const bareRate = rate(median(e.bare));
  for (const [what, xs] of [['memory outbox', e.memory], ['disk outbox', e.disk]] as const) {
    rows.push(row(G, {
      row: `event publish with JetStream acks, ${fmt.n(events)} events, EventPublisher (${what}) vs bare js.publish (64 in flight)`,
      sealkit: `${fmt.n(rate(median(xs)))} ev/s`,
      peer: `${fmt.n(bareRate)} ev/s`,
      ratio: fmt.x(rate(median(xs)) / bareRate),
      ...(what === 'disk outbox' ? { target: '≥ 0.5×', status: verdict(rate(median(xs)) / bareRate >= 0.5) } : { target: '—', status: 'info' as const }),
    }));
  }
  return rows;
}
