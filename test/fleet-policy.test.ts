import { makeEvent } from '../services/lib/envelope.ts';
import test from 'ava';
import { writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHub, freePorts, type Hub, type NatsServer } from './helpers/nats.ts';
import { startFleetNode, stopFleet, type FleetNode } from './helpers/fleet.ts';
import { clientUrls } from '../services/lib/hubstate.ts';
import { policyYaml, pushPolicy } from './helpers/policy.ts';
import { sealkit, spawnSealkit } from './helpers/cli.ts';
import { generateKey, type SecretKeyFile } from '../services/lib/sign.ts';
import { request } from '../services/lib/bus.ts';
import { streamNames } from '../services/lib/contract.ts';
import type { JetStreamManager } from 'nats';
import { writeFileAtomic } from '../services/lib/atomic.ts';
import { shardStream } from '../services/lib/hubshards.ts';

// the one shard of the hub's events stream these few nodes are in
const EVENTS = shardStream('events', 0);

// The fleet's desired state, end to end on real servers: a hub cluster of
// three, nodes that are each a nats-server leaf of it with the real policy
// service, and `sealkit fleet push` as the operator runs it.

let hub: Hub;
let key: SecretKeyFile;
let work: string;
let hubUrls: string[];
const nodes: FleetNode[] = [];

async function addNode(name: string, groups: string[]) {
  nodes.push(await startFleetNode(hub, name, groups, key));
}

let serial = 0;
async function policyFile(at?: number): Promise<string> {
  const s = at ?? ++serial;
  serial = Math.max(serial, s);
  const file = join(work, `policy-${s}.yaml`);
  await writeFile(file, policyYaml({ serial: s, ima: { mode: 'log' } }));
  return file;
}

const hubArgs = () => ['--server', hubUrls.join(','), '--creds', join(hub.dir, 'creds', 'admin.json')];
const keyFile = () => join(work, 'admin.key');

function lines(stdout: string): Record<string, string> {
  return Object.fromEntries(stdout.trim().split('\n').map((l) => {
    const [node, ...rest] = l.trim().split(/\s+/);
    return [node, rest.join(' ')];
  }));
}

async function servedSerial(n: NatsServer): Promise<number> {
  const nc = await n.connectAs(null);
  try {
    return (await request<{ serial: number }>(nc, 'policy.get', {})).serial;
  } catch (err) {
    if ((err as { code?: string }).code === 'SEALKIT_POLICY_NONE') return 0;
    throw err;
  } finally {
    await nc.close();
  }
}

async function until(pred: () => Promise<boolean>, ms: number, what: string): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await pred().catch(() => false)) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'sealkit-fleetpol-'));
  key = generateKey('fleet-admin');
  await writeFileAtomic(keyFile(), JSON.stringify(key) + '\n', 0o600);
  hub = await startHub({ members: 3 });
  hubUrls = clientUrls((await hub.state()).members);
  await addNode('node-a', ['web']);
  await addNode('node-b', ['web', 'db']);
  await addNode('node-c', ['web']);
});

test.after.always(() => stopFleet(nodes, hub, work));

test.serial('a fleet push is applied by every node of the group, each answer read from the hub', async (t) => {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const file = await policyFile();
    const t0 = Date.now();
    const r = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), ...hubArgs()]);
    times.push(Date.now() - t0);
    t.is(r.code, 0, r.stderr);
    t.deepEqual(lines(r.stdout), { 'node-a': `applied serial ${serial}`, 'node-b': `applied serial ${serial}`, 'node-c': `applied serial ${serial}` });
    t.regex(r.stderr, /3\/3 answered \(3 applied, 0 refused\)/);
    for (const n of nodes) t.is(await servedSerial(n.nats), serial);
  }
  times.sort((a, b) => a - b);
  t.log(`fleet push → all acks (3 nodes, CLI process included): p50 ${times[2]} ms, max ${times[4]} ms`);
});

