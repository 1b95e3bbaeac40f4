import type { NatsConnection, StreamConfig } from 'nats';
import { streamNames } from './contract.ts';
import { checkNode, fleetBucket, nodesBucket, sourceDeliverPrefix } from './fleet.ts';
import { refuseUnsharded, shardStream, streamInfo, type HubStreamKind } from './hubshards.ts';
import { keptEvents } from './streams.ts';

// JetStream on the hub, set up by the operator (`sealkit hub config`,
// `sealkit fleet enroll`, `make hub`): the fleet's streams, sharded
// (hubshards.ts), each shard sourcing the same stream of its nodes from each
// node's own domain, and the two buckets. A source follows the node's stream
// sequence, so what a node kept while cut off arrives when it is back, once;
// the duplicate window on Nats-Msg-Id (the event id) is the node's.
export interface HubStreamOptions {
  shards: string[][]; // the nodes of each shard (shardsOf)
  replicas: number;
  maxBytes?: number; // what the hub keeps of each kind, all shards together
}

const KEPT_BYTES = 1024 * 1024 * 1024;

export function hubStreamConfig(kind: HubStreamKind, k: number, nodes: string[], o: { replicas: number; maxBytes: number }): Partial<StreamConfig> & { name: string } {
  const nodeStream = streamNames[kind];
  return {
    name: shardStream(kind, k),
    subjects: [],
    sources: [...nodes].sort().map((n) => ({ name: nodeStream, external: { api: `$JS.${checkNode(n)}.API`, deliver: sourceDeliverPrefix(n, nodeStream) } })),
    ...keptEvents({ maxBytes: o.maxBytes, maxAgeMs: 90 * 24 * 3600 * 1000, replicas: o.replicas }),
  };
}

const sourceKeys = (c: Partial<StreamConfig>) => JSON.stringify((c.sources ?? []).map((s) => s.external?.api ?? s.name));

export async function ensureHubStreams(nc: NatsConnection, o: HubStreamOptions): Promise<void> {
  const jsm = await nc.jetstreamManager();
  await refuseUnsharded(jsm);
  // The shards share what the hub keeps of a kind: nats-server reserves a
  // stream's max_bytes on every member holding it, and a shard each its own
  // gigabyte would outgrow a member's store. A new shard shrinks the others
  // (they drop their oldest events beyond their new share).
  const maxBytes = Math.floor((o.maxBytes ?? KEPT_BYTES) / o.shards.length);
  for (const [k, nodes] of o.shards.entries()) {
    for (const kind of ['audit', 'events'] as const) {
      const config = hubStreamConfig(kind, k, nodes, { replicas: o.replicas, maxBytes });
      const info = await streamInfo(jsm, config.name);
      // a shard whose nodes and share did not change is left alone: an
      // update makes its leader look at every source again
      if (!info) await jsm.streams.add(config);
      else if (sourceKeys(info.config) !== sourceKeys(config) || info.config.max_bytes !== maxBytes) await jsm.streams.update(config.name, config);
    }
  }
  const js = nc.jetstream();
  // direct gets by key subject: a node's leaf user may read its groups' keys
  // by subject, never by a body naming any key
  await js.views.kv(fleetBucket, { history: 16, allow_direct: true, replicas: o.replicas });
  await js.views.kv(nodesBucket, { history: 4, replicas: o.replicas });
}
