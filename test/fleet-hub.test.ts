import test from 'ava';
import { readFileSync } from 'node:fs';
import { AckPolicy, DeliverPolicy, nanos, StringCodec, type NatsConnection } from 'nats';
import { startHub, startNats, type Hub, type NatsServer } from './helpers/nats.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { silentLogger } from '../services/lib/log.ts';
import { answerPrefix, fleetBucket, groupKey, nodesBucket, type FleetNodeConfig, type FleetNodeEntry } from '../services/lib/fleet.ts';
import { fleetInboxPrefix, fleetKvOnHub } from '../services/lib/leafconf.ts';
import { consumerOnLeader, replayStream } from '../services/lib/streams.ts';
import { streamNames } from '../services/lib/contract.ts';
import { hubShardNames, shardStream, type HubStreamKind } from '../services/lib/hubshards.ts';

// Three clustered hub members and two real node nats-servers, each node
// enrolled with its own credentials; the tests run in order on one fleet.
const sc = StringCodec();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface FleetNode {
  name: string;
  config: FleetNodeConfig;
  nats: NatsServer;
  auditor: NatsConnection;
  events: EventPublisher;
  startedAt: number;
}

let hub: Hub;
let admin: NatsConnection;
const nodes: Record<string, FleetNode> = {};
const measured: Record<string, string> = {};

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

// Every event id of `node` the hub's streams of a kind hold (every shard),
// with how often.
async function hubIds(kind: HubStreamKind, node: string): Promise<Map<string, number>> {
  const ids = new Map<string, number>();
  for (const stream of await hubShardNames(await admin.jetstreamManager({ checkAPI: false }), kind)) {
    await replayStream(admin, stream, '>', (data) => {
      const ev = JSON.parse(sc.decode(data)) as { id: string; source: string };
      if (ev.source.endsWith(`/${node}`)) ids.set(ev.id, (ids.get(ev.id) ?? 0) + 1);
    });
  }
  return ids;
}

// the shard of the three nodes here (a shard holds 100)
const AUDIT = shardStream('audit', 0);

async function startNode(name: string, groups: string[]): Promise<FleetNode> {
  const enrolled = await hub.enroll(name, groups);
  if (!enrolled.config) throw new Error(`sealkit fleet enroll ${name} failed: ${enrolled.stderr}`);
  const startedAt = Date.now();
  const nats = await startNats({ fleet: enrolled.config });
  const auditor = await nats.connectAs('auditor');
  const events = new EventPublisher({ nc: auditor, service: 'auditor', node: name, log: silentLogger });
  await events.init();
  return { name, config: enrolled.config, nats, auditor, events, startedAt };
}

test.before(async () => {
  hub = await startHub({ members: 3 });
  admin = await hub.connectAdmin();
  const kv = await admin.jetstream().views.kv(fleetBucket);
  await kv.put(groupKey('web'), sc.encode('policy of web'));
  await kv.put(groupKey('db'), sc.encode('policy of db'));
  nodes.n1 = await startNode('n1', ['web']);
  nodes.n2 = await startNode('n2', ['db']);
});

test.after.always(async () => {
  for (const n of Object.values(nodes)) {
    n.events.close();
    await n.nats.cleanup();
  }
  await hub?.cleanup();
});

test.serial('enrolment registers each node with its own key and password, and refuses a second enrolment without --force', async (t) => {
  const kv = await admin.jetstream().views.kv(nodesBucket);
  const e1 = JSON.parse(sc.decode((await kv.get('n1'))!.value)) as FleetNodeEntry;
  const e2 = JSON.parse(sc.decode((await kv.get('n2'))!.value)) as FleetNodeEntry;
  t.deepEqual(e1.groups, ['web']);
  t.is(e1.leafUser, 'leaf-n1');
  t.not(e1.eventKey, e2.eventKey);
  t.not(nodes.n1.config.leafPassword, nodes.n2.config.leafPassword);
  const again = await hub.enroll('n1', ['web']);
  t.is(again.code, 2);
  t.regex(again.stderr, /already enrolled.*--force.*SEALKIT_BAD_REQUEST/s);
  const bad = await hub.enroll('N1!', ['web']);
  t.regex(bad.stderr, /node name "N1!" is not allowed/);
  const badGroup = await hub.enroll('n9', ['Web Servers']);
  t.regex(badGroup.stderr, /group "Web Servers" is not allowed/);
});

