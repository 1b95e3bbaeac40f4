import { join } from 'node:path';
import { DeliverPolicy, type NatsConnection } from 'nats';
import { connectBus } from '../../lib/bus.ts';
import { clientUrls, hubDir, readHubState } from '../../lib/hubstate.ts';
import { parseEvent, type CloudEvent } from '../../lib/envelope.ts';
import { SealkitError } from '../../lib/errors.ts';
import { nodesBucket, type FleetNodeEntry } from '../../lib/fleet.ts';
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

export async function readRegistry(nc: NatsConnection): Promise<FleetNodeEntry[]> {
  let kv;
  try {
    kv = await nc.jetstream().views.kv(nodesBucket, { bindOnly: true });
  } catch (err) {
    throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot read the fleet registry ${nodesBucket} on the hub: ${(err as Error).message}; has "sealkit hub config" set the hub up?`);
  }
  // all keys first: a get while the keys' consumer still delivers ends it early
  const keys: string[] = [];
  for await (const key of await kv.keys()) keys.push(key);
  const out: FleetNodeEntry[] = [];
  for (const key of keys) {
    const e = await kv.get(key);
    if (e?.operation === 'PUT' && e.value.length) out.push(JSON.parse(e.string()) as FleetNodeEntry);
  }
  return out.sort((a, b) => a.node.localeCompare(b.node));
}

// The node an event names: its source is sealkit/<service>/<node>.
export function eventNode(ev: CloudEvent): string | null {
  const m = /^sealkit\/[^/]+\/([^/]+)$/.exec(ev.source);
  return m ? m[1] : null;
}

// The events a hub stream holds on `subject` from `since` on, as they come,
// until `signal` aborts. The library's ordered consumer resumes where it was
// when the hub member it reads from dies, so nothing is missed; a node's
// events are read from the stream the hub keeps, not from a live
// subscription, so an answer given while the operator was away still counts.
export async function followHubStream(nc: NatsConnection, stream: string, subject: string, since: Date | null, signal: AbortSignal, onEvent: (ev: CloudEvent, subject: string) => void): Promise<void> {
  const consumer = await nc.jetstream().consumers.get(stream, {
    filterSubjects: subject, // one subject: filter_subject, which nats-server 2.9 knows
    ...(since ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.toISOString() } : {}),
  });
  const messages = await consumer.consume();
  signal.addEventListener('abort', () => void messages.close(), { once: true });
  for await (const m of messages) {
    try {
      onEvent(parseEvent(m.data), m.subject);
    } catch {
      // a hub stream holds only events; anything else is not one to count
    }
  }
}
