import test from 'ava';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringCodec, type NatsConnection } from 'nats';
import { startHub, hubStreamNames, type Hub } from './helpers/nats.ts';
import { startFleetNode, stopFleet, type FleetNode } from './helpers/fleet.ts';
import { sealkit } from './helpers/cli.ts';
import { policyYaml } from './helpers/policy.ts';
import { generateKey, type SecretKeyFile } from '../services/lib/sign.ts';
import { writeFileAtomic } from '../services/lib/atomic.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { silentLogger } from '../services/lib/log.ts';
import { clientUrls } from '../services/lib/hubstate.ts';
import { eventKeyPath, hubStreams } from '../services/lib/fleet.ts';
import { EventKey, readEventKey } from '../services/lib/eventsig.ts';
import { shardStream } from '../services/lib/hubshards.ts';
import { keptEvents, replayStream } from '../services/lib/streams.ts';

// A hub whose streams are split into shards of two nodes, five real nodes
// (three shards), and the fleet commands reading every shard.
const sc = StringCodec();
const names = ['n1', 'n2', 'n3', 'n4', 'n5'];
const shardOf: Record<string, number> = { n1: 0, n2: 0, n3: 1, n4: 1, n5: 2 };

let hub: Hub;
let admin: NatsConnection;
let work: string;
let key: SecretKeyFile;
const nodes: FleetNode[] = [];

let hubUrls: string[] = [];
const hubArgs = () => ['--server', hubUrls.join(','), '--creds', join(hub.dir, 'creds', 'admin.json')];

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// Every event of every audit shard: id → the shards it is in (one entry per copy).
async function auditCopies(nc: NatsConnection): Promise<Map<string, string[]>> {
  const copies = new Map<string, string[]>();
  for (const stream of (await hubStreamNames(nc)).filter((s) => s.startsWith(hubStreams.audit))) {
    await replayStream(nc, stream, '>', (data) => {
      const id = (JSON.parse(sc.decode(data)) as { id: string }).id;
      copies.set(id, [...(copies.get(id) ?? []), stream]);
    });
  }
  return copies;
}

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'sealkit-shards-'));
  key = generateKey('fleet-admin');
  await writeFileAtomic(join(work, 'admin.key'), JSON.stringify(key) + '\n', 0o600);
  hub = await startHub({ members: 3, shardSize: 2 });
  hubUrls = clientUrls((await hub.state()).members);
  admin = await hub.connectAdmin();
  for (const n of names) nodes.push(await startFleetNode(hub, n, ['web'], key));
});

test.after.always(() => stopFleet(nodes, hub, work));

test.serial('enrolment fills shards of the configured size, in order, each sourcing only its own nodes', async (t) => {
  const state = await hub.state();
  t.is(state.shardSize, 2);
  t.deepEqual(Object.fromEntries(Object.entries(state.nodes).map(([n, e]) => [n, e.shard])), shardOf);
  t.deepEqual(await hubStreamNames(admin), ['FLEET_AUDIT_0', 'FLEET_AUDIT_1', 'FLEET_AUDIT_2', 'FLEET_EVENTS_0', 'FLEET_EVENTS_1', 'FLEET_EVENTS_2']);
  const jsm = await admin.jetstreamManager();
  for (const kind of ['audit', 'events'] as const) {
    for (const k of [0, 1, 2]) {
      const info = await jsm.streams.info(shardStream(kind, k));
      const sourced = (info.config.sources ?? []).map((s) => /^\$JS\.(.+)\.API$/.exec(s.external?.api ?? '')?.[1]);
      t.deepEqual(sourced, names.filter((n) => shardOf[n] === k), `${info.config.name}`);
    }
  }
});

