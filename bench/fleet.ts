import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect, AckPolicy, DeliverPolicy, nanos, RequestStrategy, type NatsConnection, type StreamInfo } from 'nats';
import { decode } from '../services/lib/bus.ts';
import { parseEvent } from '../services/lib/envelope.ts';
import { generateEventKey } from '../services/lib/eventsig.ts';
import { encodeFleetPolicy, eventKeyPath, fleetBucket, fleetConfigPath, groupKey, type FleetNodeConfig } from '../services/lib/fleet.ts';
import { DEFAULT_SHARD_SIZE, shardsOf, shardStream, type HubStreamKind } from '../services/lib/hubshards.ts';
import { hubMemberConfig, hubReplicas, leafUser, newHubState, newSecret, type HubState } from '../services/lib/hubconf.ts';
import { ensureHubStreams } from '../services/lib/hubstreams.ts';
import { replayStream, whileElecting } from '../services/lib/streams.ts';
import { leafServerOptions } from '../services/lib/leafconf.ts';
import { generateCreds, serverConfig } from '../services/lib/natsconf.ts';
import { writeFileAtomic } from '../services/lib/atomic.ts';
import { repoRoot } from '../services/lib/config.ts';
import { startLink, type Link } from '../test/helpers/link.ts';
import { freePorts, kill, launch, readPort, waitForPort } from '../test/helpers/nats.ts';
import { makeAdmin, policyYaml, signPolicy } from '../test/helpers/policy.ts';
import { fmt, percentile, pss, rss, row, sleep, verdict, type BenchContext, type Row } from './measure.ts';
import type { WorkerSpec } from './fleet-node.ts';

// A fleet on one machine: a hub cluster of three real nats-servers and N
// nodes, each its own real nats-server joined to the hub as a leaf node in
// its own JetStream domain, each running the real policy-service core in a
// shared worker process (bench/fleet-node.ts). Rows: a fleet push until
// every node's policy.applied is in the hub's sourced stream, next to a bare
// request-many to the same nodes in the same run; hub ingest of every node's
// audit events; catch-up after the nodes were cut off.

const G = 'fleet';
const PING = 'bench.fleet.ping';
const GROUP = 'bench';

interface Fleet {
  hub: HubState;
  shards: number; // FLEET_AUDIT_<k> and FLEET_EVENTS_<k>, k < shards
  hubNc: NatsConnection;
  memberPids: number[];
  nodePids: number[];
  workers: Worker[];
  links: Link[]; // the network between the nodes and each hub member
}

interface Worker {
  proc: ChildProcess;
  nodes: number;
  ask(cmd: unknown): Promise<Record<string, number>>;
}

export async function fleet(ctx: BenchContext): Promise<Row[]> {
  // BENCH_FLEET_SIZES=50,100 for other fleet sizes
  const sizes = process.env.BENCH_FLEET_SIZES ? process.env.BENCH_FLEET_SIZES.split(',').map(Number) : ctx.quick ? [20] : [200, 1000];
  const rows: Row[] = [];
  for (const n of sizes) {
    // a size that cannot be measured says so; the sizes before it stand
    try {
      rows.push(...(await measure(ctx, n)));
    } catch (err) {
      ctx.log(`fleet ${n}: failed: ${(err as Error).stack ?? err}`);
      rows.push(row(G, { row: `fleet of ${n} nodes: not measured`, sealkit: '—', peer: '—', ratio: '—', target: '—', status: 'FAIL', note: (err as Error).message.split('\n')[0].slice(0, 200) }));
    }
  }
  return rows;
}

