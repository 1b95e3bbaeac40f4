import type { JetStreamManager, StreamInfo } from 'nats';
import { SealkitError } from './errors.ts';
import { hubStreams } from './fleet.ts';
import type { HubState } from './hubconf.ts';

// The hub's fleet streams are split into shards, FLEET_AUDIT_<k> and
// FLEET_EVENTS_<k>, each sourcing the streams of at most shardSize nodes.
// Why: nats-server 2.9.10 handles every source consumer's creation reply
// under its stream's one lock, inline in the leaf or route connection's read
// loop it came on; with 1,000 sources a stream those replies blocked the read
// loops for up to 60 s and the members lost their Raft quorum. A shard is a
// stream of its own, with its own lock and leader.
//
// A node keeps the shard it was enrolled into (hub.json, nodes[node].shard):
// moving it would source its stream again from the start into another shard,
// and its events would be there twice.

export const DEFAULT_SHARD_SIZE = 100;
export type HubStreamKind = keyof typeof hubStreams;

export function shardStream(kind: HubStreamKind, k: number): string {
  return `${hubStreams[kind]}_${k}`;
}

const SHARD = new RegExp(`^(${Object.values(hubStreams).join('|')})_(\\d+)$`);

export function isShardStream(name: string): boolean {
  return SHARD.test(name);
}

export function checkShardSize(raw: unknown, what: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} "${raw}" is not a number of nodes a shard stream sources (1-10000; default ${DEFAULT_SHARD_SIZE})`);
  return n;
}

// Gives every node without a shard one, in enrolment order (hub.json keeps
// it): the first shard with room. Returns whether anything changed.
export function assignShards(hub: HubState): boolean {
  const size = hub.shardSize ?? DEFAULT_SHARD_SIZE;
  const counts: number[] = [];
  for (const n of Object.values(hub.nodes)) if (n.shard !== undefined) counts[n.shard] = (counts[n.shard] ?? 0) + 1;
  let changed = false;
  for (const n of Object.values(hub.nodes)) {
    if (n.shard !== undefined) continue;
    let k = 0;
    while ((counts[k] ?? 0) >= size) k++;
    n.shard = k;
    counts[k] = (counts[k] ?? 0) + 1;
    changed = true;
  }
  return changed;
}

// The nodes of each shard, shard 0 first; a hub without nodes has one empty
// shard (its streams exist before the first enrolment).
export function shardsOf(hub: HubState): string[][] {
  assignShards(hub);
  const shards: string[][] = [[]];
  for (const [node, n] of Object.entries(hub.nodes)) (shards[n.shard!] ??= []).push(node);
  return Array.from(shards, (s) => s ?? []);
}

// The names of one kind's shards on the hub, in shard order: a reader finds
// them there (it may not have hub.json).
export async function hubShardNames(jsm: JetStreamManager, kind: HubStreamKind): Promise<string[]> {
  const found: Array<[number, string]> = [];
  const legacy: string[] = [];
  for await (const name of jsm.streams.names()) {
    const m = SHARD.exec(name);
    if (m && m[1] === hubStreams[kind]) found.push([Number(m[2]), name]);
    if (name === hubStreams[kind]) legacy.push(name);
  }
  if (!found.length) {
    throw new SealkitError('SEALKIT_CONFIG', `the hub has no ${hubStreams[kind]}_<k> streams${legacy.length ? ` (only ${legacy[0]}, the unsharded stream of an older sealkit: read it with "sealkit fleet verify --stream ${legacy[0]}"; "make hub" or "sealkit fleet enroll" says how to shard the hub)` : ''}; set the hub up with "make hub" or "sealkit fleet enroll"`);
  }
  return found.sort((a, b) => a[0] - b[0]).map(([, name]) => name);
}

// A stream's info, or null when there is none; anything else (a hub
// electing, 503) is the caller's error, never taken for "none".
export async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | null> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (/stream not found/i.test((err as Error).message)) return null;
    throw err;
  }
}

// Before any shard is made: a hub set up by an older sealkit has one
// FLEET_AUDIT and one FLEET_EVENTS sourcing every node. Shards beside them
// would source every node's stream a second time from its start (each event
// twice, in two streams, every reader reading only the shards), so the
// operator decides what becomes of them.
export async function refuseUnsharded(jsm: JetStreamManager): Promise<void> {
  const old: string[] = [];
  for (const name of Object.values(hubStreams)) {
    const info = await streamInfo(jsm, name);
    if (info) old.push(`${name} (${info.state.messages} events, ${info.config.sources?.length ?? 0} sources)`);
  }
  if (old.length) {
    const names = Object.values(hubStreams);
    throw new SealkitError(
      'SEALKIT_CONFIG',
      `the hub holds the unsharded streams of an older sealkit: ${old.join(', ')}; this sealkit keeps the fleet's events in shards (${names.map((n) => `${n}_<k>`).join(', ')}) and reads only those. To move on: keep what they hold if you need it ("sealkit fleet verify --stream ${names.join(',')}" checks it; "nats stream backup" copies it), delete them ("nats stream rm ${names[0]}" and "nats stream rm ${names[1]}" with the operator's credentials), and run this again: the shards source every node's streams anew, from what each node still keeps`,
    );
  }
}