test.serial("every node's events arrive exactly once across the shards, in its own shard, and live to a plain audit.* subscriber", async (t) => {
  const anon = await hub.connect(null);
  const live = new Set<string>();
  anon.subscribe('audit.*', { callback: (_e, m) => void live.add((JSON.parse(sc.decode(m.data)) as { id: string }).id) });
  await anon.flush();
  await new Promise((r) => setTimeout(r, 300)); // the interest reaches the leaves
  const sent = new Map<string, string>(); // id → node
  for (const n of nodes) {
    // signed with the node's enrolled key, as its auditor does
    const key = new EventKey(await readEventKey(eventKeyPath(n.nats.stateDir)));
    const events = new EventPublisher({ nc: await n.nats.connectAs('auditor'), service: 'auditor', node: n.name, log: silentLogger, key });
    await events.init();
    for (let i = 0; i < 20; i++) sent.set((await events.publish('audit.denial', { file: `/bin/${n.name}-${i}` })).id, n.name);
    t.true(await events.flush(10_000));
    events.close();
  }
  const copies = await until('every event in the hub shards', async () => {
    const c = await auditCopies(admin);
    return [...sent.keys()].every((id) => c.has(id)) && c;
  });
  await new Promise((r) => setTimeout(r, 1000)); // a second copy would be there by now
  const again = await auditCopies(admin);
  for (const [id, node] of sent) t.deepEqual(again.get(id), [shardStream('audit', shardOf[node])], `${node} ${id}`);
  t.is(copies.size, again.size);
  await until('every event live', async () => [...sent.keys()].every((id) => live.has(id)));
  // the anonymous monitor reads a shard too
  t.true((await replayStream(anon, shardStream('audit', 2), '>', () => {})) >= 20);
  await anon.close();
});

test.serial('fleet push gets every answer across the shards; fleet status and fleet verify read every shard', async (t) => {
  const file = join(work, 'policy.yaml');
  await writeFile(file, policyYaml({ serial: 1, ima: { mode: 'log' } }));
  const r = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', join(work, 'admin.key'), ...hubArgs()]);
  t.is(r.code, 0, r.stderr);
  for (const n of names) t.regex(r.stdout, new RegExp(`^${n}\\s+applied\\s+serial 1$`, 'm'));
  // status takes each node's serial only from the hub's streams
  const status = await until('every node serial 1 in fleet status', async () => {
    const s = await sealkit(['fleet', 'status', '--wait', '1', ...hubArgs()]);
    return names.every((n) => new RegExp(`^${n} .*serial 1 `, 'm').test(s.stdout)) && s;
  });
  t.is(status.code, 0);
  const verify = await sealkit(['fleet', 'verify', ...hubArgs()]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  for (const n of names) t.regex(verify.stdout, new RegExp(`^sealkit/auditor/${n}: .*20 events`, 'm'));
  t.regex(verify.stdout, /no problems/);
});

test.serial('a hub holding the unsharded streams of an older sealkit: enrolment refuses, naming them and the way on; a node enrolled again keeps its shard', async (t) => {
  const jsm = await admin.jetstreamManager();
  await jsm.streams.add({ name: hubStreams.audit, subjects: [], sources: [], ...keptEvents({ maxBytes: 1 << 20, maxAgeMs: 3600_000, replicas: 3 }) });
  const refused = await hub.enroll('n6', ['web']);
  t.not(refused.code, 0);
  t.regex(refused.stderr, /unsharded streams of an older sealkit: FLEET_AUDIT \(0 events, 0 sources\).*nats stream rm FLEET_AUDIT.*SEALKIT_CONFIG/s);
  t.false('n6' in (await hub.state()).nodes);
  await jsm.streams.delete(hubStreams.audit);
  const enrolled = await hub.enroll('n6', ['web']);
  t.is(enrolled.code, 0, enrolled.stderr);
  t.is((await hub.state()).nodes.n6.shard, 2);
  // enrolled again (last: n3's running node keeps its old key), a node keeps its shard
  const again = await sealkit(['fleet', 'enroll', 'n3', '--groups', 'web', '--dir', hub.dir, '--force', '--out', join(work, 'n3-again')]);
  t.is(again.code, 0, again.stderr);
  t.is((await hub.state()).nodes.n3.shard, 1);
});
