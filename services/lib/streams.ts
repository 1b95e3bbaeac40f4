import { nanos, RetentionPolicy, StorageType, DiscardPolicy, type NatsConnection } from 'nats';
import { streams, policyBucket } from './subjects.ts';

// JetStream setup, done once by the admin user (`sealkit bus init`, `make
// dev`, the ISO's onboot step): services themselves cannot create streams.
export const DUPLICATE_WINDOW_MS = 10 * 60 * 1000;

export async function ensureStreams(nc: NatsConnection, opts: { maxBytes?: number } = {}): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const s of [streams.audit, streams.events]) {
    const config = {
      name: s.name,
      subjects: [...s.subjects],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_bytes: opts.maxBytes ?? 256 * 1024 * 1024,
      max_age: nanos(30 * 24 * 3600 * 1000),
      duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      num_replicas: 1,
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
