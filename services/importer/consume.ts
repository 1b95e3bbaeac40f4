import { AckPolicy, DeliverPolicy, nanos, type Consumer, type JsMsg, type NatsConnection } from 'nats';
import { streams, subjects } from '../lib/subjects.ts';
import type { Logger } from '../lib/log.ts';
import { envInt } from '../lib/config.ts';

// image.verified through a durable pull consumer: what is published while the
// importer is down waits in the stream, and a message is acked only once its
// import is done or has definitively failed. One message is handled at a
// time; more may be outstanding, so a message held by a killed instance
// (redelivered after ack_wait, recognised from the journal) blocks nothing.

export const DURABLE = 'importer';
const ACK_WAIT_MS = envInt('SEALKIT_IMPORTER_ACK_WAIT_MS', 60_000);

export async function ensureConsumer(nc: NatsConnection): Promise<void> {
  const jsm = await nc.jetstreamManager();
  await jsm.consumers.add(streams.events.name, {
    durable_name: DURABLE,
    filter_subject: subjects.image.verified,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ACK_WAIT_MS),
    max_ack_pending: 64,
    max_deliver: -1,
  });
}

export interface ConsumeLoop {
  stop(): Promise<void>;
}

// `handle` returns true to ack; false leaves the message for redelivery (the
// service is stopping). While it runs the message is kept alive with
// working(), so a long import is not redelivered to ourselves.
export function consume(nc: NatsConnection, log: Logger, handle: (msg: JsMsg, stopping: () => boolean) => Promise<boolean>): ConsumeLoop {
  let stopping = false;
  let busy: Promise<void> | undefined; // the message being handled, if any
  const loop = (async () => {
    let backoff = 250;
    let consumer: Consumer | undefined;
    while (!stopping) {
      let msg: JsMsg | null;
      try {
        consumer ??= await nc.jetstream().consumers.get(streams.events.name, DURABLE);
        msg = await consumer.next({ expires: 5000 });
        backoff = 250;
      } catch (err) {
        if (stopping) break;
        log.warn('cannot pull image.verified; retrying', { err: err as Error });
        consumer = undefined;
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
        await ensureConsumer(nc).catch(() => {}); // the bus is away: the next pull retries
        continue;
      }
      if (!msg) continue;
      if (stopping) {
        msg.nak(); // arrived while stopping: hand it back now, not after ack_wait
        break;
      }
      const m = msg;
      const keepAlive = setInterval(() => m.working(), ACK_WAIT_MS / 4);
      busy = (async () => {
        try {
          if (await handle(m, () => stopping)) await m.ackAck().catch((err) => log.warn('ack not confirmed; a redelivery will be recognised from the journal', { err: err as Error }));
          else m.nak(); // stopping: hand it back now, not after ack_wait
        } catch (err) {
          log.error('handling image.verified failed; it will be redelivered', { err: err as Error });
          m.nak(5000);
        } finally {
          clearInterval(keepAlive);
        }
      })();
      await busy;
      busy = undefined;
    }
  })();
  return {
    // waits for the message in hand, not for an idle pull to expire
    async stop() {
      stopping = true;
      await busy;
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
