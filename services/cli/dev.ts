// `make dev`: a whole node on this machine for development. nats-server and
// containerd on loopback with their state under ./state, the bus set up, and
// every service as its own process; logs are prefixed with the service name.
// Ctrl-C stops everything.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect } from 'nats';
import { ensureNodeKeys } from '../../iso/keys.ts';
import { stateDir, repoRoot } from '../lib/config.ts';
import { readCreds, serverConfig, busUsers, type BusCreds } from '../lib/natsconf.ts';
import { ensureStreams } from '../lib/streams.ts';
import { serviceNames } from '../lib/subjects.ts';

const state = stateDir();
const port = Number(process.env.SEALKIT_DEV_PORT ?? 4222);
const url = `nats://127.0.0.1:${port}`;
const children: Array<{ name: string; proc: ChildProcess }> = [];

function run(name: string, cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const proc = spawn(cmd, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [proc.stdout!, proc.stderr!]) {
    createInterface({ input: stream }).on('line', (l) => process.stdout.write(`${name.padEnd(10)} ${l}\n`));
  }
  proc.on('exit', (code, signal) => {
    if (!stopping) process.stdout.write(`${name.padEnd(10)} exited (${code ?? signal})\n`);
  });
  children.push({ name, proc });
  return proc;
}

let stopping = false;
async function stopAll() {
  if (stopping) return;
  stopping = true;
  // services first, the bus last, so their final events get out
  for (const c of [...children].reverse()) {
    if (c.proc.exitCode !== null) continue;
    c.proc.kill('SIGTERM');
    await new Promise((r) => {
      const t = setTimeout(() => (c.proc.kill('SIGKILL'), r(null)), 8000);
      c.proc.once('exit', () => (clearTimeout(t), r(null)));
    });
  }
  process.exit(0);
}
process.on('SIGINT', () => void stopAll());
process.on('SIGTERM', () => void stopAll());

async function waitForBus(user: BusCreds): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const nc = await connect({ servers: url, user: user.user, pass: user.password, timeout: 500 });
      await ensureStreams(nc);
      await nc.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`nats-server did not answer on ${url}`);
}

await ensureNodeKeys(state);
const creds: Record<string, BusCreds> = {};
for (const u of busUsers) creds[u] = await readCreds(join(state, 'bus', 'creds', `${u}.json`));
const devDir = join(state, 'dev');
await mkdir(devDir, { recursive: true });
await writeFile(join(devDir, 'nats-server.conf'), serverConfig({ creds, storeDir: join(devDir, 'jetstream'), port }), { mode: 0o600 });
run('nats', 'nats-server', ['-c', join(devDir, 'nats-server.conf')]);
await waitForBus(creds.admin);

const env: Record<string, string> = { SEALKIT_STATE: state, SEALKIT_NATS_URL: url, SEALKIT_TRUST: join(state, 'trust.yaml'), SEALKIT_CONTAINER_STORE: join(state, 'containers') };
if (existsSync('/usr/bin/containerd')) {
  const c = join(devDir, 'containerd');
  await mkdir(c, { recursive: true });
  run('containerd', 'containerd', ['--root', join(c, 'root'), '--state', join(c, 'state'), '--address', join(c, 'containerd.sock')]);
  env.SEALKIT_CONTAINERD_SOCK = join(c, 'containerd.sock');
}
for (const name of serviceNames) run(name, process.execPath, ['--import', 'tsx', join(repoRoot, 'services', name, 'main.ts')], env);

process.stdout.write(`
sealkit dev node: bus ${url}, state ${state}
  watch events:   bin/sealkit watch 'audit.*'      (or: nats sub 'audit.*' -s ${url})
                  bin/sealkit watch '>' --replay
  node status:    bin/sealkit status
  push a policy:  bin/sealkit policy sign policy.yaml --key ${join(state, 'keys', 'admin.key')}
                  bin/sealkit policy push policy.yaml
  stop:           Ctrl-C
`);
