import test from 'ava';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiscardPolicy, type NatsConnection } from 'nats';
import { replayStream } from '../services/lib/streams.ts';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService } from './helpers/service.ts';
import { makeAdmin, policyYaml, pushPolicy } from './helpers/policy.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { silentLogger } from '../services/lib/log.ts';
import { parseEvent } from '../services/lib/envelope.ts';

let nats: NatsServer;
test.before(async () => {
  nats = await startNats();
});
test.after.always(async () => {
  await nats?.cleanup();
});

// Every event the stream holds for a subject, by Nats-Msg-Id.
async function stored(subject: string): Promise<string[]> {
  const admin = await nats.connectAs('admin');
  const ids: string[] = [];
  await replayStream(admin, 'SEALKIT_AUDIT', subject, (data, id) => {
    if (parseEvent(data).type !== subject) throw new Error(`wrong event type on ${subject}`);
    ids.push(id!);
  });
  await admin.close();
  return ids;
}

async function publisher(nc: NatsConnection, dir: string) {
  const p = new EventPublisher({ nc, service: 'auditor', node: 'test-node', dir, log: silentLogger, ackTimeoutMs: 500 });
  await p.init();
  return p;
}

test.serial('a restart of nats-server in the middle of a run loses no event and stores none twice', async (t) => {
  const nc = await nats.connectAs('auditor');
  const pub = await publisher(nc, await mkdtemp(join(tmpdir(), 'sealkit-outbox-')));
  const sent: string[] = [];
  for (let i = 0; i < 300; i++) {
    if (i === 100) await nats.stop();
    if (i === 200) void nats.restart();
    const ev = await pub.publish('audit.denial', { n: i });
    sent.push(ev.id);
    await new Promise((r) => setTimeout(r, 2));
  }
  t.true(await pub.flush(30_000), 'everything acknowledged after the server came back');
  const ids = await stored('audit.denial');
  t.is(ids.length, 300);
  t.is(new Set(ids).size, 300, 'no duplicates');
  t.deepEqual([...ids].sort(), [...sent].sort(), 'exactly what was published');
  pub.close();
  await nc.close();
});

test.serial('events published while the bus is down survive a crash of the publisher and go out once when both return', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-outbox-'));
  const nc = await nats.connectAs('auditor');
  await nats.stop();
  const first = await publisher(nc, dir);
  const sent: string[] = [];
  for (let i = 0; i < 50; i++) sent.push((await first.publish('audit.lost', { n: i })).id);
  const onDisk = (await Promise.all((await readdir(dir)).filter((f) => f.endsWith('.json')).map((f) => readFile(join(dir, f), 'utf8')))).join('');
  t.true(sent.every((id) => onDisk.includes(id)), 'each waits on disk');
  first.close(); // the process "dies" here
  await nc.close();

  await nats.restart();
  const nc2 = await nats.connectAs('auditor');
  const second = await publisher(nc2, dir);
  t.true(await second.flush(15_000));
  const ids = await stored('audit.lost');
  t.deepEqual([...ids].sort(), [...sent].sort());
  t.is((await readdir(dir)).filter((f) => f.endsWith('.json')).length, 0, 'the outbox is empty once acknowledged');
  second.close();
  await nc2.close();
});

test.serial('a republished event id is dropped by the stream duplicate window', async (t) => {
  const nc = await nats.connectAs('auditor');
  const js = nc.jetstream();
  const a = await js.publish('audit.lost', new TextEncoder().encode('{}'), { msgID: 'same-event-id' });
  const b = await js.publish('audit.lost', new TextEncoder().encode('{}'), { msgID: 'same-event-id' });
  t.false(a.duplicate);
  t.true(b.duplicate);
  t.is(a.seq, b.seq);
  await nc.close();
});

test.serial('a service keeps running through a bus outage and answers again after it', async (t) => {
  const admin = await makeAdmin(join(nats.dir, 'svc'));
  const svc = await startService('policy', { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath });
  await nats.restart();
  await svc.waitForLog((r) => r.msg === 'bus status' && r.status === 'reconnect');
  t.is(svc.proc.exitCode, null, 'still running');
  const nc = await nats.connectAs('admin');
  const reply = await pushPolicy(nc, policyYaml({ serial: 1 }), admin.key);
  t.is(reply.serial, 1);
  await nc.close();
  await svc.stop();
});