test.serial("a node's events reach the hub's streams and a plain audit.* subscriber there, naming the node", async (t) => {
  const live: Array<{ source: string; id: string }> = [];
  const anon = await hub.connect(null);
  const sub = anon.subscribe('audit.*', { callback: (_e, m) => void live.push(JSON.parse(sc.decode(m.data))) });
  await anon.flush();
  // the hub's interest reaches the node's leaf connection
  await sleep(300);
  const sent: string[] = [];
  for (let i = 0; i < 5; i++) sent.push((await nodes.n1.events.publish('audit.denial', { file: `/bin/x${i}` })).id);
  // an event of the events stream, by its own publisher
  const nodeinfo = new EventPublisher({ nc: await nodes.n1.nats.connectAs('nodeinfo'), service: 'nodeinfo', node: 'n1', log: silentLogger });
  const info = await nodeinfo.publish('node.info', { hostname: 'n1' });
  t.true(await nodes.n1.events.flush(10_000));
  t.true(await nodeinfo.flush(10_000));
  nodeinfo.close();

  const ids = await until('the audit events on the hub', async () => {
    const m = await hubIds('audit', 'n1');
    return sent.every((id) => m.has(id)) && m;
  });
  t.true(sent.every((id) => ids.get(id) === 1));
  const events = await until('the node.info event on the hub', async () => (await hubIds('events', 'n1')).has(info.id));
  t.true(events);
  await until('the live events', async () => sent.every((id) => live.some((e) => e.id === id)));
  t.true(live.filter((e) => sent.includes(e.id)).every((e) => e.source === 'sealkit/auditor/n1'));
  sub.unsubscribe();
});

test.serial("time from a node's start to its sources active on the hub", async (t) => {
  const n = await startNode('n3', ['web']);
  nodes.n3 = n;
  const first = await n.events.publish('audit.denial', { file: '/bin/first' });
  await until('the first event of n3 on the hub', async () => (await hubIds('audit', 'n3')).has(first.id));
  const ms = Date.now() - n.startedAt;
  measured['node start → its first event on the hub'] = `${ms} ms`;
  t.log(`node start → its first event in ${AUDIT}: ${ms} ms`);
  t.pass();
});

// A core publish the hub refuses comes back as an async permissions error;
// each refusal is also checked by its effect.
function refusals(nc: NatsConnection): string[] {
  const seen: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (/permission/i.test(String(s.data))) seen.push(String(s.data));
  })();
  return seen;
}

function subscribeRefused(nc: NatsConnection, subject: string): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), 3000);
    nc.subscribe(subject, {
      callback: (err) => {
        if (!err) return;
        clearTimeout(timer);
        resolve(/permission/i.test(err.message));
      },
    });
  });
}