test.serial('the same push again, once the hub no longer holds the answers: each node answers from its own stream', async (t) => {
  const admin = await hub.connectAdmin();
  const jsm = await admin.jetstreamManager();
  const count = async (m: JetStreamManager, stream: string) => (await m.streams.info(stream, { subjects_filter: 'policy.applied' })).state.subjects?.['policy.applied'] ?? 0;
  const onNodes = async () => {
    let sum = 0;
    for (const n of nodes) {
      const nc = await n.nats.connectAs('admin');
      sum += await count(await nc.jetstreamManager(), streamNames.events);
      await nc.close();
    }
    return sum;
  };
  const file = await policyFile();
  const first = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), ...hubArgs()]);
  t.is(first.code, 0, first.stderr);
  // the hub's copy of every answer the nodes hold (the push may have counted them live)
  const all = await onNodes();
  await until(async () => (await count(jsm, EVENTS)) === all, 20_000, "the nodes' answers reach the hub's stream");
  // as after a hub whose sourcing of the nodes stalled, or a push repeated
  // long after the first: the hub's copy of the answers is gone, and the
  // nodes, which decide a value once, publish nothing new
  await jsm.streams.purge(EVENTS, { filter: 'policy.applied' });
  await admin.close();
  const again = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), ...hubArgs()]);
  t.is(again.code, 0, again.stdout + again.stderr);
  t.deepEqual(lines(again.stdout), { 'node-a': `applied serial ${serial}`, 'node-b': `applied serial ${serial}`, 'node-c': `applied serial ${serial}` });
});

test.serial('a node whose own serial is higher refuses as a rollback, and the push exits non-zero naming it', async (t) => {
  const b = nodes[1].nats;
  const nc = await b.connectAs('admin');
  const ahead = serial + 10;
  await pushPolicy(nc, policyYaml({ serial: ahead, ima: { mode: 'log' } }), key);
  await nc.close();
  const file = await policyFile(serial + 1);
  const r = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), ...hubArgs()]);
  t.is(r.code, 1, r.stdout + r.stderr);
  const l = lines(r.stdout);
  t.is(l['node-a'], `applied serial ${serial}`);
  t.is(l['node-c'], `applied serial ${serial}`);
  t.regex(l['node-b'], /^refused SEALKIT_POLICY_ROLLBACK .*serial \d+ is not above the serial in force \(\d+\)/);
  t.is(await servedSerial(b), ahead);
  serial = ahead;
});

test.serial('a node away during a push is reported as no answer, and applies it within seconds of coming back', async (t) => {
  const c = nodes[2];
  await c.nats.stop();
  const file = await policyFile();
  const r = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), '--timeout', '4', ...hubArgs()]);
  t.is(r.code, 1);
  const l = lines(r.stdout);
  t.is(l['node-c'], 'no answer');
  t.is(l['node-a'], `applied serial ${serial}`);
  t.is(l['node-b'], `applied serial ${serial}`);
  await c.nats.restart();
  const ms = await until(async () => (await servedSerial(c.nats)) === serial, 20_000, 'node-c applies the push it missed');
  t.log(`catch-up after node-c's nats-server came back: ${ms} ms`);
  t.true(ms < 5000, `node-c caught up in ${ms} ms`);
});

test.serial('a hub member killed mid-push: the push still completes', async (t) => {
  const file = await policyFile();
  const push = spawnSealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), ...hubArgs()]);
  await until(async () => /waiting for 3 node/.test(push.stderr()), 20_000, 'the push is written');
  t.teardown(async () => {
    if (!hub.running(hub.members[0])) await hub.startMember(hub.members[0]);
  });
  process.kill(hub.pid(hub.members[0])!, 'SIGKILL');
  const code = await new Promise<number | null>((r) => (push.proc.exitCode !== null ? r(push.proc.exitCode) : push.proc.once('exit', (c) => r(c))));
  if (code !== 0) {
    for (const n of nodes) t.log(n.name, await servedSerial(n.nats), JSON.stringify(n.policy.logs().filter((r) => r.concern === 'fleet').slice(-3).map((r) => [r.msg, (r.err as { message?: string })?.message])));
  }
  t.is(code, 0, push.stdout() + push.stderr());
  t.deepEqual(lines(push.stdout()), { 'node-a': `applied serial ${serial}`, 'node-b': `applied serial ${serial}`, 'node-c': `applied serial ${serial}` });
  await hub.startMember(hub.members[0]);
  // the next tests read the hub's streams: its members are whole again first
  t.log(`the hub settled ${await hub.settled()} ms after the member came back`);
});

