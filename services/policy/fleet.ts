import type { KV, KvEntry, NatsConnection, QueuedIterator } from 'nats';
import { Backoff } from '../lib/backoff.ts';
import { connectBus } from '../lib/bus.ts';
import { sha256Hex } from '../lib/digest.ts';
import { decodeFleetPolicy, fleetConfigPath, groupKey, type FleetPolicyValue } from '../lib/fleet.ts';
import { fleetInboxPrefix, fleetKvOnHub, readFleetNodeConfig } from '../lib/leafconf.ts';
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

// A watch's consumer lives on the hub, and the watch cannot tell when the
// leaf went away: the node's own server stays up, so the connection never
// drops, nats.js notices only after two missed heartbeats (10 s), and the
// bare consumer re-creation it then tries is not allowed (the hub checks the
// filter in the subject). So each key is also read this often: a read that
// fails then succeeds (the leaf is back) or finds a newer revision than the
// watch gave (its consumer died with a hub member) takes the value and opens
// the watch again, and a node back on the hub catches up within about this.
const PROBE_MS = 1000;

// `connect` opens the follower's connection to the node's bus under the
// given inbox prefix (the policy service's own credentials by default; the
// fleet bench gives each of the nodes it hosts in one process its own).
export async function followFleet(o: {
  root: string;
  applier: PolicyApplier;
  log: Logger;
  connect?: (inboxPrefix: string) => Promise<NatsConnection>;
}): Promise<FleetFollower | null> {
  const config = await readFleetNodeConfig(o.root);
  if (!config) {
    o.log.debug('no fleet enrolment; following no hub', { file: fleetConfigPath(o.root) });
    return null;
  }
  const log = o.log.child({ concern: 'fleet', node: config.node });
  // its own connection: what the hub sends back goes under the node's inbox
  // prefix, the only inbox its leaf user may receive on
  const inboxPrefix = fleetInboxPrefix(config.node);
  const nc = await (o.connect ?? ((prefix) => connectBus({ name: 'sealkit-policy-fleet', user: 'policy', inboxPrefix: prefix, log })))(inboxPrefix);
  const stopping = new AbortController();
  const watches = new Map<string, QueuedIterator<KvEntry>>();
  const decided = new Map<string, string>(); // group → sha256 of the KV value last decided
  const revisions = new Map<string, number>(); // group → revision last taken
  let kv: Promise<KV> | undefined;
  const bucket = () => (kv ??= fleetKvOnHub(nc));

  const take = async (group: string, entry: KvEntry) => {
    revisions.set(group, Math.max(revisions.get(group) ?? 0, entry.revision));
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
    const backoff = new Backoff({ firstMs: 250, maxMs: 2000, signal: stopping.signal });
    while (!stopping.signal.aborted && !nc.isClosed()) {
      let watch: QueuedIterator<KvEntry> | undefined;
      try {
        watch = await (await bucket()).watch({ key: groupKey(group), initializedFn: () => backoff.reset() });
        watches.set(group, watch);
        for await (const entry of watch) await take(group, entry);
      } catch (err) {
        kv = undefined;
        if (!stopping.signal.aborted) log.debug('cannot watch the fleet policy on the hub yet', { group, retryInMs: backoff.delayMs, err: err as Error });
      } finally {
        if (watches.get(group) === watch) watches.delete(group);
      }
      await backoff.wait();
    }
  };

  const probe = async (group: string) => {
    let reachable = true;
    while (!stopping.signal.aborted && !nc.isClosed()) {
      await new Promise((r) => setTimeout(r, PROBE_MS));
      let entry: KvEntry | null;
      try {
        entry = await (await bucket()).get(groupKey(group));
      } catch {
        reachable = false;
        continue;
      }
      const behind = !!entry && entry.revision > (revisions.get(group) ?? 0);
      if (entry && behind) await take(group, entry);
      if (!reachable || behind) {
        log.info('the hub is reachable again; following the group anew', { group, revision: entry?.revision ?? null });
        watches.get(group)?.stop();
      }
      reachable = true;
    }
  };

  log.info('following the fleet policy on the hub', { groups: config.groups });
  for (const g of config.groups) {
    void follow(g);
    void probe(g);
  }
  return {
    async stop() {
      stopping.abort();
      for (const w of watches.values()) w.stop();
      await nc.drain().catch(() => {});
    },
  };
}