test.serial("a node's leaf credentials, used as a client of the hub, allow only what its leaf needs", async (t) => {
  const n1 = nodes.n1.config;
  const leaf = await hub.connect({ user: n1.leafUser, pass: n1.leafPassword }, { inboxPrefix: fleetInboxPrefix('n1'), maxReconnectAttempts: 0 });
  const refused = refusals(leaf);

  // allowed: its group's key, read and watched through the hub's domain
  const kv = await fleetKvOnHub(leaf);
  t.is(sc.decode((await kv.get(groupKey('web')))!.value), 'policy of web');
  const w = await kv.watch({ key: groupKey('web') });
  for await (const e of w) {
    t.is(sc.decode(e.value), 'policy of web');
    break;
  }
  // another group's key: neither read nor watched
  await t.throwsAsync(kv.get(groupKey('db')));
  await t.throwsAsync(async () => {
    const other = await kv.watch({ key: groupKey('db') });
    for await (const e of other) return e;
  });
  // the bare consumer create and message get, whose filter is in the body
  await t.throwsAsync(leaf.request(`$JS.hub.API.STREAM.MSG.GET.KV_${fleetBucket}`, sc.encode(JSON.stringify({ last_by_subj: `$KV.${fleetBucket}.group.db` })), { timeout: 1500 }));

  // the fleet policy cannot be written, by the KV API or a raw publish
  await t.throwsAsync(kv.put(groupKey('web'), sc.encode('forged')));
  leaf.publish(`$KV.${fleetBucket}.group.web`, sc.encode('forged'));
  leaf.publish(`$KV.${nodesBucket}.n2`, sc.encode('forged'));
  // the hub maps its domain's $KV prefix to $KV.> for a leaf: refused too
  leaf.publish(`$JS.hub.API.$KV.${fleetBucket}.group.web`, sc.encode('forged'));
  await leaf.flush();
  await sleep(300);
  const fleetKv = await admin.jetstream().views.kv(fleetBucket);
  t.is(sc.decode((await fleetKv.get(groupKey('web')))!.value), 'policy of web');
  const registry = await admin.jetstream().views.kv(nodesBucket);
  t.is((JSON.parse(sc.decode((await registry.get('n2'))!.value)) as FleetNodeEntry).node, 'n2');

  // nothing reaches another node: its node-side subscriber sees a message the
  // hub's operator sends it under its inbox (the path works) and nothing of n1's
  const onN2 = await nodes.n2.nats.connectAs('admin');
  const got: string[] = [];
  onN2.subscribe('>', { callback: (_e, m) => void got.push(m.subject) });
  await onN2.flush();
  await sleep(300);
  leaf.publish('policy.push', sc.encode('serial: 99'));
  leaf.publish(`${fleetInboxPrefix('n2')}.x`, sc.encode('to n2'));
  leaf.publish('sealkit.ping', sc.encode('{}'));
  await leaf.flush();
  admin.publish(`${fleetInboxPrefix('n2')}.from-operator`, sc.encode('to n2'));
  await admin.flush();
  await until('the operator message on n2', async () => got.includes(`${fleetInboxPrefix('n2')}.from-operator`));
  t.false(got.some((s) => s === 'policy.push' || s === 'sealkit.ping' || s === `${fleetInboxPrefix('n2')}.x`), got.join(','));

  // other nodes' events: not to this user, not into n1's node
  t.true(await subscribeRefused(leaf, 'audit.*'));
  t.true(await subscribeRefused(leaf, 'fleet.src.n2.>'));
  t.true(await subscribeRefused(leaf, `${fleetInboxPrefix('n2')}.>`));
  const n2event = await nodes.n2.events.publish('audit.denial', { file: '/bin/n2-only' });
  await until('the n2 event on the hub', async () => (await hubIds('audit', 'n2')).has(n2event.id));
  const onN1 = await nodes.n1.nats.connectAs('admin');
  const n1ids = new Set<string>();
  await replayStream(onN1, streamNames.audit, 'audit.*', (d) => void n1ids.add((JSON.parse(sc.decode(d)) as { id: string }).id));
  t.false(n1ids.has(n2event.id));
  t.true(n1ids.size > 0);

  // deliveries into another node's source: refused; into its own: allowed
  const tap: string[] = [];
  admin.subscribe('fleet.src.>', { callback: (_e, m) => void tap.push(m.subject) });
  admin.subscribe('fleet.answer.>', { callback: (_e, m) => void tap.push(m.subject) });
  await admin.flush();
  // the tap's interest reaches the member the leaf user is on through the
  // cluster's routes, a moment after the flush: first see the path carry an
  // allowed delivery, then send the forged one followed by another allowed
  // one (one publisher's messages keep their order on the way)
  await until('the allowed delivery', async () => {
    leaf.publish(`fleet.src.n1.${streamNames.audit}.probe`, sc.encode('{}'));
    await leaf.flush();
    await sleep(50);
    return tap.includes(`fleet.src.n1.${streamNames.audit}.probe`);
  });
  leaf.publish(`fleet.src.n2.${streamNames.audit}.x`, sc.encode('{}'));
  // answers to a pusher asking a node directly: only under its own prefix
  leaf.publish(`${answerPrefix('n2')}.x`, sc.encode('{}'));
  leaf.publish(`${answerPrefix('n1')}.x`, sc.encode('{}'));
  leaf.publish(`fleet.src.n1.${streamNames.audit}.after`, sc.encode('{}'));
  leaf.publish('audit.denial', sc.encode('{"live":true}'));
  await leaf.flush();
  await until('the allowed delivery after the forged one', async () => tap.includes(`fleet.src.n1.${streamNames.audit}.after`));
  // (n2's own source deliveries pass here too, as they should: only the
  // subject n1 forged must never arrive)
  t.false(tap.includes(`fleet.src.n2.${streamNames.audit}.x`), tap.join('\n'));
  t.false(tap.includes(`${answerPrefix('n2')}.x`), tap.join('\n'));
  t.true(tap.includes(`${answerPrefix('n1')}.x`), tap.join('\n'));

  await until('the refusals reported to the client', async () => refused.length >= 6);
  t.true(refused.length >= 6, refused.join('\n'));
  await leaf.close();
  await onN1.close();
  await onN2.close();
});

