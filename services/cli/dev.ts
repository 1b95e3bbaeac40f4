// `make dev`: a whole node on this machine for development. nats-server and
// containerd on loopback with their state under ./state, the bus set up, and
// every service as its own process; logs are prefixed with the name. Like the
// node's init, it restarts whatever exits (services/cli/supervise.ts). One
// node per state directory (a lock). Ctrl-C stops the services, then
// containerd, then the bus, and leaves nothing running.
import { mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { connect } from 'nats';
import { ensureNodeKeys } from '../../iso/keys.ts';
import { stateDir, repoRoot } from '../lib/config.ts';
import { asSealkitError } from '../lib/errors.ts';
import { readCreds, serverConfig, busUsers, type BusCreds } from '../lib/natsconf.ts';
import { leafServerOptions, readFleetNodeConfig } from '../lib/leafconf.ts';
import { ensureStreams } from '../lib/streams.ts';
import { serviceNames } from '../lib/subjects.ts';
import { nodeHowto } from './howto.ts';
import { lockState, type HeldLock } from './lock.ts';
import { Supervisor } from './supervise.ts';

const state = stateDir();
const port = Number(process.env.SEALKIT_DEV_PORT ?? 4222);
const url = `nats://127.0.0.1:${port}`;
const say = (line: string) => process.stdout.write(`${line}\n`);
const supervisor = new Supervisor(say);
let lock: HeldLock | undefined;

let stopping = false;
async function stopAll(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    // services first, the bus last, so their final events get out
    await supervisor.stop([[...serviceNames], ['containerd'], ['nats']]);
    await lock?.release();
  }
  process.exit(code);
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    say(`dev: ${sig}; stopping the services, containerd, then nats-server`);
    void stopAll(0);
  });
}

function portFree(p: number): Promise<boolean> {
  return new Promise((done) => {
    const s = createServer();
    s.once('error', () => done(false));
    s.listen(p, '127.0.0.1', () => s.close(() => done(true)));
  });
}

async function waitForBus(user: BusCreds): Promise<void> {
  const until = Date.now() + 30_000;
  for (;;) {
    try {
      const nc = await connect({ servers: url, user: user.user, pass: user.password, timeout: 500 });
      await ensureStreams(nc);
      await nc.close();
      return;
    } catch (err) {
      if (Date.now() > until) throw new Error(`nats-server did not answer on ${url} in 30 s (its output is above): ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function main(): Promise<void> {
  lock = await lockState(state);
  if (!(await portFree(port))) throw new Error(`127.0.0.1:${port} is in use (another bus, "make run"?); stop it or set SEALKIT_DEV_PORT`);
  await ensureNodeKeys(state);
  const creds: Record<string, BusCreds> = {};
  for (const u of busUsers) creds[u] = await readCreds(join(state, 'bus', 'creds', `${u}.json`));
  const devDir = join(state, 'dev');
  await mkdir(devDir, { recursive: true });
  // an enrolled node (the bundle of "sealkit fleet enroll" in the state) joins its hub
  const fleet = await readFleetNodeConfig(state);
  await writeFile(join(devDir, 'nats-server.conf'), serverConfig({ creds, storeDir: join(devDir, 'jetstream'), port, ...(fleet ? leafServerOptions(fleet) : {}) }), { mode: 0o600 });
  supervisor.start({ name: 'nats', cmd: 'nats-server', args: ['-c', join(devDir, 'nats-server.conf')], cwd: repoRoot });
  await waitForBus(creds.admin);

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    SEALKIT_STATE: state,
    SEALKIT_NATS_URL: url,
    SEALKIT_TRUST: join(state, 'trust.yaml'),
    SEALKIT_CONTAINER_STORE: join(state, 'containers'),
  };
  if (existsSync('/usr/bin/containerd')) {
    const c = join(devDir, 'containerd');
    await mkdir(c, { recursive: true });
    supervisor.start({ name: 'containerd', cmd: 'containerd', args: ['--root', join(c, 'root'), '--state', join(c, 'state'), '--address', join(c, 'containerd.sock')], cwd: repoRoot });
    env.SEALKIT_CONTAINERD_SOCK = join(c, 'containerd.sock');
  }
  for (const name of serviceNames) {
    supervisor.start({ name, cmd: process.execPath, args: ['--import', 'tsx', join(repoRoot, 'services', name, 'main.ts')], env, cwd: repoRoot });
  }

  if (fleet) say(`dev: node ${fleet.node} of groups ${fleet.groups.join(', ')} joins the hub at ${fleet.hub.join(', ')}`);
  say(`
sealkit dev node: bus ${url}, state ${state}; in another terminal, from here:
${nodeHowto({ state, url })}
  stop     Ctrl-C (a process that exits is restarted)
`);
}

main().catch((err: unknown) => {
  const e = asSealkitError(err);
  process.stderr.write(`dev: ${e.message}${e.code !== 'SEALKIT_INTERNAL' ? ` [${e.code}]` : ''}\n`);
  void stopAll(1);
});
