import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { connect, type ConnectionOptions, type NatsConnection } from 'nats';
import { generateCreds, serverConfig, writeCreds, type BusCreds } from '../../services/lib/natsconf.ts';
import { ensureStreams } from '../../services/lib/streams.ts';
import type { FleetNodeConfig } from '../../services/lib/fleet.ts';
import { hubReplicas, type HubState } from '../../services/lib/hubconf.ts';
import { ensureHubStreams } from '../../services/lib/hubstreams.ts';
import { fleetBucket, nodesBucket } from '../../services/lib/fleet.ts';
import { hubShardNames } from '../../services/lib/hubshards.ts';
import { leafServerOptions } from '../../services/lib/leafconf.ts';
import { memberConfigPath, readHubState } from '../../services/lib/hubstate.ts';
import { sealkit } from './cli.ts';

// A real nats-server per test file, as nats.js's own suite does: random port
// reported through a ports file, JetStream in a temp dir, stopped by PID.
export interface NatsServer {
  url: string;
  port: number;
  dir: string; // temp root: state dir for services lives under it
  stateDir: string;
  credsDir: string;
  creds: Record<string, BusCreds>;
  pid(): number;
  connectAs(user: string | null, name?: string): Promise<NatsConnection>;
  stop(): Promise<void>;
  restart(): Promise<void>; // same port, same store: a bus outage
  cleanup(): Promise<void>;
}

// fleet: a node enrolled in a hub, its nats-server joining it as a leaf
export async function startNats(opts: { streams?: boolean; fleet?: FleetNodeConfig } = {}): Promise<NatsServer> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-nats-'));
  const stateDir = join(dir, 'state');
  const credsDir = join(stateDir, 'bus', 'creds');
  const creds = generateCreds();
  await writeCreds(credsDir, creds);
  const portsDir = join(dir, 'ports');
  await mkdir(portsDir, { recursive: true });
  const confPath = join(dir, 'nats.conf');
  const leaf = opts.fleet ? leafServerOptions(opts.fleet) : {};
  await writeFile(confPath, serverConfig({ creds, storeDir: join(dir, 'js'), port: -1, portsFileDir: portsDir, ...leaf }));

  let proc = await launch(confPath);
  // a server that never reported its port is stopped here: left running, it
  // would keep the test worker from exiting
  const port = await readPort(portsDir, proc).catch(async (err: Error) => {
    await kill(proc);
    throw err;
  });
  // from now on the port is fixed, so a restart comes back where clients look
  await writeFile(confPath, serverConfig({ creds, storeDir: join(dir, 'js'), port, ...leaf }));
  const url = `nats://127.0.0.1:${port}`;

  // Clients reconnect forever (tests restart the server under them), so
  // cleanup() closes every one it handed out: a client left open would keep
  // retrying after the server is gone and keep the test worker alive.
  const clients = new Set<NatsConnection>();
  const connectAs = async (user: string | null, name = `test-${user ?? 'anonymous'}`) => {
    const nc = await connect({
      servers: url,
      name,
      ...(user ? { user: creds[user].user, pass: creds[user].password } : {}),
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
    });
    clients.add(nc);
    void nc.closed().then(() => clients.delete(nc));
    return nc;
  };

  if (opts.streams !== false) {
    const admin = await connectAs('admin');
    await ensureStreams(admin);
    await admin.close();
  }

  const server: NatsServer = {
    url,
    port,
    dir,
    stateDir,
    credsDir,
    creds,
    pid: () => proc.pid!,
    connectAs,
    async stop() {
      await kill(proc);
    },
    async restart() {
      await kill(proc);
      proc = await launch(confPath);
      await waitForPort(port);
    },
    async cleanup() {
      await Promise.allSettled([...clients].map((nc) => nc.close()));
      await kill(proc);
      await rm(dir, { recursive: true, force: true });
    },
  };
  return server;
}