test.serial('the anonymous hub client reads events but changes nothing', async (t) => {
  const anon = await hub.connect(null, { maxReconnectAttempts: 0 });
  const kv = await anon.jetstream().views.kv(fleetBucket, { bindOnly: true });
  await t.throwsAsync(kv.put(groupKey('web'), sc.encode('forged')));
  await t.throwsAsync(anon.jetstreamManager().then((m) => m.streams.delete(AUDIT)));
  t.is(sc.decode((await (await admin.jetstream().views.kv(fleetBucket)).get(groupKey('web')))!.value), 'policy of web');
  await anon.close();
});

test.serial('a node cut off from the hub mid-storm: after it is back the hub holds every event once', async (t) => {
  t.timeout(240_000);
  const n = nodes.n1;
  const total = 5000;
  // before the cut: asking for a manager asks the hub's JetStream
  const jsm = await admin.jetstreamManager();
  const ids: string[] = [];
  let cut = false;
  for (let i = 0; i < total; i++) {
    ids.push((await n.events.publish('audit.denial', { file: `/storm/${i}` })).id);
    if (i === 1000) {
      // a real cut: every hub member the node's leaf can reach stops
      await Promise.all(hub.members.map((m) => hub.stopMember(m)));
      cut = true;
    }
  }
  t.true(cut);
  t.true(await n.events.flush(60_000));
  const restarted = Date.now();
  await Promise.all(hub.members.map((m) => hub.startMember(m)));
  // catch-up counts from the hub's stream answering again (a restarted
  // cluster elects its leaders first)
  await until('the hub stream back', async () => jsm.streams.info(AUDIT).then(() => true, () => false), 60_000);
  const back = Date.now();
  measured['hub restart → its stream answers'] = `${back - restarted} ms`;
  const counts = await until(
    'every storm event on the hub',
    async () => {
      try {
        const m = await hubIds('audit', 'n1');
        return ids.every((id) => m.has(id)) && m;
      } catch {
        return false; // the hub's JetStream is electing its leaders
      }
    },
    120_000,
  );
  const ms = Date.now() - back;
  measured['storm catch-up (5000 events, hub stream back → all on the hub)'] = `${ms} ms`;
  t.log(`catch-up after the cut: ${ms} ms`);
  t.deepEqual(ids.filter((id) => counts.get(id) !== 1), []);
  t.is(new Set(ids).size, total);
});

test.serial("a replay of a hub stream is read on the stream's leader, not on a member that may still be catching up", async (t) => {
  const jsm = await admin.jetstreamManager();
  const leader = (await jsm.streams.info(AUDIT)).cluster?.leader;
  t.truthy(leader);
  const config = { ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.All, inactive_threshold: nanos(30_000) };
  // the server alone places each reader on any of the three members
  let elsewhere = 0;
  for (let i = 0; i < 12; i++) {
    const plain = await jsm.consumers.add(AUDIT, config);
    if (plain.cluster?.leader !== leader) elsewhere++;
    await jsm.consumers.delete(AUDIT, plain.name);
    const placed = await consumerOnLeader(jsm, AUDIT, config, Date.now() + 20_000);
    t.is(placed.cluster?.leader, leader);
    await jsm.consumers.delete(AUDIT, placed.name);
  }
  t.log(`readers placed by the server alone on another member than the leader: ${elsewhere} of 12`);
  const all = (await jsm.streams.info(AUDIT)).state.messages;
  t.is(await replayStream(admin, AUDIT, '>', () => {}, { onLeader: true }), all);
});

test.serial('one hub member killed: sourcing goes on', async (t) => {
  const jsm = await admin.jetstreamManager();
  const leader = (await until('a stream leader', async () => (await jsm.streams.info(AUDIT).catch(() => undefined))?.cluster?.leader))!;
  const pid = hub.pid(leader)!;
  measured['RSS hub member (after the storm)'] = `${rssKb(pid)} kB`;
  measured['RSS node nats-server (after the storm)'] = `${rssKb(nodes.n1.nats.pid())} kB`;
  process.kill(pid, 'SIGKILL');
  const sent: string[] = [];
  for (let i = 0; i < 200; i++) sent.push((await nodes.n2.events.publish('audit.denial', { file: `/after-kill/${i}` })).id);
  const counts = await until('the events after the kill', async () => {
    try {
      const m = await hubIds('audit', 'n2');
      return sent.every((id) => m.has(id)) && m;
    } catch {
      return false;
    }
  }, 60_000);
  t.deepEqual(sent.filter((id) => counts.get(id) !== 1), []);
  t.log(Object.entries(measured).map(([k, v]) => `${k}: ${v}`).join('\n'));
});
