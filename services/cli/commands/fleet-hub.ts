import { join } from 'node:path';
import { DeliverPolicy, ErrorCode, type NatsConnection } from 'nats';
import { Backoff } from '../../lib/backoff.ts';
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

// A hub cluster that has just lost or regained a member elects new stream
// leaders; until it has, its JetStream answers 503 (no responders, or no
// leader) or nothing at all. That is over within seconds, so an operator's
// command waits it out, telling why, until its own deadline; any other error,
// or one still there at the deadline, is the command's.
function electing(err: unknown): boolean {
  const e = err as { code?: string; api_error?: { code?: number } } | null;
  return e?.code === ErrorCode.NoResponders || e?.code === ErrorCode.Timeout || e?.api_error?.code === 503;
}

export async function whileHubElects<T>(fn: () => Promise<T>, deadline: number, onWait: (err: Error) => void): Promise<T> {
  const backoff = new Backoff({ firstMs: 100, maxMs: 1000 });
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!electing(err) || Date.now() + backoff.delayMs > deadline) throw err;
      onWait(err as Error);
      await backoff.wait();
    }
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
    return wait ? await whileHubElects(read, wait.deadline, wait.onWait) : await read();
  } catch (err) {
    throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot read the fleet registry ${nodesBucket} on the hub: ${(err as Error).message}; has "sealkit hub config" set the hub up, and do a majority of its members run?`);
  }
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
// Creating the consumer waits out an election until `deadline`.
export async function followHubStream(nc: NatsConnection, stream: string, subject: string, since: Date | null, signal: AbortSignal, deadline: number, onWait: (err: Error) => void, onEvent: (ev: CloudEvent, subject: string) => void): Promise<void> {
  const consumer = await whileHubElects(() => nc.jetstream().consumers.get(stream, {
    filterSubjects: subject, // one subject: filter_subject, which nats-server 2.9 knows
    ...(since ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.toISOString() } : {}),
  }), deadline, onWait);
  // Short pulls: the library notices a consumer lost with its hub member
  // by missed heartbeats (half the expiry) and makes a new one from where it
  // was. Its default, 30 s pulls, would take as long as a whole push waits.
  const messages = await consumer.consume({ max_messages: 100, expires: 4000 });
  signal.addEventListener('abort', () => void messages.close(), { once: true });
  for await (const m of messages) {
    try {
      onEvent(parseEvent(m.data), m.subject);
    } catch {
      // a hub stream holds only events; anything else is not one to count
    }
  }
}
