import test, { type ExecutionContext } from 'ava';
import { nanos, type JsMsg, type NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { consumeDurable, type Consuming, type DurableSpec, type Handler } from '../services/lib/consumer.ts';
import { silentLogger } from '../services/lib/log.ts';
import { streams, subjects } from '../services/lib/subjects.ts';

// The durable pull consumer the importer and ima work their events through,
// on a real nats-server, with the importer's bus credentials.

interface Rig {
  nats: NatsServer;
  admin: NatsConnection;
  service: NatsConnection;
  publish(n: number): Promise<void>;
  consume(handle: Handler, spec?: Partial<DurableSpec>): Consuming;
}

async function rig(t: ExecutionContext): Promise<Rig> {
  const nats = await startNats();
  const loops: Consuming[] = [];
  t.teardown(async () => {
    await Promise.all(loops.map((l) => l.stop()));
    await nats.cleanup();
  });
  const admin = await nats.connectAs('admin');
  const service = await nats.connectAs('importer');
  return {
    nats,
    admin,
    service,
    async publish(n) {
      await admin.jetstream().publish(subjects.image.verified, new TextEncoder().encode(JSON.stringify({ n })));
    },
    consume(handle, spec = {}) {
      const loop = consumeDurable(service, { ...base, ...spec }, silentLogger, handle);
      loops.push(loop);
      return loop;
    },
  };
}

const base: DurableSpec = { stream: streams.events.name, durable: 'test-durable', filterSubject: subjects.image.verified, ackWaitMs: 60_000, maxAckPending: 64 };
const nOf = (m: JsMsg) => (JSON.parse(new TextDecoder().decode(m.data)) as { n: number }).n;

// Resolves with each value pushed, in order, for a handler to report to.
function channel<T>() {
  const items: T[] = [];
  const waiting: Array<() => void> = [];
  return {
    items,
    push(v: T) {
      items.push(v);
      for (const w of waiting.splice(0)) w();
    },
    async nth(i: number, timeoutMs = 20_000): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      while (items.length <= i) {
        if (Date.now() > deadline) throw new Error(`only ${items.length} of ${i + 1} within ${timeoutMs} ms`);
        await new Promise<void>((r) => {
          waiting.push(r);
          setTimeout(r, 200);
        });
      }
      return items[i];
    },
  };
}

const settled = async (admin: NatsConnection, durable = base.durable) => {
  const jsm = await admin.jetstreamManager();
  for (const deadline = Date.now() + 10_000; ; ) {
    // absent until the loop has created it
    const info = await jsm.consumers.info(streams.events.name, durable).catch(() => null);
    if (info && info.num_ack_pending === 0 && info.num_pending === 0) return info;
    if (Date.now() > deadline) throw new Error(info ? `still pending ${info.num_pending}, unacked ${info.num_ack_pending}` : `no durable ${durable}`);
    await new Promise((r) => setTimeout(r, 50));
  }
};

test('a message is acked once its handler is done, on a durable with the settings it was given', async (t) => {
  const r = await rig(t);
  const seen = channel<number>();
  r.consume(async (m) => (seen.push(nOf(m)), true), { ackWaitMs: 7000, maxAckPending: 3 });
  await r.publish(1);
  await r.publish(2);
  t.is(await seen.nth(1), 2);
  const info = await settled(r.admin);
  t.like(info.config, { durable_name: 'test-durable', filter_subject: subjects.image.verified, ack_wait: nanos(7000), max_ack_pending: 3 });
  t.deepEqual(seen.items, [1, 2]);
});

test('a message in hand longer than ack_wait is kept alive, not handed to a second instance', async (t) => {
  const r = await rig(t);
  const seen = channel<number>();
  const slow: Handler = async (m) => {
    seen.push(nOf(m));
    await new Promise((res) => setTimeout(res, 3500));
    return true;
  };
  r.consume(slow, { ackWaitMs: 1000 });
  r.consume(slow, { ackWaitMs: 1000 });
  await r.publish(1);
  await seen.nth(0);
  await settled(r.admin);
  t.deepEqual(seen.items, [1], 'delivered once although the handler took 3.5 ack_waits');
});

test('a handler that fails gets its message back after a pause, not in a hot loop', async (t) => {
  const r = await rig(t);
  const at = channel<number>();
  r.consume(async () => {
    at.push(Date.now());
    if (at.items.length === 1) throw new Error('the runtime is away');
    return at.items.length > 2; // not done the second time either
  });
  await r.publish(1);
  const [first, second, third] = [await at.nth(0), await at.nth(1), await at.nth(2)];
  t.true(second - first >= 4000, `redelivered after ${second - first} ms`);
  t.true(third - second >= 4000, `redelivered after ${third - second} ms`);
  await settled(r.admin);
});

test('stop returns at once while a pull is idle, and what is published after goes to the next instance', async (t) => {
  const r = await rig(t);
  let taken = 0;
  const first = r.consume(async () => (taken++, true));
  await settled(r.admin); // the durable exists: the loop is pulling
  await new Promise((res) => setTimeout(res, 300));
  const t0 = Date.now();
  await first.stop();
  t.true(Date.now() - t0 < 1000, `stop took ${Date.now() - t0} ms`);
  await r.service.flush(); // the stopped pull's unsubscribe has reached the server
  await r.publish(1);
  const seen = channel<number>();
  r.consume(async (m) => (seen.push(nOf(m)), true));
  t.is(await seen.nth(0, 3000), 1);
  t.is(taken, 0, 'the stopped instance took nothing');
});

test('stop waits for the message in hand; given back because of the stop, it goes to the next instance at once', async (t) => {
  const r = await rig(t);
  const started = channel<void>();
  let finished = false;
  const first = r.consume(async (_m, stopping) => {
    started.push();
    await new Promise((res) => stopping.addEventListener('abort', res, { once: true }));
    await new Promise((res) => setTimeout(res, 300)); // winding down
    finished = true;
    return false;
  });
  await r.publish(1);
  await started.nth(0);
  await first.stop();
  t.true(finished, 'stop returned only after the handler did');
  const t0 = Date.now();
  const seen = channel<number>();
  r.consume(async (m) => (seen.push(nOf(m)), true));
  t.is(await seen.nth(0), 1);
  t.true(Date.now() - t0 < 3000, `handed back after ${Date.now() - t0} ms, not after a retry pause`);
});

test('a durable deleted under a running consumer is created again and consumption goes on', async (t) => {
  const r = await rig(t);
  const seen = channel<number>();
  r.consume(async (m) => (seen.push(nOf(m)), true));
  await r.publish(1);
  await seen.nth(0);
  await settled(r.admin);
  await (await r.admin.jetstreamManager()).consumers.delete(streams.events.name, base.durable);
  await r.publish(2);
  // the new durable starts from the stream's beginning, as the first one did
  for (let i = 1; !seen.items.includes(2); i++) await seen.nth(i, 30_000);
  t.is((await settled(r.admin)).config.durable_name, base.durable);
});
