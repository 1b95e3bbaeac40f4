import { AckPolicy, DeliverPolicy, nanos, type Consumer, type JsMsg, type NatsConnection } from 'nats';
import type { Logger } from './log.ts';
import { Backoff } from './backoff.ts';

// A durable pull consumer worked one message at a time: what is published
// while the service is down waits in the stream, and a message is acked only
// once its work is done or has definitively failed. More may be outstanding
// than the one in hand, so a message held by a killed instance (redelivered
// after ack_wait) blocks nothing.

export interface DurableSpec {
  stream: string;
  durable: string; // kept across restarts: where the service left off
  filterSubject: string;
  ackWaitMs: number; // how long a message held by a killed instance waits before redelivery
  maxAckPending: number;
}

// true: done, ack it. false: not done, hand it back (redelivered at once when
// the service is stopping, after RETRY_DELAY_MS otherwise). The signal says
// the service is stopping.
export type Handler = (msg: JsMsg, signal: AbortSignal) => Promise<boolean>;

export interface Consuming {
  // waits for the message in hand, not for an idle pull to expire
  stop(): Promise<void>;
}

// a failed message comes back after this, not in a hot loop
const RETRY_DELAY_MS = 5000;
// an idle pull is renewed this often; stop() cuts it short
const PULL_EXPIRES_MS = 5000;

// Creates the durable (the same settings again are no change) and binds to it.
async function ensureDurable(nc: NatsConnection, spec: DurableSpec): Promise<Consumer> {
  const jsm = await nc.jetstreamManager();
  await jsm.consumers.add(spec.stream, {
    durable_name: spec.durable,
    filter_subject: spec.filterSubject,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(spec.ackWaitMs),
    max_ack_pending: spec.maxAckPending,
    max_deliver: -1,
  });
  return nc.jetstream().consumers.get(spec.stream, spec.durable);
}

export function consumeDurable(nc: NatsConnection, spec: DurableSpec, log: Logger, handle: Handler): Consuming {
  const stopping = new AbortController();
  const { signal } = stopping;
  void nc.closed().then(() => stopping.abort()); // nothing left to pull from
  let busy: Promise<void> | undefined; // the message in hand, if any

  // a nak the bus cannot take (connection gone) still ends in a redelivery, after ack_wait
  const handBack = (m: JsMsg, delayMs?: number) => {
    try {
      m.nak(delayMs);
    } catch (err) {
      log.warn(`cannot hand ${spec.filterSubject} back; it is redelivered after ack_wait`, { seq: m.seq, err: err as Error });
    }
  };

  const settle = async (m: JsMsg) => {
    if (signal.aborted) return handBack(m); // arrived while stopping: hand it back now, not after ack_wait
    // a long handler is not redelivered to another instance (or ourselves) meanwhile
    const keepAlive = setInterval(() => {
      try {
        m.working();
      } catch {
        // connection gone: the message is redelivered after ack_wait either way
      }
    }, spec.ackWaitMs / 4);
    try {
      if (await handle(m, signal)) {
        await m.ackAck().catch((err) => log.warn(`ack of ${spec.filterSubject} not confirmed; it will be redelivered`, { seq: m.seq, err: err as Error }));
      } else handBack(m, signal.aborted ? undefined : RETRY_DELAY_MS);
    } catch (err) {
      log.error(`handling ${spec.filterSubject} failed; it will be redelivered`, { seq: m.seq, err: err as Error });
      handBack(m, RETRY_DELAY_MS);
    } finally {
      clearInterval(keepAlive);
    }
  };

  void (async () => {
    const backoff = new Backoff({ firstMs: 250, maxMs: 5000, signal });
    let consumer: Consumer | undefined;
    while (!signal.aborted) {
      let msg: JsMsg | null;
      try {
        // the durable is (re)created whenever it cannot be pulled from: it
        // may have been deleted, or the bus restarted without it
        consumer ??= await ensureDurable(nc, spec);
        msg = await pullOne(consumer, signal);
        backoff.reset();
      } catch (err) {
        if (signal.aborted) break;
        log.warn(`cannot pull ${spec.filterSubject}; retrying`, { durable: spec.durable, retryInMs: backoff.delayMs, err: err as Error });
        consumer = undefined;
        await backoff.wait();
        continue;
      }
      if (!msg) continue;
      busy = settle(msg);
      await busy;
      busy = undefined;
    }
  })();

  return {
    async stop() {
      stopping.abort();
      await busy;
    },
  };
}

// One message, or null when the pull expired or was cut short by the signal.
async function pullOne(consumer: Consumer, signal: AbortSignal): Promise<JsMsg | null> {
  if (signal.aborted) return null;
  const batch = await consumer.fetch({ max_messages: 1, expires: PULL_EXPIRES_MS });
  const cut = () => batch.stop();
  signal.addEventListener('abort', cut, { once: true });
  try {
    for await (const m of batch) return m;
    return null;
  } finally {
    signal.removeEventListener('abort', cut);
    batch.stop();
  }
}
