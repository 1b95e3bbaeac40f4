import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { generateCreds, serverConfig, writeCreds, type BusCreds } from '../../services/lib/natsconf.ts';
import { ensureStreams } from '../../services/lib/streams.ts';

// A real nats-server per test file, as nats.js's own suite does: random port
// reported through a ports file, JetStream in a temp dir, stopped by PID.
export interface NatsServer {
  url: string;
  port: number;
  dir: string; // temp root: state dir for services lives under it
  stateDir: string;
  credsDir: string;
  creds: Record<string, BusCreds>;
  connectAs(user: string | null, name?: string): Promise<NatsConnection>;
  stop(): Promise<void>;
  restart(): Promise<void>; // same port, same store: a bus outage
  cleanup(): Promise<void>;
}

export async function startNats(opts: { streams?: boolean } = {}): Promise<NatsServer> {
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-nats-'));
  const stateDir = join(dir, 'state');
  const credsDir = join(stateDir, 'bus', 'creds');
  const creds = generateCreds();
  await writeCreds(credsDir, creds);
  const portsDir = join(dir, 'ports');
  await mkdir(portsDir, { recursive: true });
  const confPath = join(dir, 'nats.conf');
  await writeFile(confPath, serverConfig({ creds, storeDir: join(dir, 'js'), port: -1, portsFileDir: portsDir }));

  let proc = await launch(confPath);
  const port = await readPort(portsDir, proc);
  // from now on the port is fixed, so a restart comes back where clients look
  await writeFile(confPath, serverConfig({ creds, storeDir: join(dir, 'js'), port }));
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

async function launch(confPath: string): Promise<ChildProcess> {
  const proc = spawn('nats-server', ['-c', confPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  proc.on('exit', (code, signal) => {
    // nats-server exits 1 on SIGTERM; only an exit nobody asked for is news
    if (!(proc as { stopping?: boolean }).stopping) process.stderr.write(`nats-server exited ${code ?? signal}: ${stderr}\n`);
  });
  return proc;
}

async function readPort(portsDir: string, proc: ChildProcess): Promise<number> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`nats-server exited with ${proc.exitCode} before it listened`);
    const files = (await readdir(portsDir)).filter((f) => f.endsWith('.ports'));
    if (files.length) {
      const ports = JSON.parse(await readFile(join(portsDir, files[0]), 'utf8')) as { nats: string[] };
      return Number(new URL(ports.nats[0]).port);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('nats-server did not report its port within 10 s');
}

async function waitForPort(port: number): Promise<void> {
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

async function kill(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  (proc as { stopping?: boolean }).stopping = true;
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}
