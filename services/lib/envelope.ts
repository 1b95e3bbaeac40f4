import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

// CloudEvents 1.0, JSON structured mode. `type` is the NATS subject, `source`
// names the service and node, `id` doubles as the JetStream Nats-Msg-Id.
export interface CloudEvent<T = Record<string, unknown>> {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  time: string;
  datacontenttype: 'application/json';
  subject?: string;
  data: T;
}

export function nodeName(): string {
  return process.env.SEALKIT_NODE ?? hostname();
}

export function makeEvent<T>(service: string, type: string, data: T, opts: { node?: string; subject?: string; id?: string } = {}): CloudEvent<T> {
  const ev: CloudEvent<T> = {
    specversion: '1.0',
    id: opts.id ?? randomUUID(),
    source: `sealkit/${service}/${opts.node ?? nodeName()}`,
    type,
    time: new Date().toISOString(),
    datacontenttype: 'application/json',
    data,
  };
  if (opts.subject !== undefined) ev.subject = opts.subject;
  return ev;
}

export function parseEvent(bytes: Uint8Array): CloudEvent {
  const ev = JSON.parse(Buffer.from(bytes).toString('utf8')) as CloudEvent;
  if (ev?.specversion !== '1.0' || typeof ev.id !== 'string' || typeof ev.type !== 'string') {
    throw new Error('not a CloudEvents 1.0 structured event');
  }
  return ev;
}
