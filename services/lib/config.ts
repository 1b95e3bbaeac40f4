import { existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Where a process keeps its state and finds its bus. Everything can be set
// by environment; the defaults make `make dev` work from a checkout.
// <root>/services/lib in a checkout, <root>/dist/services/lib compiled.
const above = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const repoRoot = basename(above) === 'dist' && existsSync(join(dirname(above), 'package.json')) ? dirname(above) : above;

export function stateDir(): string {
  return resolve(process.env.SEALKIT_STATE ?? join(repoRoot, 'state'));
}

export function natsUrl(): string {
  return process.env.SEALKIT_NATS_URL ?? 'nats://127.0.0.1:4222';
}

// Bus credentials are files `<state>/bus/creds/<user>.json`, written by
// `sealkit bus init` (or the ISO build) with mode 0600.
export function credsPath(user: string, state = stateDir()): string {
  return process.env.SEALKIT_NATS_CREDS ?? join(state, 'bus', 'creds', `${user}.json`);
}

export function trustPath(state = stateDir()): string {
  return process.env.SEALKIT_TRUST ?? join(state, 'trust.yaml');
}

export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name}="${raw}" is not a number`);
  return n;
}
