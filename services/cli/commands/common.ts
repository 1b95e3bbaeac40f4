import { access, readFile } from 'node:fs/promises';
import type { ParseArgsConfig } from 'node:util';
import type { NatsConnection } from 'nats';
import { connectBus } from '../../lib/bus.ts';
import { SealkitError } from '../../lib/errors.ts';
import { credsPath, natsUrl } from '../../lib/config.ts';

// What every command module exports; main.ts only dispatches.
export type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | undefined>;

export interface Command {
  name: string; // "status", "policy push"
  summary: string; // one line for "sealkit --help"
  usage: string; // the text "sealkit <name> --help" prints
  options: Options; // this command's own options (bus options are added where it uses the bus)
  bus?: boolean; // takes --server/--creds
  run(values: Values, positionals: string[]): Promise<number>;
}

export const busOptions: Options = {
  server: { type: 'string' },
  creds: { type: 'string' },
};

export const busUsage = `bus options:
  --server URL     the node's bus (default $SEALKIT_NATS_URL or nats://127.0.0.1:4222)
  --creds FILE     bus credentials (default <state>/bus/creds/admin.json; read-only
                   commands fall back to anonymous access)
`;

export function server(v: Values): string {
  return (v.server as string | undefined) ?? natsUrl();
}

// --timeout SECONDS, with the command's default when absent.
export function timeoutMs(v: Values, defaultSec: number, cmd: string): number {
  const raw = v.timeout as string | undefined;
  if (raw === undefined) return defaultSec * 1000;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new SealkitError('SEALKIT_BAD_REQUEST', `${cmd}: --timeout "${raw}" is not a positive number of seconds`);
  return n * 1000;
}

export const seconds = (ms: number) => `${Math.ceil(ms / 1000)} s`;

// What a command is waiting for, on stderr so stdout stays the result.
export function waiting(what: string, ms: number): void {
  process.stderr.write(`waiting for ${what} (timeout ${seconds(ms)})…\n`);
}

export async function connect(v: Values, needAdmin: boolean): Promise<NatsConnection> {
  const url = server(v);
  const file = (v.creds as string | undefined) ?? credsPath('admin');
  const haveCreds = await exists(file);
  if (needAdmin && !haveCreds) {
    throw new SealkitError('SEALKIT_CONFIG', `this command needs the admin bus credentials; none at ${file} (pass --creds FILE, or run "sealkit bus config")`);
  }
  try {
    return await connectBus({ name: 'sealkit-cli', servers: url, ...(haveCreds ? { user: 'admin', credsFile: file } : {}), waitOnFirstConnect: false });
  } catch (err) {
    throw new SealkitError('SEALKIT_UNAVAILABLE', `cannot reach the bus at ${url}: ${(err as Error).message}; is the node up (make dev / make run)?`);
  }
}

export function one(positionals: string[], what: string, cmd: string): string {
  if (positionals.length !== 1) throw new SealkitError('SEALKIT_BAD_REQUEST', `${cmd} takes one ${what}; see "sealkit ${cmd} --help"`);
  return positionals[0];
}

export function none(positionals: string[], cmd: string): void {
  if (positionals.length) throw new SealkitError('SEALKIT_BAD_REQUEST', `${cmd} takes no arguments, got "${positionals.join(' ')}"; see "sealkit ${cmd} --help"`);
}

export async function readInput(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new SealkitError('SEALKIT_BAD_REQUEST', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
