import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectBus, pingAll, type NatsConnection } from '../services/lib/bus.ts';
import { serviceNames } from '../services/lib/subjects.ts';
import { repoRoot } from '../services/lib/config.ts';
import { freePort } from './helpers/qemu.ts';
import { cmdline, killAll, pidsWithEnv, printedCommands, runPrinted, running, spawnGroup, spawnMake, type Shell } from './helpers/make.ts';
import { policyYaml } from './helpers/policy.ts';

// `make dev` as a developer runs it: every service answers on the bus; a
// service killed with SIGKILL, and nats-server killed the same way, come back
// on their own (the services reconnect); a second `make dev` on the same state
// directory is refused, naming the directory and the pid that holds it; the
// commands the banner prints work as printed; Ctrl-C stops everything.

const minutes = (n: number) => n * 60_000;

async function answering(nc: NatsConnection, until: (pids: Map<string, number>) => boolean, timeoutMs: number): Promise<Map<string, number>> {
  const end = Date.now() + timeoutMs;
  let last = new Map<string, number>();
  while (Date.now() < end) {
    last = new Map((await pingAll(nc, 500).catch(() => [])).map((r) => [r.service, r.pid]));
    if (until(last)) return last;
  }
  throw new Error(`services answering: ${[...last].map(([s, p]) => `${s}(${p})`).join(' ') || 'none'}; expected ${serviceNames.join(', ')}`);
}
const all = (m: Map<string, number>) => serviceNames.every((s) => m.has(s));

test('make dev restarts what dies, refuses a second node on its state, and Ctrl-C leaves nothing running', async (t) => {
  t.timeout(minutes(10));
  const state = await mkdtemp(join(tmpdir(), 'sealkit-make-dev-'));
  const port = await freePort();
  const env = { SEALKIT_STATE: state, SEALKIT_DEV_PORT: String(port) };
  const shells: Shell[] = [];
  let nc: NatsConnection | undefined;
  t.teardown(async () => {
    await nc?.close().catch(() => {});
    for (const s of shells) if (!s.done()) s.signal('SIGKILL');
    killAll(pidsWithEnv('SEALKIT_STATE', state));
    await rm(state, { recursive: true, force: true });
  });

  const dev = spawnMake('dev', env);
  shells.push(dev);
  await dev.waitFor(/sealkit dev node: bus nats:\/\/127\.0\.0\.1:(\d+)/, minutes(3));
  const natsPid = Number((await dev.waitFor(/^nats +started \(pid (\d+)\)/m, 10_000))[1]);
  const containerdPid = Number((await dev.waitFor(/^containerd +started \(pid (\d+)\)/m, 10_000))[1]);
  nc = await connectBus({ name: 'make-dev-test', user: 'admin', servers: `127.0.0.1:${port}`, credsFile: join(state, 'bus', 'creds', 'admin.json') });
  const first = await answering(nc, all, minutes(2));
  t.log(`answering: ${[...first].map(([s, p]) => `${s}(${p})`).join(' ')}`);

  // a service killed outright is started again, and says so
  const fetcher = first.get('fetcher')!;
  process.kill(fetcher, 'SIGKILL');
  await dev.waitFor(/^fetcher +exited \(SIGKILL\); restarting in 0\.5 s \(restart 1\)$/m, 30_000);
  const again = await answering(nc, (m) => all(m) && m.get('fetcher') !== fetcher, minutes(1));
  t.false(running(fetcher));
  t.not(again.get('fetcher'), fetcher, 'fetcher answers again, as a new process');

  // so is the bus; the services reconnect (same pids)
  process.kill(natsPid, 'SIGKILL');
  await dev.waitFor(/^nats +exited \(SIGKILL\); restarting in 0\.5 s \(restart 1\)$/m, 30_000);
  const natsPid2 = Number((await dev.waitFor(new RegExp(`^nats +started \\(pid (?!${natsPid}\\))(\\d+)\\)`, 'm'), 30_000))[1]);
  const afterBus = await answering(nc, all, minutes(1));
  t.deepEqual(afterBus, again, 'every service reconnected to the restarted bus without being restarted');

  // one node per state directory
  const holder = pidsWithEnv('SEALKIT_STATE', state).find((p) => cmdline(p).includes('services/cli/dev.ts'));
  t.truthy(holder, 'the dev supervisor is running');
  const second = spawnMake('dev', env);
  shells.push(second);
  const refused = await second.exited;
  t.not(refused.code, 0, 'a second make dev on the same state exits non-zero');
  t.regex(second.output(), /\[SEALKIT_STATE_LOCKED\]/);
  t.true(second.output().includes(state) && second.output().includes(`pid ${holder}`), `the refusal names the state dir and pid ${holder}:\n${second.output()}`);
  t.deepEqual(await answering(nc, all, 30_000), afterBus, 'the first node was not disturbed');

  // the commands the banner prints, as printed (policy.yaml is the user's file)
  const commands = printedCommands(dev.output());
  t.log(commands.join('\n'));
  const policy = join(state, 'policy.yaml');
  await writeFile(policy, policyYaml({ serial: 1, images: [], ima: { mode: 'log', reverify: '10m' } }));
  const sh = (command: string) => runPrinted(command, policy, shells);
  const sign = commands.find((c) => c.includes(' policy sign '));
  const push = commands.find((c) => c.includes(' policy push '));
  const replay = commands.find((c) => c.endsWith(" watch '>' --replay"));
  t.truthy(sign && push && replay && commands.some((c) => c.endsWith(' status')), 'the banner shows watch, status, sign and push');
  const signed = await sh(sign!);
  t.is(signed.code, 0, signed.output);
  const pushed = await sh(push!);
  t.is(pushed.code, 0, pushed.output);
  const watch = spawnGroup('sh', ['-c', replay!], { cwd: repoRoot });
  shells.push(watch);
  await watch.waitFor(/policy\.applied +.*serial=1\b/, 30_000);
  watch.signal('SIGINT');
  await watch.exited;
  t.log(`status:\n${(await sh(commands.find((c) => c.endsWith(' status'))!)).output}`);

  // Ctrl-C: services first, the bus last, nothing left
  await nc.close();
  nc = undefined;
  const pids = [holder!, natsPid2, containerdPid, ...afterBus.values()];
  dev.signal('SIGINT');
  const ended = await dev.exited;
  t.log(`make dev ended with ${ended.signal ?? ended.code}`);
  t.deepEqual(pids.filter(running), [], 'no supervisor, nats-server, containerd or service process is left');
  t.deepEqual(pidsWithEnv('SEALKIT_STATE', state).map((p) => `${p} ${cmdline(p)}`), [], 'nothing started by make dev is left');
  const out = dev.output();
  const stoppedAt = (re: RegExp) => out.search(re);
  const lastService = Math.max(...serviceNames.map((s) => stoppedAt(new RegExp(`^${s} +.*"stopping"`, 'm'))));
  t.true(lastService > 0 && lastService < stoppedAt(/^nats +.*Initiating Shutdown/m), 'the services stopped before the bus');
});
