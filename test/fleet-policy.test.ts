import test from 'ava';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { startHub, startNode, freePort, type FleetNode, type Hub } from './helpers/fleet.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { policyYaml, pushPolicy } from './helpers/policy.ts';
import { sealkit, spawnSealkit } from './helpers/cli.ts';
import { generateKey, type SecretKeyFile } from '../services/lib/sign.ts';
import { request } from '../services/lib/bus.ts';
import { writeFileAtomic } from '../services/lib/atomic.ts';
import { nodesBucket } from '../services/lib/fleet.ts';
import { connect } from 'nats';

// The fleet's desired state, end to end on real servers: a hub cluster of
// three, nodes that are each a nats-server leaf of it with the real policy
// service, and `sealkit fleet push` as the operator runs it.

let hub: Hub;
let key: SecretKeyFile;
let work: string;
const nodes: Array<{ node: FleetNode; policy: RunningService; link?: LeafLink }> = [];

// A TCP hop between a node's leaf connection and the hub members: cutting it
// is a real network cut; the node's own server and its clients stay up.
interface LeafLink {
  cut(): Promise<void>;
  restore(): Promise<void>;
  urls: string[];
}

async function leafLink(targets: string[]): Promise<LeafLink> {
  const hops = await Promise.all(targets.map(async (t) => ({ target: new URL(t.replace('nats-leaf:', 'http:')), port: await freePort(), server: null as Server | null, sockets: new Set<Socket>() })));
  const listen = async () => {
    await Promise.all(hops.map((h) => new Promise<void>((resolve) => {
      h.server = createServer((inbound) => {
        const out = tcpConnect(Number(h.target.port), h.target.hostname);
        h.sockets.add(inbound).add(out);
        inbound.pipe(out).pipe(inbound);
        const drop = () => (inbound.destroy(), out.destroy(), h.sockets.delete(inbound), h.sockets.delete(out));
        inbound.on('error', drop).on('close', drop);
        out.on('error', drop).on('close', drop);
      });
      h.server.listen(h.port, '127.0.0.1', () => resolve());
    })));
  };
  await listen();
  return {
    urls: hops.map((h) => `nats-leaf://127.0.0.1:${h.port}`),
    async cut() {
      await Promise.all(hops.map((h) => new Promise<void>((resolve) => {
        for (const s of h.sockets) s.destroy();
        h.server!.close(() => resolve());
      })));
    },
    restore: listen,
  };
}

async function addNode(name: string, groups: string[], opts: { link?: boolean } = {}) {
  const { config } = await hub.enroll(name, groups);
  const link = opts.link ? await leafLink(config.hub) : undefined;
  const node = await startNode(name, link ? { ...config, hub: link.urls } : config);
  const trustPath = join(node.stateDir, 'trust.yaml');
  await writeFile(trustPath, YAML.stringify({ keys: [{ id: key.id, ed25519: key.ed25519 }] }));
  const policy = await startService('policy', { SEALKIT_STATE: node.stateDir, SEALKIT_NATS_URL: node.url, SEALKIT_TRUST: trustPath, SEALKIT_NODE: name });
  await policy.waitForLog((r) => r.msg === 'following the fleet policy on the hub');
  nodes.push({ node, policy, link });
  return nodes[nodes.length - 1];
}

let serial = 0;
async function policyFile(at?: number): Promise<string> {
  const s = at ?? ++serial;
  serial = Math.max(serial, s);
  const file = join(work, `policy-${s}.yaml`);
  await writeFile(file, policyYaml({ serial: s, ima: { mode: 'log' } }));
  return file;
}

const hubArgs = () => ['--server', hub.urls.join(','), '--creds', hub.credsFile];
const keyFile = () => join(work, 'admin.key');

function lines(stdout: string): Record<string, string> {
  return Object.fromEntries(stdout.trim().split('\n').map((l) => {
    const [node, ...rest] = l.trim().split(/\s+/);
    return [node, rest.join(' ')];
  }));
}