async function measure(ctx: BenchContext, n: number): Promise<Row[]> {
  const dir = join(ctx.tmp, `n${n}`);
  const started = Date.now();
  const admin = await makeAdmin(join(dir, 'operator'));
  const f = await startFleet(ctx, dir, n, admin.trustPath);
  const ready = Date.now() - started;
  ctx.log(`fleet ${n}: hub of 3 and ${n} leaf nodes ready in ${fmt.ms(ready)}`);

  const js = f.hubNc.jetstream();
  // a hub of three on two cores beside a thousand servers may be electing a
  // leader now and then: that is waited out (and said), as fleet push does
  const electing = <T>(what: string, fn: () => Promise<T>) => whileElecting(fn, Date.now() + 60_000, (err) => ctx.log(`fleet ${n}: ${what}: the hub is electing (${err.message}); again`));
  const kv = await electing('bind the fleet bucket', () => js.views.kv(fleetBucket, { bindOnly: true }));
  const reps = ctx.quick ? 3 : n >= 1000 ? 5 : 10;
  const push: number[] = [];
  const pushAll: number[] = [];
  const bare: number[] = [];
  const bareAll: number[] = [];
  let serial = 0;
  for (let r = 0; r < reps + 1; r++) {
    // a push: sign, write the group's key, read policy.applied of every node from the hub's stream
    serial++;
    const yaml = policyYaml({ serial, images: [] });
    const value = encodeFleetPolicy({ yaml, ...signPolicy(yaml, admin.key), pusher: 'bench' });
    const acks = await electing('create the ack reader', () => ackReader(f.hubNc, f.shards, n, serial));
    const live: number[] = [];
    const liveSub = f.hubNc.subscribe('policy.applied', { callback: (_e, m) => { if ((parseEvent(m.data).data as { serial?: number }).serial === serial) live.push(performance.now() - t0); } });
    await f.hubNc.flush();
    const t0 = performance.now();
    await electing('write the group key', () => kv.put(groupKey(GROUP), value));
    const times = await acks(t0);
    liveSub.unsubscribe();
    if (process.env.BENCH_TRACE) ctx.log(`live acks: ${live.length}, p50 ${fmt.ms(percentile(live, 50))} max ${fmt.ms(Math.max(...live))}`);
    // the bare peer: one request to all, every answer gathered
    const t1 = performance.now();
    const answers: number[] = [];
    const it = await f.hubNc.requestMany(PING, new Uint8Array(), { strategy: RequestStrategy.Count, maxMessages: n, maxWait: 30_000 });
    for await (const _m of it) answers.push(performance.now() - t1);
    if (answers.length !== n) throw new Error(`bare request-many: ${answers.length} of ${n} nodes answered in 30 s`);
    ctx.log(`fleet ${n}: push ${r}: all applied in ${fmt.ms(Math.max(...times))}, bare request-many ${fmt.ms(Math.max(...answers))}`);
    if (r === 0) continue; // the first round warms connections and consumers
    push.push(...times);
    pushAll.push(Math.max(...times));
    bare.push(...answers);
    bareAll.push(Math.max(...answers));
  }

  // hub ingest: every node publishes a burst of signed audit events through its outbox
  const perNode = ctx.quick ? 50 : n >= 1000 ? 20 : 100;
  const ingest = await storm(f, n * perNode, perNode);
  ctx.log(`fleet ${n}: ingest ${fmt.n(ingest.rate)} ev/s; now the hub goes away`);
  // catch-up: the network between the nodes and the hub fails (every leaf
  // connection dropped, new ones refused), the nodes keep publishing into
  // their own streams, the network is back
  const before = await electing('count the hub streams', () => auditHeld(f.hubNc, f.shards));
  for (const l of f.links) l.cut();
  await waitLeafs(f.hub, 0, 'at most');
  await storm(f, n * perNode, perNode, false);
  const tStart = performance.now();
  for (const l of f.links) l.restore();
  const expected = before + n * perNode;
  // counted from the link's return: the leaf connections come back within
  // that time (their reconnect interval), and events may flow before the
  // last of them is up
  const since = () => performance.now() - tStart;
  const [[caught, catchup], restart] = await Promise.all([waitCount(f.hubNc, f.shards, expected, 120_000).then((ok) => [ok, since()] as const), waitLeafs(f.hub, n, 'at least').then(since)]);

  // short of the count: which nodes' events the hub lacks (each node's
  // auditor published the same number)
  let short = '';
  if (!caught) {
    const per = new Map<string, number>();
    for (let k = 0; k < f.shards; k++) {
      await replayStream(f.hubNc, shardStream('audit', k), '>', (d) => {
        const src = parseEvent(d).source;
        per.set(src, (per.get(src) ?? 0) + 1);
      }).catch((err: Error) => ctx.log(`fleet ${n}: cannot replay ${shardStream('audit', k)}: ${err.message}`));
    }
    const most = Math.max(...per.values());
    const lacking = [...per].filter(([, c]) => c < most).map(([s, c]) => `${s.split('/').pop()} −${most - c}`);
    short = `; ${per.size} publishers on the hub, ${lacking.length} short of ${most} (${lacking.slice(0, 12).join(', ')})`;
    ctx.log(`fleet ${n}: catch-up short${short}`);
  }
  const memberRss = f.memberPids.map(rss);
  const nodeRss = f.nodePids.map(rss);
  const nodePss = f.nodePids.map(pss);
  const workerRss = await Promise.all(f.workers.map(async (w) => (await w.ask({ cmd: 'rss' })).rss / w.nodes));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const mem = `hub members ${memberRss.map((b) => fmt.mib(b)).join(', ')}; per node: nats-server ${fmt.mib(mean(nodeRss))} RSS, ${fmt.mib(mean(nodePss))} PSS (the binary's pages are shared by all ${n}) + its share of a worker ${fmt.mib(mean(workerRss))} (${f.workers.length} workers of ${f.workers[0].nodes} nodes each, own connection, key, outbox and state per node)`;
  const target = n >= 1000 ? 10_000 : 5_000;
  const allP50 = percentile(pushAll, 50);
  const allMax = Math.max(...pushAll);
  return [
    row(G, {
      row: `fleet push → all ${n} nodes applied (acks read from the hub's sourced stream)`,
      sealkit: `all: p50 ${fmt.ms(allP50)}, max ${fmt.ms(allMax)}; per node p50 ${fmt.ms(percentile(push, 50))}, p99 ${fmt.ms(percentile(push, 99))}`,
      peer: `bare request-many, all: p50 ${fmt.ms(percentile(bareAll, 50))}; per node p50 ${fmt.ms(percentile(bare, 50))}, p99 ${fmt.ms(percentile(bare, 99))}`,
      ratio: fmt.x(allP50 / percentile(bareAll, 50)),
      target: `all applied < ${target / 1000} s`,
      status: verdict(allMax < target),
      note: `${reps} pushes after one warm-up; fleet ready in ${fmt.ms(ready)}; the hub's streams in ${f.shards} shards of ≤ ${f.hub.shardSize} nodes; ${mem}`,
    }),
    row(G, {
      row: `hub ingest of audit events from ${n} nodes (signed, through each node's outbox and the hub's sources)`,
      sealkit: `${fmt.n(ingest.rate)} ev/s`,
      peer: '—',
      ratio: '—',
      target: 'nothing lost, none twice',
      status: verdict(ingest.exact),
      note: `${fmt.n(n * perNode)} events (${perNode} a node) in ${fmt.ms(ingest.ms)}; the hub stream holds exactly ${ingest.exact ? 'every one' : 'a different count'}`,
    }),
    row(G, {
      row: `catch-up of ${n} nodes after a cut-off (${fmt.n(n * perNode)} events kept on the nodes)`,
      sealkit: fmt.ms(catchup),
      peer: '—',
      ratio: '—',
      target: '< 5 s, nothing lost',
      status: verdict(caught && catchup < 5000),
      note: caught ? `the nodes' network to the hub cut (a TCP link dropping every connection), ${perNode} events a node published meanwhile, the link back: from the link's return to every event in the hub's ${f.shards} audit shards (all ${n} leaf connections were up again ${fmt.ms(restart)} after the link)` : `the hub streams did not reach ${expected} messages in 120 s${short}`,
    }),
  ];

  async function storm(fl: Fleet, total: number, each: number, wait = true): Promise<{ rate: number; ms: number; exact: boolean }> {
    if (!wait) {
      await Promise.all(fl.workers.map((w) => w.ask({ cmd: 'storm', events: each })));
      return { rate: 0, ms: 0, exact: true };
    }
    const base = await electing('count the hub streams', () => auditHeld(fl.hubNc, fl.shards));
    const t = performance.now();
    await Promise.all(fl.workers.map((w) => w.ask({ cmd: 'storm', events: each })));
    const ok = await waitCount(fl.hubNc, fl.shards, base + total, 120_000);
    const ms = performance.now() - t;
    await sleep(1000); // anything more would be a duplicate
    const exact = ok && (await electing('count the hub streams', () => auditHeld(fl.hubNc, fl.shards))) === base + total;
    return { rate: total / (ms / 1000), ms, exact };
  }
}

