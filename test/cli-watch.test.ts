import test from 'ava';
import { AckPolicy, nanos, type NatsConnection } from 'nats';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { makeAdmin, policyYaml, pushPolicy, type Admin } from './helpers/policy.ts';
import { EventLog } from './helpers/events.ts';
import { spawnSealkit } from './helpers/cli.ts';
import { streams } from '../services/lib/subjects.ts';

// sealkit watch prints events and nothing else, each once: as admin a '>'
// subscription also receives JetStream API traffic and every event again
// as JetStream hands it to a consumer (the importer's and ima's durable
// consumers do that all day).

let nats: NatsServer;
let admin: Admin;
const services: RunningService[] = [];
let adminNc: NatsConnection;
let pulling = true;

test.before(async () => {
  nats = await startNats();
  admin = await makeAdmin(nats.stateDir);
  const env = { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url, SEALKIT_TRUST: admin.trustPath, SEALKIT_HEARTBEAT_SEC: '1' };
  services.push(await startService('policy', env), await startService('nodeinfo', env));
  // a durable pull consumer on the events stream, working as the importer's does
  adminNc = await nats.connectAs('admin');
  const jsm = await adminNc.jetstreamManager();
  await jsm.consumers.add(streams.events.name, { durable_name: 'test-puller', filter_subject: 'policy.applied', ack_policy: AckPolicy.Explicit, inactive_threshold: nanos(60_000) });
  const consumer = await adminNc.jetstream().consumers.get(streams.events.name, 'test-puller');
  void (async () => {
    while (pulling) {
      const batch = await consumer.fetch({ max_messages: 10, expires: 1000 }).catch(() => null);
      if (!batch) continue;
      for await (const m of batch) m.ack();
    }
  })();
});

test.after.always(async () => {
  pulling = false;
  await Promise.all(services.map((s) => s.stop()));
  await nats?.cleanup();
});

const lines = (out: string) => out.split('\n').slice(0, -1);
let serial = 0;
const push = () => pushPolicy(adminNc, policyYaml({ serial: ++serial }), admin.key);

test.serial("watch '>' --json as admin prints only CloudEvents, one per line, each exactly once", async (t) => {
  const anon = await nats.connectAs(null);
  const log = new EventLog(anon, ['policy.applied', 'audit.policy', 'node.heartbeat']);
  await anon.flush();
  // SEALKIT_STATE is the node's: the admin credentials are found there
  const watch = spawnSealkit(['watch', '>', '--json', '--server', nats.url], { SEALKIT_STATE: nats.stateDir });
  // it is subscribed once it prints the first heartbeat
  await watch.waitFor((o) => o.includes('"node.heartbeat"'));

  await push();
  await pushPolicy(adminNc, policyYaml({ serial: 1 }), null).catch(() => {}); // unsigned: audit.policy
  const last = await push();
  const lastEv = await log.wait((e) => e.type === 'policy.applied' && e.data.serial === last.serial);
  const refused = await log.wait('audit.policy');
  await watch.waitFor((o) => o.includes(lastEv.id) && o.includes(refused.id));
  // one more heartbeat after the pushes: whatever JetStream delivered to the consumer has had time to show
  const beat = await log.next('node.heartbeat');
  await watch.waitFor((o) => o.includes(beat.id));
  t.is(await watch.interrupt(), 0);

  const printed = lines(watch.stdout());
  t.true(printed.length > 0);
  const events = printed.map((l) => JSON.parse(l) as { specversion: string; id: string; type: string });
  for (const e of events) {
    t.is(e.specversion, '1.0');
    t.regex(e.type, /^(audit|policy|image|ima|node)\./);
  }
  const ids = events.map((e) => e.id);
  t.is(new Set(ids).size, ids.length, 'no event twice');
  // every push and refusal made while it watched
  for (const e of log.events.filter((x) => x.type !== 'node.heartbeat')) {
    t.is(ids.filter((i) => i === e.id).length, 1, `${e.type} ${e.id} printed once`);
  }
  t.regex(watch.stderr(), /^watching > on nats:\/\/\S+; Ctrl-C stops\n$/, 'stderr says only that the subscription is in place');
  log.close();
});

test.serial('watch --replay prints what the stream kept, then live events, each once', async (t) => {
  const before = await push();
  const watch = spawnSealkit(['watch', 'policy.*', '--json', '--replay', '--server', nats.url], { SEALKIT_STATE: nats.stateDir });
  await watch.waitFor((o) => o.includes(`"serial":${before.serial},`));
  const after = await push();
  await watch.waitFor((o) => o.includes(`"serial":${after.serial},`));
  t.is(await watch.interrupt(), 0);
  const events = lines(watch.stdout()).map((l) => JSON.parse(l) as { id: string; type: string; data: { serial: number } });
  t.true(events.every((e) => e.type === 'policy.applied'));
  // every push of this file, oldest first, and none twice
  t.deepEqual(events.map((e) => e.data.serial), Array.from({ length: after.serial }, (_, i) => i + 1));
});

test.serial("watch '>' as an anonymous client gets the events it may read and keeps watching", async (t) => {
  // no credentials: the read-only monitor user, allowed audit.*, image.*, ima.*, node.* and policy.applied
  const watch = spawnSealkit(['watch', '>', '--json', '--server', nats.url], { SEALKIT_STATE: '/nonexistent' });
  await watch.waitFor((o) => o.includes('"node.heartbeat"'));
  const p = await push();
  await watch.waitFor((o) => o.includes(`"serial":${p.serial},`));
  t.is(watch.proc.exitCode, null, 'still running');
  t.is(await watch.interrupt(), 0);
  t.regex(watch.stderr(), /^watching > on nats:\/\/\S+; Ctrl-C stops\n$/, 'stderr says only that the subscription is in place');
});

test.serial("watch '>' without --json prints one readable line per event and nothing else", async (t) => {
  const watch = spawnSealkit(['watch', '>', '--server', nats.url], { SEALKIT_STATE: nats.stateDir });
  await watch.waitFor((o) => o.includes('node.heartbeat'));
  const p = await push();
  await watch.waitFor((o) => o.includes(`serial=${p.serial} `));
  t.is(await watch.interrupt(), 0);
  for (const l of lines(watch.stdout())) t.regex(l, /^\d\d:\d\d:\d\d\.\d{3} (policy\.applied|node\.heartbeat|node\.info|audit\.policy)\s+\S+ /);
  t.is(lines(watch.stdout()).filter((l) => l.includes(`serial=${p.serial} `)).length, 1);
});
