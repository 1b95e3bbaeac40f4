import { nanos, RetentionPolicy, StorageType, DiscardPolicy, AckPolicy, DeliverPolicy, type NatsConnection } from "nats";
import { streams, policyBucket } from './subjects.ts';

// JetStream setup, done once by the admin user (`sealkit bus init`, `make
// dev`, the ISO's onboot step): services themselves cannot create streams.
export const DUPLICATE_WINDOW_MS = 10 * 60 * 1000;

// How every sealkit stream keeps events (the node's and the hub's): on disk,
// the oldest dropped at the limits, deduplicated on Nats-Msg-Id.
export function keptEvents(o: { maxBytes: number; maxAgeMs: number; replicas: number }) {
  return {
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_bytes: o.maxBytes,
    max_age: nanos(o.maxAgeMs),
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
    num_replicas: o.replicas,
  };
}

export async function ensureStreams(nc: NatsConnection, opts: { maxBytes?: number } = {}): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const s of [streams.audit, streams.events]) {
    const config = {
      name: s.name,
      subjects: [...s.subjects],
      ...keptEvents({ maxBytes: opts.maxBytes ?? 256 * 1024 * 1024, maxAgeMs: 30 * 24 * 3600 * 1000, replicas: 1 }),
    };
    try {
      await jsm.streams.info(s.name);
      await jsm.streams.update(s.name, config);
    } catch {
      await jsm.streams.add(config);
    }
  }
  const js = nc.jetstream();
  await js.views.kv(policyBucket, { history: 16, allow_direct: true });
}

// Everything a stream kept for a subject, oldest first: an ephemeral
// consumer with a single filter subject (nats-server 2.9 ordered consumers
// cannot filter), no acks, deleted when done. Returns the number delivered.
// A subject of '>' takes the whole stream, also one with no subjects of its
// own (a hub stream that sources nodes' streams).
export async function replayStream(nc: NatsConnection, stream: string, subject: string, onMsg: (data: Uint8Array, msgId: string | undefined) => void): Promise<number> {
  const jsm = await nc.jetstreamManager();
  const info = await jsm.consumers.add(stream, {
    ...(subject === '>' ? {} : { filter_subject: subject }),
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: nanos(30_000),
  });
  let left = info.num_pending;
  if (left === 0) {
    await jsm.consumers.delete(stream, info.name).catch(() => {});
    return 0;
  }
  const consumer = await nc.jetstream().consumers.get(stream, info.name);
  let n = 0;
  while (left > 0) {
    const batch = await consumer.fetch({ max_messages: Math.min(left, 256), expires: 2000 });
    let got = 0;
    for await (const m of batch) {
      onMsg(m.data, m.headers?.get('Nats-Msg-Id') || undefined);
      got++;
    }
    if (got === 0) break;
    left -= got;
    n += got;
  }
  await jsm.consumers.delete(stream, info.name).catch(() => {});
  return n;
}
