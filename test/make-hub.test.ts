import test from 'ava';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringCodec } from 'nats';
import { connectBus, type NatsConnection } from '../services/lib/bus.ts';
import { shardStream } from '../services/lib/hubshards.ts';
import { replayStream } from '../services/lib/streams.ts';
import { freePorts } from './helpers/nats.ts';
import { freePort } from './helpers/qemu.ts';
import { sealkit } from './helpers/cli.ts';
import { readmeCommand } from './helpers/readme.ts';
import { killAll, pidsWithEnv, running, spawnGroup, spawnMake, type Shell } from './helpers/make.ts';

// `make hub` as a developer runs it, with a node from `make dev` joining it:
// the hub's banner says how to enroll a node and how it joins; the command it
// prints enrolls one; a `make dev` whose state holds the node's bundle joins
// the hub, and its events arrive there naming it; Ctrl-C stops the hub and
// leaves no member running.

const minutes = (n: number) => n * 60_000;
const sc = StringCodec();

test('make hub runs a hub that a make dev node joins, and Ctrl-C stops it', async (t) => {
  t.timeout(minutes(8));
  const hubDir = await mkdtemp(join(tmpdir(), 'sealkit-make-hub-'));
  const state = await mkdtemp(join(tmpdir(), 'sealkit-make-hub-node-'));
  const shells: Shell[] = [];
  let nc: NatsConnection | undefined;
  t.teardown(async () => {
    await nc?.close().catch(() => {});
    for (const s of shells) if (!s.done()) s.signal('SIGKILL');
    killAll([...pidsWithEnv('SEALKIT_STATE', state), ...pidsWithEnv('SEALKIT_HUB', hubDir)]);
    await rm(hubDir, { recursive: true, force: true });
    await rm(state, { recursive: true, force: true });
  });
  // a hub of its own ports, so it runs beside a developer's
  const [port, clusterPort, leafPort] = [await freePorts(1), await freePorts(1), await freePorts(1)];
  const made = await sealkit(['hub', 'config', '--dir', hubDir, '--members', '1', '--port', String(port), '--cluster-port', String(clusterPort), '--leaf-port', String(leafPort)]);
  t.is(made.code, 0, made.stderr);

  readmeCommand('make hub');
  const hub = spawnMake('hub', { SEALKIT_HUB: hubDir });
  shells.push(hub);
  await hub.waitFor(/sealkit dev hub: 1 member/, minutes(3));
  const memberPid = Number((await hub.waitFor(/^hub-1 +started \(pid (\d+)\)/m, 10_000))[1]);
  const enroll = (await hub.waitFor(/^ {2}enroll +(.+)$/m, 1000))[1].replace('NODE', 'devnode').replace('GROUP', 'web');
  const enrolled = spawnGroup('sh', ['-c', enroll]);
  shells.push(enrolled);
  t.is((await enrolled.exited).code, 0, enrolled.output());
  t.regex(hub.output(), /join +cp -r .*nodes\/NODE\/\. state\/ && make dev/);

  await cp(join(hubDir, 'nodes', 'devnode'), state, { recursive: true });
  const dev = spawnMake('dev', { SEALKIT_STATE: state, SEALKIT_DEV_PORT: String(await freePort()) });
  shells.push(dev);
  await dev.waitFor(/node devnode of groups web joins the hub/, minutes(3));

  nc = await connectBus({ name: 'make-hub-test', user: 'admin', servers: `127.0.0.1:${port}`, credsFile: join(hubDir, 'creds', 'admin.json') });
  const deadline = Date.now() + minutes(2);
  let sources: string[] = [];
  for (;;) {
    sources = [];
    await replayStream(nc, shardStream('events', 0), '>', (d) => void sources.push((JSON.parse(sc.decode(d)) as { source: string }).source));
    if (sources.includes('sealkit/nodeinfo/devnode') || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.true(sources.includes('sealkit/nodeinfo/devnode'), sources.join(', '));
  await nc.close();
  nc = undefined;

  dev.signal('SIGINT');
  await dev.exited;
  hub.signal('SIGINT');
  await hub.exited;
  t.regex(hub.output(), /hub: SIGINT; stopping the hub members/);
  t.false(running(memberPid));
  t.deepEqual(pidsWithEnv('SEALKIT_HUB', hubDir), [], 'nothing started by make hub is left');
});
