import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import { Fetcher } from '../../services/fetcher/fetcher.ts';
import { silentLogger } from '../../services/lib/log.ts';
import { EventPublisher } from '../../services/lib/outbox.ts';
import { validatePolicy, type Policy } from '../../services/lib/policy.ts';
import { EventLog } from './events.ts';
import { startNats, type NatsServer } from './nats.ts';

// The fetcher's core on a real bus: its own bus user, a real JetStream
// outbox, and an anonymous monitor watching audit.* and image.* the way an
// operator does.
export interface FetcherRig {
  nats: NatsServer;
  nc: NatsConnection;
  fetcher: Fetcher;
  dir: string;
  audit: EventLog;
  images: EventLog;
  policy(doc: Record<string, unknown>): Policy;
  quarantined(): Promise<string[]>;
  cached(): Promise<string[]>;
  cleanup(): Promise<void>;
}

let serial = 0;

export async function startFetcherRig(): Promise<FetcherRig> {
  const nats = await startNats();
  const nc = await nats.connectAs('fetcher');
  const anon = await nats.connectAs(null);
  const dir = await mkdtemp(join(tmpdir(), 'sealkit-fetcher-'));
  const events = new EventPublisher({ nc, service: 'fetcher', node: 'test', log: silentLogger });
  const fetcher = new Fetcher({ dir, nc, events, log: silentLogger });
  await fetcher.init();
  const audit = new EventLog(anon, 'audit.*');
  const images = new EventLog(anon, 'image.*');
  await anon.flush();
  return {
    nats,
    nc,
    fetcher,
    dir,
    audit,
    images,
    policy: (doc) => validatePolicy({ apiVersion: 'sealkit/v1', kind: 'NodePolicy', serial: ++serial, ...doc }),
    quarantined: () => readdir(fetcher.cache.quarantineDir),
    cached: () => fetcher.cache.entries(),
    async cleanup() {
      events.close();
      await nc.close();
      await anon.close();
      await nats.cleanup();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
