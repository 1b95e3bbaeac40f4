import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { startNats, type NatsServer } from './helpers/nats.ts';
import { startContainerd, type ContainerdServer } from './helpers/containerd.ts';
import { startService, type RunningService } from './helpers/service.ts';
import { makeAdmin } from './helpers/policy.ts';
import { sealkit } from './helpers/cli.ts';
import { repoRoot } from '../services/lib/config.ts';
import { serviceNames } from '../services/lib/subjects.ts';
import { startTogether } from './helpers/together.ts';

// sealkit status as an operator reads it: the node's name, every service
// with the pid the host sees (also for a service in its own pid namespace,
// as the ISO's OCI bundles are), and the services that do not answer.

const NODE = 'status-node-7';
let nats: NatsServer;
let ctd: ContainerdServer;
let work: string;
const services = new Map<string, RunningService>();
let nsPolicy: { unshare: ChildProcess; hostPid: number; exited: Promise<unknown> };
let cli: Record<string, string>;

// The policy service in a new pid namespace, where it is pid 1 (unshare, as
// runc does for a bundle without "pid: host").
async function startInPidNamespace(name: string, env: Record<string, string>) {
  const unshare = spawn('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child=SIGKILL', process.execPath, '--import', 'tsx', join(repoRoot, 'services', name, 'main.ts')], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((r) => unshare.once('exit', r));
  await new Promise<void>((resolve, reject) => {
    const rl = createInterface({ input: unshare.stdout! });
    rl.on('line', (l) => {
      try {
        if ((JSON.parse(l) as { msg?: string }).msg === 'started') resolve();
      } catch {
        // not a log record
      }
    });
    void exited.then(() => reject(new Error(`${name} under unshare exited before it started`)));
  });
  const children = (await readFile(`/proc/${unshare.pid}/task/${unshare.pid}/children`, 'utf8')).trim().split(/\s+/).map(Number);
  return { unshare, hostPid: children[0], exited };
}

test.before(async () => {
  [nats, ctd] = await startTogether(startNats(), startContainerd());
  work = await mkdtemp(join(tmpdir(), 'sealkit-status-'));
  const admin = await makeAdmin(nats.stateDir);
  const env = {
    SEALKIT_STATE: nats.stateDir,
    SEALKIT_NATS_URL: nats.url,
    SEALKIT_TRUST: admin.trustPath,
    SEALKIT_NODE: NODE,
    SEALKIT_CONTAINERD_SOCK: ctd.sock,
    SEALKIT_CONTAINER_STORE: join(work, 'containers'),
    SEALKIT_KMSG: join(work, 'kmsg'),
  };
  await writeFile(env.SEALKIT_KMSG, '');
  nsPolicy = await startInPidNamespace('policy', env);
  for (const name of serviceNames.filter((n) => n !== 'policy')) services.set(name, await startService(name, env));
  cli = { SEALKIT_STATE: nats.stateDir, SEALKIT_NATS_URL: nats.url };
});

test.after.always(async () => {
  await Promise.all([...services.values()].map((s) => s.stop()));
  if (nsPolicy) {
    try {
      process.kill(nsPolicy.hostPid, 'SIGTERM');
    } catch {
      // gone already
    }
    await nsPolicy.exited;
  }
  await ctd?.cleanup();
  await nats?.cleanup();
  if (work) await rm(work, { recursive: true, force: true });
});

test.serial('status names the node and shows every service with the pid the host sees', async (t) => {
  const r = await sealkit(['status', '--json'], cli);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout) as { node: { name: string }; services: Array<{ service: string; pid: number; hostPid: boolean }>; missing: string[] };
  t.is(s.node.name, NODE);
  t.deepEqual(s.missing, []);
  t.deepEqual(s.services.map((x) => x.service), [...serviceNames].sort());
  for (const x of s.services) {
    const expected = x.service === 'policy' ? nsPolicy.hostPid : services.get(x.service)!.proc.pid!;
    t.is(x.pid, expected, `${x.service}: host pid`);
    t.true(x.hostPid);
  }
  t.not(nsPolicy.hostPid, 1);

  const pretty = await sealkit(['status'], cli);
  t.is(pretty.code, 0, pretty.stderr);
  t.regex(pretty.stdout, new RegExp(`^node: ${NODE}`, 'm'));
  t.regex(pretty.stdout, new RegExp(`^  policy\\s+pid ${nsPolicy.hostPid}, up \\d+s$`, 'm'));
  // the runner answers runner.ps; no policy names a container yet
  t.regex(pretty.stdout, /^containers: 0 running of 0$/m);
  t.regex(pretty.stderr, /waiting for 7 services to answer sealkit\.ping \(timeout 5 s\)/);
});

test.serial('status names the services that do not answer and exits 1', async (t) => {
  await services.get('auditor')!.stop();
  await services.get('importer')!.stop();
  const r = await sealkit(['status', '--timeout', '3'], cli);
  t.is(r.code, 1);
  t.regex(r.stdout, /^ {2}auditor\s+NOT ANSWERING \(no reply to sealkit\.ping within 3 s\)$/m);
  t.regex(r.stdout, /^ {2}importer\s+NOT ANSWERING/m);
  t.regex(r.stdout, /^ {2}fetcher\s+pid \d+/m);
  t.regex(r.stderr, /2 of 7 services do not answer: importer, auditor/);
  const j = await sealkit(['status', '--json', '--timeout', '3'], cli);
  t.is(j.code, 1);
  t.deepEqual((JSON.parse(j.stdout) as { missing: string[] }).missing.sort(), ['auditor', 'importer']);
});
