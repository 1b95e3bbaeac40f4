import type { NatsConnection } from 'nats';
import { request } from '../lib/bus.ts';
import { checkReply, contract, type LogsReply, type LogsRequest, type PsEntry } from '../lib/contract.ts';
import { SealkitError, asSealkitError } from '../lib/errors.ts';
import { seconds } from './commands/common.ts';

// The CLI's two questions to the runner. No responder on a runner subject
// means no runner process on the node (the bus itself answered the
// connect), which is what the person needs to hear; the bus's own wording
// is about subjects and permissions.

export async function askPs(nc: NatsConnection, ms: number, url: string): Promise<PsEntry[]> {
  const ps = contract.runner.ps;
  return checkReply(ps, await ask(nc, ps.subject, {}, ms, url)).containers;
}

export async function askLogs(nc: NatsConnection, body: LogsRequest, ms: number, url: string): Promise<LogsReply> {
  const logs = contract.runner.logs;
  return checkReply(logs, await ask(nc, logs.subject, body, ms, url));
}

async function ask(nc: NatsConnection, subject: string, body: object, ms: number, url: string): Promise<unknown> {
  try {
    return await request(nc, subject, body, { timeout: ms });
  } catch (err) {
    const e = asSealkitError(err);
    if (e.code === 'SEALKIT_NO_RESPONDER') {
      throw new SealkitError('SEALKIT_NO_RESPONDER', `the runner is not answering on ${url} (nothing serves ${subject}): the node's runner service is not running; "sealkit status" shows which services are up, and the node's log why the runner stopped`);
    }
    if (e.code === 'SEALKIT_TIMEOUT') {
      throw new SealkitError('SEALKIT_TIMEOUT', `the runner did not answer ${subject} on ${url} within ${seconds(ms)}; it may be busy starting containers: try again, or raise --timeout`);
    }
    throw e;
  }
}
