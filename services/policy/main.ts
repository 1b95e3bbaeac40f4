import { join } from 'node:path';
import type { Msg } from 'nats';
import { runService, type ServiceContext } from '../lib/service.ts';
import { serve } from '../lib/bus.ts';
import { SealkitError } from '../lib/errors.ts';
import { readTrust } from '../lib/sign.ts';
import { trustPath } from '../lib/config.ts';
import { policyBucket, policyKey, subjects } from '../lib/subjects.ts';
import { contract, readHeaders } from '../lib/contract.ts';
import type { Policy, SignedPolicy } from '../lib/policy.ts';
import { PolicyStore } from './store.ts';
import { PolicyApplier } from './apply.ts';
import { followFleet } from './fleet.ts';

async function start(ctx: ServiceContext) {
  const { nc, events, log } = ctx;
  const trust = await readTrust(trustPath(ctx.root));
  const store = new PolicyStore(join(ctx.state));
  const kv = await nc.jetstream().views.kv(policyBucket, { bindOnly: true });

  const report = await store.load(trust);
  for (const p of report.problems) {
    log.error('stored policy refused', p);
    await events.publish(subjects.audit.policy, {
      action: 'load',
      file: p.file,
      code: p.code,
      reason: p.reason,
      inForce: report.loaded?.policy.serial ?? null,
    });
  }
  const applier = new PolicyApplier({ store, trust, kv, events, log, loaded: report.loaded });
  const current = report.loaded;
  if (current) log.info('policy in force', { serial: current.policy.serial });
  else log.warn('no policy in force yet; push one with "sealkit policy push"');

  if (current) {
    const entry = await kv.get(policyKey).catch(() => null);
    const inKv = entry?.value.length ? (JSON.parse(Buffer.from(entry.value).toString()) as SignedPolicy) : null;
    if (inKv?.sha256 !== current.record.sha256) await applier.syncKv(current.record);
  }

  serve(
    nc,
    subjects.policy.push,
    async (msg: Msg) => {
      const { signature, keyId, pusher } = readHeaders(contract.policy.push, msg.headers);
      return applier.apply({ yaml: msg.data, signature, keyId }, { via: 'push', pusher });
    },
    { log, serial: true },
  );

  const fleet = await followFleet({ nc, root: ctx.root, applier, log });

  serve(nc, subjects.policy.get, () => {
    const current = applier.current;
    if (!current) throw new SealkitError('SEALKIT_POLICY_NONE', 'no policy is in force on this node; push one with "sealkit policy push"');
    return { ...current.record, summary: summarize(current.policy) };
  });
  return { stop: async () => fleet?.stop() };
}

function summarize(p: Policy) {
  return {
    serial: p.serial,
    images: p.images.map((i) => `${i.name}:${i.tag}@sha256:${i.sha256.slice(0, 12)}`),
    containers: p.containers.map((c) => `${c.name} (${c.image})`),
    keys: p.keys.map((k) => k.id),
    verifiers: p.verifiers.map((v) => v.subject),
    ima: p.ima.mode,
  };
}

await runService('policy', start);
