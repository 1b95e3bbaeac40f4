import { join } from 'node:path';
import { AckPolicy, DeliverPolicy, nanos, type NatsConnection } from 'nats';
import { Backoff } from '../../lib/backoff.ts';
import { connectBus } from '../../lib/bus.ts';
import { clientUrls, hubDir, readHubState } from '../../lib/hubstate.ts';
import { parseEvent, type CloudEvent } from '../../lib/envelope.ts';
import { consumerOnLeader, whileElecting } from '../../lib/streams.ts';
import { SealkitError } from '../../lib/errors.ts';
import { nodesBucket, type FleetNodeEntry } from '../../lib/fleet.ts';
import { hubShardNames, type HubStreamKind } from '../../lib/hubshards.ts';
import { exists, type Options, type Values } from './common.ts';

// What the fleet commands share: the operator's connection to the hub, the
// registry of enrolled nodes, and reading the hub's sourced streams.

export const hubOptions: Options = {
  server: { type: 'string' },
  creds: { type: 'string' },
};

export const hubUsage = `hub options:
  --server URLS    the hub's members, comma-separated (default $SEALKIT_HUB_URL, or
                   the members of the hub in $SEALKIT_HUB or ./state/hub)
  --creds FILE     the operator's hub credentials (default <hub>/creds/admin.json,
                   as "sealkit hub config" writes them)
`;

export async function hubServers(v: Values): Promise<string[]> {
  const given = (v.server as string | undefined) ?? process.env.SEALKIT_HUB_URL;
  if (given) return given.split(',').map((s) => s.trim()).filter(Boolean);
  return clientUrls((await readHubState(hubDir())).members);
}

export async function connectHub(v: Values): Promise<NatsConnection> {
  const servers = await hubServers(v);
  const file = (v.creds as string | undefined) ?? join(hubDir(), 'creds', 'admin.json');
  if (!(await exists(file))) {
    throw new SealkitError('SEALKIT_CONFIG', `the fleet commands need the operator's hub credentials; none at ${file} (pass --creds FILE, or run "sealkit hub config")`);
  }
  try {
    // every member is named, so the operator's view survives one of them dying
    return await connectBus({ name: 'sealkit-cli-fleet', servers, user: 'admin', credsFile: file, waitOnFirstConnect: false });
  } catch (err) {
    throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot reach the hub at ${servers.join(', ')}: ${(err as Error).message}; is the hub up (make hub), and is --server right?`);
  }
}

// Without a deadline the registry is read once: a 503 is the caller's error.
export async function readRegistry(nc: NatsConnection, wait?: { deadline: number; onWait: (err: Error) => void }): Promise<FleetNodeEntry[]> {
  const read = async () => {
    const kv = await nc.jetstream().views.kv(nodesBucket, { bindOnly: true });
    // all keys first: a get while the keys' consumer still delivers ends it early
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    const out: FleetNodeEntry[] = [];
    for (const key of keys) {
      const e = await kv.get(key);
      if (e?.operation === 'PUT' && e.value.length) out.push(JSON.parse(e.string()) as FleetNodeEntry);
    }
    return out.sort((a, b) => a.node.localeCompare(b.node));
  };
  try {
    return wait ? await whileElecting(read, wait.deadline, wait.onWait) : await read();
  } catch (err) {
    throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot read the fleet registry ${nodesBucket} on the hub: ${(err as Error).message}; has "sealkit hub config" set the hub up, and do a majority of its members run?`);
  }
}

// The hub's stream shards of one kind, listed on the hub; with a deadline,
// a hub electing leaders is waited for, as readRegistry does.
export async function hubShards(nc: NatsConnection, kind: HubStreamKind, wait?: { deadline: number; onWait: (err: Error) => void }): Promise<string[]> {
  const list = async () => hubShardNames(await nc.jetstreamManager({ checkAPI: false }), kind);
  return wait ? whileElecting(list, wait.deadline, wait.onWait) : list();
}

// The node an event names: its source is sealkit/<service>/<node>.
export function eventNode(ev: CloudEvent): string | null {
  const m = /^sealkit\/[^/]+\/([^/]+)$/.exec(ev.source);
  return m ? m[1] : null;
}

// The events a hub stream holds on `subject` from `since` on, as they come,
// until `signal` aborts. A node's events are read from the stream the hub
// keeps, not from a live subscription, so an answer given while the operator
// was away still counts.
//
// The reader is a consumer of our own, made on the stream's leader and made
// again from the next sequence whenever it stops answering. The library's
// ordered consumer is not enough here: when the hub member holding it dies
// (nats-server 2.9 keeps a one-replica consumer on one member), its checks
// time out rather than say "consumer not found", and it waits for that member
// to come back: a push lost both its paths that way in a loaded run.
export async function followHubStream(nc: NatsConnection, stream: string, subject: string, since: Date | null, signal: AbortSignal, deadline: number, onWait: (err: Error) => void, onEvent: (ev: CloudEvent, subject: string) => void): Promise<void> {
  const jsm = await nc.jetstreamManager({ checkAPI: false });
  const backoff = new Backoff({ firstMs: 100, maxMs: 1000, signal });
  let next = 0; // the stream sequence to go on from
  let reading = false;
  while (!signal.aborted) {
    let name: string | undefined;
    try {
      // setting up waits out an election until the deadline; once reading, until the signal
      const info = await consumerOnLeader(jsm, stream, {
        filter_subject: subject, // one subject: filter_subject, which nats-server 2.9 knows
        ack_policy: AckPolicy.None,
        mem_storage: true,
        inactive_threshold: nanos(10_000),
        ...(next ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: next } : since ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.toISOString() } : { deliver_policy: DeliverPolicy.All }),
      }, reading ? Infinity : deadline, onWait, signal);
      name = info.name;
      reading = true;
      backoff.reset();
      const consumer = await nc.jetstream().consumers.get(stream, name);
      while (!signal.aborted) {
        const batch = await consumer.fetch({ max_messages: 100, expires: 1000 });
        const stop = () => void batch.close();
        signal.addEventListener('abort', stop, { once: true });
        let got = 0;
        try {
          for await (const m of batch) {
            got++;
            next = m.seq + 1;
            try {
              onEvent(parseEvent(m.data), m.subject);
            } catch {
              // a hub stream holds only events; anything else is not one to count
            }
          }
        } finally {
          signal.removeEventListener('abort', stop);
        }
        // nothing came: is the reader still there (its member may be gone)?
        if (!got && !signal.aborted) await consumer.info();
      }
    } catch (err) {
      if (signal.aborted) break;
      if (!reading) throw err;
      // the reader's member went away, or the stream is electing: a new reader
      if (name) void jsm.consumers.delete(stream, name).catch(() => {});
      await backoff.wait();
    }
  }
}
