import { nanos, RetentionPolicy, StorageType, DiscardPolicy, AckPolicy, DeliverPolicy, ErrorCode, type ConsumerConfig, type ConsumerInfo, type JetStreamManager, type NatsConnection } from "nats";
import { Backoff } from './backoff.ts';
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
// own (a hub stream that sources nodes' streams). `onLeader` is for a
// replicated stream (the hub's): see consumerOnLeader.
export async function replayStream(nc: NatsConnection, stream: string, subject: string, onMsg: (data: Uint8Array, msgId: string | undefined) => void, o: { onLeader?: boolean } = {}): Promise<number> {
  const jsm = await nc.jetstreamManager();
  const config: Partial<ConsumerConfig> = {
    ...(subject === '>' ? {} : { filter_subject: subject }),
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: nanos(30_000),
  };
  const info = o.onLeader ? await consumerOnLeader(jsm, stream, config, Date.now() + 20_000) : await jsm.consumers.add(stream, config);
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

// A JetStream cluster that has just lost or regained a member elects new
// stream leaders; until it has, it answers 503 (no responders, or no leader)
// or nothing at all. That is over within seconds, so a command waits it out,
// telling why through onWait, until its deadline; any other error, or one
// still there at the deadline, is the command's.
export function electing(err: unknown): boolean {
  const e = err as { code?: string; api_error?: { code?: number } } | null;
  return e?.code === ErrorCode.NoResponders || e?.code === ErrorCode.Timeout || e?.api_error?.code === 503;
}

export async function whileElecting<T>(fn: () => Promise<T>, deadline: number, onWait: (err: Error) => void = () => {}, signal?: AbortSignal): Promise<T> {
  const backoff = new Backoff({ firstMs: 100, maxMs: 1000, signal });
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!electing(err) || signal?.aborted || Date.now() + backoff.delayMs > deadline) throw err;
      onWait(err as Error);
      await backoff.wait();
    }
  }
}

// An error whoever waits with whileElecting waits out.
function stillElecting(message: string): Error {
  return Object.assign(new Error(message), { code: ErrorCode.NoResponders });
}

// An ephemeral consumer of a replicated stream is placed on a random peer of
// the stream (nats-server 2.9: createGroupForConsumer) and reads that peer's
// copy. A hub member that has just come back and is still catching up would
// replay an old state as if it were all there is (seen: "fleet status"
// showing serials several pushes old after hub members restarted). So a
// replay of the hub's streams is made on the stream's leader, which holds
// everything the stream acknowledged: a consumer placed elsewhere is deleted
// and made again (each try lands on the leader with odds 1 in the replica
// count). A stream without a leader (its members are electing one, seen for
// over 10 s after two of three restarted on a loaded machine) is waited for
// until `deadline`, then an error saying so.
export async function consumerOnLeader(jsm: JetStreamManager, stream: string, config: Partial<ConsumerConfig>, deadline: number, onWait?: (err: Error) => void, signal?: AbortSignal): Promise<ConsumerInfo> {
  return whileElecting(async () => {
    const leader = (await jsm.streams.info(stream)).cluster?.leader;
    if (!leader) throw stillElecting(`stream ${stream} has no leader: its members are electing one, or a majority of them is down`);
    for (let i = 0; i < 12; i++) {
      const info = await jsm.consumers.add(stream, config);
      if (info.cluster?.leader === leader) return info;
      await jsm.consumers.delete(stream, info.name).catch(() => {});
    }
    throw stillElecting(`readers of stream ${stream} kept being placed on other members than its leader (${leader}): the hub's leaders are changing`);
  }, deadline, onWait, signal);
}
