// One process standing in for many fleet nodes in `make bench ROWS=fleet`.
// Each node has its own nats-server (a real leaf of the hub, in its own
// JetStream domain, started by bench/fleet.ts), and here its own connection,
// state dir, event key, outbox and the real policy-service core: the fleet
// follower (services/policy/fleet.ts) handing each value to the applier that
// a local push goes through (services/policy/apply.ts: trust, signature,
// schema, serial, store on disk, policy.applied through the outbox). Only
// the process is shared, which is what lets a 2-core machine hold 1000.
//
//   node --import tsx bench/fleet-node.ts SPEC.json
// stdout: one JSON line per answer; stdin: one JSON command per line.
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { encode } from '../services/lib/bus.ts';
import { EventKey, readEventKey } from '../services/lib/eventsig.ts';
import { eventKeyPath } from '../services/lib/fleet.ts';
import { silentLogger } from '../services/lib/log.ts';
import { EventPublisher } from '../services/lib/outbox.ts';
import { readTrust } from '../services/lib/sign.ts';
import { ensureStreams } from '../services/lib/streams.ts';
import { policyBucket, subjects } from '../services/lib/subjects.ts';
import { PolicyApplier } from '../services/policy/apply.ts';
import { followFleet, type FleetFollower } from '../services/policy/fleet.ts';
import { PolicyStore } from '../services/policy/store.ts';

export interface NodeSpec {
  node: string;
  url: string; // the node's own nats-server
  root: string; // its state dir: fleet/node.json, keys/events.json, trust.yaml
}

export interface WorkerSpec {
  nodes: NodeSpec[];
  admin: { user: string; password: string }; // the nodes' bus admin (one set for all: local to each node)
  ping: string; // the bare request-many subject the peer row uses
}

interface SimNode {
  spec: NodeSpec;
  nc: NatsConnection;
  events: EventPublisher;
  follower: FleetFollower | null;
}

const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');

async function startNode(spec: NodeSpec, w: WorkerSpec): Promise<SimNode> {
  const open = (inboxPrefix?: string) =>
    connect({ servers: spec.url, name: `bench-${spec.node}`, user: w.admin.user, pass: w.admin.password, inboxPrefix, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  const nc = await open();
  await ensureStreams(nc, { maxBytes: 64 * 1024 * 1024 });
  const key = new EventKey(await readEventKey(eventKeyPath(spec.root)));
  const state = join(spec.root, 'policy');
  const events = new EventPublisher({ nc, service: 'policy', node: spec.node, dir: join(state, 'outbox'), log: silentLogger, key });
  await events.init();
  const store = new PolicyStore(state);
  const trust = await readTrust(join(spec.root, 'trust.yaml'));
  const kv = await nc.jetstream().views.kv(policyBucket, { bindOnly: true });
  const applier = new PolicyApplier({ store, trust, kv, events, log: silentLogger, loaded: null });
  // the follower's own connection under the node's inbox prefix, as the policy service opens it
  const follower = await followFleet({ root: spec.root, applier, log: silentLogger, connect: open });
  // the peer: the same node answering a bare request, nothing decided
  nc.subscribe(w.ping, { callback: (_e, m) => m.respond(encode({ node: spec.node })) });
  await nc.flush();
  return { spec, nc, events, follower };
}

// n at a time, so a thousand connections and stream setups do not all wait on one another
async function inBatches<T, R>(xs: T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const res: R[] = [];
  for (let i = 0; i < xs.length; i += n) res.push(...(await Promise.all(xs.slice(i, i + n).map(fn))));
  return res;
}

const spec = JSON.parse(await readFile(process.argv[2], 'utf8')) as WorkerSpec;
const nodes = await inBatches(spec.nodes, 25, (s) => startNode(s, spec));
out({ ready: nodes.length });

let storms = 0;
for await (const line of createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line) as { cmd: 'storm'; events: number } | { cmd: 'rss' } | { cmd: 'stop' };
  if (cmd.cmd === 'storm') {
    const t = Date.now();
    const tag = storms++;
    await Promise.all(
      nodes.map(async (n) => {
        // as a storm reaches the auditor: published together, group-committed by the outbox
        await Promise.all(Array.from({ length: cmd.events }, (_, i) => n.events.publish(subjects.audit.denial, { file: `/bench/${n.spec.node}/${tag}/${i}`, cause: 'invalid-hash', op: 'appraise_data', type: 1800 })));
        if (!(await n.events.flush(120_000))) throw new Error(`${n.spec.node}: outbox not flushed in 120 s`);
      }),
    );
    out({ stormed: nodes.length * cmd.events, ms: Date.now() - t });
  } else if (cmd.cmd === 'rss') {
    out({ rss: process.memoryUsage().rss });
  } else {
    for (const n of nodes) {
      await n.follower?.stop();
      n.events.close();
    }
    await Promise.allSettled(nodes.map((n) => n.nc.close()));
    out({ stopped: nodes.length });
    process.exit(0);
  }
}
// stdin ended: the bench that started this worker is gone (killed, or its
// run cut short); its nodes' connections would keep this process alive,
// reconnecting to servers nobody stops, and eating the next run's CPU
process.exit(0);
