import {
  connect,
  headers as natsHeaders,
  type NatsConnection,
  type Msg,
  type MsgHdrs,
  type Subscription,
  ErrorCode as NatsErrorCode,
  NatsError,
  RequestStrategy,
} from 'nats';
import { SealkitError, asSealkitError, type WireError } from './errors.ts';
import type { Logger } from './log.ts';
import { readCreds } from './natsconf.ts';
import { credsPath, natsUrl } from './config.ts';
import { checkReply, contract, type PingReply } from './contract.ts';

export type { NatsConnection, Msg, MsgHdrs };

export interface BusOptions {
  name: string; // connection name, shows in the server's connz
  user?: string; // bus user; credentials come from its creds file
  servers?: string | string[];
  credsFile?: string;
  log?: Logger;
  waitOnFirstConnect?: boolean;
  inboxPrefix?: string; // replies and deliveries under it (a fleet node's clients of the hub)
}

// Connect and stay connected: reconnect forever, never exit on a disconnect.
export async function connectBus(o: BusOptions): Promise<NatsConnection> {
  let auth: { user?: string; pass?: string } = {};
  if (o.user) {
    const c = await readCreds(o.credsFile ?? credsPath(o.user));
    auth = { user: c.user, pass: c.password };
  }
  const nc = await connect({
    servers: o.servers ?? natsUrl(),
    name: o.name,
    ...auth,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    waitOnFirstConnect: o.waitOnFirstConnect ?? true,
    pingInterval: 10_000,
    // every request (each JetStream publish of the outbox) would otherwise
    // capture a stack trace for its error's sake: 40 of the 95 us of client
    // CPU a publish costs, paid on every event of an audit storm
    noAsyncTraces: true,
    ...(o.inboxPrefix ? { inboxPrefix: o.inboxPrefix } : {}),
  });
  if (o.log) watchStatus(nc, o.log);
  return nc;
}

function watchStatus(nc: NatsConnection, log: Logger): void {
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'pingTimer') continue;
      const level = s.type === 'disconnect' || s.type === 'error' ? 'warn' : 'info';
      log[level]('bus status', { status: s.type, data: typeof s.data === 'string' ? s.data : undefined });
    }
  })();
}

export function encode(value: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

export function decode<T = unknown>(data: Uint8Array, what = 'message'): T {
  try {
    return JSON.parse(Buffer.from(data).toString('utf8')) as T;
  } catch {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `${what} is not JSON`);
  }
}

export function makeHeaders(values: Record<string, string | undefined>): MsgHdrs {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(values)) if (v !== undefined) h.set(k, v);
  return h;
}

// Serve a request subject: the handler's return value is the reply; a thrown
// error goes back as {error: {code, message, data}}, never as silence.
export function serve(
  nc: NatsConnection,
  subject: string,
  handler: (msg: Msg) => Promise<unknown> | unknown,
  opts: { log?: Logger; queue?: string; serial?: boolean } = {},
): Subscription {
  const sub = nc.subscribe(subject, opts.queue ? { queue: opts.queue } : {});
  const answer = async (msg: Msg) => {
    let reply: unknown;
    try {
      reply = await handler(msg);
    } catch (err) {
      const e = asSealkitError(err);
      if (e.code === 'SEALKIT_INTERNAL') opts.log?.error('request failed', { subject, err: e });
      reply = { error: e.toWire() };
    }
    if (msg.reply) msg.respond(encode(reply ?? {}));
  };
  void (async () => {
    for await (const msg of sub) {
      if (opts.serial) await answer(msg);
      else void answer(msg);
    }
  })();
  return sub;
}

// Ask and wait: a reply with {error} becomes a thrown SealkitError; no
// responder and timeout have their own codes.
export async function request<T = unknown>(
  nc: NatsConnection,
  subject: string,
  payload: Uint8Array | unknown,
  opts: { timeout?: number; headers?: MsgHdrs } = {},
): Promise<T> {
  const data = payload instanceof Uint8Array ? payload : encode(payload ?? {});
  let msg: Msg;
  try {
    msg = await nc.request(subject, data, { timeout: opts.timeout ?? 5000, headers: opts.headers });
  } catch (err) {
    throw busError(err, subject);
  }
  const reply = decode<{ error?: WireError } & T>(msg.data, `reply on ${subject}`);
  if (reply && typeof reply === 'object' && reply.error) throw SealkitError.fromWire(reply.error);
  return reply as T;
}

export function busError(err: unknown, subject: string): SealkitError {
  if (err instanceof NatsError) {
    if (err.code === NatsErrorCode.NoResponders) {
      return new SealkitError('SEALKIT_NO_RESPONDER', `nothing answers on ${subject}; is the service running and allowed to subscribe there?`);
    }
    if (err.code === NatsErrorCode.Timeout) {
      return new SealkitError('SEALKIT_TIMEOUT', `no answer on ${subject} in time`);
    }
    if (err.isPermissionError()) {
      return new SealkitError('SEALKIT_BAD_REQUEST', `the bus refused ${subject}: ${err.message}; check the credentials in use`);
    }
  }
  return asSealkitError(err);
}

// Ask every service who is alive; gathers the replies for `waitMs`, or
// until `expect` replies came.
export async function pingAll(nc: NatsConnection, waitMs = 500, expect?: number): Promise<PingReply[]> {
  const out: PingReply[] = [];
  try {
    const it = await nc.requestMany(contract.ping.subject, encode({}), expect ? { maxWait: waitMs, strategy: RequestStrategy.Count, maxMessages: expect } : { maxWait: waitMs, strategy: RequestStrategy.Timer });
    for await (const m of it) {
      if (m.data.length === 0) break;
      try {
        out.push(checkReply(contract.ping, decode(m.data)));
      } catch {
        // a malformed ping reply is not a service
      }
    }
  } catch (err) {
    if (!(err instanceof NatsError && err.code === NatsErrorCode.NoResponders)) throw err;
  }
  return out.sort((a, b) => a.service.localeCompare(b.service));
}
