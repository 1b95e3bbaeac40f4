import { join } from 'node:path';
import { mkdir, readFile, readlink } from 'node:fs/promises';
import { connectBus, encode, type NatsConnection } from './bus.ts';
import { createLogger, type Logger } from './log.ts';
import { EventPublisher } from './outbox.ts';
import { nodeName } from './envelope.ts';
import { stateDir } from './config.ts';
import { subjects, type ServiceName } from './subjects.ts';
import type { PingReply } from './contract.ts';
import { ensureEventKey, EventKey } from './eventsig.ts';

export interface ServiceContext {
  name: ServiceName;
  node: string;
  log: Logger;
  nc: NatsConnection;
  events: EventPublisher;
  state: string; // the service's own directory under the state dir
  root: string; // the whole state dir
}

export interface Running {
  stop?: () => Promise<void>;
}

export const VERSION = '0.1.0';

// One entry point per service: wire config, logger and bus, answer pings,
// call the pure core, and on SIGTERM/SIGINT stop it, flush events, drain.
export async function runService(name: ServiceName, start: (ctx: ServiceContext) => Promise<Running | void>): Promise<void> {
  const node = nodeName();
  const log = createLogger({ service: name, node, pid: process.pid });
  const root = stateDir();
  const state = join(root, name);
  await mkdir(state, { recursive: true });
  const nc = await connectBus({ name: `sealkit-${name}`, user: name, log });
  const events = new EventPublisher({ nc, service: name, node, dir: join(state, 'outbox'), log, key: await eventKey(root, node, log) });
  await events.init();
  const started = Date.now();
  // which pid namespace `pid` is in (pid 1 in an OCI bundle): nodeinfo maps it to the host's pid
  const pidNs = await readlink('/proc/self/ns/pid').catch(() => undefined);
  const cgroup = await readFile('/proc/self/cgroup', 'utf8').then((c) => c.trim(), () => undefined);
  const running = (await start({ name, node, log, nc, events, state, root })) ?? {};
  // a ping is answered only once the service's own subscriptions are in
  // place: an answer means its requests (policy.push, image.fetch …) are too
  const ping = nc.subscribe(subjects.ping, {
    callback: (_err, msg) => {
      const reply: PingReply = { service: name, node, pid: process.pid, pidNs, cgroup, uptimeSec: Math.round((Date.now() - started) / 1000), version: VERSION };
      msg.respond(encode(reply));
    },
  });
  // the server has every subscription once a flush returns: "started" means
  // requests to this service are answered from now on
  await nc.flush();
  log.info('started', { state });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal });
    ping.unsubscribe();
    try {
      await running.stop?.();
    } catch (err) {
      log.error('stop failed', { err: err as Error });
    }
    const flushed = await events.flush(3000);
    if (!flushed) log.warn('events still pending at exit; they stay in the outbox for the next start', { pending: events.pending });
    events.close();
    await nc.drain().catch(() => {});
    await nc.closed();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

// The node's event key, made here on a node that has none yet. A key file
// that cannot be read must not stop the node's work: its events go out
// unsigned, and the fleet flags them as forged, which is the truth.
async function eventKey(root: string, node: string, log: Logger): Promise<EventKey | undefined> {
  try {
    const { key, path, created } = await ensureEventKey(root, node);
    if (created) log.info('created the node event key', { path });
    return new EventKey(key);
  } catch (err) {
    log.error('no event key: events go out unsigned', { err: err as Error });
    return undefined;
  }
}
