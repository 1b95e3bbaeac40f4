import { readFile } from 'node:fs/promises';
import type { KV, KvEntry, NatsConnection, QueuedIterator } from 'nats';
import { Backoff } from '../lib/backoff.ts';
import { SealkitError } from '../lib/errors.ts';
import { sha256Hex } from '../lib/digest.ts';
import { checkGroup, checkNode, decodeFleetPolicy, fleetBucket, fleetConfigPath, groupKey, hubDomain, type FleetNodeConfig, type FleetPolicyValue } from '../lib/fleet.ts';
import type { Logger } from '../lib/log.ts';
import type { PolicyApplier } from './apply.ts';

// The node's side of fleet desired state: watch the hub's key of each of the
// node's groups through the leaf connection, and hand every new value to the
// same applier a local push goes through (trust, size, signature, schema,
// serial above the node's own highwater), so the hub can be no more trusted
// than a local operator.
//
// Several groups: whichever carries a serial above the one in force applies,
// in the order the values arrive; a value at or below it (another group's
// older policy, a replay) is refused as a rollback and reported like any
// refusal. Each value is decided once per process: a watch opened again
// repeats the last value of its key, which is no news.

export interface FleetFollower {
  stop(): Promise<void>;
}

// No enrolment file: not part of a fleet, and nothing to follow.
export async function readFleetNodeConfig(root: string): Promise<FleetNodeConfig | null> {
  const file = fleetConfigPath(root);
  let raw: string;
  try {
    raw = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new SealkitError('SEALKIT_CONFIG', `cannot read the fleet enrolment ${file}: ${(err as Error).message}`);
  }
  let c: Partial<FleetNodeConfig>;
  try {
    c = JSON.parse(raw) as Partial<FleetNodeConfig>;
  } catch {
    throw new SealkitError('SEALKIT_CONFIG', `the fleet enrolment ${file} is not JSON; write it again with "sealkit fleet enroll"`);
  }
  if (typeof c.node !== 'string' || !Array.isArray(c.groups) || c.groups.some((g) => typeof g !== 'string')) {
    throw new SealkitError('SEALKIT_CONFIG', `the fleet enrolment ${file} lacks "node" or a "groups" list of names; write it again with "sealkit fleet enroll"`);
  }
  checkNode(c.node, `node in ${file}`);
  for (const g of c.groups) checkGroup(g, `group in ${file}`);
  return c as FleetNodeConfig;
}

// A watch whose consumer lives on the hub cannot tell the leaf went away:
// the node's own server stays up, so the connection never reconnects, and
// nats.js only recreates the consumer after two missed heartbeats. Until
// the first value of a reopened watch arrives the key is read again this
// often, so a node back on the hub catches up in about this time.
const REOPEN_MS = { first: 250, max: 2000 };

export async function followFleet(o: { nc: NatsConnection; root: string; applier: PolicyApplier; log: Logger }): Promise<FleetFollower | null> {
  const config = await readFleetNodeConfig(o.root);
  if (!config) {
    o.log.debug('no fleet enrolment; following no hub', { file: fleetConfigPath(o.root) });
    return null;
  }
  const log = o.log.child({ concern: 'fleet', node: config.node });
  const stopping = new AbortController();
  const watches = new Set<QueuedIterator<KvEntry>>();
  const decided = new Map<string, string>(); // group → sha256 of the KV value last decided
  let kv: Promise<KV> | undefined;
  const bucket = () => (kv ??= o.nc.jetstream({ domain: hubDomain }).views.kv(fleetBucket, { bindOnly: true }));

  const take = async (group: string, entry: KvEntry) => {
    if (entry.operation !== 'PUT' || !entry.value.length) {
      log.warn('the fleet policy of a group was removed on the hub; keeping the one in force', { group, operation: entry.operation, revision: entry.revision });
      return;
    }
    const sha = sha256Hex(entry.value);
    if (decided.get(group) === sha) return;
    decided.set(group, sha);
    let value: FleetPolicyValue;
    try {
      value = decodeFleetPolicy(entry.value, group);
    } catch (err) {
      await o.applier.refuse({ yaml: entry.value }, { via: 'fleet', group }, err);
      return;
    }
    const yaml = Buffer.from(value.yaml, 'utf8');
    // in force already: applied from this key before a restart, or pushed locally
    if (o.applier.current?.record.sha256 === sha256Hex(yaml)) return;
    await o.applier.apply({ yaml, signature: value.signature, keyId: value.keyId }, { via: 'fleet', group, pusher: value.pusher }).catch(() => {
      // refused: the applier has audited it
    });
  };

  const follow = async (group: string) => {
    const backoff = new Backoff({ firstMs: REOPEN_MS.first, maxMs: REOPEN_MS.max, signal: stopping.signal });
    while (!stopping.signal.aborted && !o.nc.isClosed()) {
      let watch: QueuedIterator<KvEntry> | undefined;
      try {
        watch = await (await bucket()).watch({ key: groupKey(group), initializedFn: () => backoff.reset() });
        watches.add(watch);
        for await (const entry of watch) await take(group, entry);
      } catch (err) {
        kv = undefined;
        if (!stopping.signal.aborted) log.debug('cannot watch the fleet policy on the hub yet', { group, retryInMs: backoff.delayMs, err: err as Error });
      } finally {
        if (watch) watches.delete(watch);
      }
      await backoff.wait();
    }
  };

  log.info('following the fleet policy on the hub', { groups: config.groups });
  for (const g of config.groups) void follow(g);
  return {
    async stop() {
      stopping.abort();
      for (const w of watches) w.stop();
    },
  };
}
