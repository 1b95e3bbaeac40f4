import { nanos, RetentionPolicy, StorageType, DiscardPolicy, type NatsConnection, type StreamConfig } from 'nats';
import { streamNames } from './contract.ts';
import { checkNode, fleetBucket, hubStreams, nodesBucket, sourceDeliverPrefix } from './fleet.ts';
import { DUPLICATE_WINDOW_MS } from './streams.ts';

// JetStream on the hub, set up by the operator (`sealkit hub config`,
// `sealkit fleet enroll`, `make hub`): the fleet's streams, each sourcing the
// same stream of every enrolled node from the node's own domain, and the two
// buckets. A source follows the node's stream sequence, so what a node kept
// while cut off arrives when it is back, once; the duplicate window on
// Nats-Msg-Id (the event id) is the node's.
export interface HubStreamOptions {
  nodes: string[];
  replicas: number;
  maxBytes?: number;
}

export function hubStreamConfig(kind: keyof typeof hubStreams, o: HubStreamOptions): Partial<StreamConfig> & { name: string } {
  const nodeStream = streamNames[kind];
  return {
    name: hubStreams[kind],
    subjects: [],
    sources: [...o.nodes].sort().map((n) => ({ name: nodeStream, external: { api: `$JS.${checkNode(n)}.API`, deliver: sourceDeliverPrefix(n, nodeStream) } })),
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_bytes: o.maxBytes ?? 1024 * 1024 * 1024,
    max_age: nanos(90 * 24 * 3600 * 1000),
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    num_replicas: o.replicas,
  };
}

export async function ensureHubStreams(nc: NatsConnection, o: HubStreamOptions): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const kind of ['audit', 'events'] as const) {
    const config = hubStreamConfig(kind, o);
    const exists = await jsm.streams.info(config.name).then(() => true, () => false);
    if (exists) await jsm.streams.update(config.name, config);
    else await jsm.streams.add(config);
  }
  const js = nc.jetstream();
  // direct gets by key subject: a node's leaf user may read its groups' keys
  // by subject, never by a body naming any key
  await js.views.kv(fleetBucket, { history: 16, allow_direct: true, replicas: o.replicas });
  await js.views.kv(nodesBucket, { history: 4, replicas: o.replicas });
}