// DEBUG_NATS_LOGS=DIR keeps each server's whole log there (one file per
// start), for a failure that the last 4000 characters do not explain.
export async function launch(confPath: string): Promise<ChildProcess> {
  const proc = spawn('nats-server', ['-c', confPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const keep = process.env.DEBUG_NATS_LOGS;
  const log = keep ? createWriteStream(join(keep, `${basename(dirname(confPath))}-${basename(confPath)}-${proc.pid}.log`)) : undefined;
  proc.stderr!.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
    log?.write(d);
  });
  proc.once('exit', () => log?.end());
  proc.on('exit', (code, signal) => {
    // nats-server exits 1 on SIGTERM; only an exit nobody asked for is news
    if (!(proc as { stopping?: boolean }).stopping) process.stderr.write(`nats-server exited ${code ?? signal}: ${stderr}\n`);
  });
  return proc;
}

export async function readPort(portsDir: string, proc: ChildProcess): Promise<number> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`nats-server exited with ${proc.exitCode} before it listened`);
    const files = (await readdir(portsDir)).filter((f) => f.endsWith('.ports'));
    if (files.length) {
      // nats-server writes the file in place: it can be there, empty or cut
      // short, before the server has finished writing it (seen in CI)
      try {
        const ports = JSON.parse(await readFile(join(portsDir, files[0]), 'utf8')) as { nats: string[] };
        return Number(new URL(ports.nats[0]).port);
      } catch {
        // read it again in a moment
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('nats-server did not report its port within 10 s');
}

export async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      const nc = await connect({ servers: `nats://127.0.0.1:${port}`, timeout: 500 });
      await nc.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nats-server did not come back on ${port}`);
}

export async function kill(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  (proc as { stopping?: boolean }).stopping = true;
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

// n consecutive ports free on loopback (hub members on one host take
// consecutive ports from the base ones).
export async function freePorts(n: number): Promise<number> {
  const free = (p: number) =>
    new Promise<boolean>((done) => {
      const srv = createServer();
      srv.once('error', () => done(false));
      srv.listen(p, '127.0.0.1', () => srv.close(() => done(true)));
    });
  for (;;) {
    const base = 20_000 + Math.floor(Math.random() * 30_000);
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await free(base + i);
    if (ok) return base;
  }
}

// A real hub: `sealkit hub config` writes it in a temp dir on free loopback
// ports, each member its own nats-server, clustered, the fleet's streams set
// up; nodes are enrolled with `sealkit fleet enroll`.
export interface Hub {
  dir: string;
  state(): Promise<HubState>;
  members: string[];
  pid(member: string): number | undefined;
  running(member: string): boolean;
  stopMember(member: string): Promise<void>;
  startMember(member: string): Promise<void>;
  // after members were stopped or killed: every hub stream has a leader with
  // every replica current, and every node source is active again; the time taken
  settled(timeoutMs?: number): Promise<number>;
  connect(auth: { user: string; pass: string } | null, opts?: Partial<ConnectionOptions>): Promise<NatsConnection>;
  connectAdmin(): Promise<NatsConnection>;
  enroll(node: string, groups: string[], extra?: string[]): Promise<{ code: number; stdout: string; stderr: string; config?: FleetNodeConfig }>;
  cleanup(): Promise<void>;
}

export async function startHub(o: { members: number; shardSize?: number }): Promise<Hub> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-hub-'));
  const [port, clusterPort, leafPort] = [await freePorts(o.members), await freePorts(o.members), await freePorts(o.members)];
  const made = await sealkit(['hub', 'config', '--dir', dir, '--members', String(o.members), '--port', String(port), '--cluster-port', String(clusterPort), '--leaf-port', String(leafPort), ...(o.shardSize ? ['--shard-size', String(o.shardSize)] : [])]);
  if (made.code !== 0) throw new Error(`sealkit hub config failed: ${made.stderr}`);
  const initial = await readHubState(dir);
  const members = initial.members.map((m) => m.name);
  const urls = initial.members.map((m) => `nats://${m.host}:${m.port}`);
  const procs = new Map<string, ChildProcess>();
  const clients = new Set<NatsConnection>();
  const hubConnect = async (auth: { user: string; pass: string } | null, opts: Partial<ConnectionOptions> = {}) => {
    const nc = await connect({ servers: urls, ...(auth ?? {}), maxReconnectAttempts: -1, reconnectTimeWait: 100, ...opts });
    clients.add(nc);
    void nc.closed().then(() => clients.delete(nc));
    return nc;
  };
  const connectAdmin = () => hubConnect({ user: initial.admin.user, pass: initial.admin.password });
  const startMember = async (name: string) => {
    procs.set(name, await launch(memberConfigPath(dir, name)));
    const m = initial.members.find((x) => x.name === name)!;
    await waitForPort(m.port);
  };
  const hub: Hub = {
    dir,
    members,
    state: () => readHubState(dir),
    pid: (name) => procs.get(name)?.pid,
    running(name) {
      const p = procs.get(name);
      return !!p && p.exitCode === null && p.signalCode === null;
    },
    async stopMember(name) {
      const p = procs.get(name);
      if (p) await kill(p);
    },
    startMember,
    async settled(timeoutMs = 90_000) {
      const t0 = Date.now();
      const admin = await connectAdmin();
      let why = '';
      try {
        const jsm = await admin.jetstreamManager({ timeout: 2000, checkAPI: false });
        while (Date.now() - t0 < timeoutMs) {
          const names = [...(await hubStreamNames(admin).catch(() => [])), `KV_${fleetBucket}`, `KV_${nodesBucket}`];
          const infos = await Promise.all(names.map((n) => jsm.streams.info(n).catch((err: Error) => err)));
          const problems = infos.flatMap((i, k) => {
            if (i instanceof Error) return [`${names[k]}: ${i.message}`];
            if (!i.cluster?.leader) return [`${names[k]}: no leader`];
            const behind = (i.cluster.replicas ?? []).filter((r) => !r.current || r.offline).map((r) => r.name);
            if (behind.length) return [`${names[k]}: replicas not current: ${behind.join(', ')}`];
            const idle = (i.sources ?? []).filter((src) => src.active < 0 || src.active > 5e9).map((src) => (src as { external?: { api?: string } }).external?.api ?? src.name);
            return idle.length ? [`${names[k]}: sources not active: ${idle.join(', ')}`] : [];
          });
          if (!problems.length) return Date.now() - t0;
          why = problems.join('; ');
          await new Promise((r) => setTimeout(r, 250));
        }
      } finally {
        await admin.close();
      }
      throw new Error(`the hub did not settle in ${timeoutMs / 1000} s: ${why}`);
    },
    connect: hubConnect,
    connectAdmin,
    async enroll(node, groups, extra = []) {
      const r = await sealkit(['fleet', 'enroll', node, '--groups', groups.join(','), '--dir', dir, ...extra]);
      if (r.code !== 0) return r;
      const config = JSON.parse(await readFile(join(dir, 'nodes', node, 'fleet', 'node.json'), 'utf8')) as FleetNodeConfig;
      return { ...r, config };
    },
    async cleanup() {
      await Promise.allSettled([...clients].map((nc) => nc.close()));
      await Promise.allSettled([...procs.values()].map((p) => kill(p)));
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await Promise.all(members.map(startMember));
    // the cluster elects its JetStream meta leader a few seconds after the routes are up
    const admin = await connectAdmin();
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await ensureHubStreams(admin, { shards: [[]], replicas: hubReplicas(members.length) });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`the hub's JetStream did not come up in 30 s: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    await admin.close();
  } catch (err) {
    await hub.cleanup();
    throw err;
  }
  return hub;
}

// Every shard of the hub's streams, audit then events.
export async function hubStreamNames(nc: NatsConnection): Promise<string[]> {
  const jsm = await nc.jetstreamManager({ checkAPI: false });
  return [...(await hubShardNames(jsm, 'audit')), ...(await hubShardNames(jsm, 'events'))];
}