// Every node's policy.applied for this serial, as the hub's events shards
// hold it: the time from the write of the key, per node.
async function ackReader(nc: NatsConnection, shards: number, n: number, serial: number): Promise<(t0: number) => Promise<number[]>> {
  const jsm = await nc.jetstreamManager({ checkAPI: false });
  const streams = Array.from({ length: shards }, (_, k) => shardStream('events', k));
  const readers = await Promise.all(
    streams.map(async (stream) => {
      const info = await jsm.consumers.add(stream, { filter_subject: 'policy.applied', ack_policy: AckPolicy.None, deliver_policy: DeliverPolicy.New, inactive_threshold: nanos(60_000) });
      const consumer = await nc.jetstream().consumers.get(stream, info.name);
      return { stream, name: info.name, messages: await consumer.consume({ max_messages: 1024 }) };
    }),
  );
  return async (t0) => {
    const seen = new Map<string, number>();
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const timer = setTimeout(done, 60_000);
    for (const r of readers) {
      void (async () => {
        for await (const m of r.messages) {
          const ev = parseEvent(m.data);
          const d = ev.data as { serial?: number };
          if (d.serial === serial && !seen.has(ev.source)) seen.set(ev.source, performance.now() - t0);
          if (seen.size === n) done();
        }
      })();
    }
    await all;
    clearTimeout(timer);
    for (const r of readers) {
      r.messages.stop();
      await jsm.consumers.delete(r.stream, r.name).catch(() => {});
    }
    if (seen.size !== n) throw new Error(`fleet push serial ${serial}: ${seen.size} of ${n} nodes applied in 60 s`);
    return [...seen.values()];
  };
}