async function servedSerial(n: FleetNode): Promise<number> {
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
  hub = await startHub(3, [{ node: 'node-a', groups: ['web'] }, { node: 'node-b', groups: ['web', 'db'] }, { node: 'node-c', groups: ['web'] }]);
  await addNode('node-a', ['web']);
  await addNode('node-b', ['web', 'db']);
  await addNode('node-c', ['web'], { link: true });
});

test.after.always(async () => {
  for (const n of nodes) {
    await n.policy.stop();
    await n.node.cleanup();
    await n.link?.cut();
  }
  await hub?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

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
    for (const n of nodes) t.is(await servedSerial(n.node), serial);
  }
  times.sort((a, b) => a - b);
  t.log(`fleet push → all acks (3 nodes, CLI process included): p50 ${times[2]} ms, max ${times[4]} ms`);
});

test.serial('a node whose own serial is higher refuses as a rollback, and the push exits non-zero naming it', async (t) => {
  const b = nodes[1].node;
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

test.serial('a node cut off during a push is reported as no answer, and applies it within seconds of coming back', async (t) => {
  const c = nodes[2];
  await c.link!.cut();
  const file = await policyFile();
  const r = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), '--timeout', '4', ...hubArgs()]);
  t.is(r.code, 1);
  const l = lines(r.stdout);
  t.is(l['node-c'], 'no answer');
  t.is(l['node-a'], `applied serial ${serial}`);
  t.is(l['node-b'], `applied serial ${serial}`);
  t.not(await servedSerial(c.node), serial);
  await c.link!.restore();
  const ms = await until(async () => (await servedSerial(c.node)) === serial, 20_000, 'node-c applies the push it missed');
  t.log(`catch-up after the leaf came back: ${ms} ms`);
  t.true(ms < 5000, `node-c caught up in ${ms} ms`);
});

test.serial('a hub member killed mid-push: the push still completes', async (t) => {
  const file = await policyFile();
  const push = spawnSealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), ...hubArgs()]);
  await until(async () => /waiting for 3 node/.test(push.stderr()), 20_000, 'the push is written');
  await hub.members[0].stop('SIGKILL');
  const code = await new Promise<number | null>((r) => (push.proc.exitCode !== null ? r(push.proc.exitCode) : push.proc.once('exit', (c) => r(c))));
  t.is(code, 0, push.stdout() + push.stderr());
  t.deepEqual(lines(push.stdout()), { 'node-a': `applied serial ${serial}`, 'node-b': `applied serial ${serial}`, 'node-c': `applied serial ${serial}` });
  await hub.members[0].start();
  // back in the cluster: its JetStream answers again (the next test connects anywhere)
  await until(async () => {
    const nc = await connect({ servers: hub.urls[0], user: hub.admin.user, pass: hub.admin.password, timeout: 1000 });
    try {
      return (await (await nc.jetstream().views.kv(nodesBucket, { bindOnly: true })).status()).values >= 3;
    } finally {
      await nc.close();
    }
  }, 30_000, 'the restarted hub member serves JetStream');
});

test.serial('bad input: an unsigned file, an unknown group and no hub each get an error naming them', async (t) => {
  const file = await policyFile();
  const unsigned = await sealkit(['fleet', 'push', file, '--group', 'web', ...hubArgs()]);
  t.not(unsigned.code, 0);
  t.true(unsigned.stderr.includes('SEALKIT_SIGNATURE_MISSING') && unsigned.stderr.includes(`${file}.sig`), unsigned.stderr);

  const unknown = await sealkit(['fleet', 'push', file, '--group', 'nosuch', '--key', keyFile(), ...hubArgs()]);
  t.not(unknown.code, 0);
  t.true(unknown.stderr.includes('SEALKIT_BAD_REQUEST') && unknown.stderr.includes('"nosuch"'), unknown.stderr);

  const dead = `nats://127.0.0.1:${await freePort()}`;
  const nohub = await sealkit(['fleet', 'push', file, '--group', 'web', '--key', keyFile(), '--server', dead, '--creds', hub.credsFile]);
  t.not(nohub.code, 0);
  t.true(nohub.stderr.includes('SEALKIT_UNAVAILABLE') && nohub.stderr.includes(dead), nohub.stderr);
});
