import { AckPolicy, DeliverPolicy, nanos, type JsMsg, type NatsConnection } from 'nats';
import { streams, subjects } from '../lib/subjects.ts';
import type { Logger } from '../lib/log.ts';
import { envInt } from '../lib/config.ts';

// image.imported through the durable pull consumer "ima": what is imported
// while this service is down waits in the stream; a message is acked once it
// is labelled or has definitively failed. One image at a time.

export const DURABLE = 'ima';
// how long a message held by a killed instance waits before redelivery
const ACK_WAIT_MS = envInt('SEALKIT_IMA_ACK_WAIT_MS', 60_000);

export async function ensureConsumer(nc: NatsConnection): Promise<void> {
  const jsm = await nc.jetstreamManager();
  await jsm.consumers.add(streams.events.name, {
    durable_name: DURABLE,
    filter_subject: subjects.image.imported,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ACK_WAIT_MS),
    max_ack_pending: 1,
    max_deliver: -1,
  });
}

// `handle` returns true to ack, false to leave the message for redelivery.
export function consumeImported(nc: NatsConnection, log: Logger, handle: (msg: JsMsg) => Promise<boolean>): { stop(): Promise<void> } {
  let stopping = false;
  const loop = (async () => {
    let backoff = 250;
    while (!stopping) {
      let msg: JsMsg | null;
      try {
        const c = await nc.jetstream().consumers.get(streams.events.name, DURABLE);
        msg = await c.next({ expires: 2000 });
        backoff = 250;
      } catch (err) {
        if (stopping) break;
        log.warn('cannot pull image.imported; retrying', { err: err as Error });
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
        await ensureConsumer(nc).catch(() => {});
        continue;
      }
      if (!msg) continue;
      const keepAlive = setInterval(() => msg!.working(), ACK_WAIT_MS / 4);
      try {
        if (await handle(msg)) await msg.ackAck().catch((err) => log.warn('ack not confirmed; a redelivery relabels the same content', { err: err as Error }));
        else msg.nak(5000);
      } catch (err) {
        log.error('handling image.imported failed; it will be redelivered', { err: err as Error });
        msg.nak(5000);
      } finally {
        clearInterval(keepAlive);
      }
    }
  })();
  return {
    async stop() {
      stopping = true;
      await loop;
    },
  };
}