async function shardInfos(nc: NatsConnection, shards: number, kind: HubStreamKind): Promise<StreamInfo[]> {
  const jsm = await nc.jetstreamManager({ checkAPI: false });
  return Promise.all(Array.from({ length: shards }, (_, k) => jsm.streams.info(shardStream(kind, k))));
}

// the audit events all the hub's shards hold
async function auditHeld(nc: NatsConnection, shards: number): Promise<number> {
  return (await shardInfos(nc, shards, 'audit')).reduce((a, i) => a + i.state.messages, 0);
}

// a hub just restarted may not answer every request at once: a timeout is a wait
async function waitCount(nc: NatsConnection, shards: number, expected: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  let traced = 0;
  while (Date.now() < deadline) {
    const infos = await shardInfos(nc, shards, 'audit').catch(() => null);
    const held = infos ? infos.reduce((a, i) => a + i.state.messages, 0) : -1;
    if (held >= expected) return true;
    if (process.env.BENCH_TRACE && infos && Date.now() - traced > 2000) {
      traced = Date.now();
      const sources = infos.flatMap((i) => i.sources ?? []);
      // a source hears its node's heartbeat every second: one silent for
      // longer is not delivering
      const silent = sources.filter((x) => x.active < 0 || x.active > 3e9);
      process.stderr.write(`catch-up: ${held}/${expected} held; ${silent.length} of ${sources.length} sources silent (${silent.slice(0, 5).map((x) => `${(x as { external?: { api?: string } }).external?.api ?? x.name} ${x.active < 0 ? 'never' : `${(x.active / 1e9).toFixed(1)} s`}`).join(', ')}); lag ${sources.reduce((a, x) => a + x.lag, 0)}\n`);
    }
    await sleep(50);
  }
  return false;
}

// the members' monitoring endpoints count the leaf connections
async function waitLeafs(hub: HubState, want: number, how: 'at least' | 'at most'): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const counts = await Promise.all(
      hub.members.map((m) =>
        fetch(`http://127.0.0.1:${m.httpPort}/leafz`)
          .then((r) => r.json() as Promise<{ leafnodes: number }>)
          // a member that does not answer proves nothing either way
          .then((j) => j.leafnodes, () => (how === 'at most' ? Infinity : 0)),
      ),
    );
    const total = counts.reduce((a, c) => a + c, 0);
    if (process.env.BENCH_TRACE) process.stderr.write(`leafz: ${counts.join(' ')}\n`);
    if (how === 'at least' ? total >= want : total <= want) return;
    await sleep(50);
  }
  throw new Error(`the hub did not see ${how} ${want} leaf connections in 120 s`);
}

