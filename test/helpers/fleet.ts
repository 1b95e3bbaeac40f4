import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { generateCreds, serverConfig, writeCreds, type BusCreds } from '../../services/lib/natsconf.ts';
import { ensureStreams } from '../../services/lib/streams.ts';
import { streams } from '../../services/lib/subjects.ts';
import { fleetBucket, fleetConfigPath, hubStreams, nodesBucket, sourceDeliverPrefix, type FleetNodeConfig, type FleetNodeEntry } from '../../services/lib/fleet.ts';
import { writeFileAtomic } from '../../services/lib/atomic.ts';

// A hub cluster of real nats-servers and nodes joining it as leaf nodes,
// each with its own state dir. HAND-WRITTEN hub configuration until the hub
// helper's generator lands on this branch.

export interface Proc {
  start(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  running(): boolean;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function natsProc(confPath: string, port: number): Proc {
  let proc: ChildProcess | null = null;
  let stderr = '';
  return {
    async start() {
      const p = spawn('nats-server', ['-c', confPath], { stdio: ['ignore', 'ignore', 'pipe'] });
      proc = p;
      p.stderr!.on('data', (d) => ((stderr = (stderr + d).slice(-4000)), process.env.FLEET_DEBUG && process.stderr.write(d)));
      p.on('exit', (code, signal) => {
        if (!(p as { stopping?: boolean }).stopping) process.stderr.write(`nats-server ${confPath} exited ${code ?? signal}: ${stderr}\n`);
      });
      await waitForPort(port, p);
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const p = proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      (p as { stopping?: boolean }).stopping = true;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
    running: () => !!proc && proc.exitCode === null && proc.signalCode === null,
  };
}

async function waitForPort(port: number, p: ChildProcess): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (p.exitCode !== null) throw new Error(`nats-server exited with ${p.exitCode} before it listened on ${port}`);
    try {
      const nc = await connect({ servers: `nats://127.0.0.1:${port}`, timeout: 500, user: '_probe', pass: '_probe' }).catch((err: Error) => {
        if (/authorization/i.test(err.message)) return null; // listening
        throw err;
      });
      await nc?.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nats-server did not listen on ${port}`);
}

export interface Hub {
  dir: string;
  urls: string[]; // client URLs of the members
  members: Proc[];
  admin: BusCreds;
  credsFile: string; // the operator's admin creds, as the CLI reads them
  connect(): Promise<NatsConnection>;
  enroll(node: string, groups: string[]): Promise<{ config: FleetNodeConfig; entry: FleetNodeEntry }>;
  cleanup(): Promise<void>;
}

// Every node is enrolled up front: nats-server 2.9 does not reload leafnode
// users.
export async function startHub(size: number, enrol: Array<{ node: string; groups: string[] }>): Promise<Hub> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-hub-'));
  const ports = await Promise.all(Array.from({ length: size }, async () => ({ client: await freePort(), cluster: await freePort(), leaf: await freePort() })));
  const admin: BusCreds = { user: 'admin', password: 'admin-pw-' + Math.random().toString(36).slice(2) };
  const leafUsers = enrol.map(({ node }) => ({ user: `leaf-${node}`, password: `pw-${node}-${Math.random().toString(36).slice(2)}`, node }));
  const members: Proc[] = [];
  const confs: string[] = [];
  const writeConfs = async () => {
    for (let i = 0; i < size; i++) {
      const p = ports[i];
      const users = [`{ user: "${admin.user}", password: "${admin.password}" }`];
      // the lead's spike permissions: a node sends only its own sources,
      // live audit and hub API requests; the hub sends it only its own
      // domain's API and replies
      const leaves = leafUsers.map((u) => `{ user: "${u.user}", password: "${u.password}", permissions: {
        publish: { allow: ["fleet.src.${u.node}.>", "$JSC.R.>", "audit.*", "$JS.hub.API.>", "_INBOX.>", "$JS.FC.>", "$JS.ACK.>"] }
        subscribe: { allow: ["$JS.${u.node}.API.>", "_INBOX.>", "$JS.FC.>"] } } }`);
      const conf = `server_name: hub-${i}
host: 127.0.0.1
port: ${p.client}
jetstream { store_dir: "${join(dir, `js-${i}`)}", domain: hub }
cluster {
  name: hub
  host: 127.0.0.1
  port: ${p.cluster}
  routes: [${ports.filter((_, j) => j !== i).map((q) => `"nats-route://127.0.0.1:${q.cluster}"`).join(', ')}]
}
leafnodes {
  host: 127.0.0.1
  port: ${p.leaf}
  # a leaf keeps to the URLs it was given, so a test can cut its link
  no_advertise: true
}
authorization { users: [ ${[...users, ...leaves].join(',\n    ')} ] }
`;
      await writeFile(confs[i] ?? (confs[i] = join(dir, `hub-${i}.conf`)), conf);
    }
  };
  await writeConfs();
  for (let i = 0; i < size; i++) members.push(natsProc(confs[i], ports[i].client));
  await Promise.all(members.map((m) => m.start()));
  const urls = ports.map((p) => `nats://127.0.0.1:${p.client}`);
  const clients = new Set<NatsConnection>();
  const connectHub = async () => {
    const nc = await connect({ servers: urls, user: admin.user, pass: admin.password, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    clients.add(nc);
    void nc.closed().then(() => clients.delete(nc));
    return nc;
  };
  const credsFile = join(dir, 'creds', 'admin.json');
  await writeFileAtomic(credsFile, JSON.stringify(admin) + '\n', 0o600);

  // buckets and streams, replicated over the cluster (JetStream needs a
  // meta leader first: retry until one is elected)
  const nc = await connectHub();
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const js = nc.jetstream();
      await js.views.kv(fleetBucket, { replicas: size, history: 5 });
      await js.views.kv(nodesBucket, { replicas: size });
      const jsm = await nc.jetstreamManager();
      for (const name of Object.values(hubStreams)) await jsm.streams.add({ name, subjects: [], num_replicas: size });
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  const hub: Hub = {
    dir,
    urls,
    members,
    admin,
    credsFile,
    connect: connectHub,
    async enroll(node, groups) {
      const leaf = leafUsers.find((u) => u.node === node);
      if (!leaf) throw new Error(`${node} was not enrolled when the hub started`);
      const entry: FleetNodeEntry = { node, groups, eventKey: '', leafUser: leaf.user, enrolledAt: new Date().toISOString() };
      const kv = await nc.jetstream().views.kv(nodesBucket);
      await kv.put(node, Buffer.from(JSON.stringify(entry)));
      const jsm = await nc.jetstreamManager();
      for (const [which, name] of Object.entries(hubStreams) as Array<['audit' | 'events', string]>) {
        const stream = streams[which].name;
        const info = await jsm.streams.info(name);
        const sources = [...(info.config.sources ?? []), { name: stream, external: { api: `$JS.${node}.API`, deliver: sourceDeliverPrefix(node, stream) } }];
        await jsm.streams.update(name, { ...info.config, sources });
      }
      return { config: { node, groups, hub: ports.map((p) => `nats-leaf://127.0.0.1:${p.leaf}`), leafUser: leaf.user, leafPassword: leaf.password }, entry };
    },
    async cleanup() {
      await Promise.allSettled([...clients].map((c) => c.close()));
      await Promise.all(members.map((m) => m.stop()));
      await rm(dir, { recursive: true, force: true });
    },
  };
  return hub;
}

// A node: its own nats-server (its own JetStream domain, a leaf of the hub)
// and its state dir with the enrolment file.
export interface FleetNode {
  name: string;
  url: string;
  stateDir: string;
  creds: Record<string, BusCreds>;
  server: Proc;
  connectAs(user: string | null): Promise<NatsConnection>;
  cleanup(): Promise<void>;
}

export async function startNode(name: string, config: FleetNodeConfig): Promise<FleetNode> {
  const dir = await mkdtemp(join(tmpdir(), `sealkit-node-${name}-`));
  const stateDir = join(dir, 'state');
  const creds = generateCreds();
  await writeCreds(join(stateDir, 'bus', 'creds'), creds);
  await mkdir(stateDir, { recursive: true });
  await writeFileAtomic(fleetConfigPath(stateDir), JSON.stringify(config, null, 2) + '\n', 0o600);
  const port = await freePort();
  const base = serverConfig({ creds, storeDir: join(dir, 'js'), port, serverName: name });
  const remote = config.hub.map((u) => u.replace('nats-leaf://', `nats-leaf://${config.leafUser}:${config.leafPassword}@`));
  const conf = base.replace('jetstream {\n', `jetstream {\n  domain: ${JSON.stringify(name)}\n`) + `leafnodes {\n  reconnect: 1\n  remotes: [ { urls: [${remote.map((u) => JSON.stringify(u)).join(', ')}] } ]\n}\n`;
  const confPath = join(dir, 'nats.conf');
  await writeFile(confPath, conf);
  const server = natsProc(confPath, port);
  await server.start();
  const url = `nats://127.0.0.1:${port}`;
  const clients = new Set<NatsConnection>();
  const connectAs = async (user: string | null) => {
    const nc = await connect({ servers: url, ...(user ? { user: creds[user].user, pass: creds[user].password } : {}), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    clients.add(nc);
    void nc.closed().then(() => clients.delete(nc));
    return nc;
  };
  const admin = await connectAs('admin');
  await ensureStreams(admin);
  await admin.close();
  return {
    name,
    url,
    stateDir,
    creds,
    server,
    connectAs,
    async cleanup() {
      await Promise.allSettled([...clients].map((c) => c.close()));
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