test.serial('a hub without a quorum: a push waits within its timeout until the members are back, then completes', async (t) => {
  const [, m1, m2] = hub.members;
  t.teardown(async () => {
    for (const m of [m1, m2]) if (!hub.running(m)) await hub.startMember(m);
  });
  await hub.stopMember(m1);
  await hub.stopMember(m2);
  const file = await policyFile();
  const push = spawnSealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), '--timeout', '60', ...hubArgs()]);
  t.teardown(() => void push.interrupt());
  // one member of three cannot elect a leader: the push says why it waits
  await until(async () => /the hub is not answering yet/.test(push.stderr()), 30_000, 'the push waits for the hub');
  t.is(push.proc.exitCode, null, push.stderr());
  await hub.startMember(m1);
  await hub.startMember(m2);
  const code = await new Promise<number | null>((r) => (push.proc.exitCode !== null ? r(push.proc.exitCode) : push.proc.once('exit', (c) => r(c))));
  t.is(code, 0, push.stdout() + push.stderr());
  t.deepEqual(lines(push.stdout()), { 'node-a': `applied serial ${serial}`, 'node-b': `applied serial ${serial}`, 'node-c': `applied serial ${serial}` });
  for (const n of nodes) t.is(await servedSerial(n.nats), serial);
  t.log(`the hub settled ${await hub.settled()} ms after the push`);
});

test.serial('fleet watch prints every node\'s live events naming the node, and fleet status shows each node\'s serial from the hub', async (t) => {
  const watch = spawnSealkit(['fleet', 'watch', 'policy.applied', '--json', ...hubArgs()]);
  t.teardown(() => void watch.interrupt());
  await until(async () => /watching policy.applied on the hub/.test(watch.stderr()), 20_000, 'the watch is in place');
  const file = await policyFile();
  const r = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), ...hubArgs()]);
  t.is(r.code, 0, r.stdout + r.stderr);
  await watch.waitFor((out) => ['node-a', 'node-b', 'node-c'].every((n) => out.includes(`sealkit/policy/${n}`)));
  const seen = watch.stdout().trim().split('\n').map((l) => JSON.parse(l) as { source: string; data: { serial: number; group?: string } });
  t.true(seen.every((e) => e.data.serial === serial && e.data.group === 'web'));
  // the real acks are signed by their nodes' enrolled keys: nothing flagged
  t.false(/^(forged|altered|reordered|duplicate|forked) /m.test(watch.stderr()), watch.stderr());
  // an event naming node-a that node-a's key did not sign
  const admin = await hub.connectAdmin();
  admin.publish('policy.applied', Buffer.from(JSON.stringify(makeEvent('policy', 'policy.applied', { serial: serial + 1, sha256: 'ab'.repeat(32), keyId: 'admin', changes: {} }, { node: 'node-a' }))));
  await admin.flush();
  await watch.waitFor(() => /^forged +sealkit\/policy\/node-a /m.test(watch.stderr()));
  await admin.close();
  await watch.interrupt();

  const status = await sealkit(['fleet', 'status', '--wait', '1', ...hubArgs()]);
  t.is(status.code, 0, status.stderr);
  for (const n of ['node-a', 'node-b', 'node-c']) t.regex(status.stdout, new RegExp(`^${n}  heartbeat none  serial ${serial} `, 'm'));
});

test.serial('bad input: an unsigned file, an unknown group and no hub each get an error naming them', async (t) => {
  const file = await policyFile();
  const unsigned = await sealkit(['fleet', 'push', file, '--group', 'web', ...hubArgs()]);
  t.not(unsigned.code, 0);
  t.true(unsigned.stderr.includes('SEALKIT_SIGNATURE_MISSING') && unsigned.stderr.includes(`${file}.sig`), unsigned.stderr);

  const unknown = await sealkit(['fleet', 'push', file, '--group', 'nosuch', '--key', keyFile(), ...hubArgs()]);
  t.not(unknown.code, 0);
  t.true(unknown.stderr.includes('SEALKIT_BAD_REQUEST') && unknown.stderr.includes('"nosuch"'), unknown.stderr);

  const dead = `nats://127.0.0.1:${await freePorts(1)}`;
  const nohub = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), '--server', dead, '--creds', join(hub.dir, 'creds', 'admin.json')]);
  t.not(nohub.code, 0);
  t.true(nohub.stderr.includes('SEALKIT_UNAVAILABLE') && nohub.stderr.includes(dead), nohub.stderr);
});