const nodeName = (i: number) => `b${String(i).padStart(4, '0')}`;

async function startFleet(ctx: BenchContext, dir: string, n: number, trustPath: string): Promise<Fleet> {
  const [port, clusterPort, leafPort, httpPort] = [await freePorts(3), await freePorts(3), await freePorts(3), await freePorts(3)];
  const hub = newHubState([0, 1, 2].map((i) => ({ name: `hub${i + 1}`, host: '127.0.0.1', port: port + i, clusterPort: clusterPort + i, leafPort: leafPort + i, httpPort: httpPort + i })));
  const names = Array.from({ length: n }, (_, i) => nodeName(i));
  for (const node of names) hub.nodes[node] = { groups: [GROUP], leafPassword: newSecret() };
  // BENCH_FLEET_SHARD_SIZE: nodes a hub stream shard sources
  hub.shardSize = Number(process.env.BENCH_FLEET_SHARD_SIZE ?? DEFAULT_SHARD_SIZE);
  const shards = shardsOf(hub);

  await mkdir(dir, { recursive: true });
  // the nodes reach each member through a link the bench can cut, and the
  // member names the link as its address (or the nodes, told the member's
  // own leaf URL on connecting, would dial around the cut)
  const links = await Promise.all(hub.members.map((m) => startLink(m.leafPort)));
  ctx.defer(() => Promise.all(links.map((l) => l.close())).then(() => {}));
  const leafThroughLinks = links.map((l) => `nats-leaf://127.0.0.1:${l.port}`);
  for (const [i, m] of hub.members.entries()) {
    // the bare peer's subject, allowed both ways only for this benchmark
    await writeFileAtomic(join(dir, `${m.name}.conf`), hubMemberConfig(hub, m.name, { storeDir: join(dir, m.name), leafExtra: { publish: ['_INBOX.>'], subscribe: [PING] }, leafAdvertise: `127.0.0.1:${links[i].port}` }));
  }
  const members = await Promise.all(hub.members.map((m) => launch(join(dir, `${m.name}.conf`))));
  ctx.defer(() => Promise.allSettled(members.map(kill)).then(() => {}));
  await Promise.all(hub.members.map((m) => waitForPort(m.port)));
  const hubNc = await connect({ servers: hub.members.map((m) => `nats://127.0.0.1:${m.port}`), user: hub.admin.user, pass: hub.admin.password, maxReconnectAttempts: -1 });
  ctx.defer(() => hubNc.close());
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await ensureHubStreams(hubNc, { shards, replicas: hubReplicas(3) });
      break;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`the hub's JetStream did not come up in 60 s: ${(err as Error).message}`);
      await sleep(250);
    }
  }

  // the nodes: a nats-server each, in its own domain, a leaf of every member
  // through its link
  const creds = generateCreds();
  const nodePids: number[] = [];
  // stopped together: one at a time, a thousand take minutes
  const nodeProcs: ChildProcess[] = [];
  ctx.defer(() => Promise.all(nodeProcs.map(kill)).then(() => {}));
  const specs: WorkerSpec['nodes'] = [];
  for (let i = 0; i < n; i += 10) {
    await Promise.all(
      names.slice(i, i + 10).map(async (node) => {
        const root = join(dir, 'nodes', node);
        const config: FleetNodeConfig = { node, groups: [GROUP], hub: leafThroughLinks, leafUser: leafUser(node), leafPassword: hub.nodes[node].leafPassword };
        await writeFileAtomic(fleetConfigPath(root), JSON.stringify(config), 0o600);
        await writeFileAtomic(eventKeyPath(root), JSON.stringify(generateEventKey(node)), 0o600);
        // every node's bootstrap trust names the operator's key
        await copyFile(trustPath, join(root, 'trust.yaml'));
        // a port of its own choosing, reported in a file: a thousand ports
        // picked in advance would meet the ephemeral ports of the
        // connections opened meanwhile
        const conf = join(root, 'nats.conf');
        const portsDir = join(root, 'ports');
        await mkdir(portsDir, { recursive: true });
        await writeFile(conf, serverConfig({ creds, storeDir: join(root, 'js'), port: -1, portsFileDir: portsDir, maxFileStore: '256MB', ...leafServerOptions(config) }));
        const proc = await launch(conf);
        nodeProcs.push(proc);
        const p = await readPort(portsDir, proc);
        nodePids.push(proc.pid!);
        specs.push({ node, url: `nats://127.0.0.1:${p}`, root });
      }),
    );
  }
  ctx.log(`fleet ${n}: ${n} node servers up; starting the policy cores`);

  const per = n <= 200 ? 100 : 250;
  const workers: Worker[] = [];
  for (let i = 0; i < specs.length; i += per) {
    const spec: WorkerSpec = { nodes: specs.slice(i, i + per), admin: { user: creds.admin.user, password: creds.admin.password }, ping: PING };
    const file = join(dir, `worker-${i}.json`);
    await writeFile(file, JSON.stringify(spec));
    workers.push(startWorker(ctx, file, spec.nodes.length));
  }
  await Promise.all(workers.map((w) => w.ask(null)));

  // every source on the hub active: a node's stream reaches the hub
  const waitMs = Number(process.env.BENCH_FLEET_SOURCES_WAIT_S ?? 180) * 1000;
  const until = Date.now() + waitMs;
  let told = Date.now();
  for (;;) {
    // a hub setting up hundreds of sources may answer late: a timeout is a wait
    const infos = await Promise.all([shardInfos(hubNc, shards.length, 'audit'), shardInfos(hubNc, shards.length, 'events')]).then((x) => x.flat(), () => null);
    const idle = infos ? infos.flatMap((s) => s.sources ?? []).filter((s) => s.active < 0).length : 2 * n;
    if (idle === 0) break;
    // which shards wait, on which leader, and what their sources last said
    const where = () =>
      (infos ?? [])
        .map((i) => ({ i, idle: (i.sources ?? []).filter((x) => x.active < 0) }))
        .filter((x) => x.idle.length)
        .map(({ i, idle: xs }) => `${i.config.name}@${i.cluster?.leader ?? '?'} ${xs.length} idle (e.g. ${(xs[0] as { external?: { api?: string } }).external?.api ?? xs[0].name}${(xs[0] as { error?: { description?: string } }).error ? `: ${(xs[0] as { error?: { description?: string } }).error!.description}` : ''})`)
        .join('; ') || 'the hub did not answer';
    if (Date.now() > until) throw new Error(`${idle} of ${2 * n} hub sources never became active in ${waitMs / 1000} s: ${where()}`);
    if (Date.now() - told > 15_000) {
      told = Date.now();
      ctx.log(`fleet ${n}: ${idle} of ${2 * n} sources not active yet: ${where()}`);
    }
    await sleep(500);
  }
  // where the shards' leaders are (nats-server places them)
  const leaders = new Map<string, number>();
  for (const i of [...(await shardInfos(hubNc, shards.length, 'audit')), ...(await shardInfos(hubNc, shards.length, 'events'))]) leaders.set(i.cluster?.leader ?? '?', (leaders.get(i.cluster?.leader ?? '?') ?? 0) + 1);
  ctx.log(`fleet ${n}: ${shards.length} shards of ≤ ${hub.shardSize} nodes; stream leaders ${[...leaders].map(([m, c]) => `${m} ${c}`).join(', ')}`);
  return {
    hub,
    shards: shards.length,
    hubNc,
    memberPids: members.map((m) => m.pid!),
    nodePids,
    workers,
    links,
  };
}

function startWorker(ctx: BenchContext, specFile: string, nodes: number): Worker {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench', 'fleet-node.ts'), specFile], { stdio: ['pipe', 'pipe', 'inherit'] });
  ctx.defer(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  let queue = Promise.resolve() as Promise<unknown>;
  return {
    proc,
    nodes,
    // null: wait for the worker's first line (its nodes ready)
    ask(cmd) {
      const next = queue.then(async () => {
        if (cmd !== null) proc.stdin!.write(JSON.stringify(cmd) + '\n');
        const { value, done } = await lines.next();
        if (done) throw new Error(`fleet worker ${specFile} exited (${proc.exitCode ?? proc.signalCode})`);
        return decode<Record<string, number>>(Buffer.from(value as string), 'fleet worker answer');
      });
      queue = next.catch(() => {});
      return next;
    },
  };
}