test.serial('an event the bus refuses for this service is not retried forever: audit.lost says it was dropped', async (t) => {
  const anon = await nats.connectAs(null);
  const seen = new Promise<Record<string, unknown>>((resolve) => {
    const sub = anon.subscribe('audit.lost');
    void (async () => {
      for await (const m of sub) {
        const ev = parseEvent(m.data);
        if ((ev.data as { reason?: string }).reason === 'permission-denied') resolve(ev.data as Record<string, unknown>);
      }
    })();
  });
  await anon.flush();
  const nc = await nats.connectAs('auditor');
  const pub = await publisher(nc, await mkdtemp(join(tmpdir(), 'sealkit-outbox-')));
  await pub.publish('audit.policy', { misrouted: true }); // the auditor may not publish audit.policy
  const after = await pub.publish('audit.denial', { n: 1 });
  const lost = await seen;
  t.is(lost.dropped, 1);
  t.is(lost.sample, 'audit.policy');
  t.true(await pub.flush(5000), 'the queue kept moving');
  t.true((await stored('audit.denial')).includes(after.id));
  pub.close();
  await nc.close();
  await anon.close();
});

test.serial('events published together share group files on disk, each written before its publish returns, and a crash loses none of them', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-outbox-'));
  const nc = await nats.connectAs('auditor');
  await nats.stop();
  const first = await publisher(nc, dir);
  const onDisk = async () => (await Promise.all((await readdir(dir)).filter((f) => f.endsWith('.json')).map((f) => readFile(join(dir, f), 'utf8')))).join('');
  const sent = await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const ev = await first.publish('audit.spoof', { n: i });
      t.true((await onDisk()).includes(ev.id), `event ${i} is on disk when its publish returns`);
      return ev.id;
    }),
  );
  t.true((await readdir(dir)).filter((f) => f.endsWith('.json')).length < 200, 'published together, written together');
  first.close(); // the process "dies" here
  await nc.close();

  await nats.restart();
  const nc2 = await nats.connectAs('auditor');
  const second = await publisher(nc2, dir);
  t.is(second.pending, 200);
  t.true(await second.flush(15_000));
  t.deepEqual((await stored('audit.spoof')).filter((id) => sent.includes(id)).sort(), [...sent].sort());
  t.is((await readdir(dir)).filter((f) => f.endsWith('.json')).length, 0, 'the outbox is empty once every event of every group is acknowledged');
  second.close();
  await nc2.close();
});

test.serial('a group file partly acknowledged before a crash gives back only its unacknowledged events on restart', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-outbox-'));
  const admin = await nats.connectAs('admin');
  t.teardown(() => admin.close());
  const jsm = await admin.jetstreamManager();
  const { config, state } = await jsm.streams.info('SEALKIT_AUDIT');
  // the stream takes 5 more messages and refuses the rest: a group is acked in part
  await jsm.streams.update('SEALKIT_AUDIT', { ...config, max_msgs: state.messages + 5, discard: DiscardPolicy.New });
  const nc = await nats.connectAs('auditor');
  const first = await publisher(nc, dir);
  t.teardown(async () => {
    first.close();
    await nc.close();
  });
  const sent = await Promise.all(Array.from({ length: 20 }, async (_, i) => (await first.publish('audit.spoof', { n: i })).id));
  t.true((await readdir(dir)).filter((f) => f.endsWith('.json')).length < 20, 'published together, written together');
  const until = Date.now() + 15_000;
  while (first.pending > 15 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  t.is(first.pending, 15, 'the stream acknowledged 5');
  first.close(); // the process "dies" here
  await nc.close();

  const nc2 = await nats.connectAs('auditor');
  const second = await publisher(nc2, dir);
  t.teardown(async () => {
    second.close();
    await nc2.close();
    await jsm.streams.update('SEALKIT_AUDIT', { ...config, max_msgs: -1, discard: DiscardPolicy.Old }).catch(() => {});
  });
  t.is(second.pending, 15, 'only the unacknowledged events are loaded again: a republish after the duplicate window would store the others twice');
  await jsm.streams.update('SEALKIT_AUDIT', { ...config, max_msgs: -1, discard: DiscardPolicy.Old });
  t.true(await second.flush(15_000));
  t.deepEqual((await stored('audit.spoof')).filter((id) => sent.includes(id)).sort(), [...sent].sort());
  t.deepEqual(await readdir(dir), [], 'the outbox, and what it noted of acknowledged events, is gone once all are');
});
